"""wsloss's PEP 517 build backend: setuptools, compiling against the torch that is installed.

The extension must be compiled against the torch it will run with. pip's default isolated build
environment holds only pyproject.toml's build requirements; listing torch there would download a
second torch (several GB for a CUDA build) and compile against it instead. So this backend leaves
torch out of the requirements and, where the isolated environment hides it, appends the
installing interpreter's own site-packages (and its scripts folder, for ninja) to the search
paths, after the build environment's own, so its setuptools still wins. With
``--no-build-isolation`` torch is already importable and nothing changes.
"""
import os
import site
import sys
import sysconfig


def _installed_torch_paths():
    paths = sysconfig.get_paths()
    folders = [paths["platlib"], paths["purelib"], site.getusersitepackages()]
    return [folder for folder in dict.fromkeys(folders) if os.path.isdir(folder)]


def _expose_installed_torch() -> None:
    try:
        import torch  # noqa: F401
        return
    except ImportError:
        pass
    for folder in _installed_torch_paths():
        if folder not in sys.path:
            sys.path.append(folder)
    scripts = sysconfig.get_paths()["scripts"]
    os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + scripts
    try:
        import torch  # noqa: F401,F811
    except ImportError as error:
        raise ImportError(
            f"wsloss is compiled against the torch installed in the Python environment it is installed "
            f"into ({sys.prefix}), and torch was not found there ({error}). Install torch first, then "
            f"wsloss: `pip install torch ninja` (pick a CPU or CUDA build at https://pytorch.org), "
            f"then `pip install .`"
        ) from None


_expose_installed_torch()

from setuptools.build_meta import *  # noqa: E402,F401,F403  (the PEP 517 hooks)
