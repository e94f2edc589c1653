"""Packaging and first contact: python -m build gives an sdist that carries everything needed to
compile and a wheel built from it; the source tree, imported without its extension, loads the
installed package or says what to run; the build backend names torch when it is missing."""
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import wsloss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALLED = os.path.dirname(os.path.realpath(wsloss.__file__))


def _python(*args, cwd, env=None):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=env)


def _unbuilt_source_tree(folder):
    """A copy of wsloss/ as a checkout holds it before any build: Python files, no _C."""
    shutil.copytree(os.path.join(ROOT, "wsloss"), folder / "wsloss",
                    ignore=shutil.ignore_patterns("_C.*", "__pycache__"))
    return folder


def test_unbuilt_source_tree_loads_the_installed_package(tmp_path):
    """python -m wsloss.info / wsloss.demo in a checkout's root (its wsloss/ first on sys.path)."""
    checkout = _unbuilt_source_tree(tmp_path)
    done = _python("-c", "import wsloss, wsloss.demo, os; from wsloss import DenseCRFLoss; "
                   "print(os.path.realpath(wsloss.__file__)); print(os.path.realpath(wsloss.demo.__file__))",
                   cwd=checkout)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [os.path.join(INSTALLED, "__init__.py"),
                                   os.path.join(INSTALLED, "demo", "__init__.py")]
    info = _python("-m", "wsloss.info", cwd=checkout)
    assert info.returncode == 0, info.stderr
    assert f" at {INSTALLED}" in info.stdout.splitlines()[0]


def test_unbuilt_source_tree_without_an_install_says_what_to_run(tmp_path):
    checkout = _unbuilt_source_tree(tmp_path)
    done = _python("-S", "-c", "import wsloss", cwd=checkout)  # -S: no site-packages, so no install
    assert done.returncode == 1
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("ImportError: wsloss is imported from its source folder")
    assert "is not built" in message and "pip install ." in message and "circular" not in message


def test_commands_from_the_repository_root():
    info = _python("-m", "wsloss.info", cwd=ROOT)
    assert info.returncode == 0, info.stderr
    assert info.stdout.startswith(f"wsloss {wsloss.__version__} at ")


def test_build_backend_names_torch_when_it_is_missing(tmp_path):
    """pip install . where torch is not installed: the build stops with what to install first."""
    script = ("import sys; sys.modules['torch'] = None; "
              f"sys.path.insert(0, {os.path.join(ROOT, 'build_backend')!r}); import installed_torch")
    done = _python("-c", script, cwd=tmp_path)
    assert done.returncode == 1
    message = done.stderr.strip().splitlines()[-1]
    assert "torch was not found" in message and "pip install torch" in message


def test_build_backend_is_setuptools_with_the_installed_torch(tmp_path):
    script = (f"import sys; sys.path.insert(0, {os.path.join(ROOT, 'build_backend')!r}); import installed_torch; "
              "import setuptools.build_meta as s; assert installed_torch.build_wheel is s.build_wheel; "
              "print(sys.modules['torch'].__file__)")
    done = _python("-c", script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == __import__("torch").__file__


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
            "benchmarks/run.py", "build_backend/installed_torch.py"} <= shipped

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
