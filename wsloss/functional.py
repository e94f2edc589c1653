"""Functional forms of the wsloss losses."""
from typing import Tuple

import torch
import torch.nn.functional as F

from ._checks import check_positive, check_real, check_same_device, check_tensor, compute_dtype
from ._ops import ops
from .lattice import PermutohedralLattice, bilateral_features

__all__ = ["dense_crf_loss"]

GRADIENTS = ("reference", "exact")


class _DenseCRFLossFunction(torch.autograd.Function):
    """-(weight / B) sum_k S~_k^T A S~_k over a built lattice; SPEC section 2."""

    @staticmethod
    def forward(ctx, segmentations, rois, weight, exact, *lattice):
        batch, classes = segmentations.shape[:2]
        masked = (segmentations.to(compute_dtype(segmentations.dtype)) * rois.unsqueeze(1)).reshape(
            batch, classes, -1
        )
        filtered = ops.lattice_filter(*lattice, masked, False)
        loss = torch.dot(masked.reshape(-1), filtered.reshape(-1)) * (-weight / batch)
        ctx.save_for_backward(filtered, rois, *((masked, *lattice) if exact else ()))
        ctx.weight, ctx.exact, ctx.input_dtype = weight, exact, segmentations.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        if torch.is_grad_enabled():  # create_graph: the saved A S~ carries no graph, never return zero
            raise RuntimeError("DenseCRFLoss supports no double backward (create_graph=True)")
        filtered, rois, *rest = ctx.saved_tensors
        batch = filtered.shape[0]
        if ctx.exact:  # d/dS of S^T A S is (A + A^T) S
            masked, *lattice = rest
            both = filtered + ops.lattice_filter(*lattice, masked, True)
            scale = -ctx.weight / batch
        else:  # the rloss reference returns 2 A S: exact only for a symmetric A
            both, scale = filtered, -2.0 * ctx.weight / batch
        grad = (both.reshape(batch, -1, *rois.shape[1:]) * rois.unsqueeze(1)).mul_(grad_loss * scale)
        return (grad.to(ctx.input_dtype), None, None, None) + (None,) * 5


def _check_dense_loss_inputs(images, segmentations, rois) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_tensor("images", images, dims=(4,), real=True)
    check_tensor("segmentations", segmentations, dims=(4,), floating=True)
    check_tensor("ROIs", rois, dims=(3, 4), real=True)
    check_same_device(images=images, segmentations=segmentations, ROIs=rois)
    batch, _, height, width = segmentations.shape
    if rois.dim() == 4:
        if rois.shape[1] != 1:
            raise ValueError(f"ROIs must be B x H x W or B x 1 x H x W, got shape {tuple(rois.shape)}")
        rois = rois[:, 0]
    if images.shape[0] != batch or images.shape[2:] != (height, width):
        raise ValueError(
            f"images must be B x C x H x W = {batch} x C x {height} x {width} like segmentations, "
            f"got shape {tuple(images.shape)}"
        )
    if tuple(rois.shape) != (batch, height, width):
        raise ValueError(f"ROIs must be B x H x W = {batch} x {height} x {width}, got shape {tuple(rois.shape)}")
    return images, segmentations, rois.to(compute_dtype(segmentations.dtype))


def dense_crf_loss(
    images: torch.Tensor,
    segmentations: torch.Tensor,
    rois: torch.Tensor,
    weight: float,
    sigma_rgb: float,
    sigma_xy: float,
    scale_factor: float = 1.0,
    gradient: str = "reference",
) -> torch.Tensor:
    """Dense CRF regularized loss of Tang et al., "On Regularized Losses for Weakly-supervised
    CNN Segmentation" (ECCV 2018), eq. (6) with the bilateral Gaussian kernel (SPEC section 2).

    images: B x 3 x H x W colours in 0..255; segmentations: B x K x H x W softmax
    probabilities; rois: B x H x W, 1 where a pixel takes part. Returns the scalar
    weight * -(1/B) sum_b sum_k S~_bk^T A_b S~_bk with S~ = S * ROI, computed on the
    images downscaled by scale_factor. gradient="reference" gives rloss's
    weight * (-2/B) A S~ * ROI; gradient="exact" the true gradient (one more filtering).
    """
    images, segmentations, rois = _check_dense_loss_inputs(images, segmentations, rois)
    weight = check_real("weight", weight)
    sigma_rgb = check_positive("sigma_rgb", sigma_rgb)
    sigma_xy = check_positive("sigma_xy", sigma_xy)
    scale_factor = check_positive("scale_factor", scale_factor)
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
    images = images.to(torch.float32)
    if scale_factor != 1.0:
        height, width = segmentations.shape[2:]
        if int(height * scale_factor) < 1 or int(width * scale_factor) < 1:
            raise ValueError(
                f"scale_factor {scale_factor} shrinks the {height} x {width} images to nothing"
            )
        # The rloss reference's exact resampling: nearest for images and ROIs, bilinear for S.
        images = F.interpolate(images, scale_factor=scale_factor)
        segmentations = F.interpolate(segmentations, scale_factor=scale_factor, mode="bilinear", align_corners=False)
        rois = F.interpolate(rois.unsqueeze(1), scale_factor=scale_factor).squeeze(1)
    lattice = PermutohedralLattice(bilateral_features(images, sigma_rgb, sigma_xy * scale_factor))
    return _DenseCRFLossFunction.apply(segmentations, rois, weight, gradient == "exact", *lattice.tensors)
