"""wsloss's version: one place, read by the package, by build_config() and by setup.py."""
__version__ = "0.1.0"
