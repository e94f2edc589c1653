"""DenseCRFLoss: the rloss reference cases, its gradients, batching and edge cases."""
import pytest
import torch

import wsloss
from helpers import photo_batch, relative, rloss_cases
from wsloss import DenseCRFLoss

CASES = rloss_cases()


def float32_batch(rng, **sizes):
    """photo_batch in float32, 21 x 26 pixels unless given."""
    return photo_batch(rng, **{"height": 21, "width": 26, "dtype": torch.float32, **sizes})


# The rloss reference cases (docs/DESIGN.md §2).

each_reference_case = pytest.mark.parametrize("name", sorted(CASES))


def reference_loss(name, device):
    """The case's segmentations on the device (their grad set by backward), its loss, and the case."""
    case = CASES[name]
    image, roi = (torch.from_numpy(case[k]).to(device) for k in ("image", "roi"))
    seg = torch.from_numpy(case["seg"]).to(device).requires_grad_()
    loss_fn = DenseCRFLoss(float(case["weight"]), float(case["sigma_rgb"]), float(case["sigma_xy"]),
                           float(case["scale_factor"]))
    loss = loss_fn(image, seg, roi)
    loss.backward()
    return seg, loss, case


@each_reference_case
def test_loss_is_a_0_dim_tensor_on_the_segmentations_device(name, device):
    seg, loss, _ = reference_loss(name, device)
    assert loss.shape == () and loss.device == seg.device


@each_reference_case
def test_loss_matches_the_rloss_reference_to_1e_4(name, device):
    _, loss, case = reference_loss(name, device)
    expected_loss = torch.tensor(float(case["loss"]), dtype=torch.float64)
    assert abs(loss.item() - expected_loss.item()) <= 1e-4 * abs(expected_loss.item())


@each_reference_case
def test_gradient_matches_the_rloss_reference_to_1e_4(name, device):
    seg, _, case = reference_loss(name, device)
    assert relative(seg.grad.cpu(), torch.from_numpy(case["grad"])) <= 1e-4


# Gradients (docs/DESIGN.md §2).


@pytest.mark.parametrize("scale_factor", [1.0, 0.5])
def test_exact_gradient_passes_gradcheck(scale_factor, rng, device):
    images, seg, roi = (t.to(device) for t in float32_batch(rng, batch=2, classes=2, height=9, width=11))
    seg = seg.double().requires_grad_()
    loss_fn = DenseCRFLoss(0.7, 15.0, 4.0, scale_factor, gradient="exact")
    assert torch.autograd.gradcheck(lambda s: loss_fn(images, s, roi), (seg,))


@pytest.mark.parametrize("mode", ["exact", "reference"])
@pytest.mark.parametrize("scale_factor", [1.0, 0.5])
def test_gradient_mode_equals_autograd_through_the_filter(scale_factor, mode, rng, device):
    """Exact mode is autograd of -(w/B) S~^T A S~, i.e. (A + A^T) S~; reference mode is 2 A S~."""
    images, seg, roi = (t.to(device) for t in float32_batch(rng))
    weight, sigma_rgb, sigma_xy = 2.0, 15.0, 5.0
    down = dict(scale_factor=scale_factor, mode="bilinear", align_corners=False)
    small_images = torch.nn.functional.interpolate(images, scale_factor=scale_factor)
    small_roi = torch.nn.functional.interpolate(roi[:, None], scale_factor=scale_factor)
    lattice = wsloss.PermutohedralLattice(wsloss.bilateral_features(small_images, sigma_rgb, sigma_xy * scale_factor))

    def by_autograd(s, exact):
        """A surrogate whose autograd gradient is the expected one, and the expected loss."""
        masked = torch.nn.functional.interpolate(s, **down) * small_roi
        if exact:
            surrogate = -(weight / s.shape[0]) * (masked * lattice.filter(masked)).sum()
            return surrogate, surrogate
        surrogate = -(2 * weight / s.shape[0]) * (masked * lattice.filter(masked).detach()).sum()
        return surrogate, surrogate / 2

    s1, s2 = seg.clone().requires_grad_(), seg.clone().requires_grad_()
    loss = DenseCRFLoss(weight, sigma_rgb, sigma_xy, scale_factor, gradient=mode)(images, s1, roi)
    loss.backward()
    surrogate, expected = by_autograd(s2, mode == "exact")
    surrogate.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-4, atol=1e-6)


def test_reference_and_exact_gradients_differ_slightly(rng):
    """DESIGN §2: A is not symmetric, so 2 A S~ is not the true gradient (A + A^T) S~."""
    images, seg, roi = float32_batch(rng, height=40, width=50)
    grads = {}
    for mode in ("reference", "exact"):
        s = seg.clone().requires_grad_()
        DenseCRFLoss(1.0, 15.0, 10.0, 1.0, gradient=mode)(images, s, roi).backward()
        grads[mode] = s.grad
    rel = relative(grads["reference"], grads["exact"])
    print(f"reference vs exact gradient: relative L2 difference {rel:.4f}")
    assert 1e-4 < rel < 0.05


# Batches, sizes and the ROI.


def batch_and_single_losses(rng, device):
    """The loss of a batch of 5 images, each image's own loss, and the segmentations."""
    images, seg, roi = (t.to(device) for t in float32_batch(rng, batch=5))
    seg.requires_grad_()
    loss_fn = DenseCRFLoss(1.0, 15.0, 10.0, 0.5)
    batched = loss_fn(images, seg, roi)
    singles = [loss_fn(images[b : b + 1], seg[b : b + 1], roi[b : b + 1]) for b in range(5)]
    return batched, singles, seg


def test_batch_loss_is_the_mean_of_its_images_losses(rng, device):
    batched, singles, _ = batch_and_single_losses(rng, device)
    torch.testing.assert_close(batched, torch.stack(singles).mean(), rtol=1e-6, atol=1e-6)


def test_batch_gradient_is_each_images_own_gradient_over_the_batch_size(rng, device):
    batched, singles, seg = batch_and_single_losses(rng, device)
    (grad,) = torch.autograd.grad(batched, seg)
    for b, single in enumerate(singles):
        (g,) = torch.autograd.grad(single, seg)
        torch.testing.assert_close(grad[b], g[b] / 5, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("gradient", ["reference", "exact"])
def test_no_rois_at_scale_1_is_an_all_ones_roi_bit_for_bit(gradient, rng, device):
    """Without ROIs at scale 1 the loss filters S itself, not a masked copy: the same bits as an
    all-ones ROI, loss and gradient."""
    images, seg, _ = (t.to(device) for t in float32_batch(rng, batch=3, classes=5))
    loss_fn = DenseCRFLoss(1.0, 15.0, 10.0, 1.0, gradient=gradient)
    results = []
    for rois in (None, torch.ones_like(seg[:, 0])):
        s = seg.clone().requires_grad_()
        loss = loss_fn(images, s, rois)
        (grad,) = torch.autograd.grad(loss, s)
        results.append((loss, grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_a_binary_roi_at_scale_1_gives_the_bits_of_the_masked_segmentations_without_roi(rng, device):
    """With ROIs at scale 1 the filtering masks as it splats and slices (R A (R S), no masked copy
    of S): for a 0/1 ROI R the same bits as the loss of R S without ROIs, and R times its gradient."""
    images, seg, roi = (t.to(device) for t in float32_batch(rng, batch=3, classes=5))
    assert 0 < roi.sum() < roi.numel()
    loss_fn = DenseCRFLoss(1.0, 15.0, 10.0, 1.0)
    s = seg.clone().requires_grad_()
    loss = loss_fn(images, s, roi)
    (grad,) = torch.autograd.grad(loss, s)
    masked = (seg * roi[:, None]).requires_grad_()
    expected = loss_fn(images, masked)
    (expected_grad,) = torch.autograd.grad(expected, masked)
    assert torch.equal(loss, expected) and torch.equal(grad, expected_grad * roi[:, None])


def test_a_fractional_roi_at_scale_1_weighs_each_pixel_as_the_masked_sum(rng, device):
    """-(1/B) sum_k (R S_k)^T A (R S_k) and its gradient -(2/B) R A (R S), from the lattice's own
    filtering of the masked S, in float64 (rounding apart, the same numbers)."""
    images, seg, _ = photo_batch(rng, batch=2, height=17, width=23, dtype=torch.float64)
    images, seg = images.to(device), seg.to(device)
    roi = torch.rand(2, 17, 23, generator=rng, dtype=torch.float64).to(device)
    s = seg.clone().requires_grad_()
    loss = DenseCRFLoss(1.0, 15.0, 10.0, 1.0)(images, s, roi)
    (grad,) = torch.autograd.grad(loss, s)
    lattice = wsloss.PermutohedralLattice(wsloss.bilateral_features(images, 15.0, 10.0))
    masked = (seg * roi[:, None]).flatten(2)
    filtered = lattice.apply(masked)
    torch.testing.assert_close(loss, -(masked * filtered).sum() / 2, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, (-roi[:, None] * filtered.view_as(seg)), rtol=1e-12, atol=1e-15)


def test_segmentations_changed_in_place_after_the_forward_leave_the_gradient_of_the_forwards(rng, device):
    """The reference gradient needs A S, not S: a training loop may reuse S's memory before the
    backward (no ROIs, scale 1: the loss reads S itself)."""
    images, seg, _ = (t.to(device) for t in float32_batch(rng, batch=2, classes=3))
    loss_fn = DenseCRFLoss(1.0, 15.0, 10.0, 1.0)
    s = seg.clone().requires_grad_()
    (expected,) = torch.autograd.grad(loss_fn(images, s), s)
    leaf = seg.clone().requires_grad_()
    probs = leaf * 1.0  # a non-leaf, as a network's softmax output
    loss = loss_fn(images, probs)
    probs.detach().zero_()
    (grad,) = torch.autograd.grad(loss, leaf)
    assert torch.equal(grad, expected)


def test_loss_is_about_c_times_the_exact_dense_loss(rng):
    """The lattice loss approximates c times the exact dense loss (docs/DESIGN.md §1: c ~ 0.43-0.65)."""
    images, seg, roi = float32_batch(rng, batch=2, height=30, width=36)
    approx = DenseCRFLoss(1.0, 15.0, 20.0, 1.0)(images, seg, roi).item()
    exact = wsloss.exact.dense_crf_loss(images, seg, roi, 1.0, 15.0, 20.0).item()
    print(f"lattice / exact dense loss: {approx / exact:.3f}")
    assert 0.3 < approx / exact < 0.9


def loss_of_odd_size(classes, rng, device):
    """The loss of 2 images of 17 x 31 pixels (halved: 8 x 15) after backward, and the segmentations."""
    images, seg, roi = (t.to(device) for t in float32_batch(rng, batch=2, classes=classes, height=17, width=31))
    seg.requires_grad_()
    loss = DenseCRFLoss(1.0, 15.0, 10.0, 0.5)(images, seg, roi)
    loss.backward()
    return loss, seg


@pytest.mark.parametrize("classes", [1, 21, 40])
def test_loss_of_any_class_count_and_odd_size_is_finite_and_negative(classes, rng, device):
    loss, _ = loss_of_odd_size(classes, rng, device)
    assert torch.isfinite(loss) and loss.item() < 0


@pytest.mark.parametrize("classes", [1, 21, 40])
def test_gradient_of_any_class_count_and_odd_size_is_finite_and_of_the_segmentations_shape(classes, rng, device):
    _, seg = loss_of_odd_size(classes, rng, device)
    assert seg.grad.shape == seg.shape and torch.isfinite(seg.grad).all()


def test_all_zero_roi_gives_zero_loss_and_gradient(rng, device):
    """DESIGN §6: zero, never NaN."""
    images, seg, roi = (t.to(device) for t in float32_batch(rng))
    seg.requires_grad_()
    loss = DenseCRFLoss(1.0, 15.0, 10.0, 1.0)(images, seg, torch.zeros_like(roi))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(seg.grad) == 0


# Layouts and dtypes.

LOSS_FN = DenseCRFLoss(1.0, 15.0, 10.0, 1.0)


def integer_valued_batch(rng):
    """float32_batch with whole-number images (so uint8 holds them exactly), and their float32 loss."""
    images, seg, roi = float32_batch(rng)
    images = images.round()
    return images, seg, roi, LOSS_FN(images, seg, roi)


@pytest.mark.parametrize("variant", [
    lambda images, seg, roi: (images.contiguous(memory_format=torch.channels_last),
                              seg.contiguous(memory_format=torch.channels_last), roi),
    lambda images, seg, roi: (images.to(torch.uint8), seg, roi.bool()),
    lambda images, seg, roi: (images, seg, roi[:, None]),
    lambda images, seg, roi: (images.double(), seg, roi),
], ids=["channels-last", "uint8-images-and-bool-roi", "roi-with-a-channel", "float64-images"])
def test_other_layouts_and_input_dtypes_give_the_same_loss(variant, rng):
    images, seg, roi, expected = integer_valued_batch(rng)
    torch.testing.assert_close(LOSS_FN(*variant(images, seg, roi)), expected, rtol=1e-6, atol=1e-6)


def test_half_segmentations_give_a_float32_loss_within_1e_2_of_float32(rng):
    images, seg, roi, expected = integer_valued_batch(rng)
    half = LOSS_FN(images, seg.half().requires_grad_(), roi)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, expected, rtol=1e-2, atol=1e-2)


def test_float64_segmentations_give_a_float64_loss_and_gradient(rng):
    images, seg, roi, _ = integer_valued_batch(rng)
    s64 = seg.double().requires_grad_()
    loss64 = LOSS_FN(images, s64, roi)
    loss64.backward()
    assert loss64.dtype == torch.float64 and s64.grad.dtype == torch.float64


# Compilation.


def test_loss_compiles_fullgraph_to_the_eager_loss_and_gradient(rng, device):
    images, seg, roi = (t.to(device) for t in float32_batch(rng))
    loss_fn = DenseCRFLoss(1.0, 15.0, 10.0, 0.5)
    model = torch.nn.Conv2d(4, 4, 1).to(device)

    def step(s):
        return loss_fn(images, torch.softmax(model(s), 1), roi)

    compiled = torch.compile(step, fullgraph=True)
    s = seg.clone().requires_grad_()
    eager = step(s)
    (g_eager,) = torch.autograd.grad(eager, s)
    out = compiled(s)
    (g_compiled,) = torch.autograd.grad(out, s)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g_compiled, g_eager, rtol=1e-5, atol=1e-6)


# Refused inputs.


def test_images_and_rois_off_the_cpu_and_off_the_segmentations_device_are_refused(rng):
    """Only CPU images and ROIs are moved to the segmentations' device (rloss's scripts pass them
    so); a tensor on another device is an error naming it."""
    images, seg, roi = float32_batch(rng)
    with pytest.raises(ValueError, match=r"images must be on the CPU or on the device of segmentations \(cpu\)"):
        DenseCRFLoss(1.0, 15.0, 5.0)(images.to("meta"), seg, roi)
    with pytest.raises(ValueError, match=r"ROIs must be on the CPU or on the device of segmentations \(cpu\)"):
        DenseCRFLoss(1.0, 15.0, 5.0)(images, seg, roi.to("meta"))


def test_double_backward_is_refused_not_silently_zero(rng):
    images, seg, roi = float32_batch(rng, batch=1, classes=2, height=8, width=9)
    seg = seg.double().requires_grad_()
    loss = DenseCRFLoss(1.0, 15.0, 5.0, 1.0)(images, seg, roi)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, seg, create_graph=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b_rows", ["per class", "one"])
def test_row_dot_sums_the_products_in_float64(dtype, b_rows, device, rng):
    """wsloss::row_dot, the dense losses' reductions: each image's and class's sum of products
    within 1e-12 (relative) of the float64 sum, for odd lengths and B, K > 1."""
    a = torch.rand(3, 22, 40001, generator=rng, dtype=dtype).to(device)
    b = torch.rand(3, 22 if b_rows == "per class" else 1, 40001, generator=rng, dtype=dtype).to(device)
    sums = torch.ops.wsloss.row_dot(a, b)
    assert sums.dtype == torch.float64 and sums.shape == (3, 22)
    torch.testing.assert_close(sums, (a.double() * b.double()).sum(-1), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match=r"row_dot: a must be \[B, K, N\]"):
        torch.ops.wsloss.row_dot(a, b[:, :, 1:])
    with pytest.raises(TypeError, match="row_dot: a and b must both be"):
        torch.ops.wsloss.row_dot(a, b.half())


def test_loss_of_a_large_batch_is_the_float64_sum_of_its_products(device, rng):
    """The loss is accumulated in float64 (the foundation issue's workload size, 8 x 21 x 256 x 256):
    within 1e-6 relative of -sum S~ A S~ / B summed in float64 over the same float32 products;
    a float32 matrix product is 1e-5 to 3e-4 away there."""
    images, segmentations, _ = photo_batch(rng, batch=8, classes=21, height=256, width=256, dtype=torch.float32)
    images, segmentations = images.to(device), segmentations.to(device)
    loss = wsloss.functional.dense_crf_loss(images, segmentations, None, 1.0, 15.0, 50.0)
    lattice = wsloss.PermutohedralLattice(wsloss.bilateral_features(images, 15.0, 50.0))
    filtered = lattice.filter(segmentations)
    expected = -(segmentations.double() * filtered.double()).sum() / 8
    assert loss.dtype == torch.float32
    assert abs(loss.double() / expected - 1).item() < 1e-6
