"""The CUDA kernels against the CPU kernels (which are proven against docs/DESIGN.md §1 and rloss)."""
import warnings

import pytest
import torch

import wsloss
from helpers import random_photo, requires_cuda
from wsloss import DenseCRFLoss, PermutohedralLattice

pytestmark = requires_cuda


def assert_same_filter(features, values, rtol=1e-5):
    """The CUDA lattice over features is the CPU one, bit for bit, and filters values (both ways)
    as the CPU one does, to rtol of the largest output."""
    cpu = PermutohedralLattice(features)
    gpu = PermutohedralLattice(features.cuda())
    # Same DESIGN §1 arithmetic and the same vertex numbering (order of first corner):
    # the two builds are identical, bit for bit.
    for name in ("offsets", "vertices", "weights", "neighbours", "splat_ptr", "splat_index"):
        assert torch.equal(getattr(cpu, name), getattr(gpu, name).cpu()), name
    for transpose in (False, True):
        expected = cpu.filter(values, transpose=transpose)
        got = gpu.filter(values.cuda(), transpose=transpose).cpu()
        scale = expected.abs().max().clamp_min(1e-30)
        torch.testing.assert_close(got / scale, expected / scale, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("batch", [1, 3, 16])
@pytest.mark.parametrize("d", [2, 3, 5, 8, 16])
@pytest.mark.parametrize("channels", [1, 21, 64])
def test_cuda_lattice_equals_the_cpu_lattice_on_random_features(batch, d, channels, rng):
    n = 301
    features = torch.rand(batch, d, n, generator=rng) * torch.linspace(0.5, 8.0, batch).view(batch, 1, 1)
    values = torch.randn(batch, channels, n, generator=rng)
    assert_same_filter(features, values)


def test_cuda_lattice_equals_the_cpu_lattice_on_odd_sized_photographs(rng):
    images = random_photo(4, 37, 53, rng)
    features = wsloss.bilateral_features(images, 15.0, 10.0)
    assert_same_filter(features, torch.rand(4, 21, 37, 53, generator=rng))


def test_cuda_lattice_equals_the_cpu_lattice_when_every_pixel_is_in_one_simplex(rng):
    features = torch.zeros(2, 5, 1000)
    assert_same_filter(features, torch.rand(2, 3, 1000, generator=rng))


def test_cuda_lattice_equals_the_cpu_lattice_when_nearly_every_corner_is_a_new_vertex(rng):
    features = torch.rand(2, 16, 1000, generator=rng) * 100
    assert_same_filter(features, torch.rand(2, 3, 1000, generator=rng))


@pytest.mark.parametrize("spread", [2.0, 1e4])
def test_cuda_lattice_equals_the_cpu_lattice_with_packed_and_wide_keys(spread, rng):
    """Small coordinate ranges pack each vertex key into 64 bits; a spread of 1e4 needs
    about 18 bits per coordinate (90 for d = 5) and takes the coordinate-wise keys (DESIGN §9)."""
    features = torch.rand(5, 5, 777, generator=rng) * spread
    features[2] += 0.5 * spread  # images of different ranges share one key layout
    assert_same_filter(features, torch.randn(5, 7, 777, generator=rng))


def test_cuda_filter_equals_the_cpu_filter_over_long_splat_segments(rng):
    """Constant regions: vertices with thousands of splat entries, spanning many chunks
    of the balanced splat (DESIGN §9), next to vertices with one entry."""
    features = torch.zeros(3, 5, 6000)
    features[1, :, 3000:] = torch.rand(5, 3000, generator=rng) * 4
    assert_same_filter(features, torch.randn(3, 33, 6000, generator=rng, dtype=torch.float64), rtol=1e-12)
    assert_same_filter(features, torch.randn(3, 64, 6000, generator=rng))


def test_cuda_filter_of_float64_values_equals_the_cpu_filter_to_1e_12(rng):
    features = torch.rand(2, 5, 200, generator=rng) * 3
    assert_same_filter(features, torch.randn(2, 4, 200, generator=rng, dtype=torch.float64), rtol=1e-12)


def test_cuda_dense_crf_loss_and_gradient_equal_the_cpu_ones(rng):
    images = random_photo(3, 48, 61, rng)
    seg = torch.softmax(torch.randn(3, 21, 48, 61, generator=rng) * 3, 1)
    roi = (torch.rand(3, 48, 61, generator=rng) > 0.3).float()
    for scale in (1.0, 0.5):
        for gradient in ("reference", "exact"):
            loss_fn = DenseCRFLoss(1.5, 15.0, 30.0, scale, gradient=gradient)
            s_cpu, s_gpu = seg.clone().requires_grad_(), seg.cuda().requires_grad_()
            l_cpu, l_gpu = loss_fn(images, s_cpu, roi), loss_fn(images.cuda(), s_gpu, roi.cuda())
            l_cpu.backward()
            l_gpu.backward()
            assert l_gpu.device.type == "cuda"
            torch.testing.assert_close(l_gpu.cpu(), l_cpu, rtol=1e-5, atol=0)
            torch.testing.assert_close(s_gpu.grad.cpu(), s_cpu.grad, rtol=1e-5, atol=1e-7)


def test_cpu_images_and_rois_with_cuda_probabilities_give_the_all_cuda_loss(rng):
    """rloss's train_withdensecrfloss.py passes the denormalized images and croppings on the CPU
    with the probabilities on the GPU: the same loss and gradient as with everything on the GPU."""
    images = random_photo(2, 40, 52, rng)
    seg = torch.softmax(torch.randn(2, 21, 40, 52, generator=rng) * 3, 1).cuda()
    croppings = (torch.rand(2, 40, 52, generator=rng) > 0.2).float()
    for loss_fn in (DenseCRFLoss(2e-9, 15.0, 100.0, 0.5), DenseCRFLoss(0.5, 15.0, 30.0, 0.5, reduction="mean"),
                    wsloss.GridCRFLoss(0.5, 15.0)):
        s_mixed, s_gpu = seg.clone().requires_grad_(), seg.clone().requires_grad_()
        mixed = loss_fn(images, s_mixed, croppings)
        on_gpu = loss_fn(images.cuda(), s_gpu, croppings.cuda())
        mixed.backward()
        on_gpu.backward()
        assert mixed.device.type == "cuda"
        assert torch.equal(mixed, on_gpu) and torch.equal(s_mixed.grad, s_gpu.grad)
    entropy = wsloss.EntropyLoss(0.3)
    assert torch.equal(entropy(seg, croppings), entropy(seg, croppings.cuda()))


def test_cuda_lattice_filter_is_bitwise_repeatable_also_on_a_side_stream(rng):
    """No atomics in the filter and a timing-independent build (DESIGN §9): every call is
    bitwise the same (the deterministic mode is the only mode)."""
    images = random_photo(4, 64, 80, rng).cuda()
    features = wsloss.bilateral_features(images, 15.0, 20.0)
    values = torch.rand(4, 21, 64, 80, generator=rng).cuda()
    first = PermutohedralLattice(features).filter(values)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        again = [PermutohedralLattice(features).filter(values, transpose=False) for _ in range(3)]
    stream.synchronize()
    assert all(torch.equal(first, x) for x in again)


def test_cuda_dense_crf_loss_backward_makes_no_host_sync(rng):
    """The backward (resampling adjoint, one filtering, the gradient pass) only queues kernels:
    torch's sync debug mode raises on any synchronizing call in it."""
    images = random_photo(2, 48, 61, rng).cuda()
    seg = torch.softmax(torch.randn(2, 21, 48, 61, generator=rng) * 3, 1).cuda()
    roi = (torch.rand(2, 48, 61, generator=rng) > 0.3).float().cuda()
    for scale in (1.0, 0.5):
        for rois in (roi, None):
            s = seg.clone().requires_grad_()
            loss = DenseCRFLoss(1.5, 15.0, 30.0, scale)(images, s, rois)
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                loss.backward()
            finally:
                torch.cuda.set_sync_debug_mode("default")
            assert torch.isfinite(s.grad).all()


def test_cuda_dense_crf_loss_step_makes_one_host_sync_the_lattice_builds(rng):
    """A whole step (forward and backward) synchronizes once: the build reads its vertex count,
    which sizes its outputs; the input checks' flags reach the host by a copy queued before it
    (pinned memory), read after that sync at no cost."""
    images = random_photo(2, 48, 61, rng).cuda()
    seg = torch.softmax(torch.randn(2, 21, 48, 61, generator=rng) * 3, 1).cuda()
    roi = (torch.rand(2, 48, 61, generator=rng) > 0.3).float().cuda()
    for scale in (1.0, 0.5):
        s = seg.clone().requires_grad_()
        loss_fn = DenseCRFLoss(1.5, 15.0, 30.0, scale)
        loss_fn(images, s, roi).backward()  # warm: the caching allocators hold their memory
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loss_fn(images, s, roi).backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        syncs = [str(w.message) for w in caught if "synchronizing" in str(w.message)]
        assert len(syncs) == 1, syncs
