"""The regularized-loss family (docs/DESIGN.md §3): every dense loss against its formula on the dense
matrix A (the lattice's, by filtering the identity, and the exact Gaussian), gradients,
edge cases; the grid CRF against a loop over pairs; partial CE, entropy, the combinator."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import wsloss
from helpers import gaussian_matrices, lattice_matrices, photo_batch, random_photo, relative
from wsloss import functional as WF

DENSE = ("crf", "ncut", "quadratic", "kernel_cut")


def dense_loss(kind, images, seg, roi, sigma_rgb=15.0, sigma_xy=6.0, scale_factor=1.0, gradient="reference",
               weight=0.7, crf_weight=0.3, **reduction):
    if kind == "kernel_cut":
        return WF.kernel_cut_loss(images, seg, roi, weight, crf_weight, sigma_rgb, sigma_xy, scale_factor, gradient,
                                  **reduction)
    function = {"crf": WF.dense_crf_loss, "ncut": WF.normalized_cut_loss, "quadratic": WF.quadratic_crf_loss}[kind]
    return function(images, seg, roi, weight, sigma_rgb, sigma_xy, scale_factor, gradient, **reduction)


def formula(kind, matrices, seg, roi, weight=0.7, crf_weight=0.3):
    """The design's definitions (DESIGN §3), literally, in float64 with a given dense matrix per image."""
    batch, classes = seg.shape[:2]
    s = seg.reshape(batch, classes, -1) * roi.reshape(batch, 1, -1)
    r = roi.reshape(batch, -1)
    total = seg.new_zeros(())
    for b in range(batch):
        a = matrices[b]
        for k in range(classes):
            sk = s[b, k]
            crf = -(sk @ a @ sk)
            ncut_den = sk @ (a @ r[b])
            ncut = (sk @ a @ (r[b] - sk)) / ncut_den if ncut_den != 0 else ncut_den * 0
            pairs = r[b][:, None] * r[b][None, :] * a * (sk[:, None] - sk[None, :]) ** 2
            total = total + {"crf": weight * crf, "ncut": weight * ncut, "quadratic": weight * pairs.sum(),
                             "kernel_cut": weight * ncut + crf_weight * crf}[kind]
    return total / batch


def reference_gradient(kind, matrices, seg, roi, weight=0.7, crf_weight=0.3):
    """The design's gradient formulas (DESIGN §3) for a symmetric kernel, with the given (non-symmetric) A."""
    batch, classes = seg.shape[:2]
    s = seg.reshape(batch, classes, -1) * roi.reshape(batch, 1, -1)
    r = roi.reshape(batch, -1)
    grad = torch.zeros_like(s)
    for b in range(batch):
        a = matrices[b]
        d, d_t = a @ r[b], a.T @ r[b]
        for k in range(classes):
            sk = s[b, k]
            a_s = a @ sk
            crf = -2 * a_s
            den = sk @ d
            ncut = (sk @ a_s) * d / den**2 - 2 * a_s / den if den != 0 else 0 * d
            quadratic = 2 * sk * (d + d_t) - 4 * a_s
            grad[b, k] = {"crf": weight * crf, "ncut": weight * ncut, "quadratic": weight * quadratic,
                          "kernel_cut": weight * ncut + crf_weight * crf}[kind]
    return (grad * r[:, None]).reshape(seg.shape) / batch


def batch_and_lattice_matrices(rng, device):
    images, seg, roi = (t.to(device) for t in photo_batch(rng))
    return images, seg, roi, lattice_matrices(wsloss.bilateral_features(images, 15.0, 6.0))


@pytest.mark.parametrize("kind", DENSE)
def test_value_equals_the_formula_given_the_lattice_matrix(kind, rng, device):
    """Each dense loss is its DESIGN §3 definition evaluated on the lattice's dense matrix."""
    images, seg, roi, matrices = batch_and_lattice_matrices(rng, device)
    loss = dense_loss(kind, images, seg, roi)
    expected = formula(kind, matrices, seg, roi)
    assert abs(loss.item() - expected.item()) <= 1e-10 * abs(expected.item())


@pytest.mark.parametrize("kind", DENSE)
def test_reference_gradient_equals_the_design_formula_given_the_lattice_matrix(kind, rng, device):
    """gradient="reference" is DESIGN §3's gradient formula (written for a symmetric kernel)
    evaluated on the lattice's non-symmetric matrix."""
    images, seg, roi, matrices = batch_and_lattice_matrices(rng, device)
    seg_loss = seg.clone().requires_grad_()
    dense_loss(kind, images, seg_loss, roi).backward()
    assert relative(seg_loss.grad, reference_gradient(kind, matrices, seg, roi)) <= 1e-10


@pytest.mark.parametrize("kind", DENSE)
def test_exact_gradient_is_autograd_through_the_formula_given_the_lattice_matrix(kind, rng, device):
    images, seg, roi, matrices = batch_and_lattice_matrices(rng, device)
    seg_dense = seg.clone().requires_grad_()
    formula(kind, matrices, seg_dense, roi).backward()
    seg_exact = seg.clone().requires_grad_()
    dense_loss(kind, images, seg_exact, roi, gradient="exact").backward()
    assert relative(seg_exact.grad, seg_dense.grad) <= 1e-10


def test_affinity_mass_is_the_roi_sum_of_the_lattice_matrix(rng, device):
    """affinity_mass is m_b = r_b^T A_b r_b (DESIGN §8), one float32 value per image."""
    images, _, roi = (t.to(device) for t in photo_batch(rng))
    matrices = lattice_matrices(wsloss.bilateral_features(images, 15.0, 6.0))
    expected = torch.einsum("bp,bpq,bq->b", roi.flatten(1), matrices, roi.flatten(1))
    mass = WF.affinity_mass(images, roi, 15.0, 6.0)
    assert mass.shape == (3,) and mass.dtype == torch.float32
    torch.testing.assert_close(mass.double(), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("kind", ("crf", "quadratic", "kernel_cut"))
@pytest.mark.parametrize("gradient", ("reference", "exact"))
def test_mean_reduction_divides_each_image_by_its_affinity_mass(kind, gradient, rng, device):
    """reduction="mean" is the mean over images of each image's "sum" loss over r^T A r (for the
    kernel cut, of its CRF term only), with the same gradient; an all-zero ROI image gives 0."""
    images, seg, roi = (t.to(device) for t in photo_batch(rng))
    roi[2] = 0
    matrices = lattice_matrices(wsloss.bilateral_features(images, 15.0, 6.0))
    mass = torch.einsum("bp,bpq,bq->b", roi.flatten(1), matrices, roi.flatten(1))
    seg_mean, seg_sum = seg.clone().requires_grad_(), seg.clone().requires_grad_()
    loss = dense_loss(kind, images, seg_mean, roi, gradient=gradient, reduction="mean")
    loss.backward()
    expected = seg.new_zeros(())
    for b in range(2):
        one = (images[b:b + 1], seg_sum[b:b + 1], roi[b:b + 1])
        if kind == "kernel_cut":
            per_image = (dense_loss("ncut", *one, gradient=gradient)
                         + dense_loss("crf", *one, gradient=gradient, weight=0.3) / mass[b])
        else:
            per_image = dense_loss(kind, *one, gradient=gradient) / mass[b]
        expected = expected + per_image / 3
    expected.backward()
    assert abs(loss.item() - expected.item()) <= 1e-10 * abs(expected.item())
    assert relative(seg_mean.grad, seg_sum.grad) <= 1e-10
    assert seg_mean.grad[2].abs().max() == 0


def test_mean_reduction_is_minus_weight_for_one_label_everywhere(rng, device):
    images, seg, roi = (t.to(device) for t in photo_batch(rng))
    constant = torch.zeros_like(seg)
    constant[:, 2] = 1
    loss = WF.dense_crf_loss(images, constant, roi, 0.7, 15.0, 6.0, reduction="mean")
    assert loss.item() == pytest.approx(-0.7, rel=1e-12)


def test_mean_reduction_of_probabilities_lies_between_minus_weight_and_zero(rng, device):
    """DESIGN §8: sum_k S~_pk S~_qk <= r_p r_q and A >= 0 bound the "mean" CRF loss by [-weight, 0]."""
    images, seg, roi = (t.to(device) for t in photo_batch(rng))
    assert -0.7 <= WF.dense_crf_loss(images, seg, roi, 0.7, 15.0, 6.0, reduction="mean").item() < 0


def _scene(size, rng_seed=0):
    """One smooth photograph-like scene and softmax map at size x size, area-resampled from 256."""
    generator = torch.Generator().manual_seed(rng_seed)
    images = random_photo(1, 256, 256, generator)
    logits = F.interpolate(3 * torch.randn(1, 4, 8, 8, generator=generator), size=(256, 256), mode="bilinear",
                           align_corners=False)
    return F.interpolate(images, size=(size, size), mode="area"), torch.softmax(
        F.interpolate(logits, size=(size, size), mode="area"), 1)


def test_mean_reduction_keeps_its_strength_across_size_scale_and_sigma():
    """The same scene at 64 and 128 pixels, downscaled or not, with sigma_xy in its pixels: the
    "mean" loss and its gradient (norm times sqrt(H W), per-pixel terms being O(1 / (H W))) stay
    put where the "sum" ones change by one to two orders of magnitude."""
    settings = [(64, 1.0, 4.0), (128, 1.0, 8.0), (128, 0.5, 8.0), (128, 0.5, 16.0)]
    values = {"sum": [], "mean": []}
    strengths = {"sum": [], "mean": []}
    for size, scale, sigma_xy in settings:
        images, seg = _scene(size)
        for reduction in values:
            seg_grad = seg.clone().requires_grad_()
            loss = wsloss.DenseCRFLoss(1.0, 15.0, sigma_xy, scale, reduction=reduction)(images, seg_grad)
            loss.backward()
            values[reduction].append(loss.item())
            strengths[reduction].append(seg_grad.grad.norm().item() * size)
    spread = lambda xs: max(map(abs, xs)) / min(map(abs, xs))  # noqa: E731
    assert spread(values["mean"]) < 1.5 and spread(strengths["mean"]) < 1.5, (values, strengths)
    assert spread(values["sum"]) > 10 and spread(strengths["sum"]) > 10, (values, strengths)


def test_an_unknown_reduction_is_refused(rng):
    images, seg, roi = photo_batch(rng)
    with pytest.raises(ValueError, match="reduction"):
        WF.dense_crf_loss(images, seg, roi, 1.0, 15.0, 6.0, reduction="none")
    with pytest.raises(ValueError, match="reduction"):
        wsloss.QuadraticCRFLoss(1.0, 15.0, 6.0, reduction="batchmean")(images, seg, roi)


@pytest.mark.parametrize("kind", DENSE)
def test_reference_gradient_is_autograd_for_a_symmetric_kernel(kind, rng):
    """With the exact Gaussian W (symmetric), the design's gradient formulas (DESIGN §3) are autograd's."""
    images, seg, roi = photo_batch(rng, batch=2, height=7, width=9)
    matrices = gaussian_matrices(wsloss.bilateral_features(images, 15.0, 6.0))
    seg = seg.requires_grad_()
    formula(kind, matrices, seg, roi).backward()
    assert relative(reference_gradient(kind, matrices, seg.detach(), roi), seg.grad) <= 1e-12


def test_normalized_cut_is_within_2_percent_of_the_exact_gaussian_one(rng):
    """The normalized cut is invariant to the kernel's scale c, so the lattice's value is
    directly comparable with the exact Gaussian's (measured: within 0.5% on 16x16 and 24x24)."""
    images, seg, roi = photo_batch(rng, batch=4, height=24, width=24, roi_fraction=1.0)
    for sigma_xy in (3.0, 10.0):
        lattice = dense_loss("ncut", images, seg, roi, sigma_xy=sigma_xy).item()
        exact = formula("ncut", gaussian_matrices(wsloss.bilateral_features(images, 15.0, sigma_xy)), seg, roi).item()
        assert abs(lattice - exact) <= 0.02 * abs(exact), (sigma_xy, lattice, exact)


@pytest.mark.parametrize("kind", DENSE)
@pytest.mark.parametrize("scale_factor", [1.0, 0.5])
def test_exact_gradient_passes_gradcheck(kind, scale_factor, rng, device):
    images, seg, roi = (t.to(device) for t in photo_batch(rng, batch=2, classes=3, height=9, width=8))
    seg = seg.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda s: dense_loss(kind, images, s, roi, scale_factor=scale_factor, gradient="exact"), (seg,))


@pytest.mark.parametrize("kind", DENSE)
def test_downscaled_equals_the_formula_on_downscaled_inputs(kind, rng, device):
    images, seg, roi = (t.to(device) for t in photo_batch(rng, height=20, width=17))
    loss = dense_loss(kind, images, seg, roi, sigma_xy=12.0, scale_factor=0.5)
    small_images = F.interpolate(images, scale_factor=0.5)
    small_seg = F.interpolate(seg, scale_factor=0.5, mode="bilinear", align_corners=False)
    small_roi = F.interpolate(roi[:, None], scale_factor=0.5)[:, 0]
    expected = formula(kind, lattice_matrices(wsloss.bilateral_features(small_images, 15.0, 6.0)), small_seg, small_roi)
    assert abs(loss.item() - expected.item()) <= 1e-10 * abs(expected.item())


@pytest.mark.parametrize("kind", DENSE)
def test_zero_roi_gives_zero_loss_and_gradient(kind, rng, device):
    images, seg, roi = (t.to(device) for t in photo_batch(rng, classes=3))
    zero = torch.zeros_like(roi)
    s = seg.clone().requires_grad_()
    loss = dense_loss(kind, images, s, zero, gradient="exact")
    loss.backward()
    assert loss.item() == 0 and torch.all(s.grad == 0)


@pytest.mark.parametrize("kind", DENSE)
def test_a_class_without_mass_gives_a_finite_loss_and_gradient_equal_to_the_formula(kind, rng, device):
    """A class with no mass anywhere: finite value and gradient; ncut counts it 0."""
    images, seg, roi = (t.to(device) for t in photo_batch(rng, classes=3))
    seg = torch.cat((seg[:, :2], torch.zeros_like(seg[:, :1])), dim=1)
    for gradient in ("reference", "exact"):
        s = seg.clone().requires_grad_()
        loss = dense_loss(kind, images, s, roi, gradient=gradient)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    expected = formula(kind, lattice_matrices(wsloss.bilateral_features(images, 15.0, 6.0)), seg, roi)
    assert abs(loss.item() - expected.item()) <= 1e-10 * abs(expected.item())


@pytest.mark.parametrize("kind", DENSE)
@pytest.mark.parametrize("classes", [1, 23])
def test_batch_is_the_mean_of_its_images(kind, classes, rng, device):
    images, seg, roi = (t.to(device) for t in photo_batch(rng, batch=4, classes=classes, height=15, width=19))
    seg = seg.float().requires_grad_()
    together = dense_loss(kind, images, seg, roi)
    together.backward()
    # float32 rounding is relative to the terms that cancel in the loss (S~^T A S~ and the
    # like: the whole quadratic loss of K = 1, S = 1, is such a cancellation).
    scale = abs(dense_loss("crf", images, seg.detach(), roi, weight=1.0).item())
    singles = []
    for b in range(4):
        s = seg.detach()[b:b + 1].clone().requires_grad_()
        singles.append(dense_loss(kind, images[b:b + 1], s, roi[b:b + 1]))
        (singles[-1] / 4).backward()
        torch.testing.assert_close(seg.grad[b:b + 1], s.grad, rtol=1e-5, atol=1e-6 * scale / roi[b].sum().item())
    torch.testing.assert_close(together, torch.stack(singles).mean(), rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("kind", DENSE)
def test_memory_layout_and_a_one_channel_roi_do_not_change_the_loss(kind, rng, device):
    images, seg, roi = (t.to(device) for t in photo_batch(rng, batch=2, height=16, width=12))
    expected = dense_loss(kind, images, seg.float(), roi)
    channels_last = seg.float().contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(dense_loss(kind, images, channels_last, roi), expected)
    transposed = seg.float().transpose(2, 3).contiguous().transpose(2, 3)
    torch.testing.assert_close(dense_loss(kind, images, transposed, roi[:, None]), expected)


@pytest.mark.parametrize("kind", DENSE)
def test_half_segmentations_give_the_float32_loss_and_a_half_gradient(kind, rng, device):
    images, seg, roi = (t.to(device) for t in photo_batch(rng, batch=2, height=16, width=12))
    expected = dense_loss(kind, images, seg.float(), roi)
    half = seg.half().requires_grad_()
    loss = dense_loss(kind, images, half, roi)
    loss.backward()
    assert loss.dtype == torch.float32 and half.grad.dtype == torch.float16
    torch.testing.assert_close(loss, expected, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("kind", DENSE)
def test_no_roi_is_an_all_ones_roi(kind, rng, device):
    images, seg, roi = (t.to(device) for t in photo_batch(rng, batch=2, height=16, width=12))
    torch.testing.assert_close(dense_loss(kind, images, seg, None), dense_loss(kind, images, seg, torch.ones_like(roi)))


def test_modules_equal_their_functionals(rng, device):
    images, seg, roi = (t.to(device) for t in photo_batch(rng))
    pairs = [
        (wsloss.NormalizedCutLoss(0.7, 15.0, 6.0), "ncut"),
        (wsloss.QuadraticCRFLoss(0.7, 15.0, 6.0), "quadratic"),
        (wsloss.KernelCutLoss(0.7, 0.3, 15.0, 6.0), "kernel_cut"),
        (wsloss.DenseCRFLoss(0.7, 15.0, 6.0), "crf"),
    ]
    for module, kind in pairs:
        assert torch.equal(module(images, seg, roi), dense_loss(kind, images, seg, roi)), kind


def test_kernel_cut_is_the_normalized_cut_plus_the_crf_term(rng, device):
    """The kernel cut is its two terms (DESIGN §3), computed over one shared lattice."""
    images, seg, roi = (t.to(device) for t in photo_batch(rng))
    kc = dense_loss("kernel_cut", images, seg, roi)
    parts = dense_loss("ncut", images, seg, roi) + dense_loss("crf", images, seg, roi, weight=0.3)
    torch.testing.assert_close(kc, parts, rtol=1e-12, atol=0)


def test_quadratic_loss_is_positive_for_a_varying_segmentation(rng, device):
    images, seg, roi = (t.to(device) for t in photo_batch(rng))
    assert dense_loss("quadratic", images, seg, roi).item() > 0


def test_quadratic_loss_is_zero_for_a_constant_segmentation(rng, device):
    images, seg, roi = (t.to(device) for t in photo_batch(rng))
    constant = torch.full_like(seg, 0.25)
    assert abs(dense_loss("quadratic", images, constant, roi).item()) <= 1e-12 * seg.numel()


# ---------------------------------------------------------------- sparse grid CRF

def grid_loop(images, seg, roi, weight, sigma, neighbourhood, relaxation):
    """The grid CRF by a loop over unordered neighbour pairs, float64 NumPy."""
    images, seg, roi = (t.detach().cpu().double().numpy() for t in (images, seg, roi))
    batch, classes, height, width = seg.shape
    offsets = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if neighbourhood == 8 else [])
    total = 0.0
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                for dy, dx in offsets:
                    qy, qx = y + dy, x + dx
                    if not (0 <= qy < height and 0 <= qx < width) or not (roi[b, y, x] and roi[b, qy, qx]):
                        continue
                    w = np.exp(-((images[b, :, y, x] - images[b, :, qy, qx]) ** 2).sum() / (2 * sigma**2))
                    w /= np.hypot(dy, dx)
                    sp, sq = seg[b, :, y, x], seg[b, :, qy, qx]
                    term = ((sp - sq) ** 2).sum() if relaxation == "quadratic" else (sp * (1 - sq)).sum()
                    total += w * term
    return weight * total / batch


@pytest.mark.parametrize("neighbourhood", [4, 8])
@pytest.mark.parametrize("relaxation", ["quadratic", "bilinear"])
@pytest.mark.parametrize("shape", [(7, 9), (1, 6), (5, 1), (1, 1)])
def test_grid_crf_loss_equals_a_loop_over_neighbour_pairs(neighbourhood, relaxation, shape, rng, device):
    images, seg, roi = photo_batch(rng, batch=2, classes=3, height=shape[0], width=shape[1])
    loss = WF.grid_crf_loss(images.to(device), seg.to(device), roi.to(device), 0.7, 20.0, neighbourhood, relaxation)
    expected = grid_loop(images, seg, roi, 0.7, 20.0, neighbourhood, relaxation)
    assert abs(loss.item() - expected) <= 1e-12 * max(1.0, abs(expected))


@pytest.mark.parametrize("neighbourhood", [4, 8])
@pytest.mark.parametrize("relaxation", ["quadratic", "bilinear"])
def test_grid_crf_gradient_passes_gradcheck(neighbourhood, relaxation, rng, device):
    images, seg, roi = (t.to(device) for t in photo_batch(rng, batch=2, classes=3, height=6, width=7))
    seg = seg.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda s: WF.grid_crf_loss(images, s, roi, 0.7, 20.0, neighbourhood, relaxation), (seg,))


@pytest.mark.parametrize("classes", [1, 21])
def test_grid_crf_float32_gradient_equals_the_float64_one_on_a_large_batch(classes, rng, device):
    images, seg, roi = (t.to(device) for t in photo_batch(rng, batch=3, classes=classes, height=61, width=67))
    s32 = seg.float().requires_grad_()
    s64 = seg.clone().requires_grad_()
    for s in (s32, s64):
        wsloss.GridCRFLoss(0.5, 10.0, 8, "bilinear")(images, s, roi).backward()
    assert relative(s32.grad.double(), s64.grad) <= 1e-5


def test_grid_crf_zero_roi_gives_zero_loss_and_gradient(rng, device):
    images, seg, roi = (t.to(device) for t in photo_batch(rng))
    s = seg.clone().requires_grad_()
    loss = wsloss.GridCRFLoss(1.0, 10.0)(images, s, torch.zeros_like(roi))
    loss.backward()
    assert loss.item() == 0 and torch.all(s.grad == 0)


# ---------------------------------------------------------------- partial CE, entropy, combinator

def seeds(rng, batch, height, width, classes, fraction=0.1, ignore_index=255):
    labels = torch.randint(0, classes, (batch, height, width), generator=rng)
    return torch.where(torch.rand(batch, height, width, generator=rng) < fraction, labels, ignore_index)


def logits_and_seeds(rng, device):
    logits = torch.randn(3, 5, 9, 10, generator=rng, dtype=torch.float64).to(device).requires_grad_()
    return logits, seeds(rng, 3, 9, 10, 5).to(device)


def test_partial_cross_entropy_is_cross_entropy_ignoring_unlabelled_pixels(rng, device):
    logits, labels = logits_and_seeds(rng, device)
    loss = WF.partial_cross_entropy(logits, labels)
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels, ignore_index=255))


def test_partial_cross_entropy_of_log_probabilities_equals_that_of_logits(rng, device):
    """As with torch's cross_entropy, log-probabilities give the same value."""
    logits, labels = logits_and_seeds(rng, device)
    expected = F.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(WF.partial_cross_entropy(F.log_softmax(logits, 1), labels), expected)


def test_partial_cross_entropy_takes_another_ignore_index(rng, device):
    logits, labels = logits_and_seeds(rng, device)
    expected = F.cross_entropy(logits, labels, ignore_index=255)
    other = torch.where(labels == 255, -1, labels)
    torch.testing.assert_close(wsloss.PartialCrossEntropyLoss(ignore_index=-1)(logits, other), expected)


def test_partial_cross_entropy_treats_labels_outside_the_classes_as_unlabelled(rng, device):
    logits, labels = logits_and_seeds(rng, device)
    expected = F.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(WF.partial_cross_entropy(logits, torch.where(labels == 255, 7, labels)), expected)


def test_partial_cross_entropy_without_labelled_pixels_is_zero_with_zero_gradient(rng, device):
    """0 and a zero gradient, not NaN."""
    logits, labels = logits_and_seeds(rng, device)
    none = WF.partial_cross_entropy(logits, torch.full_like(labels, 255))
    none.backward()
    assert none.item() == 0 and torch.all(logits.grad == 0)


def probabilities_with_a_certain_pixel(rng, device):
    """Softmax probabilities (float64) whose first pixel is certain of class 0, and a binary ROI."""
    seg = torch.softmax(torch.randn(2, 4, 6, 5, generator=rng, dtype=torch.float64), 1)
    seg[0, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    roi = (torch.rand(2, 6, 5, generator=rng) < 0.7).double()
    return seg.to(device), roi.to(device)


def entropies(seg):
    """-sum_k S log S per pixel, with 0 log 0 = 0."""
    return -(seg * seg.log().nan_to_num(0.0, 0.0, 0.0)).sum(1)


def test_entropy_loss_is_the_weighted_roi_mean_of_the_pixel_entropies(rng, device):
    seg, roi = probabilities_with_a_certain_pixel(rng, device)
    loss = wsloss.EntropyLoss(0.5)(seg, roi)
    torch.testing.assert_close(loss, 0.5 * (entropies(seg) * roi).sum() / roi.sum())


def test_entropy_loss_gradient_is_finite_at_a_zero_probability(rng, device):
    """0 log 0 = 0 has a finite gradient."""
    seg, roi = probabilities_with_a_certain_pixel(rng, device)
    seg = seg.requires_grad_()
    wsloss.EntropyLoss(0.5)(seg, roi).backward()
    assert torch.isfinite(seg.grad).all()


def test_entropy_loss_without_roi_is_the_mean_over_pixels(rng, device):
    seg, _ = probabilities_with_a_certain_pixel(rng, device)
    torch.testing.assert_close(WF.entropy_loss(seg), entropies(seg).mean())


def test_entropy_loss_of_a_zero_roi_is_zero(rng, device):
    seg, roi = probabilities_with_a_certain_pixel(rng, device)
    assert WF.entropy_loss(seg, torch.zeros_like(roi)).item() == 0


def test_entropy_loss_gradient_passes_gradcheck(rng, device):
    roi = (torch.rand(2, 4, 5, generator=rng) < 0.7).double().to(device)
    positive = torch.softmax(torch.randn(2, 3, 4, 5, generator=rng, dtype=torch.float64), 1).to(device)
    assert torch.autograd.gradcheck(lambda s: WF.entropy_loss(s, roi, 0.5), (positive.requires_grad_(),))


class Combined:
    """A RegularizedLoss over pCE and four regularizers, its inputs, and each term computed alone."""

    def __init__(self, rng, device):
        self.images, _, self.roi = (t.to(device) for t in photo_batch(rng, height=12, width=14))
        self.logits = torch.randn(3, 4, 12, 14, generator=rng).to(device).requires_grad_()
        self.labels = seeds(rng, 3, 12, 14, 4).to(device)
        self.regularizers = dict(densecrf=wsloss.DenseCRFLoss(1e-3, 15.0, 10.0, 0.5),
                                 entropy=wsloss.EntropyLoss(0.1), ncut=wsloss.NormalizedCutLoss(0.2, 15.0, 10.0),
                                 grid=wsloss.GridCRFLoss(0.01, 10.0, 8))
        self.criterion = wsloss.RegularizedLoss(**self.regularizers)

    def inputs(self):
        return self.logits, self.labels, self.images, self.roi

    def terms_alone(self):
        images, roi, regularizers = self.images, self.roi, self.regularizers
        probabilities = torch.softmax(self.logits, 1)
        return {"pce": WF.partial_cross_entropy(self.logits, self.labels),
                "densecrf": regularizers["densecrf"](images, probabilities, roi),
                "entropy": regularizers["entropy"](probabilities, roi),
                "ncut": regularizers["ncut"](images, probabilities, roi),
                "grid": regularizers["grid"](images, probabilities, roi)}


def test_regularized_loss_reports_each_term_detached_in_order(rng, device):
    combined = Combined(rng, device)
    _, terms = combined.criterion(*combined.inputs(), return_terms=True)
    assert list(terms) == ["pce", "densecrf", "entropy", "ncut", "grid"]
    for name, value in combined.terms_alone().items():
        torch.testing.assert_close(terms[name], value.detach())
        assert not terms[name].requires_grad


def test_regularized_loss_and_its_gradient_are_the_sum_of_its_terms(rng, device):
    combined = Combined(rng, device)
    total, _ = combined.criterion(*combined.inputs(), return_terms=True)
    expected = combined.terms_alone()
    torch.testing.assert_close(total, sum(expected.values()))
    grad_total, = torch.autograd.grad(combined.criterion(*combined.inputs()), combined.logits)
    grad_expected, = torch.autograd.grad(sum(expected.values()), combined.logits)
    torch.testing.assert_close(grad_total, grad_expected)


def test_regularized_loss_with_image_regularizers_requires_images(rng, device):
    combined = Combined(rng, device)
    with pytest.raises(ValueError, match="images are required"):
        combined.criterion(combined.logits, combined.labels)


def test_regularized_loss_refuses_a_term_named_pce_and_a_regularizer_that_is_not_a_loss():
    with pytest.raises(ValueError, match="pce"):
        wsloss.RegularizedLoss(pce=wsloss.EntropyLoss())
    with pytest.raises(TypeError, match="regularizer 'x'"):
        wsloss.RegularizedLoss(x=torch.nn.Linear(2, 2))


def test_training_with_scribbles_and_a_regularizer_follows_edges(rng):
    """A per-pixel model trained on two scribbles: pCE alone labels only what it saw; with a
    normalized cut or dense CRF term the labels spread along the image's two regions."""
    height, width = 12, 16
    images = torch.zeros(1, 3, height, width)
    images[:, :, :, width // 2:] = 200.0
    truth = (torch.arange(width) >= width // 2).long().expand(1, height, width)
    labels = torch.full((1, height, width), 255)
    labels[0, 5, 2], labels[0, 5, 13] = 0, 1
    results = {}
    for name, regularizer in (("ncut", wsloss.NormalizedCutLoss(1.0, 15.0, 80.0)),
                              ("crf", wsloss.DenseCRFLoss(2e-2, 15.0, 80.0))):
        logits = torch.zeros(1, 2, height, width, requires_grad=True)
        optimizer = torch.optim.Adam([logits], lr=0.1)
        criterion = wsloss.RegularizedLoss(reg=regularizer)
        for _ in range(150):
            optimizer.zero_grad()
            criterion(logits, labels, images).backward()
            optimizer.step()
        results[name] = (logits.argmax(1) == truth).float().mean().item()
    assert min(results.values()) >= 0.95, results


def test_losses_compile_fullgraph_to_their_eager_values(rng):
    images, seg, roi = photo_batch(rng, batch=2, height=10, width=9)
    losses = [wsloss.NormalizedCutLoss(0.7, 15.0, 6.0), wsloss.KernelCutLoss(0.5, 0.2, 15.0, 6.0, 0.5),
              wsloss.QuadraticCRFLoss(0.7, 15.0, 6.0), wsloss.GridCRFLoss(0.7, 20.0, 8, "bilinear")]
    for module in losses:
        compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(images, seg, roi), module(images, seg, roi))
