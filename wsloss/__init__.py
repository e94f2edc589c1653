"""wsloss: weakly-supervised segmentation losses on a permutohedral lattice for PyTorch."""
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
