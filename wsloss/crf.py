"""Dense CRF mean-field inference (Kraehenbuehl & Koltun, NIPS 2011), docs/DESIGN.md §5.

The fully connected CRF over pixels with a Potts (or given) label compatibility mu and two
Gaussian kernels, appearance k_1 (bilateral: xy / theta_alpha, rgb / theta_beta) and
smoothness k_2 (xy / theta_gamma). Mean field (their Algorithm 1) starts from
Q = softmax(-U) and repeats

    Q_l(p) <- softmax_l( -U_l(p) - sum_l' mu(l, l') sum_m w_m (k_m Q_l')(p) ),

with each k_m a permutohedral-lattice filtering, normalized as pydensecrf normalizes it.
Batched: one lattice per kernel per call, built once and reused by every iteration.
"""
from typing import Callable, List, NamedTuple, Optional, Sequence, Union

import torch
from torch import nn

from ._checks import (Spacing, axes_text, check_choice, check_integer, check_per_axis, check_positive, check_real,
                      check_same_device, check_tensor, refuse_meta, shape_text)
from ._precision import compute_dtype, full_precision
from .lattice import PermutohedralLattice, bilateral_features, spatial_features

__all__ = ["DenseCRF", "dense_crf"]

NORMALIZATIONS = ("symmetric", "before", "after", "none")
KINDS = ("probabilities", "logits", "unary")

Compatibility = Union[None, torch.Tensor, Sequence]


class _Kernel(NamedTuple):
    """One pairwise kernel: its message is post * filter(pre * source) (pre None: no scaling).

    filter(values, out=None, *, scale_in=None, scale_out=None, add=None, softmax_group=0) returns
    add + scale_out * A (scale_in * values) (B x C x N like values; absent parts left out), its
    softmax over the C classes when softmax_group (= C) is given, written into out (values'
    shape and dtype, contiguous) and returned as out when out is given; add and the softmax need
    out. The lattice does it in the filtering's own passes (PermutohedralLattice.apply).
    """

    filter: Callable[..., torch.Tensor]
    pre: Optional[torch.Tensor]
    post: torch.Tensor


def _normalized_kernel(filter_values: Callable[..., torch.Tensor], ones: torch.Tensor, weight: float,
                       normalization: str) -> _Kernel:
    """The kernel's normalization as in pydensecrf's DenseKernel: with n = A 1 (the
    filtered all-ones image), "symmetric" filters n^-1/2 A n^-1/2 Q, "before" A n^-1 Q,
    "after" n^-1 A Q, "none" A Q. The weight is folded into the output scale."""
    if normalization == "none":
        return _Kernel(filter_values, None, ones.new_full((1, 1, 1), weight))
    norm = filter_values(ones).add_(1e-20)
    norm = norm.rsqrt_() if normalization == "symmetric" else norm.reciprocal_()
    if normalization == "before":
        return _Kernel(filter_values, norm, ones.new_full((1, 1, 1), weight))
    return _Kernel(filter_values, norm if normalization == "symmetric" else None, norm * weight)


def mean_field(scores: torch.Tensor, kernels: List[_Kernel], compatibility: Optional[torch.Tensor],
               iterations: int) -> torch.Tensor:
    """Mean-field iterations from scores = -U (B x K x N); returns Q, B x K x N.

    compatibility None is the Potts model; a K x K matrix mu enters as -mu Q, filtered
    (mu acts on labels, the kernels on pixels, so they commute).
    """
    q = torch.softmax(scores, dim=1)
    # Q lies in [0, 1] wherever it is defined, so its sum is finite exactly when every entry is.
    if not torch.compiler.is_compiling() and not bool(torch.isfinite(q.sum())):
        raise ValueError("unary_or_probs must be finite (NaN, +inf, or a pixel whose every score is -inf)")
    if not kernels:
        return q
    if compatibility is not None:  # -mu Q, into its own buffer
        negated, mixed = -compatibility, torch.empty_like(q)
    # Each kernel but the last adds its message to the energy so far, into the other of two
    # buffers; the last adds its own and takes the softmax in the same pass, into the next Q.
    # All reused from iteration to iteration (CPU: fresh pages cost as much as a filtering).
    energies = [torch.empty_like(q) for _ in kernels[1:3]]
    following = torch.empty_like(q)
    for _ in range(iterations):
        # Potts: -U + sum_m w_m k_m Q, pydensecrf's sign convention (its Potts mu is -w I).
        source = q if compatibility is None else torch.matmul(negated, q, out=mixed)
        energy = scores
        for i, kernel in enumerate(kernels):
            last = i == len(kernels) - 1
            energy = kernel.filter(source, out=following if last else energies[i % 2], scale_in=kernel.pre,
                                   scale_out=kernel.post, add=energy, softmax_group=q.shape[1] if last else 0)
        q, following = following, q
    return q


def lattice_kernels(images: torch.Tensor, scores: torch.Tensor, w_bilateral: float, theta_alpha: float,
                    theta_beta: float, w_gaussian: float, theta_gamma: float, normalization: str,
                    spacing: Spacing = None) -> List[_Kernel]:
    """The appearance and smoothness kernels (those of nonzero weight) over built lattices."""
    batch, _, pixels = scores.shape
    kernels = []
    if w_bilateral > 0:
        appearance = PermutohedralLattice(bilateral_features(images, theta_beta, theta_alpha, spacing).flatten(2))

        def bilateral(values: torch.Tensor, out: Optional[torch.Tensor] = None, **parts) -> torch.Tensor:
            return appearance.apply(values, out=out, **parts)

        kernels.append(_normalized_kernel(bilateral, scores.new_ones(batch, 1, pixels), w_bilateral, normalization))
    if w_gaussian > 0:
        # The smoothness features are the same for every image: one lattice, the batch's
        # images stacked as its channels.
        smoothness = PermutohedralLattice(spatial_features(images[:1], theta_gamma, spacing).flatten(2))

        def smooth(values: torch.Tensor, out: Optional[torch.Tensor] = None, scale_in: Optional[torch.Tensor] = None,
                   scale_out: Optional[torch.Tensor] = None, add: Optional[torch.Tensor] = None,
                   softmax_group: int = 0) -> torch.Tensor:
            # The images stacked as channels: each image's classes stay one consecutive group.
            flat = values.reshape(1, -1, pixels)
            return smoothness.apply(flat, out=None if out is None else out.view(flat.shape), scale_in=scale_in,
                                    scale_out=scale_out, add=None if add is None else add.reshape(flat.shape),
                                    softmax_group=softmax_group).view(values.shape)

        kernels.append(_normalized_kernel(smooth, scores.new_ones(1, 1, pixels), w_gaussian, normalization))
    return kernels


def _check_compatibility(compatibility: Compatibility, classes: int, like: torch.Tensor) -> Optional[torch.Tensor]:
    """mu as a symmetric K x K matrix in the compute dtype, or None (Potts)."""
    if compatibility is None:
        return None
    if isinstance(compatibility, torch.Tensor):
        check_same_device(unary_or_probs=like, compatibility=compatibility)
    else:  # a list or NumPy array, as pydensecrf users pass it
        try:
            compatibility = torch.as_tensor(compatibility, device=like.device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"compatibility must be None, a K vector or a K x K matrix, got {err}") from None
    check_tensor("compatibility", compatibility, dims=(1, 2), real=True)
    if compatibility.dtype == torch.bool or tuple(compatibility.shape) not in ((classes,), (classes, classes)):
        raise ValueError(f"compatibility must be a K vector or a K x K matrix of numbers (K = {classes}), got "
                         f"{compatibility.dtype} of shape {tuple(compatibility.shape)}")
    mu = compatibility.to(like.dtype)
    if not bool(torch.isfinite(mu).all()):
        raise ValueError("compatibility must be finite")
    # A vector is a diagonal matrix; a matrix is symmetrized, as pydensecrf does (the
    # mean-field update of sum_{p != q} mu(x_p, x_q) k_pq sees (mu + mu^T) / 2).
    return torch.diag(mu) if mu.dim() == 1 else (mu + mu.T) / 2


def _scores(unary_or_probs: torch.Tensor, kind: str, clip: float) -> torch.Tensor:
    """-U in the compute dtype, B x K x N."""
    dtype = compute_dtype(unary_or_probs.dtype)
    values = unary_or_probs.detach().to(dtype).flatten(2)
    if kind == "probabilities":  # pydensecrf's unary_from_softmax: U = -log(clip(P, clip, 1))
        return values.clamp(clip, 1.0).log_()
    if kind == "unary":
        return -values
    return values  # never written to


@torch.no_grad()
def dense_crf(unary_or_probs: torch.Tensor, images: torch.Tensor, iterations: int = 10, w_bilateral: float = 4.0,
              theta_alpha: float = 67.0, theta_beta: float = 3.0, w_gaussian: float = 3.0, theta_gamma: float = 1.0,
              compatibility: Compatibility = None, normalization: str = "symmetric", kind: str = "probabilities",
              clip: float = 1e-5, *, spacing: Spacing = None) -> torch.Tensor:
    """Dense CRF mean-field inference (Kraehenbuehl & Koltun, NIPS 2011, Algorithm 1), batched.

    unary_or_probs: B x K x H x W, read as ``kind``: "probabilities" (U = -log P, P
    clipped to [clip, 1], pydensecrf's ``unary_from_softmax``), "logits" (U = -logits;
    -inf forbids a label) or "unary" (the energies U themselves). images: B x C x H x W,
    colours in 0..255 (any real dtype). Returns the marginals Q, B x K x H x W, in the
    input's dtype (float16/bfloat16 computed in float32). No gradient.

    The pairwise energy of labels l, l' at pixels p, q is mu(l, l') (w_bilateral
    exp(-|xy_p - xy_q|^2 / 2 theta_alpha^2 - |rgb_p - rgb_q|^2 / 2 theta_beta^2) +
    w_gaussian exp(-|xy_p - xy_q|^2 / 2 theta_gamma^2)), mu = Potts by default, or a K
    vector (diagonal) or K x K matrix (symmetrized). Defaults are DeepLab's. Both lattices
    are built once per call; the Gaussian one once for the whole batch.

    In pydensecrf terms (``d = dcrf.DenseCRF2D(W, H, K)``, same numbers to about 1e-5):
    ``d.setUnaryEnergy(unary_from_softmax(P))`` is kind="probabilities";
    ``d.addPairwiseGaussian(sxy=s, compat=c)`` is theta_gamma=s, w_gaussian=c;
    ``d.addPairwiseBilateral(sxy=s, srgb=r, rgbim=im, compat=c)`` is theta_alpha=s,
    theta_beta=r, w_bilateral=c; a matrix ``compat=M`` on both kernels is compatibility=M
    with both weights 1; ``normalization=dcrf.NORMALIZE_SYMMETRIC`` (its default),
    ``NORMALIZE_BEFORE``, ``NORMALIZE_AFTER``, ``NO_NORMALIZATION`` are "symmetric",
    "before", "after", "none"; ``d.inference(n)`` is iterations=n.

    Volumes (DESIGN §10): unary_or_probs B x K x D x H x W and images B x C x D x H x W (any
    C), the positions (x, y, z); ``spacing`` = (sz, sy, sx) (or (sy, sx) for images) is the
    voxel size, so that theta_alpha and theta_gamma are in the scan's units (default 1: voxels).
    This is SimpleCRF's densecrf3D and MONAI's CRF layer, batched.
    """
    check_tensor("unary_or_probs", unary_or_probs, dims=(4, 5), floating=True)
    check_tensor("images", images, dims=(4, 5), real=True)
    check_same_device(unary_or_probs=unary_or_probs, images=images)
    refuse_meta("unary_or_probs", unary_or_probs, "the lattice's size depends on the images' values")
    batch, classes, spatial = unary_or_probs.shape[0], unary_or_probs.shape[1], tuple(unary_or_probs.shape[2:])
    if images.dim() != unary_or_probs.dim() or images.shape[0] != batch or tuple(images.shape[2:]) != spatial:
        axes = axes_text(len(spatial))
        raise ValueError(f"images must be B x C x {axes} = {batch} x C x {shape_text(spatial)} like "
                         f"unary_or_probs, got shape {tuple(images.shape)}")
    spacing = check_per_axis("spacing", spacing, len(spatial))
    iterations = check_integer("iterations", iterations, 0)
    weights = {}
    for name, value in (("w_bilateral", w_bilateral), ("w_gaussian", w_gaussian)):
        weights[name] = check_real(name, value)
        if weights[name] < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    thetas = {name: check_positive(name, value) for name, value in
              (("theta_alpha", theta_alpha), ("theta_beta", theta_beta), ("theta_gamma", theta_gamma))}
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_choice("kind", kind, KINDS)
    clip = check_positive("clip", clip)
    if clip > 1:
        raise ValueError(f"clip must be in (0, 1], got {clip}")
    scores = _scores(unary_or_probs, kind, clip)
    mu = _check_compatibility(compatibility, classes, scores)

    with full_precision(scores.device):
        kernels = [] if iterations == 0 else lattice_kernels(images, scores, weights["w_bilateral"],
                                                             thetas["theta_alpha"], thetas["theta_beta"],
                                                             weights["w_gaussian"], thetas["theta_gamma"],
                                                             normalization, spacing)
        q = mean_field(scores, kernels, mu, iterations)
    return q.reshape(unary_or_probs.shape).to(unary_or_probs.dtype)


class DenseCRF(nn.Module):
    """Dense CRF mean-field inference as a module: ``DenseCRF(...)(unary_or_probs, images)``.

    The parameters of ``wsloss.dense_crf`` (Kraehenbuehl & Koltun, NIPS 2011), held; for
    example DeepLab's post-processing of a network's softmax output at full resolution.
    """

    def __init__(self, iterations: int = 10, w_bilateral: float = 4.0, theta_alpha: float = 67.0,
                 theta_beta: float = 3.0, w_gaussian: float = 3.0, theta_gamma: float = 1.0,
                 compatibility: Compatibility = None, normalization: str = "symmetric",
                 kind: str = "probabilities", clip: float = 1e-5, *, spacing: Spacing = None):
        super().__init__()
        self.iterations = iterations
        self.w_bilateral, self.theta_alpha, self.theta_beta = w_bilateral, theta_alpha, theta_beta
        self.w_gaussian, self.theta_gamma = w_gaussian, theta_gamma
        self.compatibility = compatibility
        self.normalization, self.kind, self.clip = normalization, kind, clip
        self.spacing = spacing

    def forward(self, unary_or_probs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return dense_crf(unary_or_probs, images, self.iterations, self.w_bilateral, self.theta_alpha,
                         self.theta_beta, self.w_gaussian, self.theta_gamma, self.compatibility,
                         self.normalization, self.kind, self.clip, spacing=self.spacing)

    def extra_repr(self) -> str:
        return (f"iterations={self.iterations}, w_bilateral={self.w_bilateral}, theta_alpha={self.theta_alpha}, "
                f"theta_beta={self.theta_beta}, w_gaussian={self.w_gaussian}, theta_gamma={self.theta_gamma}, "
                f"normalization={self.normalization!r}, kind={self.kind!r}"
                + ("" if self.spacing is None else f", spacing={self.spacing}"))
