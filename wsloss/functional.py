"""Functional forms of the wsloss losses (docs/DESIGN.md §2 and §3).

The dense losses share one engine: a permutohedral lattice over the bilateral features,
built once per call, and the filterings A S~ (K channels) and, where needed, d = A r
(one channel), with S~ = S * ROI and r = ROI.
"""
import math
import warnings
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from ._checks import (ROI_RANGE_MESSAGE, ScaleFactor, Spacing, axes_text, check_choice, check_per_axis, check_positive,
                      check_real, check_same_device, check_tensor, on_device_of, refuse_meta, rois_in_range, shape_text)
from ._ops import ops
from ._precision import compute_dtype, full_precision
from .lattice import PermutohedralLattice, _Lattice, _bilateral_features

__all__ = [
    "affinity_mass",
    "dense_crf_loss",
    "entropy_loss",
    "grid_crf_loss",
    "kernel_cut_loss",
    "normalized_cut_loss",
    "partial_cross_entropy",
    "quadratic_crf_loss",
]

GRADIENTS = ("reference", "exact")
REDUCTIONS = ("sum", "mean")
RELAXATIONS = ("quadratic", "bilinear")


class _DenseLossFunction(torch.autograd.Function):
    """(1/B) sum_b sum_k of crf * -S~^T A S~ (DESIGN §2), ncut * S~^T A (r - S~) / (d^T S~) with
    d = A r, and quadratic * sum_pq A_pq r_p r_q (S_p - S_q)^2 = (S~^2)^T (A r + A^T r) - 2 S~^T A S~
    (DESIGN §3), over one built lattice. With per_mass, each image's crf and quadratic terms are
    divided by its affinity mass r^T A r (reduction="mean", DESIGN §8; 0 for an all-zero
    ROI).

    The gradient uses the design's formulas (DESIGN §3) for a symmetric kernel, 2 A S~ for
    (A + A^T) S~, unless exact (one transposed filtering more). A class of zero volume d^T S~ (an
    all-zero ROI) contributes 0 to the normalized cut, with zero gradient.

    The lattice comes as its tensors (PermutohedralLattice.tensors), which backward needs saved,
    and is filtered through a view of them (_Lattice). The per-class sums (row_dot) and the loss
    are accumulated in float64 and the loss returned in the compute dtype.
    """

    @staticmethod
    def forward(ctx, segmentations, rois, scale_factor, terms, exact, per_mass, masking, *lattice_tensors):
        # S at full resolution and the downscaled ROIs come in the compute dtype (_dense_loss
        # casts them). masking (_dense_loss picks it): "copy", S~ = resample(S) * ROI in one pass,
        # the backward's last step its adjoint, one pass that writes each element of the gradient
        # once; at scale 1, "none" (no ROIs given): S~ is S itself, not copied; "filter" (the dense
        # CRF term alone): the filtering masks as it splats and slices, R A (R S), and S~ is never
        # written (S^T R A R S is S~^T A S~; its gradient 2 R A R S needs no ROI after it).
        crf, ncut, quadratic = terms
        lattice = _Lattice(*lattice_tensors)
        batch, classes = segmentations.shape[:2]
        region = rois.reshape(batch, 1, -1)
        if masking == "copy":
            masked = ops.resample_down(segmentations, rois, scale_factor).reshape(batch, classes, -1)
        else:  # S itself: S~ where "none", only ever filtered with the ROI where "filter"
            masked = segmentations.reshape(batch, classes, -1)
        if masking == "filter":
            filtered = lattice.apply(masked, scale_in=region, scale_out=region)
        else:
            filtered = lattice.apply(masked)
        self_affinity = ops.row_dot(masked, filtered)  # S~_k^T A S~_k, [B, K], float64
        pairwise = self_affinity * -crf
        degree = volume = pair_degree = inverse_mass = None
        if ncut or quadratic or per_mass:
            degree = lattice.apply(region)
        if quadratic:  # A is not symmetric: the pairwise sum needs the column sums A^T r too
            pair_degree = degree + lattice.apply(region, transpose=True)
            pairwise = pairwise + (ops.row_dot(masked * masked, pair_degree) - 2 * self_affinity) * quadratic
        if per_mass:
            mass = ops.row_dot(region, degree)  # r^T A r, [B, 1]
            inverse_mass = torch.where(mass > 0, 1 / mass, torch.zeros_like(mass))
            pairwise = pairwise * inverse_mass
        loss = pairwise.sum()
        if ncut:
            raw_volume = ops.row_dot(masked, degree)
            volume = torch.where(raw_volume != 0, raw_volume, torch.ones_like(raw_volume))
            loss = loss + ((raw_volume - self_affinity) / volume).sum() * ncut
        # S~ only where the backward reads it: at scale 1 it is the caller's S, whose in-place
        # changes after the forward would otherwise fail the backward.
        ctx.save_for_backward(masked if exact or quadratic else None, filtered, rois, degree, pair_degree,
                              self_affinity, volume, inverse_mass, *lattice_tensors)
        ctx.terms, ctx.exact, ctx.scale_factor, ctx.masking = terms, exact, scale_factor, masking
        ctx.input_size, ctx.shape = segmentations.shape[2:], (batch, classes) + rois.shape[1:]
        return (loss / batch).to(masked.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        if torch.is_grad_enabled():  # create_graph: the saved A S~ carries no graph, never return zero
            raise RuntimeError("wsloss's dense losses support no double backward (create_graph=True)")
        masked, filtered, rois, degree, pair_degree, self_affinity, volume, inverse_mass, *lattice_tensors = \
            ctx.saved_tensors
        # The float64 sums in the compute dtype, where they scale [B, K, N] tensors.
        self_affinity, volume, inverse_mass = (None if t is None else t.to(filtered.dtype)
                                               for t in (self_affinity, volume, inverse_mass))
        crf, ncut, quadratic = ctx.terms
        batch, classes = filtered.shape[:2]
        step = grad_loss / batch
        if ctx.exact:  # d/dS of S^T A S is (A + A^T) S
            symmetric, twice = filtered + _Lattice(*lattice_tensors).apply(masked, transpose=True), 1
        else:  # 2 A S~, the 2 left to the scale where no other term needs 2 A S~ itself
            symmetric, twice = (filtered * 2, 1) if ncut else (filtered, 2)
        coefficient = -crf - 2 * quadratic
        if inverse_mass is not None:
            inverse_mass = inverse_mass.unsqueeze(2)  # [B, 1, 1] against [B, K, N]
        pair_scale = coefficient if inverse_mass is None else inverse_mass * coefficient
        if ncut:
            # ncut (S^T A S / d^T S * d - 2 A S) / d^T S, divided in this order: for a class whose
            # probabilities are all tiny, d^T S and its square underflow where the quotients do not.
            grad = torch.addcmul(symmetric, (self_affinity / volume).unsqueeze(2), degree, value=-1)
            grad.div_(volume.unsqueeze(2)).mul_(-ncut)
            if inverse_mass is not None:
                grad.addcmul_(symmetric, pair_scale)
            elif coefficient:
                grad.add_(symmetric, alpha=coefficient)
            grad.mul_(step)
        elif not quadratic:  # the dense CRF loss: c_bk A S~ resampled back in one pass
            weights = (pair_scale * twice * step).to(filtered.dtype).reshape(-1, 1).expand(batch, classes).contiguous()
            mask = None if ctx.masking == "filter" else rois  # "filter": R A R S is masked already
            return (ops.resample_down_backward(symmetric.reshape(ctx.shape), mask, weights, ctx.input_size,
                                               ctx.scale_factor),) + (None,) * (6 + len(lattice_tensors))
        else:
            grad = symmetric * (pair_scale * twice * step)
        if quadratic:
            scaled_degree = pair_degree if inverse_mass is None else pair_degree * inverse_mass
            grad.addcmul_(masked, scaled_degree * step, value=2 * quadratic)
        grad = ops.resample_down_backward(grad.reshape(ctx.shape), rois, None, ctx.input_size, ctx.scale_factor)
        return (grad,) + (None,) * (6 + len(lattice_tensors))


def _interpolate(values: torch.Tensor, scale_factor: Tuple[float, ...]) -> torch.Tensor:
    """F.interpolate by one factor per spatial axis, nearest (images and ROIs). Equal factors go
    in as one number, as rloss passes them."""
    return F.interpolate(values, scale_factor=scale_factor[0] if len(set(scale_factor)) == 1 else scale_factor)


def _region(rois: Optional[torch.Tensor], segmentations: torch.Tensor) -> torch.Tensor:
    """The checked ROIs as B x <spatial> in the compute dtype; all ones when None."""
    batch, spatial = segmentations.shape[0], tuple(segmentations.shape[2:])
    dtype = compute_dtype(segmentations.dtype)
    if rois is None:
        return torch.ones((batch,) + spatial, dtype=dtype, device=segmentations.device)
    axes = axes_text(len(spatial))
    check_tensor("ROIs", rois, dims=(len(spatial) + 1, len(spatial) + 2), real=True)
    rois = on_device_of("ROIs", rois, "segmentations", segmentations)
    if rois.dim() == len(spatial) + 2:
        if rois.shape[1] != 1:
            raise ValueError(f"ROIs must be B x {axes} or B x 1 x {axes}, got shape {tuple(rois.shape)}")
        rois = rois[:, 0]
    if tuple(rois.shape) != (batch,) + spatial:
        raise ValueError(f"ROIs must be B x {axes} = {shape_text((batch,) + spatial)} like segmentations, "
                         f"got shape {tuple(rois.shape)}")
    return rois.to(dtype)


PROBABILITY_TOLERANCE = 1e-2  # values in [-tol, 1 + tol]: float16/bfloat16 softmax outputs pass
CLASS_SUM_TOLERANCE = 5e-2
NORMALIZED_LIMIT = 3.0  # colours within +-3 look normalized ([0, 1], [-1, 1], standardized)
SAMPLE_RUNS, SAMPLE_RUN_PIXELS = 16, 64
NOT_PROBABILITIES_MESSAGE = (
    "segmentations must be probabilities (a softmax over the classes: values in [0, 1] summing to at most 1 at "
    "every pixel), got values outside [0, 1] or class sums above 1. Were logits passed (apply softmax "
    "first), or images and segmentations swapped (the call is loss(images, segmentations, ROIs))? For deliberate "
    "other inputs pass check_probabilities=False")
NORMALIZED_IMAGES_MESSAGE = (
    "images look normalized (every sampled value within +-3): sigma_rgb (the grid CRF's sigma) is in the images' "
    "own units, and rloss's settings (sigma_rgb=15) expect colours in 0..255. Pass the unnormalized images or "
    "scale the sigma with them")


def _pixel_sample(values: torch.Tensor) -> torch.Tensor:
    """B x C x <1024 pixels> of B x C x H x W values: 16 runs of 64 consecutive pixels spread
    over the image (all pixels of smaller images). The plausibility checks below read a sample,
    so that they cost nothing next to the loss; runs, not single strided pixels, because those
    would each miss the cache."""
    flat = values.flatten(2)
    pixels = flat.shape[2]
    if pixels <= SAMPLE_RUNS * SAMPLE_RUN_PIXELS:
        return flat
    starts = torch.arange(SAMPLE_RUNS, device=values.device) * ((pixels - SAMPLE_RUN_PIXELS) // (SAMPLE_RUNS - 1))
    return flat.index_select(2, (starts[:, None] + torch.arange(SAMPLE_RUN_PIXELS, device=values.device)).flatten())


def _input_flags(images: Optional[torch.Tensor], segmentations: torch.Tensor, rois: torch.Tensor, rois_given: bool,
                 check_probabilities: bool) -> Optional[List[torch.Tensor]]:
    """Device booleans, read on the host where the call synchronizes anyway (_check_input_flags):
    the ROIs are finite and in [0, 1] (every pixel); the segmentations look like probabilities
    (values in [0, 1], class sums at most 1) and the images do not look normalized (a sample of
    pixels). Non-finite segmentations are left to propagate (DESIGN §6). None where nothing may
    be read: torch.compile, meta tensors."""
    if torch.compiler.is_compiling() or segmentations.device.type == "meta":
        return None
    true = torch.ones((), dtype=torch.bool, device=segmentations.device)
    flags = [rois_in_range(rois) if rois_given else true, true, true.logical_not()]
    if images is not None:
        low, high = torch.aminmax(_pixel_sample(images))
        flags[2] = (low >= -NORMALIZED_LIMIT) & (high <= NORMALIZED_LIMIT)
    if check_probabilities:
        sample = _pixel_sample(segmentations)
        low, high = torch.aminmax(torch.where(torch.isfinite(sample), sample, 0.5))
        probable = (low >= -PROBABILITY_TOLERANCE) & (high <= 1 + PROBABILITY_TOLERANCE)
        # Class sums above 1 only: below 1 are masked pixels or a dropped class (deliberate, and
        # seen in practice); non-finite values propagate instead.
        sums = sample.sum(1)
        probable = probable & (torch.isfinite(sums) & (sums > 1 + CLASS_SUM_TOLERANCE)).any().logical_not()
        flags[1] = probable
    return flags


class _HostFlags(NamedTuple):
    """_input_flags' values on their way to the host: a CPU tensor and, on CUDA, the event
    recorded after the copy into it (pinned memory, queued on the current stream: no sync)."""
    values: torch.Tensor
    copied: Optional[torch.cuda.Event]


def _flags_to_host(flags: Optional[List[torch.Tensor]]) -> Optional[_HostFlags]:
    if flags is None:
        return None
    stacked = torch.stack(flags)
    if stacked.device.type != "cuda":
        return _HostFlags(stacked.cpu(), None)
    values = stacked.to("cpu", non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()
    return _HostFlags(values, copied)


def _check_input_flags(flags: Optional[List[torch.Tensor]]) -> None:
    _check_host_flags(_flags_to_host(flags))


def _check_host_flags(flags: Optional[_HostFlags]) -> None:
    """Raises or warns on _input_flags' values. After a host sync on the stream (the lattice
    build's) the copy is done and reading it costs none; else this waits for it."""
    if flags is None:
        return
    if flags.copied is not None and not flags.copied.query():
        flags.copied.synchronize()
    rois_valid, probable, normalized = flags.values.tolist()
    if not rois_valid:
        raise ValueError(ROI_RANGE_MESSAGE)
    if not probable:
        raise ValueError(NOT_PROBABILITIES_MESSAGE)
    if normalized:
        warnings.warn(NORMALIZED_IMAGES_MESSAGE, UserWarning)  # one place: Python says it once


def _check_image_inputs(images, segmentations, rois) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images and segmentations of one rank: B x C x H x W and B x K x H x W (images), or
    B x C x D x H x W and B x K x D x H x W (volumes; the segmentations' rank decides); the ROIs
    as _region."""
    check_tensor("segmentations", segmentations, dims=(4, 5), floating=True)
    check_tensor("images", images, dims=(4, 5), real=True)
    batch, spatial = segmentations.shape[0], tuple(segmentations.shape[2:])
    expected = f"B x C x {axes_text(len(spatial))} = {batch} x C x {shape_text(spatial)} like segmentations"
    if images.dim() != segmentations.dim():
        raise ValueError(f"images must be {segmentations.dim()}-D like segmentations: {expected}, got shape "
                         f"{tuple(images.shape)}")
    if images.shape[0] != batch or tuple(images.shape[2:]) != spatial:
        raise ValueError(f"images must be {expected}, got shape {tuple(images.shape)}")
    images = on_device_of("images", images, "segmentations", segmentations)
    return images, segmentations, _region(rois, segmentations)


def _check_scale_factor(scale_factor, spatial: Tuple[int, ...]) -> Tuple[float, ...]:
    """One downscale factor in (0, 1] per spatial axis, each leaving at least one pixel."""
    factors = check_per_axis("scale_factor", scale_factor, len(spatial))
    if any(factor > 1.0 for factor in factors):  # an upscale adds nothing to rloss's loss and may exhaust memory
        raise ValueError(f"scale_factor must be in (0, 1], got {scale_factor}")
    if any(int(size * factor) < 1 for size, factor in zip(spatial, factors)):
        raise ValueError(f"scale_factor {scale_factor} shrinks the {shape_text(spatial)} images to nothing")
    return factors


class _DenseInputs(NamedTuple):
    """The checked inputs of a dense loss in the compute dtype; flags as _flags_to_host."""
    images: torch.Tensor
    segmentations: torch.Tensor
    rois: torch.Tensor
    sigma_rgb: float
    sigma_xy: float
    scale_factor: Tuple[float, ...]  # per spatial axis
    spacing: Tuple[float, ...]  # per spatial axis
    flags: Optional[_HostFlags]


def _dense_inputs(images, segmentations, rois, sigma_rgb, sigma_xy, scale_factor, spacing=None,
                  check_probabilities=True) -> _DenseInputs:
    """The checked inputs of a dense loss, cast to the compute dtype, and the flags of the checks
    of their values, read after the lattice build's host sync (_downscaled_lattice)."""
    rois_given = rois is not None
    images, segmentations, rois = _check_image_inputs(images, segmentations, rois)
    for name, value in (("images", images), ("segmentations", segmentations)):
        refuse_meta(name, value, "the lattice's size depends on the images' values")
    sigma_rgb = check_positive("sigma_rgb", sigma_rgb)
    sigma_xy = check_positive("sigma_xy", sigma_xy)
    spatial = tuple(segmentations.shape[2:])
    scale_factor = _check_scale_factor(scale_factor, spatial)
    spacing = check_per_axis("spacing", spacing, len(spatial))
    images = images.to(torch.float32)
    segmentations = segmentations.to(compute_dtype(segmentations.dtype))  # resampled in full precision too
    flags = _flags_to_host(_input_flags(images, segmentations, rois, rois_given, check_probabilities))
    return _DenseInputs(images, segmentations, rois, sigma_rgb, sigma_xy, scale_factor, spacing, flags)


def _downscaled_lattice(inputs: _DenseInputs) -> Tuple[torch.Tensor, PermutohedralLattice]:
    """rloss's resampling by scale_factor (nearest for images and ROIs, bi/trilinear for S) and the
    lattice over the downscaled images' bilateral features (positions in physical units: a
    downscaled pixel spans spacing / scale_factor); then the input flags, read after the build's
    one host sync. Returns the downscaled ROIs and the lattice (S is resampled by the loss itself,
    _DenseLossFunction). Runs under full_precision."""
    images, rois, scale_factor = inputs.images, inputs.rois, inputs.scale_factor
    if any(factor != 1.0 for factor in scale_factor):
        # A non-finite pixel that the resampling drops still poisons the features, so that the
        # build refuses it without a host sync of its own. One reduction: a sum is non-finite
        # where a value is (or where it overflows, from values the build would refuse anyway).
        poison = torch.where(torch.isfinite(images.sum()), 0.0, math.nan)
        images = _interpolate(images, scale_factor) + poison
        rois = _interpolate(rois.unsqueeze(1), scale_factor).squeeze(1)
    divisors = [inputs.sigma_xy * factor / step for factor, step in zip(scale_factor, inputs.spacing)]
    lattice = PermutohedralLattice(_bilateral_features(images, inputs.sigma_rgb, divisors))
    _check_host_flags(inputs.flags)
    return rois, lattice


def _dense_loss(images, segmentations, rois, terms, sigma_rgb, sigma_xy, scale_factor, gradient,
                reduction="sum", check_probabilities=True, spacing=None) -> torch.Tensor:
    inputs = _dense_inputs(images, segmentations, rois, sigma_rgb, sigma_xy, scale_factor, spacing,
                           check_probabilities)
    check_choice("gradient", gradient, GRADIENTS)
    check_choice("reduction", reduction, REDUCTIONS)
    with full_precision(inputs.segmentations.device):
        region, lattice = _downscaled_lattice(inputs)
        masking = "copy"  # see _DenseLossFunction.forward
        if all(factor == 1.0 for factor in inputs.scale_factor):
            _, ncut, quadratic = terms
            if rois is None:
                masking = "none"
            elif not (ncut or quadratic or gradient == "exact"):
                masking = "filter"
        return _DenseLossFunction.apply(inputs.segmentations, region, inputs.scale_factor, terms, gradient == "exact",
                                        reduction == "mean", masking, *lattice.tensors)


def affinity_mass(images: torch.Tensor, rois: Optional[torch.Tensor], sigma_rgb: float, sigma_xy: float,
                  scale_factor: ScaleFactor = 1.0, *, spacing: Spacing = None) -> torch.Tensor:
    """r^T A r per image: the total affinity between the ROI's pixels, by which
    reduction="mean" divides the dense CRF and quadratic losses (B values, float32).

    The rule between the two reductions: weight w with reduction="mean" is weight
    w / affinity_mass(...) with rloss's reduction="sum" on images like these. The mass grows
    about as H W s^4 sigma_xy^2 for a downscale s while sigma_xy s is small against the image.
    Volumes (B x C x D x H x W) and ``spacing`` as dense_crf_loss.
    """
    check_tensor("images", images, dims=(4, 5), real=True)
    batch = images.shape[0]
    ones = torch.ones((batch, 1) + tuple(images.shape[2:]), dtype=torch.float32, device=images.device)
    inputs = _dense_inputs(images, ones, rois, sigma_rgb, sigma_xy, scale_factor, spacing)
    with full_precision(images.device), torch.no_grad():
        rois, lattice = _downscaled_lattice(inputs)
        region = rois.reshape(batch, 1, -1)
        return ops.row_dot(region, lattice.apply(region)).squeeze(1).to(torch.float32)


def dense_crf_loss(
    images: torch.Tensor,
    segmentations: torch.Tensor,
    rois: Optional[torch.Tensor],
    weight: float,
    sigma_rgb: float,
    sigma_xy: float,
    scale_factor: ScaleFactor = 1.0,
    gradient: str = "reference",
    reduction: str = "sum",
    *,
    check_probabilities: bool = True,
    spacing: Spacing = None,
) -> torch.Tensor:
    """Dense CRF regularized loss of Tang et al., "On Regularized Losses for Weakly-supervised
    CNN Segmentation" (ECCV 2018), eq. (6) with the bilateral Gaussian kernel (DESIGN §2).

    images: B x 3 x H x W colours in 0..255; segmentations: B x K x H x W softmax
    probabilities; rois: B x H x W, 1 where a pixel takes part (None: every pixel). Returns
    the scalar weight * -(1/B) sum_b sum_k S~_bk^T A_b S~_bk with S~ = S * ROI, computed
    on the images downscaled by scale_factor. gradient="reference" gives rloss's
    weight * (-2/B) A S~ * ROI; gradient="exact" the true gradient (one more filtering).

    Volumes (DESIGN §10): images B x C x D x H x W (any C: CT intensity, several MRI
    modalities), segmentations B x K x D x H x W, rois B x D x H x W; the features are
    (x, y, z) / sigma_xy and the C channels / sigma_rgb. Any C works for images too.
    ``spacing``, (sy, sx) or (sz, sy, sx), is the physical pixel (voxel) size, so that sigma_xy
    is in the scan's units (default 1 per axis: pixels). scale_factor is one factor or one
    per axis, e.g. (1, 0.5, 0.5) keeps thick slices whole; S is resampled (bi/tri)linearly,
    images and ROIs by nearest.

    reduction="sum" (rloss's) sums over pixel pairs, so the loss and its gradient grow with the
    image size, scale_factor and sigma_xy (see affinity_mass). reduction="mean" divides each
    image's sum by its affinity mass r^T A r: the loss lies in [-weight, 0] (-weight for one
    label everywhere) and a weight keeps its strength across sizes, scales and sigmas.
    The loss is negative by construction; only its changes matter.

    Values are checked in the lattice build's one host sync (DESIGN §6): ROIs finite and in
    [0, 1]; a sample of the segmentations must look like probabilities (values in [0, 1], class
    sums at most 1), which catches logits and swapped arguments (check_probabilities=False lets
    deliberate other inputs through); images that look normalized get a warning, once.
    """
    weight = check_real("weight", weight)
    return _dense_loss(images, segmentations, rois, (weight, 0.0, 0.0), sigma_rgb, sigma_xy, scale_factor, gradient,
                       reduction, check_probabilities, spacing)


def normalized_cut_loss(
    images: torch.Tensor,
    segmentations: torch.Tensor,
    rois: Optional[torch.Tensor],
    weight: float,
    sigma_rgb: float,
    sigma_xy: float,
    scale_factor: ScaleFactor = 1.0,
    gradient: str = "reference",
    *,
    check_probabilities: bool = True,
    spacing: Spacing = None,
) -> torch.Tensor:
    """Normalized cut loss of Tang et al., "Normalized Cut Loss for Weakly-supervised CNN
    Segmentation" (CVPR 2018), eq. (4): weight * (1/B) sum_b sum_k S~_k^T A (r - S~_k) / (d^T S~_k)
    with d = A r, the cut of the graph restricted to the ROI r (DESIGN §3; r = 1 gives
    A (1 - S_k) and d = A 1). Conventions (images or volumes, ROI, scale_factor, spacing) as
    dense_crf_loss.
    gradient="reference": the paper's (S^T A S) d / (d^T S)^2 - 2 A S / (d^T S), exact for a
    symmetric kernel; "exact": A S + A^T S in place of 2 A S (one more filtering).
    A class of zero volume (all-zero ROI) contributes 0.
    """
    weight = check_real("weight", weight)
    return _dense_loss(images, segmentations, rois, (0.0, weight, 0.0), sigma_rgb, sigma_xy, scale_factor, gradient,
                       check_probabilities=check_probabilities, spacing=spacing)


def kernel_cut_loss(
    images: torch.Tensor,
    segmentations: torch.Tensor,
    rois: Optional[torch.Tensor],
    weight: float,
    crf_weight: float,
    sigma_rgb: float,
    sigma_xy: float,
    scale_factor: ScaleFactor = 1.0,
    gradient: str = "reference",
    reduction: str = "sum",
    *,
    check_probabilities: bool = True,
    spacing: Spacing = None,
) -> torch.Tensor:
    """Kernel cut (Tang et al., ECCV 2018, section 3): normalized_cut_loss with weight plus
    dense_crf_loss with crf_weight and reduction (which leaves the normalized cut alone: it is a
    ratio already), both over one lattice (one build, one K-channel filtering)."""
    weight = check_real("weight", weight)
    crf_weight = check_real("crf_weight", crf_weight)
    return _dense_loss(images, segmentations, rois, (crf_weight, weight, 0.0), sigma_rgb, sigma_xy, scale_factor,
                       gradient, reduction, check_probabilities, spacing)


def quadratic_crf_loss(
    images: torch.Tensor,
    segmentations: torch.Tensor,
    rois: Optional[torch.Tensor],
    weight: float,
    sigma_rgb: float,
    sigma_xy: float,
    scale_factor: ScaleFactor = 1.0,
    gradient: str = "reference",
    reduction: str = "sum",
    *,
    check_probabilities: bool = True,
    spacing: Spacing = None,
) -> torch.Tensor:
    """Quadratic (Laplacian) relaxation of the dense Potts CRF (Tang et al., ECCV 2018, eq. 7):
    weight * (1/B) sum_b sum_{p,q in ROI} A_pq ||S_p - S_q||^2, computed as
    sum_k (S~_k^2)^T (A r + A^T r) - 2 S~_k^T A S~_k (DESIGN §3's 2 S^T (D - A) S where A is
    symmetric; the lattice's A is not, and this form stays >= 0). Conventions as dense_crf_loss;
    reduction="mean" divides by r^T A r, giving the affinity-weighted mean of ||S_p - S_q||^2."""
    weight = check_real("weight", weight)
    return _dense_loss(images, segmentations, rois, (0.0, 0.0, weight), sigma_rgb, sigma_xy, scale_factor, gradient,
                       reduction, check_probabilities, spacing)


def partial_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Partial cross-entropy on seeds (Tang et al., CVPR 2018, eq. 2): the mean of
    -log softmax(logits)_p[label_p] over the labelled pixels.

    logits: B x K x ... scores or log-probabilities (log-probabilities give the same value);
    labels: B x ... integer class indices. Pixels labelled ignore_index, or with a label
    outside 0..K-1, are unlabelled. No labelled pixel gives 0 (with zero gradient), not NaN.
    """
    check_tensor("logits", logits, floating=True)
    check_tensor("labels", labels)
    if logits.dim() < 2:
        raise ValueError(f"logits must be B x K x ..., got shape {tuple(logits.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if tuple(labels.shape) != (logits.shape[0],) + tuple(logits.shape[2:]):
        raise ValueError(
            f"labels must be B x {' x '.join(map(str, logits.shape[2:]))} like logits without K, "
            f"got shape {tuple(labels.shape)}"
        )
    check_same_device(logits=logits, labels=labels)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    classes = logits.shape[1]
    labels = labels.long()
    labelled = (labels != ignore_index) & (labels >= 0) & (labels < classes)
    log_probs = F.log_softmax(logits.to(compute_dtype(logits.dtype)), dim=1)
    picked = log_probs.gather(1, torch.where(labelled, labels, 0).unsqueeze(1)).squeeze(1)
    total = -torch.where(labelled, picked, torch.zeros_like(picked)).sum()
    return total / labelled.sum().clamp_min(1)


def _clamped_log(probabilities: torch.Tensor) -> torch.Tensor:
    # log clamped at the dtype's smallest normal: 0 log 0 = 0 and a finite gradient at S = 0.
    return probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log_()


class _EntropyFunction(torch.autograd.Function):
    """sum_p coefficient_p H(S_p), H(S_p) = -sum_k S_pk log S_pk: one K-channel temporary each
    way. The gradient -(log S + 1) coefficient (the clamp's is negligible and dropped) is itself
    differentiable: under create_graph it is recomputed from S, so that double backward (a
    Hessian-vector product, -coefficient / S on the diagonal) is exact, not zero."""

    @staticmethod
    def forward(ctx, probabilities, coefficients):
        logs = _clamped_log(probabilities)
        entropy = -torch.linalg.vecdot(probabilities, logs, dim=1)
        ctx.save_for_backward(probabilities, logs, coefficients)
        return (entropy * coefficients).sum()

    @staticmethod
    def backward(ctx, grad):
        probabilities, logs, coefficients = ctx.saved_tensors
        scale = (coefficients * -grad).unsqueeze(1)
        if torch.is_grad_enabled():  # create_graph: the saved logs carry no graph
            return (_clamped_log(probabilities) + 1) * scale, None
        return logs.add(1).mul_(scale), None


def entropy_loss(segmentations: torch.Tensor, rois: Optional[torch.Tensor] = None, weight: float = 1.0, *,
                 check_probabilities: bool = True) -> torch.Tensor:
    """Entropy regularizer (Grandvalet & Bengio, NIPS 2005): weight times the mean over ROI
    pixels of H(S_p) = -sum_k S_pk log S_pk, with 0 log 0 = 0 and a finite gradient at S = 0.

    segmentations: B x K x H x W probabilities; rois: B x H x W (None: every pixel); or
    volumes, B x K x D x H x W and B x D x H x W.
    An all-zero ROI gives 0. ROI values (finite, in [0, 1]) and, unless check_probabilities is
    False, the segmentations' plausibility as probabilities are checked on the CPU; on other
    devices, where the checks would need a host sync of their own, they are left out (a NaN
    ROI gives a NaN loss). Supports double backward.
    """
    check_tensor("segmentations", segmentations, dims=(4, 5), floating=True)
    weight = check_real("weight", weight)
    region = _region(rois, segmentations)
    if segmentations.device.type == "cpu":
        _check_input_flags(_input_flags(None, segmentations, region, rois is not None, check_probabilities))
    coefficients = region * (weight / region.sum().clamp_min(1))
    return _EntropyFunction.apply(segmentations.to(region.dtype), coefficients)


def _check_contrast_sigma(sigma: float, dtype: torch.dtype) -> None:
    """The grid CRF's exponent factor 1 / (2 sigma^2) must be a normal number of the compute dtype:
    an infinite one turns equal colours' weight exp(0 * inf) into NaN, a zero one makes
    exp(-inf * 0) NaN for colours whose squared difference overflows."""
    info = torch.finfo(dtype)
    low, high = math.sqrt(0.5 / info.max) * (1 + 1e-6), math.sqrt(0.5 / info.tiny) * (1 - 1e-6)
    if not low <= sigma <= high:
        raise ValueError(f"sigma must be in [{low:.2e}, {high:.2e}] for {dtype} inputs "
                         f"(1 / (2 sigma^2) must be a normal {dtype} number), got {sigma}")


# The grid CRF's neighbourhoods per number of spatial axes (images 2, volumes 3), the default first.
GRID_NEIGHBOURHOODS = {2: (4, 8), 3: (6, 18, 26)}


def _grid_neighbourhood(neighbourhood: Optional[int], axes: int) -> int:
    """The neighbourhood of images (axes 2: 4 or 8) or volumes (axes 3: 6, 18 or 26); None is the
    smallest (4, 6), the neighbours that share a face."""
    choices = GRID_NEIGHBOURHOODS[axes]
    if neighbourhood is None:
        return choices[0]
    if isinstance(neighbourhood, bool) or neighbourhood not in choices:
        names = ", ".join(map(str, choices[:-1])) + f" or {choices[-1]}"
        kind = "images (B x K x H x W segmentations)" if axes == 2 else "volumes (B x K x D x H x W segmentations)"
        raise ValueError(f"neighbourhood must be {names} for {kind}, got {neighbourhood!r}")
    return int(neighbourhood)


def grid_crf_loss(
    images: torch.Tensor,
    segmentations: torch.Tensor,
    rois: Optional[torch.Tensor],
    weight: float,
    sigma: float,
    neighbourhood: Optional[int] = None,
    relaxation: str = "quadratic",
    *,
    spacing: Spacing = None,
    check_probabilities: bool = True,
) -> torch.Tensor:
    """Sparse grid CRF loss (Tang et al., ECCV 2018, Table 1; DESIGN §3): weight * (1/B) times the
    sum over the neighbouring pairs p, q of the grid (each pair once, both in the ROI) of
    w_pq ||S_p - S_q||^2 ("quadratic") or w_pq sum_k (S_pk + S_qk)/2 - S_pk S_qk ("bilinear": the
    Potts relaxation sum_k S_pk (1 - S_qk) for probabilities), with the contrast weights of
    Boykov & Jolly (ICCV 2001) w_pq = exp(-||I_p - I_q||^2 / (2 sigma^2)) / dist(p, q), I the
    images in their own scale. One pass over S forward, one backward, the weights computed on
    the fly (C++ and CUDA kernels).

    Images: images B x C x H x W, segmentations B x K x H x W, ROIs B x H x W or B x 1 x H x W,
    neighbourhood 4 or 8. Volumes: images B x C x D x H x W, segmentations B x K x D x H x W,
    ROIs B x D x H x W or B x 1 x D x H x W, neighbourhood 6 (faces), 18 (and edges) or 26 (and
    corners). The segmentations' rank decides; neighbourhood None is 4 for images, 6 for
    volumes. spacing is the physical pixel (voxel) size, (sy, sx) or (sz, sy, sx) or one number
    for every axis (None: 1): dist(p, q) = sqrt((dz sz)^2 + (dy sy)^2 + (dx sx)^2).
    """
    rois_given = rois is not None
    images, segmentations, rois = _check_image_inputs(images, segmentations, rois)
    axes = segmentations.dim() - 2
    weight = check_real("weight", weight)
    sigma = check_positive("sigma", sigma)
    neighbourhood = _grid_neighbourhood(neighbourhood, axes)
    spacing = check_per_axis("spacing", spacing, axes)
    check_choice("relaxation", relaxation, RELAXATIONS)
    dtype = rois.dtype
    _check_contrast_sigma(sigma, dtype)
    images = images.to(dtype)  # checked after the cast: float64 images near 1e300 are inf in float32
    # One host sync for the values of images, ROIs and segmentations (the dense losses' lattice
    # build has one too); torch.compile graphs and meta tensors (shape propagation) skip it.
    flags = _input_flags(images, segmentations, rois, rois_given, check_probabilities)
    if flags is not None:
        images_valid, *flags = torch.stack([torch.isfinite(images).all()] + flags).unbind()
        if not bool(images_valid):
            raise ValueError(f"images must be finite in {dtype}, got NaN or Inf")
        _check_input_flags(flags)
    energy = ops.grid_crf(segmentations.to(dtype), images, rois, sigma, neighbourhood, relaxation == "bilinear",
                          list(spacing))
    return energy.sum() * (weight / segmentations.shape[0])
