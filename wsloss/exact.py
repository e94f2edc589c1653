"""Exact dense computations in plain torch (float64), for tests and benchmarks.

O(N^2) time but O(block N) memory: the kernel is formed one block of rows at a time.
"""
import functools
from typing import Optional

import torch
import torch.nn.functional as F

from ._checks import check_per_axis, check_tensor
from .crf import _normalized_kernel, mean_field
from .lattice import bilateral_features, spatial_features

__all__ = ["dense_gaussian_filter", "dense_crf_loss", "dense_crf"]


def dense_gaussian_filter(features: torch.Tensor, values: torch.Tensor, normalize: bool = False,
                          block: int = 1024) -> torch.Tensor:
    """W V with W_pq = exp(-|f_p - f_q|^2 / 2) (diagonal included), in float64.

    features: B x d x <spatial>, values: B x C x <same spatial>; returns B x C x <spatial>.
    normalize divides by W 1.
    """
    check_tensor("features", features, dims=(3, 4, 5), floating=True)
    check_tensor("values", values, dims=(features.dim(),), floating=True)
    batch, dim = features.shape[:2]
    f = features.reshape(batch, dim, -1).double()
    v = values.reshape(batch, values.shape[1], -1).double()
    if normalize:
        v = torch.cat((v, torch.ones_like(v[:, :1])), dim=1)
    out = torch.empty_like(v)
    norms = (f * f).sum(1)
    for start in range(0, f.shape[2], block):
        rows = slice(start, start + block)
        sq = norms[:, rows, None] + norms[:, None, :] - 2 * torch.einsum("bdi,bdj->bij", f[:, :, rows], f)
        kernel = torch.exp(-0.5 * sq.clamp_min(0))
        out[:, :, rows] = torch.einsum("bij,bcj->bci", kernel, v)
    if normalize:
        out = out[:, :-1] / out[:, -1:]
    return out.reshape(values.shape[:2] + features.shape[2:])


def _exact_filter(features: torch.Tensor, values: torch.Tensor, out: Optional[torch.Tensor] = None, *,
                  scale_in: Optional[torch.Tensor] = None, scale_out: Optional[torch.Tensor] = None,
                  add: Optional[torch.Tensor] = None, softmax_group: int = 0) -> torch.Tensor:
    """dense_gaussian_filter(features, values) as a mean-field kernel's filter (crf._Kernel): add +
    scale_out * W (scale_in * values), softmax over the classes (softmax_group > 0: the classes
    themselves here), into out when given."""
    filtered = dense_gaussian_filter(features, values if scale_in is None else values * scale_in)
    if scale_out is not None:
        filtered = filtered * scale_out
    if add is not None:
        filtered = add + filtered
    if softmax_group:
        filtered = torch.softmax(filtered, dim=1)
    return filtered if out is None else out.copy_(filtered)


def dense_crf_loss(images, segmentations, rois, weight, sigma_rgb, sigma_xy, scale_factor=1.0, spacing=None
                   ) -> torch.Tensor:
    """-(weight / B) sum_k S~_k^T W S~_k with the exact bilateral Gaussian W (float64), images or
    volumes; scale_factor one number or one per axis, spacing as wsloss.dense_crf_loss."""
    axes = segmentations.dim() - 2
    scale = check_per_axis("scale_factor", scale_factor, axes)
    if scale != (1.0,) * axes:
        mode = "bilinear" if axes == 2 else "trilinear"
        images = F.interpolate(images.float(), scale_factor=scale)
        segmentations = F.interpolate(segmentations, scale_factor=scale, mode=mode, align_corners=False)
        rois = F.interpolate(rois.unsqueeze(1).to(segmentations.dtype), scale_factor=scale).squeeze(1)
    masked = segmentations.double() * rois.double().unsqueeze(1)
    # A downscaled pixel spans spacing / scale_factor.
    spacing = [step / factor for step, factor in zip(check_per_axis("spacing", spacing, axes), scale)]
    features = bilateral_features(images, sigma_rgb, sigma_xy, spacing)
    return -(weight / masked.shape[0]) * (masked * dense_gaussian_filter(features, masked)).sum()


@torch.no_grad()
def dense_crf(probabilities, images, iterations=10, w_bilateral=4.0, theta_alpha=67.0, theta_beta=3.0, w_gaussian=3.0,
              theta_gamma=1.0, normalization="symmetric", clip=1e-5, spacing=None) -> torch.Tensor:
    """wsloss.dense_crf (Potts) with the exact Gaussian kernels in place of the lattice (float64),
    images or volumes."""
    scores = probabilities.double().flatten(2).clamp(clip, 1).log()
    ones = scores.new_ones(scores.shape[0], 1, scores.shape[2])
    kernels = []
    for weight, features in ((w_bilateral, bilateral_features(images, theta_beta, theta_alpha, spacing)),
                             (w_gaussian, spatial_features(images, theta_gamma, spacing))):
        if weight > 0:
            kernels.append(_normalized_kernel(functools.partial(_exact_filter, features.flatten(2)), ones, weight,
                                              normalization))
    return mean_field(scores, kernels, None, iterations).reshape(probabilities.shape)
