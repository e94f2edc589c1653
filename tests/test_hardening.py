"""Hostile input (docs/DESIGN.md §6): corrupted lattices, derived constants that would overflow,
bad ROIs, double backward, meta tensors and common mistakes (EM-Adapt's float32 rounding:
test_em.py). Each is a clear error
or a correct result, never a crash or a silent wrong number."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import wsloss
from helpers import photo_batch, requires_cuda
from wsloss import functional as WF

ops = torch.ops.wsloss
LATTICE_TENSORS = ("vertices", "weights", "neighbours", "splat_ptr", "splat_index")
INDEX_TENSORS = ("vertices", "neighbours", "splat_ptr", "splat_index")


def built_lattice(device, seed=0, batch=2, dim=5, pixels=40):
    g = torch.Generator().manual_seed(seed)
    return wsloss.PermutohedralLattice((torch.randn(batch, dim, pixels, generator=g) * 2).to(device), splat_csr=True)


def filter_both_ways(tensors, values):
    """lattice_filter and lattice_filter_into on the same tensors (each must refuse them)."""
    for call in (lambda: ops.lattice_filter(*tensors, values),
                 lambda: ops.lattice_filter_into(*tensors, values, False, torch.empty_like(values),
                                                 values.new_empty(0))):
        with pytest.raises(ValueError, match="lattice_filter: the lattice tensors are not from one lattice_build"):
            call()


# ----------------------------------------------------------------------------- corrupted lattices


@pytest.mark.parametrize("value", [10 ** 8, -1, -(10 ** 8)])
@pytest.mark.parametrize("name", INDEX_TENSORS)
def test_lattice_filter_refuses_an_index_out_of_range(device, name, value):
    """One vertex, neighbour or CSR index set far out of range is a ValueError, not a segfault."""
    lattice = built_lattice(device)
    tensors = [t.clone() for t in lattice.tensors]
    flat = tensors[LATTICE_TENSORS.index(name)].view(-1)
    flat[flat.numel() // 2] = value
    filter_both_ways(tensors, torch.randn(2, 3, 40, device=device))


@pytest.mark.parametrize("value", [10 ** 8, -1])
@pytest.mark.parametrize("name", ["vertices", "neighbours"])
def test_a_lattice_without_the_splat_csr_refuses_an_index_out_of_range(name, value):
    """Built without the CSR (CPU), the tensors' indices are still checked before any is used."""
    lattice = wsloss.PermutohedralLattice((torch.randn(2, 5, 40, generator=torch.Generator().manual_seed(0)) * 2),
                                          splat_csr=False)
    tensors = [t.clone() for t in lattice.tensors]
    flat = tensors[LATTICE_TENSORS.index(name)].view(-1)
    flat[flat.numel() // 2] = value
    filter_both_ways(tensors, torch.randn(2, 3, 40))


def test_half_a_splat_csr_is_refused(device):
    """splat_ptr and splat_index are both there or both empty: one alone is a ValueError."""
    tensors = list(built_lattice(device).tensors)
    for index in (3, 4):
        broken = tensors.copy()
        broken[index] = broken[index][:0]
        with pytest.raises(ValueError, match="inconsistent lattice tensors"):
            ops.lattice_filter(*broken, torch.randn(2, 3, 40, device=device))


@pytest.mark.parametrize("name", ["vertices", "splat_ptr", "splat_index"])
def test_lattice_filter_refuses_an_index_moved_within_range(device, name):
    """A vertex or CSR entry that names another valid index breaks the CSR's bijection: refused."""
    lattice = built_lattice(device)
    tensors = [t.clone() for t in lattice.tensors]
    flat = tensors[LATTICE_TENSORS.index(name)].view(-1)
    middle = flat.numel() // 2
    flat[middle] = flat[middle] + 1 if name != "splat_ptr" else flat[middle - 1]
    filter_both_ways(tensors, torch.randn(2, 3, 40, device=device))


@pytest.mark.parametrize("name", ["vertices", "splat_ptr", "splat_index"])
def test_lattice_filter_refuses_tensors_of_two_lattices(device, name):
    """One tensor of another lattice whose shapes agree (the same pixels in reverse order: the same
    vertices, numbered and listed otherwise) is refused, not filtered into garbage."""
    first = built_lattice(device)
    features = (torch.randn(2, 5, 40, generator=torch.Generator().manual_seed(0)) * 2).to(device)
    second = wsloss.PermutohedralLattice(features.flip(2), splat_csr=True)
    assert all(a.shape == b.shape for a, b in zip(first.tensors, second.tensors))
    tensors = list(first.tensors)
    index = LATTICE_TENSORS.index(name)
    tensors[index] = second.tensors[index]
    filter_both_ways(tensors, torch.randn(2, 3, 40, device=device))


def test_lattice_filter_refuses_a_vertex_shared_by_two_images(device):
    """Image 1's first corner listed under a vertex of image 0: the images' CSR blocks must stay apart."""
    lattice = built_lattice(device)
    tensors = [t.clone() for t in lattice.tensors]
    vertices = tensors[0]
    vertices[1, 0, 0] = vertices[0, 0, 0]
    filter_both_ways(tensors, torch.randn(2, 3, 40, device=device))


def test_lattice_filter_validation_changes_no_bit(device):
    """Validated (the op's default) and trusted (validate=False, PermutohedralLattice.apply) filterings
    of a built lattice are the same bits."""
    lattice = built_lattice(device)
    values = torch.randn(2, 3, 40, device=device, dtype=torch.float64)
    for transpose in (False, True):
        checked = ops.lattice_filter(*lattice.tensors, values, transpose)
        assert torch.equal(checked, ops.lattice_filter(*lattice.tensors, values, transpose, False))
        assert torch.equal(checked, lattice.apply(values, transpose))


# ----------------------------------------------------------------------------- derived constants


@pytest.mark.parametrize("sigma", [1e-20, 1e-30, 1e19, 1e300])
def test_grid_crf_refuses_a_sigma_whose_exponent_factor_is_not_a_normal_float32(rng, sigma):
    """1 / (2 sigma^2) overflowing (or underflowing) float32 would give NaN weights: refused with the range."""
    images, segmentations, _ = photo_batch(rng, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"sigma must be in \[3\.83e-20, 6\.52e\+18\]"):
        WF.grid_crf_loss(images, segmentations, None, 1.0, sigma)


@pytest.mark.parametrize("sigma", [3.84e-20, 6.5e18])
def test_grid_crf_is_finite_at_the_ends_of_the_sigma_range(rng, sigma):
    images, segmentations, _ = photo_batch(rng, dtype=torch.float32)
    images[:, :, :4] = 17.0  # equal neighbours: exp(0 * 1 / (2 sigma^2)) is 1, not NaN
    assert torch.isfinite(WF.grid_crf_loss(images, segmentations, None, 1.0, sigma))


def test_grid_crf_checks_images_after_the_cast_to_the_compute_dtype(rng):
    """float64 images near 1e300 are finite but become Inf in float32: refused, not a NaN loss."""
    images, segmentations, _ = photo_batch(rng, dtype=torch.float32)
    with pytest.raises(ValueError, match="images must be finite in torch.float32"):
        WF.grid_crf_loss(images.double() * 1e300, segmentations, None, 1.0, 10.0)


def test_dense_losses_refuse_an_upscaling_scale_factor(rng):
    """scale_factor > 1 adds nothing and could exhaust memory (1e6 times the pixels per axis)."""
    images, segmentations, _ = photo_batch(rng, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"scale_factor must be in \(0, 1\]"):
        WF.dense_crf_loss(images, segmentations, None, 1.0, 15.0, 10.0, 1e6)


# ----------------------------------------------------------------------------- ROIs

ROI_LOSSES = {
    "dense_crf": lambda i, s, r: WF.dense_crf_loss(i, s, r, 1.0, 15.0, 10.0),
    "dense_crf scale 0.5": lambda i, s, r: WF.dense_crf_loss(i, s, r, 1.0, 15.0, 10.0, 0.5),
    "kernel_cut": lambda i, s, r: WF.kernel_cut_loss(i, s, r, 1.0, 0.5, 15.0, 10.0),
    "normalized_cut": lambda i, s, r: WF.normalized_cut_loss(i, s, r, 1.0, 15.0, 10.0),
    "grid_crf": lambda i, s, r: WF.grid_crf_loss(i, s, r, 1.0, 10.0),
    "entropy": lambda i, s, r: WF.entropy_loss(s, r),
}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -0.5, 1.5])
@pytest.mark.parametrize("loss", sorted(ROI_LOSSES))
def test_a_roi_value_that_is_not_finite_or_outside_0_1_is_refused(rng, loss, bad):
    """One bad ROI pixel is a ValueError naming the ROIs (CPU), not a NaN loss."""
    images, segmentations, rois = photo_batch(rng, dtype=torch.float32)
    rois[1, 4, 5] = bad
    with pytest.raises(ValueError, match=r"ROIs must be finite and in \[0, 1\]"):
        ROI_LOSSES[loss](images, segmentations, rois)


@pytest.mark.parametrize("loss", sorted(ROI_LOSSES))
def test_fractional_rois_are_accepted(rng, loss):
    images, segmentations, rois = photo_batch(rng, dtype=torch.float32)
    rois = torch.rand(rois.shape, generator=rng)
    assert torch.isfinite(ROI_LOSSES[loss](images, segmentations, rois))


# ----------------------------------------------------------------------------- double backward


def test_entropy_loss_double_backward_is_exact(rng):
    """gradgradcheck: the Hessian-vector products of the entropy are its true ones, not zero."""
    _, _, rois = photo_batch(rng, batch=2, classes=3, height=4, width=5)
    # Probabilities well inside (0, 1): finite differences of step 1e-6 must not cross 0.
    segmentations = torch.softmax(0.5 * torch.randn(2, 3, 4, 5, generator=rng, dtype=torch.float64), 1)
    segmentations.requires_grad_()
    assert torch.autograd.gradgradcheck(lambda s: WF.entropy_loss(s, rois, 0.7), (segmentations,))


@pytest.mark.parametrize("loss", ["grid_crf", "dense_crf", "kernel_cut"])
def test_losses_without_double_backward_refuse_create_graph(rng, loss):
    """The grid CRF and the dense losses refuse create_graph=True alike, never a zero Hessian."""
    images, segmentations, rois = photo_batch(rng, dtype=torch.float64)
    segmentations.requires_grad_()
    value = ROI_LOSSES[loss](images, segmentations, rois)
    with pytest.raises(RuntimeError, match="supports? no double backward"):
        torch.autograd.grad(value, segmentations, create_graph=True)


# ----------------------------------------------------------------------------- meta tensors


def meta(*shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")


def test_shape_only_entry_points_run_on_meta_tensors():
    """Entropy, partial cross-entropy, the grid CRF and the E-steps propagate shapes on meta."""
    images, segmentations = meta(2, 3, 9, 11), meta(2, 4, 9, 11)
    present = meta(2, 4, dtype=torch.bool)
    assert WF.entropy_loss(segmentations).shape == ()
    assert WF.partial_cross_entropy(segmentations, meta(2, 9, 11, dtype=torch.int64)).shape == ()
    assert WF.grid_crf_loss(images, segmentations, None, 1.0, 10.0).device.type == "meta"
    labels, biases = wsloss.em_adapt(segmentations, present)
    assert labels.shape == (2, 9, 11) and biases.shape == (2, 4)
    assert wsloss.em_fixed(segmentations, present).shape == (2, 9, 11)


@pytest.mark.parametrize("entry", ["DenseCRFLoss", "KernelCutLoss", "dense_crf", "PermutohedralLattice"])
def test_value_dependent_entry_points_say_meta_is_not_supported(entry):
    """A lattice's size depends on the values: meta tensors are refused by name."""
    images, segmentations = meta(2, 3, 9, 11), meta(2, 4, 9, 11)
    calls = {
        "DenseCRFLoss": lambda: wsloss.DenseCRFLoss(1.0, 15.0, 10.0)(images, segmentations),
        "KernelCutLoss": lambda: wsloss.KernelCutLoss(1.0, 0.5, 15.0, 10.0)(images, segmentations),
        "dense_crf": lambda: wsloss.dense_crf(segmentations, images, 2),
        "PermutohedralLattice": lambda: wsloss.PermutohedralLattice(meta(2, 5, 99)),
    }
    with pytest.raises(ValueError, match="meta tensors are not supported"):
        calls[entry]()


def test_lattice_filter_propagates_shapes_on_meta():
    lattice = built_lattice("cpu")
    tensors = [t.to("meta") for t in lattice.tensors]
    out = ops.lattice_filter(*tensors, meta(2, 3, 40, dtype=torch.float64))
    assert out.shape == (2, 3, 40) and out.dtype == torch.float64 and out.device.type == "meta"


def test_partial_cross_entropy_double_backward_is_exact(rng):
    logits = torch.randn(2, 3, 4, 5, generator=rng, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4, 5), generator=rng)
    labels[0, 0] = 255
    assert torch.autograd.gradgradcheck(lambda x: WF.partial_cross_entropy(x, labels), (logits,))


# ----------------------------------------------------------------------------- common mistakes

PROBABILITY_LOSSES = {
    "DenseCRFLoss": lambda **o: wsloss.DenseCRFLoss(1.0, 15.0, 10.0, **o),
    "NormalizedCutLoss": lambda **o: wsloss.NormalizedCutLoss(1.0, 15.0, 10.0, **o),
    "QuadraticCRFLoss": lambda **o: wsloss.QuadraticCRFLoss(1.0, 15.0, 10.0, **o),
    "KernelCutLoss": lambda **o: wsloss.KernelCutLoss(1.0, 0.5, 15.0, 10.0, 0.5, **o),
    "GridCRFLoss": lambda **o: wsloss.GridCRFLoss(1.0, 10.0, **o),
    "EntropyLoss": lambda **o: wsloss.EntropyLoss(1.0, **o),
}


def call(name, loss, images, segmentations):
    return loss(segmentations) if name == "EntropyLoss" else loss(images, segmentations)


@pytest.mark.parametrize("mistake", ["logits", "swapped", "sigmoid"])
@pytest.mark.parametrize("name", sorted(PROBABILITY_LOSSES))
def test_segmentations_that_are_not_probabilities_are_refused(rng, name, mistake):
    """Logits, the images in the segmentations' place (swapped arguments) or per-class sigmoids:
    a ValueError naming both usual causes, not a silent number."""
    images, segmentations, _ = photo_batch(rng, classes=4, dtype=torch.float32)
    logits = torch.randn(segmentations.shape, generator=rng) * 3
    bad = {"logits": logits, "swapped": images[:, :3].clone(), "sigmoid": torch.sigmoid(logits)}[mistake]
    with pytest.raises(ValueError, match="segmentations must be probabilities.*logits.*swapped"):
        call(name, PROBABILITY_LOSSES[name](), images[:, :3] if mistake != "swapped" else segmentations[:, :3], bad)


@pytest.mark.parametrize("name", sorted(PROBABILITY_LOSSES))
def test_check_probabilities_false_lets_deliberate_inputs_through(rng, name):
    images, segmentations, _ = photo_batch(rng, classes=4, dtype=torch.float32)
    logits = torch.randn(segmentations.shape, generator=rng)
    assert torch.isfinite(call(name, PROBABILITY_LOSSES[name](check_probabilities=False), images, logits))


@pytest.mark.parametrize("name", sorted(PROBABILITY_LOSSES))
def test_probabilities_with_masked_pixels_and_half_precision_rounding_pass(rng, name):
    """Class sums below 1 (pixels zeroed outside the ROI, a dropped class) and bfloat16 softmax
    outputs are probabilities as far as the check goes."""
    images, segmentations, rois = photo_batch(rng, classes=4, dtype=torch.float32)
    masked = (segmentations * rois[:, None]).to(torch.bfloat16)
    assert torch.isfinite(call(name, PROBABILITY_LOSSES[name](), images, masked))


@pytest.mark.parametrize("name", ["DenseCRFLoss", "KernelCutLoss", "GridCRFLoss"])
def test_normalized_images_get_a_warning(rng, name):
    """Images in 0..1 with rloss's sigma_rgb (in 0..255 units) are almost surely a mistake: a
    UserWarning naming sigma_rgb, once per process (Python's default filter)."""
    images, segmentations, _ = photo_batch(rng, dtype=torch.float32)
    with pytest.warns(UserWarning, match="images look normalized.*sigma_rgb"):
        call(name, PROBABILITY_LOSSES[name](), images / 255, segmentations)


def test_images_in_0_255_get_no_warning(rng, recwarn):
    images, segmentations, _ = photo_batch(rng, dtype=torch.float32)
    wsloss.DenseCRFLoss(1.0, 15.0, 10.0)(images, segmentations)
    assert not [w for w in recwarn if "normalized" in str(w.message)]


def test_images_that_require_grad_get_no_gradient_and_one_documented_warning(rng):
    """No torch warning about an op without an autograd kernel: wsloss's own, saying that the
    lattice passes no gradient to the images; the segmentations' gradient is unchanged."""
    images, segmentations, _ = photo_batch(rng, dtype=torch.float32)
    plain = segmentations.clone().requires_grad_()
    wsloss.DenseCRFLoss(1.0, 15.0, 10.0)(images, plain).backward()
    images.requires_grad_()
    tracked = segmentations.clone().requires_grad_()
    with pytest.warns(UserWarning) as warned:
        wsloss.DenseCRFLoss(1.0, 15.0, 10.0)(images, tracked).backward()
    messages = [str(w.message) for w in warned]
    assert any("passes no gradient" in m for m in messages)
    assert not any("autograd kernel was not registered" in m for m in messages), messages
    assert images.grad is None
    assert torch.equal(tracked.grad, plain.grad)


# ----------------------------------------------------------------------------- fuzz


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=requires_cuda)])
@settings(max_examples=2000, deadline=None, database=None)
@given(seed=st.integers(0, 2 ** 32 - 1), dim=st.integers(1, 6), pixels=st.integers(1, 30),
       batch=st.integers(1, 3), corruptions=st.lists(
           st.tuples(st.sampled_from(INDEX_TENSORS), st.floats(0, 1, exclude_max=True),
                     st.sampled_from(["random", "big", "negative", "neighbour", "zero"])), min_size=1, max_size=4),
       other_lattice=st.sampled_from([None, *LATTICE_TENSORS]), data=st.data())
def test_lattice_filter_on_corrupted_lattices_refuses_or_stays_in_bounds(device, seed, dim, pixels, batch,
                                                                          corruptions, other_lattice, data):
    """Random corruptions of a built lattice (indices overwritten, tensors swapped with another
    lattice's): a ValueError, or a result of the values' shape (the change kept the tensors a valid
    lattice); never a crash or a read out of bounds."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, dim, pixels, generator=g) * 2
    lattice = wsloss.PermutohedralLattice(features.to(device))
    tensors = [t.clone() for t in lattice.tensors]
    if other_lattice is not None:
        other = wsloss.PermutohedralLattice((torch.randn(batch, dim, pixels, generator=g) * 2).to(device))
        index = LATTICE_TENSORS.index(other_lattice)
        tensors[index] = other.tensors[index].clone()
    for name, where, kind in corruptions:
        flat = tensors[LATTICE_TENSORS.index(name)].view(-1)
        if flat.numel() == 0:
            continue
        position = int(where * flat.numel())
        value = {"random": data.draw(st.integers(-(2 ** 31), 2 ** 31 - 1)), "big": 2 ** 31 - 1, "negative": -1,
                 "neighbour": int(flat[position]) + data.draw(st.sampled_from([-1, 1])), "zero": 0}[kind]
        flat[position] = min(max(value, -(2 ** 31)), 2 ** 31 - 1)
    values = torch.randn(batch, 2, pixels, generator=g).to(device)
    try:
        out = ops.lattice_filter(*tensors, values)
    except ValueError as error:
        assert "lattice_filter" in str(error)
        return
    assert out.shape == values.shape and torch.isfinite(out).all()


# ----------------------------------------------------------------------------- every other entry point


def draw_boxes(data, batch, classes, height, width):
    """Per image 0-3 boxes (x0, y0, x1, y1) inside the image, classes in 1..K-1."""
    boxes, labels = [], []
    for _ in range(batch):
        count = data.draw(st.integers(0, 3)) if classes > 1 else 0
        image_boxes = []
        for _ in range(count):
            x0, x1 = sorted(data.draw(st.floats(0, width)) for _ in range(2))
            y0, y1 = sorted(data.draw(st.floats(0, height)) for _ in range(2))
            image_boxes.append((x0, y0, x1, y1))
        boxes.append(image_boxes)
        labels.append([data.draw(st.integers(1, classes - 1)) for _ in image_boxes])
    return boxes, labels


def entry_point_results(name, images, logits, probabilities, labels, present, rois, data):
    """The named entry point's tensor results on finite valid inputs."""
    batch, classes, height, width = logits.shape
    if name == "bbox_rect":
        return [wsloss.bbox_rect(*draw_boxes(data, batch, classes, height, width), height, width)]
    if name == "bbox_em_fixed":
        rect = wsloss.bbox_rect(*draw_boxes(data, batch, classes, height, width), height, width)
        return [wsloss.bbox_em_fixed(logits, rect)]
    if name == "bbox_seg":
        return [wsloss.bbox_seg(images, *draw_boxes(data, batch, classes, height, width), iterations=2)]
    if name == "semi_supervised_targets":
        strong = torch.rand(batch, generator=torch.Generator().manual_seed(batch)) < 0.5
        return [wsloss.semi_supervised_targets(logits, present, labels, strong)]
    if name in ("EMAdaptLoss", "EMFixedLoss"):
        return [getattr(wsloss, name)()(logits, present)]
    if name == "RegularizedLoss":
        loss = wsloss.RegularizedLoss(crf=wsloss.DenseCRFLoss(1e-3, 15.0, 10.0), grid=wsloss.GridCRFLoss(0.1, 10.0),
                                      entropy=wsloss.EntropyLoss(0.1))
        total, terms = loss(logits, labels, images, rois, return_terms=True)
        return [total, *terms.values()]
    if name == "PartialCrossEntropyLoss":
        return [wsloss.PartialCrossEntropyLoss()(logits, labels)]
    if name == "DenseCRF":
        return [wsloss.DenseCRF(iterations=2)(logits, images)]
    if name == "affinity_mass":
        return [WF.affinity_mass(images, rois, 15.0, 10.0)]
    if name == "spatial_features":
        return [wsloss.spatial_features(images, 10.0)]
    if name == "lattice_filter_into":
        lattice = wsloss.PermutohedralLattice(wsloss.bilateral_features(images, 15.0, 10.0))
        flat = probabilities.flatten(2)
        out = torch.empty_like(flat)
        ops.lattice_filter_into(*lattice.tensors, flat, False, out, flat.new_empty(0))
        return [out]
    if name == "grid_crf_backward":
        energy = ops.grid_crf(probabilities, images, rois, 10.0, 4, False)
        return [energy, ops.grid_crf_backward(torch.ones_like(energy), probabilities, images, rois, 10.0, 4, False)]
    if name == "em_adapt op":
        order = torch.arange(classes).expand(batch, classes).contiguous()
        return list(ops.em_adapt(logits.flatten(2), present, order, 0.4, 0.2, True, 1e-5))
    raise AssertionError(name)


OTHER_ENTRY_POINTS = ("bbox_rect", "bbox_em_fixed", "bbox_seg", "semi_supervised_targets", "EMAdaptLoss",
                      "EMFixedLoss", "RegularizedLoss", "PartialCrossEntropyLoss", "DenseCRF", "affinity_mass",
                      "spatial_features", "lattice_filter_into", "grid_crf_backward", "em_adapt op")


@settings(max_examples=2000, deadline=None, database=None)
@given(name=st.sampled_from(OTHER_ENTRY_POINTS), batch=st.integers(1, 3), classes=st.integers(1, 22),
       height=st.integers(1, 12), width=st.integers(1, 12), logit_scale=st.sampled_from([0.01, 1.0, 30.0]),
       seed=st.integers(0, 2 ** 32 - 1), data=st.data())
def test_other_entry_points_give_finite_results_on_finite_valid_input(name, batch, classes, height, width,
                                                                       logit_scale, seed, data):
    """The entry points test_properties.py does not draw (boxes, E-step losses, the combinator, the
    inference module, the raw ops): finite results, labels in range, from any finite valid input."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, height, width, generator=g) * 255
    logits = torch.randn(batch, classes, height, width, generator=g) * logit_scale
    probabilities = torch.softmax(logits, 1)
    labels = torch.randint(0, classes, (batch, height, width), generator=g)
    labels[torch.rand(labels.shape, generator=g) < 0.5] = 255
    present = torch.rand(batch, classes, generator=g) < 0.5
    rois = (torch.rand(batch, height, width, generator=g) < 0.8).float()
    for result in entry_point_results(name, images, logits, probabilities, labels, present, rois, data):
        if result.is_floating_point():
            assert torch.isfinite(result).all(), (name, result)
        else:
            assert ((result >= 0) & ((result < classes) | (result == 255))).all(), (name, result)


def test_grid_crf_op_refuses_a_sigma_whose_exponent_factor_is_not_normal():
    """The op, called directly, refuses it too (float32: sigma below 3.9e-20)."""
    segmentations = torch.full((1, 2, 3, 3), 0.5)
    with pytest.raises(ValueError, match=r"grid_crf: 1 / \(2 sigma\^2\) must be a normal"):
        ops.grid_crf(segmentations, torch.zeros(1, 3, 3, 3), torch.ones(1, 3, 3), 1e-20, 4, False)
    energy = ops.grid_crf(segmentations.double(), torch.zeros(1, 3, 3, 3).double(), torch.ones(1, 3, 3).double(),
                          1e-20, 4, False)  # 1.25e39 is a normal float64
    assert torch.isfinite(energy).all()
