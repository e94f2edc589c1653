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


def _find_installed(name: str, here: str) -> Optional[importlib.machinery.ModuleSpec]:
    """The spec of a package `name` with its extension, found by the import system anywhere
    but in the folder `here` (regular installs on sys.path, editable installs' finders)."""
    parent = os.path.dirname(here)
    elsewhere = [entry for entry in sys.path if os.path.realpath(entry or os.curdir) != parent]
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        spec = find_spec(name, elsewhere if finder is importlib.machinery.PathFinder else None)
        locations = spec.submodule_search_locations if spec is not None else None
        if (spec is not None and spec.loader is not None and locations
                and os.path.realpath(locations[0]) != here and _has_extension(locations[0])):
            return spec
    return None


def installed_package(name: str, init_file: str) -> Optional[ModuleType]:
    """None when the package at init_file has its extension; otherwise the installed package of
    the same name, imported and put in sys.modules[name]."""
    here = os.path.dirname(os.path.realpath(init_file))
    if _has_extension(here):
        return None
    spec = _find_installed(name, here)
    if spec is None:
        parent = os.path.dirname(here)
        raise ImportError(
            f"{name} is imported from its source folder {here}, where its compiled extension "
            f"({name}._C) is not built, and no installed {name} was found. Install it from "
            f"{parent}: `pip install .` (or `pip install --no-build-isolation .` against the torch "
            f"already installed, offline), or build it in place for development: "
            f"`pip install --no-build-isolation -e .`",
            name=name,
        )
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader
    assert loader is not None  # _find_installed checked it
    shadowed = sys.modules.get(name)
    sys.modules[name] = module  # the installed package's relative imports resolve through it
    try:
        loader.exec_module(module)
    except BaseException:
        if shadowed is not None:
            sys.modules[name] = shadowed
        raise
    return module
