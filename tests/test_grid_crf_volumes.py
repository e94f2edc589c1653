"""The sparse grid CRF on volumes (docs/DESIGN.md §3): B x K x D x H x W segmentations with 6-, 18- or
26-neighbourhoods and a voxel spacing, against the definition summed in plain float64 torch; its
gradient by gradcheck; how volumes, images and spacing relate; the ops under opcheck; bad input."""
import itertools
import math

import pytest
import torch

import wsloss
import wsloss.functional as WF
from helpers import random_photo, requires_cuda

RELAXATIONS = ["quadratic", "bilinear"]
NEIGHBOURHOODS = [6, 18, 26]


def volume_batch(rng, batch=2, classes=3, channels=2, depth=4, height=5, width=6, dtype=torch.float64):
    """Piecewise-smooth volumes in 0..255 (photographs stacked along z), softmax segmentations and a
    random ROI with zeros."""
    images = random_photo(batch * depth, height, width, rng, channels=channels)
    images = images.view(batch, depth, channels, height, width).transpose(1, 2).contiguous().to(dtype)
    seg = torch.softmax(2 * torch.randn(batch, classes, depth, height, width, generator=rng, dtype=dtype), 1)
    roi = (torch.rand(batch, depth, height, width, generator=rng) < 0.8).to(dtype)
    return images, seg, roi


def half_neighbourhood(neighbourhood):
    """The offsets (dz, dy, dx) of the full neighbourhood whose first non-zero entry is positive:
    every unordered pair of neighbours once."""
    changed = {6: 1, 18: 2, 26: 3}[neighbourhood]
    offsets = []
    for offset in itertools.product((-1, 0, 1), repeat=3):
        nonzero = [o for o in offset if o != 0]
        if nonzero and nonzero[0] > 0 and len(nonzero) <= changed:
            offsets.append(offset)
    return offsets


def shifted(t, offset, first):
    """t[..., z, y, x] over the voxels p whose neighbour p + offset exists (first=True), or those
    neighbours (first=False)."""
    index = []
    for o in offset:
        if o == 0:
            index.append(slice(None))
        elif (o > 0) == first:
            index.append(slice(None, -1))
        else:
            index.append(slice(1, None))
    return t[(..., *index)]


def volume_reference(images, seg, roi, weight, sigma, neighbourhood, relaxation, spacing=(1.0, 1.0, 1.0)):
    """DESIGN §3 in float64 torch: sum over the unordered neighbour pairs of
    w_pq = r_p r_q exp(-|I_p - I_q|^2 / (2 sigma^2)) / dist(p, q) times the pair term, weight / B."""
    images, seg, roi = images.double(), seg.double(), roi.double()
    total = seg.new_zeros(())
    for offset in half_neighbourhood(neighbourhood):
        dist = math.sqrt(sum((o * s) ** 2 for o, s in zip(offset, spacing)))
        contrast = (shifted(images, offset, True) - shifted(images, offset, False)).square().sum(1)
        w = shifted(roi, offset, True) * shifted(roi, offset, False) * torch.exp(-contrast / (2 * sigma**2)) / dist
        a, b = shifted(seg, offset, True), shifted(seg, offset, False)
        term = (a - b).square() if relaxation == "quadratic" else (a + b) / 2 - a * b
        total = total + (w * term.sum(1)).sum()
    return total * weight / seg.shape[0]


def test_the_half_neighbourhoods_have_3_9_and_13_directions():
    """The reference's own pairs: each unordered pair once (a direction and its negative never both)."""
    for neighbourhood, count in zip(NEIGHBOURHOODS, (3, 9, 13)):
        offsets = half_neighbourhood(neighbourhood)
        assert len(offsets) == count
        assert not {tuple(-o for o in offset) for offset in offsets} & set(offsets)


@pytest.mark.parametrize("neighbourhood", NEIGHBOURHOODS)
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_volume_loss_equals_the_float64_pair_sum(neighbourhood, relaxation, rng, device):
    images, seg, roi = volume_batch(rng)
    loss = WF.grid_crf_loss(images.to(device), seg.to(device), roi.to(device), 0.7, 20.0, neighbourhood, relaxation)
    expected = volume_reference(images, seg, roi, 0.7, 20.0, neighbourhood, relaxation)
    assert abs(loss.item() - expected.item()) <= 1e-12 * abs(expected.item())


@pytest.mark.parametrize("neighbourhood", NEIGHBOURHOODS)
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_volume_loss_with_anisotropic_spacing_equals_the_float64_pair_sum(neighbourhood, relaxation, rng, device):
    """CT-like voxels: thick slices (sz = 2.5) of non-square pixels."""
    images, seg, roi = volume_batch(rng, batch=2, classes=4, channels=1, depth=3, height=7, width=5)
    spacing = (2.5, 0.75, 1.25)
    loss = WF.grid_crf_loss(images.to(device), seg.to(device), roi.to(device), 1.3, 15.0, neighbourhood, relaxation,
                            spacing=spacing)
    expected = volume_reference(images, seg, roi, 1.3, 15.0, neighbourhood, relaxation, spacing)
    assert abs(loss.item() - expected.item()) <= 1e-12 * abs(expected.item())


def test_float32_volume_loss_and_gradient_equal_the_float64_reference(rng, device):
    """float32 inputs, K = 21: the value and gradient of the float64 sum to float32 rounding."""
    images, seg, roi = volume_batch(rng, batch=2, classes=21, channels=3, depth=5, height=9, width=17)
    s32 = seg.float().to(device).requires_grad_()
    loss = WF.grid_crf_loss(images.float().to(device), s32, roi.float().to(device), 0.5, 10.0, 26, "bilinear",
                            spacing=(2.0, 1.0, 1.0))
    loss.backward()
    s64 = seg.float().double().requires_grad_()
    expected = volume_reference(images.float(), s64, roi, 0.5, 10.0, 26, "bilinear", (2.0, 1.0, 1.0))
    expected.backward()
    assert loss.dtype == torch.float32
    assert abs(loss.item() - expected.item()) <= 1e-5 * abs(expected.item())
    assert ((s32.grad.double().cpu() - s64.grad).norm() / s64.grad.norm()).item() <= 1e-5


@pytest.mark.parametrize("neighbourhood", NEIGHBOURHOODS)
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_volume_gradient_passes_gradcheck(neighbourhood, relaxation, rng, device):
    images, seg, roi = (t.to(device) for t in volume_batch(rng, depth=3, height=4, width=5))
    seg = seg.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda s: WF.grid_crf_loss(images, s, roi, 0.7, 20.0, neighbourhood, relaxation, spacing=(1.5, 1.0, 0.5)),
        (seg,))


@pytest.mark.parametrize("volume_neighbourhood, image_neighbourhood", [(6, 4), (26, 8)])
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_a_one_slice_volume_gives_the_image_loss_exactly(volume_neighbourhood, image_neighbourhood, relaxation, rng,
                                                         device):
    """No pairs cross slices in a volume of depth 1: its 6 (26) neighbours are the image's 4 (8),
    in the same order, so loss and gradient are the image's bit for bit."""
    images, seg, roi = (t.to(device) for t in volume_batch(rng, depth=1, height=9, width=11))
    s3, s2 = seg.clone().requires_grad_(), seg[:, :, 0].clone().requires_grad_()
    volume = WF.grid_crf_loss(images, s3, roi, 0.7, 20.0, volume_neighbourhood, relaxation)
    image = WF.grid_crf_loss(images[:, :, 0], s2, roi[:, 0], 0.7, 20.0, image_neighbourhood, relaxation)
    volume.backward()
    image.backward()
    assert torch.equal(volume, image)
    assert torch.equal(s3.grad[:, :, 0], s2.grad)


@pytest.mark.parametrize("neighbourhood", NEIGHBOURHOODS)
def test_spacing_2_on_every_axis_halves_the_loss_exactly(neighbourhood, rng, device):
    """w_pq is divided by dist(p, q), so a uniform spacing s divides the loss by s; for s = 2 every
    1 / dist is halved exactly (sqrt(1 / (4 d)) = sqrt(1 / d) / 2), so the halving is exact."""
    images, seg, roi = (t.to(device) for t in volume_batch(rng))
    unit = WF.grid_crf_loss(images, seg, roi, 0.7, 20.0, neighbourhood)
    assert torch.equal(WF.grid_crf_loss(images, seg, roi, 0.7, 20.0, neighbourhood, spacing=2.0), unit / 2)


def test_a_uniform_spacing_divides_the_loss_by_it(rng, device):
    images, seg, roi = (t.to(device) for t in volume_batch(rng))
    unit = WF.grid_crf_loss(images, seg, roi, 0.7, 20.0, 18)
    scaled = WF.grid_crf_loss(images, seg, roi, 0.7, 20.0, 18, spacing=(0.3, 0.3, 0.3))
    assert abs(scaled.item() - unit.item() / 0.3) <= 1e-14 * abs(unit.item() / 0.3)


def test_spacing_along_one_axis_weighs_only_its_pairs(rng, device):
    """With 6 neighbours, sz = 4 divides the pairs across slices by 4 and leaves the others:
    loss(sz=4) = in-plane + across / 4, with the two parts from unit-spacing volumes."""
    images, seg, roi = (t.to(device) for t in volume_batch(rng))
    full = WF.grid_crf_loss(images, seg, roi, 1.0, 20.0, 6)
    one_slice_each = sum(WF.grid_crf_loss(images[:, :, z:z + 1], seg[:, :, z:z + 1], roi[:, z:z + 1], 1.0, 20.0, 6)
                         for z in range(seg.shape[2]))
    across = full - one_slice_each
    thick = WF.grid_crf_loss(images, seg, roi, 1.0, 20.0, 6, spacing=(4.0, 1.0, 1.0))
    torch.testing.assert_close(thick, one_slice_each + across / 4, rtol=1e-13, atol=0)
    assert across.item() > 0


def test_image_loss_with_spacing_1_1_is_the_default_bit_for_bit(rng, device):
    images = random_photo(2, 13, 11, rng).to(device)
    seg = torch.softmax(torch.randn(2, 4, 13, 11, generator=rng), 1).to(device)
    roi = (torch.rand(2, 13, 11, generator=rng) > 0.2).float().to(device)
    for neighbourhood in (4, 8):
        default = WF.grid_crf_loss(images, seg, roi, 0.7, 20.0, neighbourhood)
        assert torch.equal(WF.grid_crf_loss(images, seg, roi, 0.7, 20.0, neighbourhood, spacing=(1, 1)), default)
        assert torch.equal(WF.grid_crf_loss(images, seg, roi, 0.7, 20.0, neighbourhood, spacing=1.0), default)


def test_image_spacing_scales_the_pairs_along_each_axis(rng, device):
    """(sy, sx) = (1, 2) with 4 neighbours: horizontal pairs weigh 1/2, vertical ones 1; the
    horizontal part is the loss of 1-pixel-high strips."""
    images = random_photo(2, 6, 7, rng).double().to(device)
    seg = torch.softmax(torch.randn(2, 3, 6, 7, generator=rng, dtype=torch.float64), 1).to(device)
    full = WF.grid_crf_loss(images, seg, None, 1.0, 20.0, 4)
    rows = sum(WF.grid_crf_loss(images[:, :, y:y + 1], seg[:, :, y:y + 1], None, 1.0, 20.0, 4) for y in range(6))
    torch.testing.assert_close(WF.grid_crf_loss(images, seg, None, 1.0, 20.0, 4, spacing=(1.0, 2.0)),
                               full - rows / 2, rtol=1e-13, atol=0)


def test_volume_defaults_to_6_neighbours_and_images_to_4(rng, device):
    images, seg, roi = (t.to(device) for t in volume_batch(rng))
    assert torch.equal(WF.grid_crf_loss(images, seg, roi, 1.0, 20.0), WF.grid_crf_loss(images, seg, roi, 1.0, 20.0, 6))
    assert torch.equal(wsloss.GridCRFLoss(1.0, 20.0)(images, seg, roi), WF.grid_crf_loss(images, seg, roi, 1.0, 20.0, 6))
    flat_images, flat_seg, flat_roi = images[:, :, 0], seg[:, :, 0], roi[:, 0]
    assert torch.equal(wsloss.GridCRFLoss(1.0, 20.0)(flat_images, flat_seg, flat_roi),
                       WF.grid_crf_loss(flat_images, flat_seg, flat_roi, 1.0, 20.0, 4))


def test_module_passes_neighbourhood_relaxation_and_spacing(rng, device):
    images, seg, roi = (t.to(device) for t in volume_batch(rng))
    module = wsloss.GridCRFLoss(0.3, 12.0, 18, "bilinear", spacing=(3.0, 1.0, 0.5))
    assert torch.equal(module(images, seg, roi),
                       WF.grid_crf_loss(images, seg, roi, 0.3, 12.0, 18, "bilinear", spacing=(3.0, 1.0, 0.5)))
    assert "spacing=(3.0, 1.0, 0.5)" in repr(module)


def test_rois_b_1_d_h_w_none_and_ones_agree(rng, device):
    images, seg, roi = (t.to(device) for t in volume_batch(rng))
    loss = WF.grid_crf_loss(images, seg, roi, 1.0, 20.0, 26)
    assert torch.equal(WF.grid_crf_loss(images, seg, roi[:, None], 1.0, 20.0, 26), loss)
    assert torch.equal(WF.grid_crf_loss(images, seg, None, 1.0, 20.0, 26),
                       WF.grid_crf_loss(images, seg, torch.ones_like(roi), 1.0, 20.0, 26))


def test_zero_roi_volume_gives_zero_loss_and_gradient(rng, device):
    images, seg, roi = (t.to(device) for t in volume_batch(rng))
    s = seg.clone().requires_grad_()
    loss = WF.grid_crf_loss(images, s, torch.zeros_like(roi), 1.0, 20.0, 26)
    loss.backward()
    assert loss.item() == 0 and torch.all(s.grad == 0)


def test_volume_loss_propagates_shapes_on_meta():
    images = torch.empty(2, 1, 4, 5, 6, device="meta")
    seg = torch.empty(2, 3, 4, 5, 6, device="meta")
    assert WF.grid_crf_loss(images, seg, None, 1.0, 10.0, 18, spacing=(2, 1, 1)).device.type == "meta"


def test_grid_crf_ops_pass_opcheck_on_volumes(rng, device):
    """torch.library.opcheck (schema, fake kernel, autograd registration, torch.compile) of the
    grid CRF ops on volumes, with and without a spacing, as the image cases of test_production.py."""
    images, seg, roi = (t.to(device) for t in volume_batch(rng, depth=3, height=4, width=5))
    grad_energy = torch.rand(roi.shape, generator=rng, dtype=torch.float64).to(device)
    for neighbourhood in NEIGHBOURHOODS:
        for bilinear in (False, True):
            for spacing in (None, [2.0, 1.0, 0.5]):
                options = (images, roi, 20.0, neighbourhood, bilinear, spacing)
                torch.library.opcheck(torch.ops.wsloss.grid_crf.default, (seg.clone().requires_grad_(),) + options)
                torch.library.opcheck(torch.ops.wsloss.grid_crf_backward.default, (grad_energy, seg) + options)


def test_grid_crf_op_energy_is_per_voxel(rng):
    """The op's energy is B x D x H x W, the pairs that start at each voxel (DESIGN §3)."""
    images, seg, roi = volume_batch(rng)
    energy = torch.ops.wsloss.grid_crf(seg, images, roi, 20.0, 26, False, [1.0, 1.0, 1.0])
    assert energy.shape == roi.shape
    torch.testing.assert_close(energy.sum() * 0.5 / 2, volume_reference(images, seg, roi, 0.5, 20.0, 26, "quadratic"),
                               rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- bad input

IMAGES = torch.rand(2, 3, 8, 9) * 255
SEG = torch.softmax(torch.randn(2, 4, 8, 9), 1)
VOLUMES = torch.rand(2, 1, 3, 8, 9) * 255
VOLUME_SEG = torch.softmax(torch.randn(2, 4, 3, 8, 9), 1)


def case(name, *args):
    return pytest.param(*args, id=name)


@pytest.mark.parametrize("images, seg, roi, options, match", [
    case("neighbourhood-6-on-an-image", IMAGES, SEG, None, dict(neighbourhood=6),
         "neighbourhood must be 4 or 8 for images"),
    case("neighbourhood-4-on-a-volume", VOLUMES, VOLUME_SEG, None, dict(neighbourhood=4),
         "neighbourhood must be 6, 18 or 26 for volumes"),
    case("neighbourhood-8-on-a-volume", VOLUMES, VOLUME_SEG, None, dict(neighbourhood=8),
         "neighbourhood must be 6, 18 or 26 for volumes"),
    case("spacing-of-three-on-an-image", IMAGES, SEG, None, dict(spacing=(1.0, 1.0, 1.0)),
         r"spacing must be one number or 2 numbers \(sy, sx\)"),
    case("spacing-of-two-on-a-volume", VOLUMES, VOLUME_SEG, None, dict(spacing=(1.0, 1.0)),
         r"spacing must be one number or 3 numbers \(sz, sy, sx\)"),
    case("spacing-zero", VOLUMES, VOLUME_SEG, None, dict(spacing=(1.0, 0.0, 1.0)),
         r"spacing\[1\] must be finite and > 0"),
    case("spacing-negative", IMAGES, SEG, None, dict(spacing=-1.0), "spacing must be finite and > 0"),
    case("spacing-inf", VOLUMES, VOLUME_SEG, None, dict(spacing=(math.inf, 1.0, 1.0)),
         r"spacing\[0\] must be finite and > 0"),
    case("volume-images-with-image-segmentations", VOLUMES, SEG, None, {}, "images must be 4-D like segmentations"),
    case("image-images-with-volume-segmentations", IMAGES, VOLUME_SEG, None, {},
         "images must be 5-D like segmentations"),
    case("volume-images-of-another-depth", VOLUMES[:, :, :2], VOLUME_SEG, None, {},
         "images must be B x C x D x H x W = 2 x C x 3 x 8 x 9"),
    case("rois-of-an-image-with-a-volume", VOLUMES, VOLUME_SEG, torch.ones(2, 8, 9), {},
         "ROIs must be 4-D or 5-D"),
    case("rois-of-another-depth", VOLUMES, VOLUME_SEG, torch.ones(2, 2, 8, 9), {},
         "ROIs must be B x D x H x W = 2 x 3 x 8 x 9"),
    case("rois-of-two-channels", VOLUMES, VOLUME_SEG, torch.ones(2, 2, 3, 8, 9), {},
         "ROIs must be B x D x H x W or B x 1 x D x H x W"),
    case("segmentations-6d", VOLUMES, VOLUME_SEG[None], None, {}, "segmentations must be 4-D or 5-D"),
])
def test_bad_volume_input_is_a_value_error_naming_the_argument(images, seg, roi, options, match):
    with pytest.raises(ValueError, match=match):
        WF.grid_crf_loss(images, seg, roi, 1.0, 10.0, **options)


def test_module_with_the_wrong_neighbourhood_names_it():
    with pytest.raises(ValueError, match="neighbourhood must be 6, 18 or 26 for volumes"):
        wsloss.GridCRFLoss(1.0, 10.0, 8)(VOLUMES, VOLUME_SEG)


def test_spacing_whose_inverse_distances_overflow_float32_is_refused():
    """1 / dist must be a normal float32 number (DESIGN §6): a spacing of 1e-39 would make the
    weights infinite."""
    with pytest.raises(ValueError, match="spacing must give neighbour distances whose inverses are normal"):
        WF.grid_crf_loss(VOLUMES, VOLUME_SEG, None, 1.0, 10.0, spacing=(1e-39, 1.0, 1.0))


def test_grid_crf_op_refuses_a_neighbourhood_of_the_other_rank():
    with pytest.raises(ValueError, match="grid_crf: neighbourhood must be 6, 18 or 26 for volumes"):
        torch.ops.wsloss.grid_crf(VOLUME_SEG, VOLUMES, torch.ones(2, 3, 8, 9), 10.0, 8, False)
    with pytest.raises(ValueError, match="grid_crf: neighbourhood must be 4 or 8 for images"):
        torch.ops.wsloss.grid_crf(SEG, IMAGES, torch.ones(2, 8, 9), 10.0, 26, False)
    with pytest.raises(ValueError, match="grid_crf: spacing must have one entry per spatial axis"):
        torch.ops.wsloss.grid_crf(SEG, IMAGES, torch.ones(2, 8, 9), 10.0, 4, False, [1.0, 1.0, 1.0])


# ----------------------------------------------------------------------------- CUDA


@requires_cuda
@pytest.mark.parametrize("neighbourhood", NEIGHBOURHOODS)
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_cuda_volume_loss_and_gradient_equal_the_cpu_ones(neighbourhood, relaxation, rng):
    """Odd sizes, K = 21, anisotropic spacing, float32 and float64: CUDA's thread per voxel against
    the CPU rows (the same per-voxel arithmetic, DESIGN §9)."""
    images, seg, roi = volume_batch(rng, batch=3, classes=21, channels=3, depth=7, height=19, width=37)
    for dtype, rtol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        s_cpu = seg.to(dtype).requires_grad_()
        s_gpu = seg.to(dtype).cuda().requires_grad_()
        options = (0.5, 15.0, neighbourhood, relaxation)
        cpu = WF.grid_crf_loss(images, s_cpu, roi, *options, spacing=(2.0, 1.0, 0.7))
        gpu = WF.grid_crf_loss(images.cuda(), s_gpu, roi.cuda(), *options, spacing=(2.0, 1.0, 0.7))
        cpu.backward()
        gpu.backward()
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=rtol, atol=0)
        torch.testing.assert_close(s_gpu.grad.cpu(), s_cpu.grad, rtol=rtol, atol=rtol * s_cpu.grad.abs().max().item())
