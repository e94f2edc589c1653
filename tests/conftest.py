import os

import pytest
import torch

from helpers import requires_cuda


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

