"""Deprecated name of ``wsloss.exact`` (the exact dense computations), kept for one release."""
import warnings

from .exact import dense_crf, dense_crf_loss, dense_gaussian_filter

__all__ = ["dense_gaussian_filter", "dense_crf_loss", "dense_crf"]

warnings.warn("wsloss.reference is renamed wsloss.exact; the old name goes in the next release", DeprecationWarning,
              stacklevel=2)
