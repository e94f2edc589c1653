"""Volumes (docs/DESIGN.md §10): the dense losses, mean-field inference, EM and boxes on
B x C x D x H x W scans, against the exact dense references and the flattened computations."""
import math

import pytest
import torch
import torch.nn.functional as F

import wsloss
from helpers import random_photo, random_scan, relative, volume_batch

SIGMA_RGB, SIGMA_XY = 15.0, 3.0

DENSE_LOSSES = {
    "densecrf": lambda **kw: wsloss.DenseCRFLoss(1.0, SIGMA_RGB, SIGMA_XY, **kw),
    "ncut": lambda **kw: wsloss.NormalizedCutLoss(1.0, SIGMA_RGB, SIGMA_XY, **kw),
    "kernelcut": lambda **kw: wsloss.KernelCutLoss(1.0, 0.5, SIGMA_RGB, SIGMA_XY, **kw),
    "quadratic": lambda **kw: wsloss.QuadraticCRFLoss(1.0, SIGMA_RGB, SIGMA_XY, **kw),
}


def float32_volumes(rng, **sizes):
    images, seg, roi = volume_batch(rng, dtype=torch.float32, **sizes)
    return images, seg.requires_grad_(), roi


# --- the dense losses ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DENSE_LOSSES))
@pytest.mark.parametrize("classes", [1, 21])
def test_every_dense_loss_runs_on_volumes_with_a_finite_loss_and_gradient(name, classes, rng, device):
    images, seg, roi = (t.to(device) for t in float32_volumes(rng, classes=classes, depth=5, height=9, width=7))
    loss = DENSE_LOSSES[name](scale_factor=(1.0, 0.5, 0.5))(images, seg, roi)
    (grad,) = torch.autograd.grad(loss, seg)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert grad.shape == seg.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("channels", [1, 2, 13])  # d = 4, 5, 16
def test_dense_crf_loss_on_volumes_takes_any_number_of_channels(channels, rng):
    images, seg, roi = float32_volumes(rng, channels=channels)
    loss = wsloss.functional.dense_crf_loss(images, seg, roi, 1.0, SIGMA_RGB, SIGMA_XY)
    assert torch.isfinite(loss) and loss.item() < 0


def test_dense_crf_loss_on_volumes_is_a_stable_multiple_of_the_exact_dense_loss(rng):
    """The lattice approximates c W (DESIGN §1); in 3D as in 2D c stays put when only the
    segmentation changes. Measured over 10 seeds (2 x 8 x 10 x 9 voxels, anisotropic spacing):
    ratios 0.650-0.671, spread within a seed at most 1.009."""
    images = random_scan(2, 8, 10, 9, rng)
    spacing = (2.5, 0.8, 0.8)
    ratios = []
    for _ in range(4):
        _, seg, roi = volume_batch(rng, depth=8, height=10, width=9)
        approx = wsloss.functional.dense_crf_loss(images, seg.float(), roi.float(), 1.0, SIGMA_RGB, SIGMA_XY,
                                       spacing=spacing).item()
        exact = wsloss.exact.dense_crf_loss(images, seg, roi, 1.0, SIGMA_RGB, SIGMA_XY, spacing=spacing).item()
        ratios.append(approx / exact)
    print("lattice / exact:", [f"{r:.3f}" for r in ratios])
    assert 0.4 < min(ratios) and max(ratios) < 0.9 and max(ratios) / min(ratios) < 1.05


def test_dense_crf_loss_gradient_on_volumes_points_like_the_exact_gradient(rng):
    """Measured over 10 seeds: 2.9-3.5 degrees between the lattice's exact-mode gradient and the
    exact dense loss's gradient (1 x 3 x 8 x 10 x 9)."""
    images, seg, roi = volume_batch(rng, batch=1, depth=8, height=10, width=9)
    seg.requires_grad_()
    exact = wsloss.exact.dense_crf_loss(images, seg, roi, 1.0, SIGMA_RGB, SIGMA_XY, spacing=(2.0, 1.0, 1.0))
    (expected,) = torch.autograd.grad(exact, seg)
    approx = wsloss.functional.dense_crf_loss(images, seg, roi, 1.0, SIGMA_RGB, SIGMA_XY, gradient="exact",
                                   spacing=(2.0, 1.0, 1.0))
    (got,) = torch.autograd.grad(approx, seg)
    cosine = F.cosine_similarity(got.flatten(), expected.flatten(), dim=0).item()
    angle = math.degrees(math.acos(min(1.0, cosine)))
    print(f"angle {angle:.2f} degrees")
    assert angle < 6


def test_exact_gradient_on_volumes_passes_gradcheck(rng):
    images, seg, roi = volume_batch(rng, batch=2, classes=2, depth=3, height=4, width=5)
    seg.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda s: wsloss.functional.kernel_cut_loss(images, s, roi, 0.7, 1.3, SIGMA_RGB, SIGMA_XY, gradient="exact",
                                         spacing=(2.0, 1.0, 0.5), check_probabilities=False), (seg,))


@pytest.mark.parametrize("step", [2.0, 0.7])
def test_uniform_spacing_s_with_sigma_xy_times_s_is_the_unit_spacing_loss(step, rng):
    images, seg, roi = float32_volumes(rng)
    unit = wsloss.functional.dense_crf_loss(images, seg, roi, 1.0, SIGMA_RGB, SIGMA_XY)
    scaled = wsloss.functional.dense_crf_loss(images, seg, roi, 1.0, SIGMA_RGB, SIGMA_XY * step, spacing=(step,) * 3)
    torch.testing.assert_close(scaled, unit, rtol=1e-5, atol=0)


def test_spacing_stretches_the_positions_of_the_lattice_features(rng):
    images = random_scan(1, 3, 4, 5, rng, channels=2)
    features = wsloss.bilateral_features(images, 10.0, 4.0, spacing=(5.0, 0.5, 2.0))
    z, y, x = torch.meshgrid(torch.arange(3.0), torch.arange(4.0), torch.arange(5.0), indexing="ij")
    expected = torch.cat((torch.stack((x * 2.0 / 4.0, y * 0.5 / 4.0, z * 5.0 / 4.0))[None], images / 10.0), dim=1)
    assert features.shape == (1, 5, 3, 4, 5)
    torch.testing.assert_close(features, expected, rtol=1e-6, atol=1e-6)


def test_per_axis_scale_factor_is_the_loss_of_the_resampled_volume_with_stretched_voxels(rng):
    """scale_factor (1, 0.5, 0.5): S trilinear, images and ROIs nearest, each downscaled voxel
    spanning 1 x 2 x 2 voxels (DESIGN §10)."""
    images, seg, roi = float32_volumes(rng, depth=4, height=10, width=8)
    got = wsloss.functional.dense_crf_loss(images, seg, roi, 1.0, SIGMA_RGB, SIGMA_XY, scale_factor=(1.0, 0.5, 0.5))
    factors = (1.0, 0.5, 0.5)
    small = F.interpolate(seg, scale_factor=factors, mode="trilinear", align_corners=False)
    expected = wsloss.functional.dense_crf_loss(F.interpolate(images, scale_factor=factors), small,
                                     F.interpolate(roi[:, None], scale_factor=factors)[:, 0], 1.0, SIGMA_RGB,
                                     SIGMA_XY, spacing=(1.0, 2.0, 2.0))
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    (grad,) = torch.autograd.grad(got, seg)
    (expected_grad,) = torch.autograd.grad(expected, seg)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-9)


def test_equal_per_axis_scale_factors_give_the_single_factor_loss_bit_for_bit(rng):
    images = random_photo(2, 17, 15, rng)
    seg = torch.softmax(torch.randn(2, 3, 17, 15, generator=rng), 1)
    single = wsloss.functional.dense_crf_loss(images, seg, None, 1.0, SIGMA_RGB, 5.0, scale_factor=0.5)
    per_axis = wsloss.functional.dense_crf_loss(images, seg, None, 1.0, SIGMA_RGB, 5.0, scale_factor=(0.5, 0.5),
                                     spacing=(1.0, 1.0))
    assert per_axis.item() == single.item()


def test_affinity_mass_of_volumes_divides_the_sum_into_the_mean_reduction(rng):
    images, seg, roi = float32_volumes(rng)
    options = dict(spacing=(2.0, 1.0, 1.0))
    mass = wsloss.functional.affinity_mass(images, roi, SIGMA_RGB, SIGMA_XY, **options)
    total = wsloss.functional.dense_crf_loss(images[:1], seg[:1], roi[:1], 1.0, SIGMA_RGB, SIGMA_XY, **options)
    mean = wsloss.functional.dense_crf_loss(images[:1], seg[:1], roi[:1], 1.0, SIGMA_RGB, SIGMA_XY, reduction="mean",
                                            **options)
    torch.testing.assert_close(mean, total / mass[0], rtol=1e-5, atol=0)


def test_regularized_loss_trains_a_volume_batch_end_to_end(rng):
    images, _, roi = volume_batch(rng, depth=4, height=6, width=5)
    logits = torch.randn(2, 3, 4, 6, 5, generator=rng, requires_grad=True)
    seeds = torch.full((2, 4, 6, 5), 255, dtype=torch.int64)
    seeds[:, :, 0, 0], seeds[:, :, -1, -1] = 1, 2
    criterion = wsloss.RegularizedLoss(densecrf=wsloss.DenseCRFLoss(1e-3, SIGMA_RGB, SIGMA_XY, spacing=(3.0, 1.0, 1.0)),
                                       entropy=wsloss.EntropyLoss(0.1))
    loss, terms = criterion(logits, seeds, images, roi, return_terms=True)
    loss.backward()
    assert set(terms) == {"pce", "densecrf", "entropy"} and torch.isfinite(loss)
    assert logits.grad.shape == logits.shape and torch.isfinite(logits.grad).all()


def test_entropy_of_a_volume_is_the_entropy_of_its_voxels_flattened(rng):
    _, seg, roi = volume_batch(rng)
    flat = wsloss.functional.entropy_loss(seg.flatten(2)[..., None], roi.flatten(1)[..., None])
    torch.testing.assert_close(wsloss.functional.entropy_loss(seg, roi), flat, rtol=1e-12, atol=0)


def test_partial_cross_entropy_of_a_volume_is_that_of_its_voxels_flattened(rng):
    logits = torch.randn(2, 4, 3, 5, 6, generator=rng, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 3, 5, 6), generator=rng)
    labels[:, 1] = 255
    flat = wsloss.functional.partial_cross_entropy(logits.flatten(2)[..., None], labels.flatten(1)[..., None])
    torch.testing.assert_close(wsloss.functional.partial_cross_entropy(logits, labels), flat, rtol=1e-12, atol=0)


# --- mean-field inference -------------------------------------------------------------------------

def unaries(rng, batch, classes, *spatial):
    return torch.softmax(2 * torch.randn((batch, classes) + spatial, generator=rng), dim=1)


def test_dense_crf_on_volumes_approximates_the_exact_gaussian_mean_field(rng):
    """As in 2D (tests/test_dense_crf_inference.py): normalization cancels the lattice's scale,
    its shape error moves Q far less than the CRF does. Measured over 10 seeds (2 x 6 x 10 x 9,
    K = 4, anisotropic spacing, 5 iterations): relative L2 0.044-0.075 (the CRF moves Q by 0.34 or
    more), labels agree on 96.9-98.1%."""
    images = random_scan(2, 6, 10, 9, rng, channels=2)
    probs = unaries(rng, 2, 4, 6, 10, 9).double()
    options = dict(iterations=5, theta_alpha=4.0, theta_beta=10.0, theta_gamma=2.0, spacing=(2.0, 1.0, 1.0))
    exact = wsloss.exact.dense_crf(probs, images, **options)
    got = wsloss.dense_crf(probs, images, **options)
    error = ((got - exact).norm() / exact.norm()).item()
    moved = ((probs - exact).norm() / exact.norm()).item()
    agree = (got.argmax(1) == exact.argmax(1)).double().mean().item()
    print(f"relative L2 {error:.4f} (the CRF moved Q by {moved:.4f}), labels agree {agree:.4f}")
    assert error < 0.25 and error < moved / 2 and agree > 0.93


def test_dense_crf_module_passes_spacing_on(rng, device):
    images = random_scan(1, 4, 6, 5, rng).to(device)
    probs = unaries(rng, 1, 3, 4, 6, 5).to(device)
    module = wsloss.DenseCRF(iterations=3, spacing=(4.0, 1.0, 1.0))
    expected = wsloss.dense_crf(probs, images, iterations=3, spacing=(4.0, 1.0, 1.0))
    assert "spacing=(4.0, 1.0, 1.0)" in repr(module)
    torch.testing.assert_close(module(probs, images), expected, rtol=0, atol=0)


def test_dense_crf_spacing_changes_the_result_of_an_anisotropic_smoothing(rng):
    images = random_scan(1, 4, 6, 5, rng)
    probs = unaries(rng, 1, 3, 4, 6, 5)
    unit = wsloss.dense_crf(probs, images, iterations=3)
    thick = wsloss.dense_crf(probs, images, iterations=3, spacing=(5.0, 1.0, 1.0))
    assert relative(thick, unit) > 1e-3


# --- EM and boxes ---------------------------------------------------------------------------------

def flat_logits(logits):
    """B x K x D x H x W as B x K x 1 x (D H W): an image of the volume's voxels."""
    return logits.reshape(logits.shape[:2] + (1, -1))


def test_em_fixed_on_volumes_is_em_fixed_on_the_flattened_voxels(rng):
    logits = torch.randn(2, 4, 3, 5, 6, generator=rng)
    labels = [[1, 3], [2]]
    got = wsloss.em_fixed(logits, labels, suppress_absent=True)
    expected = wsloss.em_fixed(flat_logits(logits), labels, suppress_absent=True)
    assert got.shape == (2, 3, 5, 6) and torch.equal(got.flatten(1), expected.flatten(1))


def test_em_adapt_on_volumes_is_em_adapt_on_the_flattened_voxels(rng):
    logits = torch.randn(2, 5, 4, 6, 7, generator=rng)
    labels = [[1, 3], [2, 4]]
    got, biases = wsloss.em_adapt(logits, labels, fg_portion=0.3)
    expected, expected_biases = wsloss.em_adapt(flat_logits(logits), labels, fg_portion=0.3)
    assert got.shape == (2, 4, 6, 7) and torch.equal(got.flatten(1), expected.flatten(1))
    assert torch.equal(biases, expected_biases)


def test_em_adapt_on_volumes_leaves_the_last_visited_class_at_least_its_portion_of_the_voxels(rng):
    logits = torch.randn(2, 4, 5, 6, 7, generator=rng)
    pseudo, _ = wsloss.em_adapt(logits, [[1, 2], [3]], fg_portion=0.2, bg_portion=0.3)
    voxels = 5 * 6 * 7
    for b, last in enumerate([2, 3]):  # visited last (ascending), so no later class takes its voxels
        assert (pseudo[b] == last).sum() >= math.floor(0.2 * voxels)


def test_semi_supervised_targets_on_volumes_keep_the_strong_masks(rng):
    logits = torch.randn(2, 3, 3, 4, 5, generator=rng)
    masks = torch.randint(0, 3, (2, 3, 4, 5), generator=rng)
    strong = torch.tensor([True, False])
    targets = wsloss.semi_supervised_targets(logits, [[1], [2]], masks, strong)
    assert torch.equal(targets[0], masks[0])
    assert torch.equal(targets[1], wsloss.em_adapt(logits, [[1], [2]])[0][1])


def test_em_adapt_loss_on_volumes_is_the_partial_cross_entropy_against_its_labels(rng):
    logits = torch.randn(2, 3, 3, 4, 5, generator=rng, requires_grad=True)
    loss = wsloss.EMAdaptLoss()(logits, [[1], [2]])
    pseudo, _ = wsloss.em_adapt(logits, [[1], [2]])
    torch.testing.assert_close(loss, F.cross_entropy(logits, pseudo), rtol=1e-6, atol=0)


def voxel_centre_boxes(boxes, classes, depth, height, width):
    """Bbox-Rect by the definition: a voxel takes the class of the smallest box holding its centre."""
    z, y, x = torch.meshgrid(torch.arange(depth) + 0.5, torch.arange(height) + 0.5, torch.arange(width) + 0.5,
                             indexing="ij")
    out = torch.zeros(len(boxes), depth, height, width, dtype=torch.int64)
    for b, (image_boxes, image_classes) in enumerate(zip(boxes, classes)):
        best = torch.full((depth, height, width), math.inf)
        for (x0, y0, z0, x1, y1, z1), label in zip(image_boxes, image_classes):
            inside = (x >= x0) & (x < x1) & (y >= y0) & (y < y1) & (z >= z0) & (z < z1)
            size = (x1 - x0) * (y1 - y0) * (z1 - z0)
            take = inside & (size <= best)
            out[b][take] = label
            best = torch.where(take, torch.full_like(best, size), best)
    return out


def test_bbox_rect_on_volumes_gives_each_voxel_its_smallest_box():
    boxes = [[[0, 0, 0, 6, 5, 4], [1.2, 2, 1, 4, 4.7, 3]], [[2, 1, 0.4, 5, 3, 2.6]], []]
    classes = [[2, 5], [1], []]
    got = wsloss.bbox_rect(boxes, classes, 4, 5, 6)
    assert got.shape == (3, 4, 5, 6)
    assert torch.equal(got, voxel_centre_boxes(boxes, classes, 4, 5, 6))


def test_bbox_em_fixed_on_volumes_biases_each_box_class_inside_its_box(rng):
    logits = torch.zeros(1, 3, 4, 5, 6)
    rect = wsloss.bbox_rect([[[1, 1, 1, 3, 4, 3]]], [[2]], 4, 5, 6)
    got = wsloss.bbox_em_fixed(logits, rect, fg_bias=5.0, bg_bias=3.0)
    assert torch.equal(got, rect)


def test_bbox_seg_on_volumes_keeps_the_background_outside_and_the_box_class_at_the_centre(rng):
    images = random_scan(1, 6, 8, 8, rng)
    labels = wsloss.bbox_seg(images, [[[2, 2, 1, 7, 7, 5]]], [[4]], iterations=3, min_confidence=0.0)
    assert labels.shape == (1, 6, 8, 8)
    outside = torch.ones(6, 8, 8, dtype=torch.bool)
    outside[1:5, 2:7, 2:7] = False
    assert (labels[0][outside] == 0).all()
    assert labels[0, 3, 4, 4] == 4


# --- bad input ------------------------------------------------------------------------------------

def test_volume_images_with_image_segmentations_are_refused_naming_images(rng):
    images, seg, roi = float32_volumes(rng)
    with pytest.raises(ValueError, match="images must be 4-D like segmentations: B x C x H x W"):
        wsloss.functional.dense_crf_loss(images, seg[:, :, 0], roi[:, 0], 1.0, SIGMA_RGB, SIGMA_XY)


@pytest.mark.parametrize("spacing, message", [((1.0, 1.0), "spacing must be one number or 3 numbers"),
                                              ((1.0, 0.0, 1.0), r"spacing\[1\] must be finite and > 0"),
                                              ((1.0, -2.0, 1.0), r"spacing\[1\] must be finite and > 0"),
                                              ("thick", "spacing must be a real number")])
def test_bad_spacing_is_refused_naming_spacing(spacing, message, rng):
    images, seg, roi = float32_volumes(rng)
    with pytest.raises((ValueError, TypeError), match=message):
        wsloss.functional.dense_crf_loss(images, seg, roi, 1.0, SIGMA_RGB, SIGMA_XY, spacing=spacing)


def test_image_spacing_of_three_numbers_is_refused(rng):
    images = random_photo(1, 6, 5, rng)
    seg = torch.softmax(torch.randn(1, 2, 6, 5, generator=rng), 1)
    with pytest.raises(ValueError, match=r"spacing must be one number or 2 numbers \(sy, sx\)"):
        wsloss.functional.dense_crf_loss(images, seg, None, 1.0, SIGMA_RGB, SIGMA_XY, spacing=(1.0, 1.0, 1.0))


@pytest.mark.parametrize("scale_factor, message", [((0.5, 0.5), "scale_factor must be one number or 3"),
                                                   ((1.0, 2.0, 1.0), r"scale_factor must be in \(0, 1\]"),
                                                   ((0.1, 1.0, 1.0), "shrinks the 5 x 7 x 6 images to nothing")])
def test_bad_per_axis_scale_factor_is_refused_naming_scale_factor(scale_factor, message, rng):
    images, seg, roi = float32_volumes(rng)
    with pytest.raises(ValueError, match=message):
        wsloss.functional.dense_crf_loss(images, seg, roi, 1.0, SIGMA_RGB, SIGMA_XY, scale_factor=scale_factor)


def test_volume_rois_of_the_wrong_shape_are_refused_naming_rois(rng):
    images, seg, roi = float32_volumes(rng)
    with pytest.raises(ValueError, match="ROIs must be B x D x H x W"):
        wsloss.functional.dense_crf_loss(images, seg, roi[:, 1:], 1.0, SIGMA_RGB, SIGMA_XY)


def test_dense_crf_of_a_volume_with_image_inputs_is_refused_naming_images(rng):
    probs = unaries(rng, 1, 3, 4, 6, 5)
    with pytest.raises(ValueError, match="images must be B x C x D x H x W"):
        wsloss.dense_crf(probs, random_photo(1, 6, 5, rng))


def test_four_coordinate_boxes_with_a_volume_size_are_refused_naming_boxes():
    with pytest.raises(ValueError, match=r"boxes\[0\] must hold 6 coordinates per box"):
        wsloss.bbox_rect([[[0, 0, 2, 2]]], [[1]], 4, 5, 6)


def test_six_coordinate_boxes_with_an_image_size_are_refused_naming_boxes():
    with pytest.raises(ValueError, match=r"boxes\[0\] must hold 4 coordinates per box"):
        wsloss.bbox_rect([[[0, 0, 0, 2, 2, 2]]], [[1]], 5, 6)


def test_bbox_rect_of_one_or_four_sizes_is_refused():
    with pytest.raises(ValueError, match="size must be height, width or depth, height, width"):
        wsloss.bbox_rect([[[0, 0, 2, 2]]], [[1]], 5)
