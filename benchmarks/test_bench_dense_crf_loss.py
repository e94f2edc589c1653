"""pytest-benchmark suite of the canonical DenseCRFLoss workload.

    pytest benchmarks/test_bench_dense_crf_loss.py --benchmark-columns=median,iqr,rounds
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402

import wsloss  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BATCH, CLASSES, SIZE = 8, 21, 512


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(0)
    return {
        "photographs": workloads.photographs(BATCH, SIZE),
        "noise": workloads.noise(BATCH, SIZE, generator),
        "seg": workloads.segmentations(BATCH, CLASSES, SIZE, generator),
    }


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scale_factor", [0.5, 1.0])
@pytest.mark.parametrize("kind", ["photographs", "noise"])
def test_densecrf_forward_backward(benchmark, inputs, kind, scale_factor, device):
    images, seg = inputs[kind].to(device), inputs["seg"].to(device)
    roi = torch.ones(BATCH, SIZE, SIZE, device=device)
    loss_fn = wsloss.DenseCRFLoss(1e-9, 15.0, 100.0, scale_factor)

    def step():
        s = seg.detach().requires_grad_()
        loss_fn(images, s, roi).backward()
        _sync(device)

    benchmark.pedantic(step, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("part", ["build", "filter"])
def test_lattice_parts(benchmark, inputs, part, device):
    small = torch.nn.functional.interpolate(inputs["photographs"], scale_factor=0.5).to(device)
    features = wsloss.bilateral_features(small, 15.0, 50.0)
    lattice = wsloss.PermutohedralLattice(features)
    values = torch.rand(BATCH, CLASSES, *small.shape[2:]).to(device)
    work = (lambda: wsloss.PermutohedralLattice(features)) if part == "build" else (lambda: lattice.filter(values))

    def run():
        work()
        _sync(device)

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)


def test_exact_dense_reference(benchmark):
    images = workloads.photographs(1, 64)
    seg = workloads.segmentations(1, CLASSES, 64, torch.Generator().manual_seed(0))
    roi = torch.ones(1, 64, 64)
    benchmark.pedantic(lambda: wsloss.exact.dense_crf_loss(images, seg, roi, 1.0, 15.0, 12.5), rounds=3)
