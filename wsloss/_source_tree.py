"""Importing wsloss from a source checkout whose compiled extension is not built.

``python -m wsloss.demo`` run in the repository root puts the root first on sys.path, so the
source folder ``wsloss/`` shadows the installed package, and it has no ``_C``: the installed
package (built from such a checkout by ``pip install .``) is loaded in its place. With neither,
the ImportError says what to run.
"""
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Optional


def _has_extension(folder: str) -> bool:
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return any(name.startswith("_C.") and name.endswith(suffixes) for name in os.listdir(folder))


def installed_package(name: str, init_file: str) -> Optional[ModuleType]:
    """None when the package at init_file has its extension; otherwise the installed package of
    the same name found further down sys.path, imported and put in sys.modules[name]."""
    here = os.path.dirname(os.path.realpath(init_file))
    if _has_extension(here):
        return None
    parent = os.path.dirname(here)
    elsewhere = [entry for entry in sys.path if os.path.realpath(entry or os.curdir) != parent]
    spec = importlib.machinery.PathFinder.find_spec(name, elsewhere)
    locations = spec.submodule_search_locations if spec is not None else None
    if spec is None or spec.loader is None or not locations or not _has_extension(locations[0]):
        raise ImportError(
            f"{name} is imported from its source folder {here}, where its compiled extension "
            f"({name}._C) is not built, and no installed {name} was found on sys.path. Install it from "
            f"{parent}: `pip install .` (or `pip install --no-build-isolation .` against the torch "
            f"already installed, offline), or build it in place for development: "
            f"`pip install --no-build-isolation -e .`",
            name=name,
        )
    module = importlib.util.module_from_spec(spec)
    shadowed = sys.modules.get(name)
    sys.modules[name] = module  # the installed package's relative imports resolve through it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if shadowed is not None:
            sys.modules[name] = shadowed
        raise
    return module
