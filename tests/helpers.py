"""Plain helpers shared by the test files (the fixtures are conftest.py's): test data, the CUDA
marker, and the dense matrices the losses are checked against (docs/DESIGN.md §1)."""
import os

import numpy as np
import pytest
import torch

import wsloss
from wsloss._ops import HAS_CUDA_KERNELS

DATA = os.path.join(os.path.dirname(__file__), "data", "rloss_reference.npz")

CUDA = torch.cuda.is_available() and HAS_CUDA_KERNELS
CUDA_REASON = "CUDA not available" + ("" if not torch.cuda.is_available() else " (wsloss built without CUDA kernels)")
requires_cuda = pytest.mark.skipif(not CUDA, reason=CUDA_REASON)


def rloss_cases():
    data = np.load(DATA)
    names = sorted({key.split(".")[0] for key in data.files})
    return {name: {key.split(".", 1)[1]: data[key] for key in data.files if key.startswith(name + ".")} for name in names}


def random_photo(batch, height, width, generator, channels=3):
    """Piecewise-smooth colour images (blobs plus mild noise), 0..255, like photographs."""
    coarse = torch.rand(batch, channels, max(2, height // 8), max(2, width // 8), generator=generator) * 255
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return (smooth + 4 * torch.randn(batch, channels, height, width, generator=generator)).clamp(0, 255)


def photo_batch(rng, batch=3, classes=4, height=13, width=11, roi_fraction=0.8, dtype=torch.float64):
    """Photographs, smooth random segmentations (softmax over classes) and a random ROI."""
    images = random_photo(batch, height, width, rng)
    seg = torch.softmax(3 * torch.randn(batch, classes, height, width, generator=rng, dtype=dtype), dim=1)
    roi = (torch.rand(batch, height, width, generator=rng) < roi_fraction).to(dtype)
    return images, seg, roi


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


def lattice_matrices(lattice_or_features, transpose=False):
    """A_b (A_b^T with transpose) of each image as a dense B x N x N float64 matrix, by filtering
    the identity: column q is A e_q. Takes a PermutohedralLattice over B x d x N features, or the
    features (B x d x H x W or B x d x N) to build one over; on the lattice's device."""
    lattice = lattice_or_features
    if not isinstance(lattice, wsloss.PermutohedralLattice):
        lattice = wsloss.PermutohedralLattice(lattice_or_features.flatten(2))
    n = lattice.spatial_shape[0]
    eye = torch.eye(n, dtype=torch.float64, device=lattice.vertices.device).expand(lattice.batch, n, n)
    return lattice.filter(eye.contiguous(), transpose=transpose).transpose(1, 2)


def gaussian_matrices(features):
    """W_b of each image as a dense B x N x N float64 matrix on the CPU: the exact Gaussian kernel
    exp(-|f_p - f_q|^2 / 2) of features (B x d x H x W or B x d x N), by filtering the identity."""
    features = features.cpu().flatten(2)
    n = features.shape[2]
    eye = torch.eye(n, dtype=torch.float64).expand(features.shape[0], n, n).contiguous()
    return wsloss.exact.dense_gaussian_filter(features, eye).transpose(1, 2)


def random_scan(batch, depth, height, width, generator, channels=1):
    """Piecewise-smooth volumes (3D blobs plus mild noise), 0..255, like CT or MRI intensities."""
    coarse = torch.rand(batch, channels, max(2, depth // 4), max(2, height // 6), max(2, width // 6),
                        generator=generator) * 255
    smooth = torch.nn.functional.interpolate(coarse, size=(depth, height, width), mode="trilinear",
                                             align_corners=False)
    return (smooth + 4 * torch.randn(batch, channels, depth, height, width, generator=generator)).clamp(0, 255)


def volume_batch(rng, batch=2, classes=3, depth=5, height=7, width=6, channels=1, roi_fraction=0.8,
                 dtype=torch.float64):
    """Scans, smooth random segmentations (softmax over classes) and a random ROI, B x D x H x W."""
    images = random_scan(batch, depth, height, width, rng, channels=channels)
    seg = torch.softmax(3 * torch.randn(batch, classes, depth, height, width, generator=rng, dtype=dtype), dim=1)
    roi = (torch.rand(batch, depth, height, width, generator=rng) < roi_fraction).to(dtype)
    return images, seg, roi
