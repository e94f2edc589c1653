"""python -m benchmarks: see run.py."""
import os
import sys

# Run as `python -m benchmarks` from the repository root or as `python path/to/benchmarks` from
# anywhere; either way the scripts beside this file import each other by name.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import main  # noqa: E402

sys.exit(main())
