"""wsloss: weakly-supervised segmentation losses on a permutohedral lattice for PyTorch."""
import sys as _sys

from ._source_tree import installed_package as _installed_package

# Imported from a source checkout with no built extension (python -m wsloss.demo in the
# repository root): the installed wsloss takes this module's place in sys.modules.
_installed = _installed_package(__name__, __file__)
if _installed is not None:
    _sys.modules[__name__] = _installed
else:
    from . import functional, reference
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

__version__ = "0.1.0"

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
    "functional",
    "reference",
]
