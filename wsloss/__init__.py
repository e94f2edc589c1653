"""wsloss: weakly-supervised segmentation losses on a permutohedral lattice for PyTorch."""
import importlib as _importlib
import sys as _sys
from types import ModuleType as _ModuleType

from ._source_tree import installed_package as _installed_package

# Imported from a source checkout with no built extension (python -m wsloss.demo in the
# repository root): the installed wsloss takes this module's place in sys.modules.
_installed = _installed_package(__name__, __file__)
if _installed is not None:
    _sys.modules[__name__] = _installed
else:
    # Here, not above: imported before the swap, a checkout's wsloss._version would stay in sys.modules
    # and be the installed package's too.
    from ._version import __version__
    from . import exact, functional
    from ._config import build_config, show_config
    from .crf import DenseCRF, dense_crf
    from .em import bbox_em_fixed, bbox_rect, bbox_seg, em_adapt, em_fixed, semi_supervised_targets
    from .lattice import PermutohedralLattice, bilateral_features, spatial_features
    from .losses import (
        DenseCRFLoss,
        EMAdaptLoss,
        EMFixedLoss,
        EntropyLoss,
        GridCRFLoss,
        KernelCutLoss,
        NormalizedCutLoss,
        PartialCrossEntropyLoss,
        QuadraticCRFLoss,
        RegularizedLoss,
    )

__all__ = [
    "DenseCRF",
    "DenseCRFLoss",
    "EMAdaptLoss",
    "EMFixedLoss",
    "EntropyLoss",
    "GridCRFLoss",
    "KernelCutLoss",
    "NormalizedCutLoss",
    "PartialCrossEntropyLoss",
    "QuadraticCRFLoss",
    "RegularizedLoss",
    "bbox_em_fixed",
    "bbox_rect",
    "bbox_seg",
    "dense_crf",
    "em_adapt",
    "em_fixed",
    "semi_supervised_targets",
    "PermutohedralLattice",
    "bilateral_features",
    "build_config",
    "show_config",
    "spatial_features",
    "exact",
    "functional",
]


def __getattr__(name: str) -> _ModuleType:
    # wsloss.reference, the deprecated name of wsloss.exact, is imported (and warns) only when used.
    if name == "reference":
        return _importlib.import_module(f"{__name__}.reference")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
