"""wsloss: weakly-supervised segmentation losses on a permutohedral lattice for PyTorch."""
from . import functional, reference
from .em import bbox_em_fixed, bbox_rect, em_adapt, em_fixed, semi_supervised_targets
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
    "em_adapt",
    "em_fixed",
    "semi_supervised_targets",
    "PermutohedralLattice",
    "bilateral_features",
    "spatial_features",
    "functional",
    "reference",
]
