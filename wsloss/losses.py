"""nn.Module losses."""
import torch
from torch import nn

from . import functional

__all__ = ["DenseCRFLoss"]


class DenseCRFLoss(nn.Module):
    """Drop-in replacement for rloss's DenseCRFLoss (Tang et al., ECCV 2018), on CPU and GPU.

    ``DenseCRFLoss(weight, sigma_rgb, sigma_xy, scale_factor)(images, segmentations, ROIs)``
    returns weight * -(1/B) sum_k S~_k^T A S~_k (a 0-dim tensor) with A the permutohedral
    approximation of the bilateral Gaussian kernel; see wsloss.functional.dense_crf_loss.
    gradient="exact" replaces the reference's 2 A S~ by the true (A + A^T) S~.
    """

    def __init__(self, weight: float, sigma_rgb: float, sigma_xy: float, scale_factor: float = 1.0,
                 gradient: str = "reference"):
        super().__init__()
        self.weight = weight
        self.sigma_rgb = sigma_rgb
        self.sigma_xy = sigma_xy
        self.scale_factor = scale_factor
        self.gradient = gradient

    def forward(self, images: torch.Tensor, segmentations: torch.Tensor, ROIs: torch.Tensor) -> torch.Tensor:
        return functional.dense_crf_loss(images, segmentations, ROIs, self.weight, self.sigma_rgb, self.sigma_xy,
                                         self.scale_factor, self.gradient)

    def extra_repr(self) -> str:
        return (f"weight={self.weight}, sigma_rgb={self.sigma_rgb}, sigma_xy={self.sigma_xy}, "
                f"scale_factor={self.scale_factor}, gradient={self.gradient!r}")
