"""python -m benchmarks: see run.py."""
import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# `-m` puts the repository root first on sys.path, where wsloss/ is the source tree without its
# compiled extension: measure the installed package instead (unless it was built in place).
if not glob.glob(os.path.join(ROOT, "wsloss", "_C*.so")) + glob.glob(os.path.join(ROOT, "wsloss", "_C*.pyd")):
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != ROOT]
sys.path.insert(0, HERE)

from run import main  # noqa: E402

sys.exit(main())
