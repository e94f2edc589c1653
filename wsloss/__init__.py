"""wsloss: weakly-supervised segmentation losses on a permutohedral lattice for PyTorch."""
from . import functional, reference
from .lattice import PermutohedralLattice, bilateral_features, spatial_features
from .losses import DenseCRFLoss

__version__ = "0.1.0"

__all__ = [
    "DenseCRFLoss",
    "PermutohedralLattice",
    "bilateral_features",
    "spatial_features",
    "functional",
    "reference",
]
