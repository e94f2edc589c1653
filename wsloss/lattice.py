"""Permutohedral lattice filtering (Adams, Baek & Davis, Eurographics 2010).

A lattice built from per-pixel features f_p filters values V as A V ~ c W V, with
W_pq = exp(-|f_p - f_q|^2 / 2) the dense Gaussian kernel, in O(N (d+1) C) time.
Conventions (vertex layout, blur order, scaling) follow Kraehenbuehl & Koltun (NIPS
2011) as in docs/DESIGN.md §1, so rloss loss weights transfer unchanged.
"""
import warnings
from typing import Optional, Sequence, Tuple

import torch

from ._checks import Spacing, check_per_axis, check_positive, check_tensor, refuse_meta
from ._ops import HAS_CUDA_KERNELS, ops
from ._precision import compute_dtype

__all__ = ["PermutohedralLattice", "bilateral_features", "spatial_features"]


def _sigma(sigma: float, device: torch.device) -> torch.Tensor:
    # A 0-dim tensor on the values' device keeps a division by it a true IEEE division on every
    # backend (a Python scalar may become a multiplication by its reciprocal).
    return torch.full((), sigma, dtype=torch.float32, device=device)


def _position_features(images: torch.Tensor, divisors: Sequence[float], extra: int = 0) -> torch.Tensor:
    """Pixel (voxel) indices divided per axis, float32, B x (<axes> + extra) x <spatial>, innermost axis
    first: (x / divisors[-1], y / divisors[-2]) for images, then z / divisors[0] for volumes; `extra`
    channels after them left for the caller to fill (one allocation: volumes are large). The x-first
    order is rloss's for images; a lattice is not invariant to permuted features, so it stays."""
    batch, spatial = images.shape[0], tuple(images.shape[2:])
    features = torch.empty((batch, len(spatial) + extra) + spatial, dtype=torch.float32, device=images.device)
    for channel, axis in enumerate(reversed(range(len(spatial)))):
        coordinate = torch.arange(spatial[axis], dtype=torch.float32, device=images.device)
        coordinate = coordinate / _sigma(divisors[axis], images.device)
        view = [1] * len(spatial)
        view[axis] = spatial[axis]
        features[:, channel].copy_(coordinate.reshape(view))
    return features


def spatial_features(images: torch.Tensor, sigma_xy: float, spacing: Spacing = None) -> torch.Tensor:
    """(x, y) s / sigma_xy per pixel, float32, B x 2 x H x W (x = column); for volumes
    (x, y, z) s / sigma_xy per voxel, B x 3 x D x H x W. s is the physical pixel (voxel) size
    along each axis, ``spacing`` = (sy, sx) or (sz, sy, sx) (default 1), so that sigma_xy is in
    the scan's units.

    `images` (B x C x <spatial>) gives only the batch size, spatial size and device.
    """
    check_tensor("images", images, dims=(4, 5))
    sigma_xy = check_positive("sigma_xy", sigma_xy)
    spacing = check_per_axis("spacing", spacing, images.dim() - 2)
    return _position_features(images, [sigma_xy / s for s in spacing])


def bilateral_features(images: torch.Tensor, sigma_rgb: float, sigma_xy: float,
                       spacing: Spacing = None) -> torch.Tensor:
    """Bilateral (position + colour) features of DESIGN §1, float32, B x (2 + C) x H x W for
    images, B x (3 + C) x D x H x W for volumes.

    f_p = (x / sigma_xy, y / sigma_xy, [z / sigma_xy,] c_1 / sigma_rgb, ..., c_C / sigma_rgb) with
    colours (intensities, any number of channels) in the images' own scale (0..255 for
    rloss-style RGB) and positions in physical units (``spacing``, as spatial_features).
    """
    check_tensor("images", images, dims=(4, 5), real=True)
    sigma_rgb = check_positive("sigma_rgb", sigma_rgb)
    sigma_xy = check_positive("sigma_xy", sigma_xy)
    spacing = check_per_axis("spacing", spacing, images.dim() - 2)
    return _bilateral_features(images, sigma_rgb, [sigma_xy / s for s in spacing])


def _bilateral_features(images: torch.Tensor, sigma_rgb: float, divisors: Sequence[float]) -> torch.Tensor:
    """bilateral_features with the positions divided by `divisors` (one per axis, outermost
    first): the dense losses' downscaled grid divides by sigma_xy * scale_factor / spacing."""
    axes = images.dim() - 2
    features = _position_features(images, divisors, extra=images.shape[1])
    # Divided in place in the features (differentiable as torch.cat was): a fresh temporary's page
    # faults would cost more than the division. Rounded to float32 first, as the reference.
    colours = features[:, axes:].copy_(images)
    colours.div_(_sigma(sigma_rgb, images.device))
    return features


class _Lattice:
    """A built lattice as the tensors lattice_filter takes, and its one filtering, ``apply``.

    ``PermutohedralLattice`` builds one from features; ``_Lattice(*tensors)`` views tensors
    built before (an autograd Function receives and saves them as tensors), so that every
    filtering in wsloss goes through ``apply``. The tensors are lattice_build's, unchanged, so
    ``apply`` skips the op's validation of them (validate=False: no host sync, no extra pass);
    a direct call of ``torch.ops.wsloss.lattice_filter`` validates by default.
    """

    def __init__(self, vertices: torch.Tensor, weights: torch.Tensor, neighbours: torch.Tensor,
                 splat_ptr: torch.Tensor, splat_index: torch.Tensor):
        self.vertices, self.weights, self.neighbours = vertices, weights, neighbours
        self.splat_ptr, self.splat_index = splat_ptr, splat_index
        # lattice_filter_into's scratch: made on the first apply with out, grown by the op to
        # the most channels filtered so far, and kept.
        self._workspace: Optional[torch.Tensor] = None

    @property
    def tensors(self) -> Tuple[torch.Tensor, ...]:
        """What lattice_filter takes: vertices, weights, neighbours, splat_ptr, splat_index."""
        return self.vertices, self.weights, self.neighbours, self.splat_ptr, self.splat_index

    @property
    def num_vertices(self) -> int:
        return self.neighbours.shape[0]

    def apply(self, flat: torch.Tensor, transpose: bool = False, out: Optional[torch.Tensor] = None, *,
              scale_in: Optional[torch.Tensor] = None, scale_out: Optional[torch.Tensor] = None,
              add: Optional[torch.Tensor] = None, softmax_group: int = 0) -> torch.Tensor:
        """A V (transpose: A^T V) for flat values V, B x C x N float32 or float64 (B the lattice's
        batch, N its pixels; no checks beyond the op's): the one low-level filtering.

        scale_out * A (scale_in * V) in the same passes where scales are given (B or 1 x 1 x N or
        1); with out, add + that (add B x C x N) and, softmax_group > 0 (a divisor of C), the
        softmax of each pixel's consecutive groups of that many channels: a whole mean-field
        update (DESIGN §5).

        Without out: a new tensor, differentiable in V and the scales. With out (contiguous, V's
        shape and dtype; not differentiable): written into out, which is returned; the lattice
        keeps the scratch memory from call to call (one call at a time per lattice), so a loop
        allocates nothing.
        """
        if out is None:
            if add is not None or softmax_group:
                raise ValueError("add and softmax_group need out")
            return ops.lattice_filter(*self.tensors, flat, transpose, False, scale_in, scale_out)
        if flat.requires_grad and torch.is_grad_enabled():
            raise ValueError("out: filtering into out is not differentiable and values require grad; pass out=None")
        workspace = self._workspace
        if workspace is None or workspace.dtype != flat.dtype:
            workspace = self._workspace = flat.new_empty(0)
        ops.lattice_filter_into(*self.tensors, flat, transpose, out, workspace, False, scale_in, scale_out, add,
                                softmax_group)
        return out


class PermutohedralLattice(_Lattice):
    """A permutohedral lattice over a batch of feature maps, built once, filtered often.

    features: B x d x H x W, B x d x D x H x W or B x d x N (d = 1..16), any floating dtype (used as
    float32). The lattice is held as plain tensors (``tensors``), so it can be saved
    for backward and reused for every channel, transposed filtering and iteration.
    ``filter`` takes values in the features' layout; ``apply`` is the low-level filtering of
    flat B x C x N values, optionally into a caller's buffer.

    ``splat_csr``: whether the lattice carries the per-vertex lists of its pixels that a CPU
    filtering with fewer images and channels than threads gathers over (and every CUDA one).
    None (default): on CUDA, under torch.compile, and on the CPU when B < torch.get_num_threads();
    else the CPU filtering scatters one image per thread and the lists would cost a pass and
    B N (d+1) int32 for nothing. A lattice without them filters to the same numbers, with fewer threads where it
    would have gathered.
    """

    def __init__(self, features: torch.Tensor, splat_csr: Optional[bool] = None):
        check_tensor("features", features, dims=(3, 4, 5), floating=True)
        refuse_meta("features", features, "the lattice's size depends on the features' values")
        if features.is_cuda and not HAS_CUDA_KERNELS:
            raise RuntimeError(
                "wsloss was built without its CUDA kernels: reinstall it where torch has CUDA and nvcc is "
                "found (pip install --no-build-isolation ., or WSLOSS_CUDA=1), or pass CPU tensors"
            )
        if features.requires_grad and torch.is_grad_enabled():
            warnings.warn("features (or the images they come from) require grad, but the lattice passes no "
                          "gradient to them (as rloss): the losses and filterings are differentiable in the "
                          "segmentations and values only", UserWarning)  # one place: Python says it once
        self.batch, self.dim = features.shape[:2]
        self.spatial_shape = tuple(features.shape[2:])
        flat = features.reshape(self.batch, self.dim, -1).to(torch.float32).contiguous()
        if splat_csr is None:  # compiled: always (the thread count is not traced)
            splat_csr = (torch.compiler.is_compiling() or flat.device.type != "cpu"
                         or self.batch < torch.get_num_threads())
        offsets, vertices, weights, neighbours, splat_ptr, splat_index = ops.lattice_build(flat, bool(splat_csr))
        super().__init__(vertices, weights, neighbours, splat_ptr, splat_index)
        self.offsets = offsets

    def filter(self, values: torch.Tensor, normalize: bool = False, transpose: bool = False) -> torch.Tensor:
        """A V (transpose: A^T V) for values B x C x <features' spatial shape>.

        normalize divides by the same filtering of an all-ones image (A 1, or A^T 1).
        Differentiable in values; float16/bfloat16 are computed in float32.
        """
        check_tensor("values", values, floating=True)
        expected = (self.batch, values.shape[1] if values.dim() > 1 else -1) + self.spatial_shape
        if tuple(values.shape) != expected:
            raise ValueError(
                f"values must be B x C x {' x '.join(map(str, self.spatial_shape))} with B = {self.batch}, "
                f"got shape {tuple(values.shape)}"
            )
        if values.device != self.vertices.device:
            raise ValueError(f"values must be on the lattice's device {self.vertices.device}, got {values.device}")
        flat = values.reshape(self.batch, values.shape[1], -1).to(compute_dtype(values.dtype))
        out = self.apply(flat, transpose)
        if normalize:
            ones = torch.ones_like(flat[:, :1])
            out = out / self.apply(ones, transpose)
        return out.reshape(values.shape).to(values.dtype)
