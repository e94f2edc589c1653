"""python -m build: an sdist that carries everything needed to compile, and a wheel built from it."""
import os
import subprocess
import sys
import tarfile
import zipfile

import wsloss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sdist_builds_a_working_wheel(tmp_path):
    """The wheel is compiled from the sdist (not the checkout), so a missing source file fails here."""
    dist = tmp_path / "dist"
    env = dict(os.environ, MAX_JOBS=str(os.cpu_count() or 1))
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), ROOT],
                           capture_output=True, text=True, env=env, timeout=1200)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (sdist,) = dist.glob("wsloss-*.tar.gz")
    (wheel,) = dist.glob("wsloss-*.whl")
    assert sdist.name == f"wsloss-{wsloss.__version__}.tar.gz"
    assert "-abi3-" in wheel.name  # py_limited_api: one wheel for every Python >= 3.9

    with tarfile.open(sdist) as tar:
        shipped = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    sources = {os.path.relpath(os.path.join(d, f), ROOT) for d, _, files in os.walk(os.path.join(ROOT, "csrc"))
               for f in files}
    assert sources and sources <= shipped
    assert {"setup.py", "pyproject.toml", "README.md", "wsloss/py.typed", "tests/test_production.py",
            "benchmarks/run.py"} <= shipped

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "wheel")
    assert any(name.startswith("wsloss/_C") and name.endswith(".so") for name in names)
    assert {"wsloss/py.typed", "wsloss/_C.pyi", "wsloss/info.py", "wsloss/demo/__main__.py"} <= names
    assert not any(name.startswith(("tests/", "benchmarks/", "csrc/")) for name in names)

    # The wheel's own files, imported from where it was unpacked, work.
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "wheel"))
    info = subprocess.run([sys.executable, "-m", "wsloss.info"], capture_output=True, text=True, env=env,
                          cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert info.stdout.startswith(f"wsloss {wsloss.__version__} at {tmp_path / 'wheel' / 'wsloss'}")
