import os
import sys

import numpy as np
import pytest
import torch

from wsloss._ops import HAS_CUDA_KERNELS

sys.path.insert(0, os.path.dirname(__file__))  # for spec_lattice

DATA = os.path.join(os.path.dirname(__file__), "data", "rloss_reference.npz")


CUDA = torch.cuda.is_available() and HAS_CUDA_KERNELS
CUDA_REASON = "CUDA not available" + ("" if not torch.cuda.is_available() else " (wsloss built without CUDA kernels)")
requires_cuda = pytest.mark.skipif(not CUDA, reason=CUDA_REASON)


def _devices():
    yield "cpu"
    yield pytest.param("cuda", marks=requires_cuda)


@pytest.fixture(params=list(_devices()))
def device(request):
    return request.param


@pytest.fixture
def rng():
    """A fresh generator per test; the seed is printed so a failure can be replayed."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed={seed}")
    return torch.Generator().manual_seed(seed)


def rloss_cases():
    data = np.load(DATA)
    names = sorted({key.split(".")[0] for key in data.files})
    return {name: {key.split(".", 1)[1]: data[key] for key in data.files if key.startswith(name + ".")} for name in names}


def random_photo(batch, height, width, generator, channels=3):
    """Piecewise-smooth colour images (blobs plus mild noise), 0..255, like photographs."""
    coarse = torch.rand(batch, channels, max(2, height // 8), max(2, width // 8), generator=generator) * 255
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return (smooth + 4 * torch.randn(batch, channels, height, width, generator=generator)).clamp(0, 255)
