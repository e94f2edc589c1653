"""nn.Module losses."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import functional
from .em import ImageLabels, semi_supervised_targets

__all__ = ["DenseCRFLoss", "EMAdaptLoss", "EMFixedLoss"]


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


class _EStepLoss(nn.Module):
    method = ""

    def __init__(self, ignore_index: int = 255, **options):
        super().__init__()
        self.ignore_index = ignore_index
        self.options = options

    def forward(self, logits: torch.Tensor, labels: ImageLabels, masks: Optional[torch.Tensor] = None,
                strong: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean cross-entropy of logits (B x K x H x W) against the E-step's pseudo-labels.

        labels: image-level labels (B x K bool, or class indices padded with negative values
        or ignore_index). masks and strong: a semi-supervised batch, where images with
        strong[b] use masks[b] (ignore_index pixels left out) instead of pseudo-labels.
        """
        targets = semi_supervised_targets(logits, labels, masks, strong, self.method, self.ignore_index,
                                          **self.options)
        return F.cross_entropy(logits, targets, ignore_index=self.ignore_index)

    def extra_repr(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items() if k != "generator")
        return f"{options}, ignore_index={self.ignore_index}"


class EMAdaptLoss(_EStepLoss):
    """Cross-entropy against EM-Adapt pseudo-labels (Papandreou et al., ICCV 2015): the E-step
    (wsloss.em_adapt) on the network's own logits, then this loss as the M-step.

    ``EMAdaptLoss()(logits, image_labels)`` replaces ``F.cross_entropy(logits, masks)`` in a
    training loop; see wsloss.em_adapt for the parameters.
    """

    method = "em_adapt"

    def __init__(self, fg_portion: float = 0.2, bg_portion: float = 0.4, suppress_absent: bool = True,
                 margin: float = 1e-5, ignore_index: int = 255, generator: Optional[torch.Generator] = None):
        super().__init__(ignore_index, fg_portion=fg_portion, bg_portion=bg_portion,
                         suppress_absent=suppress_absent, margin=margin, generator=generator)


class EMFixedLoss(_EStepLoss):
    """Cross-entropy against EM-Fixed pseudo-labels (Papandreou et al., ICCV 2015); see
    wsloss.em_fixed and EMAdaptLoss."""

    method = "em_fixed"

    def __init__(self, fg_bias: float = 5.0, bg_bias: float = 3.0, suppress_absent: bool = False,
                 ignore_index: int = 255):
        super().__init__(ignore_index, fg_bias=fg_bias, bg_bias=bg_bias, suppress_absent=suppress_absent)
