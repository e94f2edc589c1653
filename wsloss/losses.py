"""nn.Module losses."""
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from . import functional
from ._precision import compute_dtype
from ._checks import ScaleFactor, Spacing
from .em import ImageLabels, semi_supervised_targets

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
]


class _DenseLoss(nn.Module):
    """A regularizer over the dense bilateral kernel: forward(images, segmentations, ROIs=None),
    images and volumes alike. check_probabilities=False lets deliberate non-probability
    segmentations through; spacing is the physical pixel (voxel) size (see
    wsloss.functional.dense_crf_loss)."""

    needs_images = True

    def __init__(self, weight: float, sigma_rgb: float, sigma_xy: float, scale_factor: ScaleFactor = 1.0,
                 gradient: str = "reference", *, check_probabilities: bool = True, spacing: Spacing = None):
        super().__init__()
        self.weight = weight
        self.sigma_rgb = sigma_rgb
        self.sigma_xy = sigma_xy
        self.scale_factor = scale_factor
        self.gradient = gradient
        self.check_probabilities = check_probabilities
        self.spacing = spacing

    @property
    def _options(self) -> Dict[str, Any]:
        return {"check_probabilities": self.check_probabilities, "spacing": self.spacing}

    def extra_repr(self) -> str:
        return (f"weight={self.weight}, sigma_rgb={self.sigma_rgb}, sigma_xy={self.sigma_xy}, "
                f"scale_factor={self.scale_factor}, gradient={self.gradient!r}"
                + ("" if self.check_probabilities else ", check_probabilities=False")
                + ("" if self.spacing is None else f", spacing={self.spacing}"))


class _PairSumLoss(_DenseLoss):
    """A dense loss summed over pixel pairs: reduction="sum" (rloss's) or "mean" (divided by each
    image's affinity mass r^T A r, so that a weight means the same at any size; see
    wsloss.functional.affinity_mass)."""

    def __init__(self, weight: float, sigma_rgb: float, sigma_xy: float, scale_factor: ScaleFactor = 1.0,
                 gradient: str = "reference", reduction: str = "sum", *, check_probabilities: bool = True,
                 spacing: Spacing = None):
        super().__init__(weight, sigma_rgb, sigma_xy, scale_factor, gradient, check_probabilities=check_probabilities,
                         spacing=spacing)
        self.reduction = reduction

    def extra_repr(self) -> str:
        return super().extra_repr() + f", reduction={self.reduction!r}"


class DenseCRFLoss(_PairSumLoss):
    """Drop-in replacement for rloss's DenseCRFLoss (Tang et al., ECCV 2018), on CPU and GPU.

    ``DenseCRFLoss(weight, sigma_rgb, sigma_xy, scale_factor)(images, segmentations, ROIs)``
    returns weight * -(1/B) sum_k S~_k^T A S~_k (a 0-dim tensor) with A the permutohedral
    approximation of the bilateral Gaussian kernel; see wsloss.functional.dense_crf_loss.
    gradient="exact" replaces the reference's 2 A S~ by the true (A + A^T) S~.
    reduction="mean" divides each image's term by its affinity mass r^T A r: the loss lies in
    [-weight, 0] and a weight keeps its strength when the image size, scale_factor or sigma_xy
    change (rloss's "sum" grows with all three).
    """

    def forward(self, images: torch.Tensor, segmentations: torch.Tensor,
                ROIs: Optional[torch.Tensor] = None) -> torch.Tensor:
        return functional.dense_crf_loss(images, segmentations, ROIs, self.weight, self.sigma_rgb, self.sigma_xy,
                                         self.scale_factor, self.gradient, self.reduction, **self._options)


class NormalizedCutLoss(_DenseLoss):
    """Normalized cut loss (Tang et al., CVPR 2018): weight * (1/B) sum_b sum_k
    S~_k^T A (r - S~_k) / (d^T S~_k), d = A r; see wsloss.functional.normalized_cut_loss."""

    def forward(self, images: torch.Tensor, segmentations: torch.Tensor,
                ROIs: Optional[torch.Tensor] = None) -> torch.Tensor:
        return functional.normalized_cut_loss(images, segmentations, ROIs, self.weight, self.sigma_rgb,
                                              self.sigma_xy, self.scale_factor, self.gradient, **self._options)


class QuadraticCRFLoss(_PairSumLoss):
    """Quadratic (Laplacian) relaxation of the dense Potts CRF (Tang et al., ECCV 2018):
    weight * (1/B) sum_pq A_pq ||S~_p - S~_q||^2; see wsloss.functional.quadratic_crf_loss."""

    def forward(self, images: torch.Tensor, segmentations: torch.Tensor,
                ROIs: Optional[torch.Tensor] = None) -> torch.Tensor:
        return functional.quadratic_crf_loss(images, segmentations, ROIs, self.weight, self.sigma_rgb,
                                             self.sigma_xy, self.scale_factor, self.gradient, self.reduction,
                                             **self._options)


class KernelCutLoss(_PairSumLoss):
    """Kernel cut (Tang et al., ECCV 2018): NormalizedCutLoss(weight) + DenseCRFLoss(crf_weight,
    reduction=reduction) over one shared lattice; see wsloss.functional.kernel_cut_loss."""

    def __init__(self, weight: float, crf_weight: float, sigma_rgb: float, sigma_xy: float,
                 scale_factor: ScaleFactor = 1.0, gradient: str = "reference", reduction: str = "sum", *,
                 check_probabilities: bool = True, spacing: Spacing = None):
        super().__init__(weight, sigma_rgb, sigma_xy, scale_factor, gradient, reduction,
                         check_probabilities=check_probabilities, spacing=spacing)
        self.crf_weight = crf_weight

    def forward(self, images: torch.Tensor, segmentations: torch.Tensor,
                ROIs: Optional[torch.Tensor] = None) -> torch.Tensor:
        return functional.kernel_cut_loss(images, segmentations, ROIs, self.weight, self.crf_weight,
                                          self.sigma_rgb, self.sigma_xy, self.scale_factor, self.gradient,
                                          self.reduction, **self._options)

    def extra_repr(self) -> str:
        return f"crf_weight={self.crf_weight}, " + super().extra_repr()


class GridCRFLoss(nn.Module):
    """Sparse contrast-sensitive Potts CRF on the pixel grid of images (4- or 8-connected) or the
    voxel grid of volumes (6-, 18- or 26-connected) (Boykov & Jolly weights; Tang et al., ECCV
    2018); neighbourhood None is 4 for images and 6 for volumes, spacing the physical pixel
    (voxel) size; see wsloss.functional.grid_crf_loss."""

    needs_images = True

    def __init__(self, weight: float, sigma: float, neighbourhood: Optional[int] = None,
                 relaxation: str = "quadratic", *, spacing: Spacing = None,
                 check_probabilities: bool = True):
        super().__init__()
        self.weight = weight
        self.sigma = sigma
        self.neighbourhood = neighbourhood
        self.relaxation = relaxation
        self.spacing = spacing
        self.check_probabilities = check_probabilities

    def forward(self, images: torch.Tensor, segmentations: torch.Tensor,
                ROIs: Optional[torch.Tensor] = None) -> torch.Tensor:
        return functional.grid_crf_loss(images, segmentations, ROIs, self.weight, self.sigma, self.neighbourhood,
                                        self.relaxation, spacing=self.spacing,
                                        check_probabilities=self.check_probabilities)

    def extra_repr(self) -> str:
        spacing = "" if self.spacing is None else f", spacing={self.spacing}"
        return (f"weight={self.weight}, sigma={self.sigma}, neighbourhood={self.neighbourhood}, "
                f"relaxation={self.relaxation!r}{spacing}")


class EntropyLoss(nn.Module):
    """weight times the mean entropy of the predictions over the ROI (Grandvalet & Bengio,
    NIPS 2005): ``EntropyLoss(weight)(segmentations, ROIs=None)``; see wsloss.functional.entropy_loss."""

    needs_images = False

    def __init__(self, weight: float = 1.0, *, check_probabilities: bool = True):
        super().__init__()
        self.weight = weight
        self.check_probabilities = check_probabilities

    def forward(self, segmentations: torch.Tensor, ROIs: Optional[torch.Tensor] = None) -> torch.Tensor:
        return functional.entropy_loss(segmentations, ROIs, self.weight, check_probabilities=self.check_probabilities)

    def extra_repr(self) -> str:
        return f"weight={self.weight}"


class PartialCrossEntropyLoss(nn.Module):
    """Cross-entropy over labelled (scribble, click) pixels only (Tang et al., CVPR 2018):
    ``PartialCrossEntropyLoss(ignore_index=255)(logits, labels)``; see
    wsloss.functional.partial_cross_entropy."""

    def __init__(self, ignore_index: int = 255):
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return functional.partial_cross_entropy(logits, labels, self.ignore_index)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"


class RegularizedLoss(nn.Module):
    """Partial cross-entropy plus regularizers, Tang et al. (ECCV 2018) eq. (1):
    pCE(logits, seeds) + sum_i lambda_i R_i(softmax(logits)), lambda_i being each
    regularizer's own weight.

    ``RegularizedLoss(densecrf=DenseCRFLoss(2e-9, 15, 100, 0.5), entropy=EntropyLoss(0.1))``,
    then ``loss = criterion(logits, seeds, images, ROIs)``; with ``return_terms=True`` it
    returns ``(loss, terms)``, terms a dict of the detached values by name ("pce" and the
    regularizers' names) for logging. The softmax is computed once for all regularizers.
    """

    def __init__(self, ignore_index: int = 255, **regularizers: nn.Module):
        super().__init__()
        for name, regularizer in regularizers.items():
            if not isinstance(regularizer, nn.Module) or not hasattr(regularizer, "needs_images"):
                raise TypeError(f"regularizer {name!r} must be a wsloss regularizer module, "
                                f"got {type(regularizer).__name__}")
        if "pce" in regularizers:
            raise ValueError("the name 'pce' is the partial cross-entropy's; name the regularizer otherwise")
        self.partial_cross_entropy = PartialCrossEntropyLoss(ignore_index)
        self.regularizers = nn.ModuleDict(regularizers)

    def forward(self, logits: torch.Tensor, seeds: torch.Tensor, images: Optional[torch.Tensor] = None,
                ROIs: Optional[torch.Tensor] = None, return_terms: bool = False
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, torch.Tensor]]]:
        terms = {"pce": self.partial_cross_entropy(logits, seeds)}
        if len(self.regularizers):
            # In float32 for half logits: the regularizers compute in float32 anyway.
            probabilities = torch.softmax(logits, dim=1, dtype=compute_dtype(logits.dtype))
            for name, regularizer in self.regularizers.items():
                if not regularizer.needs_images:
                    terms[name] = regularizer(probabilities, ROIs)
                elif images is None:
                    raise ValueError(f"images are required by the regularizer {name!r}")
                else:
                    terms[name] = regularizer(images, probabilities, ROIs)
        total = sum(terms.values())
        if return_terms:
            return total, {name: value.detach() for name, value in terms.items()}
        return total


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
        # Not F.cross_entropy: this one is float32 under autocast, deterministic on CUDA, 0 (not
        # NaN) when every pixel is ignored, and never reads a mask value outside 0..K-1.
        return functional.partial_cross_entropy(logits, targets, self.ignore_index)

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
