"""Bad input gives a clear ValueError / TypeError naming the argument (docs/DESIGN.md §6)."""
import pytest
import torch

import wsloss
from wsloss import DenseCRFLoss, PermutohedralLattice

IMAGES = torch.rand(2, 3, 8, 9) * 255
SEG = torch.softmax(torch.randn(2, 4, 8, 9), 1)
ROI = torch.ones(2, 8, 9)
IMAGE_LOSSES = [DenseCRFLoss(1.0, 15.0, 10.0, 1.0), wsloss.NormalizedCutLoss(1.0, 15.0, 10.0),
                wsloss.KernelCutLoss(1.0, 0.5, 15.0, 10.0), wsloss.QuadraticCRFLoss(1.0, 15.0, 10.0),
                wsloss.GridCRFLoss(1.0, 10.0)]

each_image_loss = pytest.mark.parametrize("loss", IMAGE_LOSSES, ids=lambda m: type(m).__name__)


def case(name, *args):
    """One row of a table of refused calls, shown in the test id as name."""
    return pytest.param(*args, id=name)


# Images, segmentations and ROIs passed to every image loss (images, seg, roi, error, match).


@pytest.mark.parametrize("images, seg, roi, error, match", [
    case("images-3d", IMAGES[0], SEG, ROI, ValueError, "images must be 4-D"),
    case("segmentations-3d", IMAGES, SEG[0], ROI, ValueError, "segmentations must be 4-D"),
    case("rois-2d", IMAGES, SEG, ROI[0], ValueError, "ROIs must be"),
])
@each_image_loss
def test_image_losses_refuse_tensors_of_the_wrong_rank(images, seg, roi, error, match, loss):
    with pytest.raises(error, match=match):
        loss(images, seg, roi)


@pytest.mark.parametrize("images, seg, roi, error, match", [
    case("integer-segmentations", IMAGES, SEG.long(), ROI, TypeError, "segmentations must be a floating-point"),
    case("numpy-images", IMAGES.numpy(), SEG, ROI, TypeError, "images must be a torch.Tensor"),
    case("complex-images", IMAGES.to(torch.complex64), SEG, ROI, TypeError, "images must hold real numbers"),
])
@each_image_loss
def test_image_losses_refuse_non_tensors_and_the_wrong_dtype(images, seg, roi, error, match, loss):
    with pytest.raises(error, match=match):
        loss(images, seg, roi)


@pytest.mark.parametrize("images, seg, roi, error, match", [
    case("images-of-another-batch", IMAGES[:1], SEG, ROI, ValueError, "images must be B x C x H x W"),
    case("images-of-another-width", IMAGES[..., :5], SEG, ROI, ValueError, "images must be B x C x H x W"),
    case("rois-of-another-width", IMAGES, SEG, ROI[..., :5], ValueError, "ROIs must be B x H x W"),
    case("rois-of-two-channels", IMAGES, SEG, torch.ones(2, 2, 8, 9), ValueError,
         "ROIs must be B x H x W or B x 1 x H x W"),
])
@each_image_loss
def test_image_losses_refuse_sizes_that_do_not_match_the_segmentations(images, seg, roi, error, match, loss):
    with pytest.raises(error, match=match):
        loss(images, seg, roi)


@pytest.mark.parametrize("images, seg, roi, error, match", [
    case("no-classes", IMAGES, SEG[:, :0], ROI, ValueError, "segmentations must not be empty"),
    case("no-images", IMAGES[:0], SEG[:0], ROI[:0], ValueError, "must not be empty"),
])
@each_image_loss
def test_image_losses_refuse_empty_inputs(images, seg, roi, error, match, loss):
    with pytest.raises(error, match=match):
        loss(images, seg, roi)


@each_image_loss
def test_image_losses_refuse_images_neither_on_the_cpu_nor_on_the_segmentations_device(loss):
    with pytest.raises(ValueError, match="images must be on the CPU or on the device of segmentations"):
        loss(IMAGES.to("meta"), SEG, ROI)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@each_image_loss
def test_image_losses_refuse_non_finite_images(bad, loss):
    images = IMAGES.clone()
    images[1, 2, 3, 4] = bad
    with pytest.raises(ValueError, match="finite"):
        loss(images, SEG, ROI)


# Loss parameters.


@pytest.mark.parametrize("kwargs, error, match", [
    case("sigma_rgb-zero", dict(sigma_rgb=0.0), ValueError, "sigma_rgb must be finite and > 0"),
    case("sigma_xy-negative", dict(sigma_xy=-1.0), ValueError, "sigma_xy must be finite and > 0"),
    case("sigma_xy-inf", dict(sigma_xy=float("inf")), ValueError, "sigma_xy"),
    case("scale_factor-zero", dict(scale_factor=0.0), ValueError, "scale_factor must be finite and > 0"),
    case("scale_factor-shrinks-to-nothing", dict(scale_factor=0.01), ValueError, "shrinks"),
    case("weight-nan", dict(weight=float("nan")), ValueError, "weight must be finite"),
    case("weight-string", dict(weight="1"), TypeError, "weight must be a real number"),
    case("gradient-unknown", dict(gradient="fast"), ValueError, "gradient must be one of"),
])
def test_dense_crf_loss_names_the_invalid_parameter(kwargs, error, match):
    params = dict(weight=1.0, sigma_rgb=15.0, sigma_xy=10.0, scale_factor=1.0) | kwargs
    with pytest.raises(error, match=match):
        DenseCRFLoss(**params)(IMAGES, SEG, ROI)


@pytest.mark.parametrize("make, error, match", [
    case("grid-sigma-zero", lambda: wsloss.GridCRFLoss(1.0, 0.0), ValueError, "sigma must be finite and > 0"),
    case("grid-neighbourhood-6", lambda: wsloss.GridCRFLoss(1.0, 10.0, neighbourhood=6), ValueError,
         "neighbourhood must be 4 or 8"),
    case("grid-relaxation-unknown", lambda: wsloss.GridCRFLoss(1.0, 10.0, relaxation="potts"), ValueError,
         "relaxation must be one of"),
    case("grid-weight-string", lambda: wsloss.GridCRFLoss("1", 10.0), TypeError, "weight must be a real number"),
    case("kernel-cut-crf_weight-nan", lambda: wsloss.KernelCutLoss(1.0, float("nan"), 15.0, 10.0), ValueError,
         "crf_weight must be finite"),
    case("normalized-cut-gradient-unknown", lambda: wsloss.NormalizedCutLoss(1.0, 15.0, 10.0, gradient="fast"),
         ValueError, "gradient must be one of"),
    case("quadratic-sigma_rgb-negative", lambda: wsloss.QuadraticCRFLoss(1.0, -1.0, 10.0), ValueError,
         "sigma_rgb must be finite and > 0"),
])
def test_other_regularizers_name_the_invalid_parameter(make, error, match):
    with pytest.raises(error, match=match):
        make()(IMAGES, SEG, ROI)


def test_sigma_whose_features_overflow_int32_lattice_coordinates_is_refused_not_wrapped():
    """Features beyond int32 lattice coordinates fail clearly instead of wrapping (DESIGN §1 step 7)."""
    with pytest.raises(ValueError, match="within"):
        DenseCRFLoss(1.0, 1e-6, 10.0, 1.0)(IMAGES, SEG, ROI)


@pytest.mark.parametrize("sigma_rgb, sigma_xy", [(1e-3, 1e-3), (1e6, 1e6)], ids=["tiny", "huge"])
def test_extreme_but_representable_sigmas_give_a_finite_loss(sigma_rgb, sigma_xy):
    assert torch.isfinite(DenseCRFLoss(1.0, sigma_rgb, sigma_xy, 1.0)(IMAGES, SEG, ROI))


# partial_cross_entropy and EntropyLoss.


def test_partial_cross_entropy_accepts_integer_labels_of_the_logits_size():
    """The well-formed call the refused ones below differ from by one argument."""
    assert torch.isfinite(wsloss.functional.partial_cross_entropy(SEG, ROI.long()))


@pytest.mark.parametrize("logits, labels, kwargs, error, match", [
    case("float-labels", SEG, ROI, {}, TypeError, "labels must be an integer tensor"),
    case("integer-logits", SEG.long(), ROI.long(), {}, TypeError, "logits must be a floating-point"),
    case("labels-of-another-height", SEG, ROI.long()[:, :4], {}, ValueError, "labels must be B x 8 x 9"),
    case("logits-1d", SEG[0, 0, 0], ROI.long()[0, 0], {}, ValueError, "logits must be B x K"),
    case("labels-on-another-device", SEG, ROI.long().to("meta"), {}, ValueError, "one device"),
    case("ignore_index-float", SEG, ROI.long(), dict(ignore_index=2.5), TypeError, "ignore_index must be an int"),
])
def test_partial_cross_entropy_names_the_bad_argument(logits, labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        wsloss.functional.partial_cross_entropy(logits, labels, **kwargs)


def test_entropy_loss_refuses_segmentations_and_rois_of_the_wrong_shape():
    with pytest.raises(ValueError, match="segmentations must be 4-D"):
        wsloss.EntropyLoss()(SEG[0])
    with pytest.raises(ValueError, match="ROIs must be B x H x W"):
        wsloss.EntropyLoss()(SEG, ROI[:, :3])


def test_entropy_loss_refuses_a_non_finite_weight():
    with pytest.raises(ValueError, match="weight must be finite"):
        wsloss.EntropyLoss(float("inf"))(SEG)


# The permutohedral lattice.


def grid_lattice():
    """A lattice over 2 images of 4 x 5 pixels with 3 features."""
    return PermutohedralLattice(torch.rand(2, 3, 4, 5))


def test_lattice_refuses_features_that_are_not_3d_or_4d():
    with pytest.raises(ValueError, match="features must be 3-D or 4-D"):
        PermutohedralLattice(torch.rand(3, 4))


def test_lattice_refuses_integer_features():
    with pytest.raises(TypeError, match="features must be a floating-point"):
        PermutohedralLattice(torch.ones(1, 2, 5, dtype=torch.int64))


def test_lattice_refuses_more_than_16_feature_dimensions():
    with pytest.raises(ValueError, match="feature dimension d must be in 1..16"):
        PermutohedralLattice(torch.rand(1, 17, 5))


def test_lattice_filter_refuses_values_not_in_the_features_layout():
    with pytest.raises(ValueError, match="values must be B x C x 4 x 5"):
        grid_lattice().filter(torch.rand(2, 1, 20))


def test_lattice_filter_refuses_integer_values():
    with pytest.raises(TypeError, match="values must be a floating-point"):
        grid_lattice().filter(torch.ones(2, 1, 4, 5, dtype=torch.int32))


def test_lattice_filter_op_refuses_values_of_another_pixel_count():
    with pytest.raises(ValueError, match="lattice_filter: values must be"):
        torch.ops.wsloss.lattice_filter(*grid_lattice().tensors, torch.rand(2, 1, 7), False)


def test_spatial_features_refuse_a_zero_sigma():
    with pytest.raises(ValueError, match="sigma_xy must be finite and > 0"):
        wsloss.spatial_features(IMAGES, 0)


# The E-steps (docs/DESIGN.md §4).

LOGITS = torch.randn(2, 4, 5, 6)
TAGS = torch.tensor([[True, True, False, False], [True, False, False, True]])


@pytest.mark.parametrize("call, error, match", [
    case("logits-3d", lambda: wsloss.em_adapt(LOGITS[0], TAGS), ValueError, "logits must be 4-D"),
    case("integer-logits", lambda: wsloss.em_adapt(LOGITS.long(), TAGS), TypeError, "logits must be a floating-point"),
    case("no-classes", lambda: wsloss.em_adapt(LOGITS[:, :0], TAGS[:, :0]), ValueError, "logits must not be empty"),
])
def test_em_adapt_refuses_bad_logits(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    case("bool-of-another-batch", lambda: wsloss.em_adapt(LOGITS, TAGS[:1]), ValueError,
         r"labels \(bool\) must be B x K = 2 x 4"),
    case("float-labels", lambda: wsloss.em_adapt(LOGITS, TAGS.float()), TypeError,
         "labels must be a B x K bool tensor or B x L"),
    case("uint8-labels", lambda: wsloss.em_adapt(LOGITS, TAGS.to(torch.uint8)), TypeError,
         r"got uint8; use labels.bool\(\)"),
    case("labels-on-another-device", lambda: wsloss.em_adapt(LOGITS, TAGS.to("meta")), ValueError,
         "labels must be on the logits' device"),
    case("lists-of-another-batch", lambda: wsloss.em_adapt(LOGITS, [[0, 1]]), TypeError, "list of 2 lists"),
    case("lists-with-a-float", lambda: wsloss.em_adapt(LOGITS, [[0, 1.5], [0]]), TypeError, "integer class indices"),
    case("lists-with-index-k", lambda: wsloss.em_adapt(LOGITS, [[0, 4], [0]]), ValueError, r"outside 0..3"),
])
def test_em_adapt_refuses_bad_image_labels(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    case("fg_portion-above-1", lambda: wsloss.em_adapt(LOGITS, TAGS, fg_portion=1.5), ValueError,
         r"fg_portion must be in \[0, 1\]"),
    case("bg_portion-nan", lambda: wsloss.em_adapt(LOGITS, TAGS, bg_portion=float("nan")), ValueError,
         "bg_portion must be finite"),
    case("margin-negative", lambda: wsloss.em_adapt(LOGITS, TAGS, margin=-1.0), ValueError, "margin must be >= 0"),
    case("generator-int", lambda: wsloss.em_adapt(LOGITS, TAGS, generator=0), TypeError,
         "generator must be a torch.Generator"),
])
def test_em_adapt_refuses_bad_options(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_em_fixed_refuses_a_bias_that_is_not_a_real_number():
    with pytest.raises(TypeError, match="fg_bias must be a real number"):
        wsloss.em_fixed(LOGITS, TAGS, fg_bias="5")


@pytest.mark.parametrize("call, error, match", [
    case("rect-of-another-width", lambda: wsloss.bbox_em_fixed(LOGITS, torch.zeros(2, 5, 7, dtype=torch.long)),
         ValueError, "rect_labels must be B x H x W = 2 x 5 x 6"),
    case("float-rect", lambda: wsloss.bbox_em_fixed(LOGITS, torch.zeros(2, 5, 6)), TypeError,
         "rect_labels must be an integer"),
])
def test_bbox_em_fixed_refuses_bad_rect_labels(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    case("classes-of-another-batch", lambda: wsloss.bbox_rect([[[0, 0, 1, 1]]], [[1], [2]], 4, 4), ValueError,
         "same number of images"),
    case("nan-box", lambda: wsloss.bbox_rect([[[0, 0, 1, float("nan")]]], [[1]], 4, 4), ValueError, "boxes"),
])
def test_bbox_rect_refuses_bad_boxes(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    case("method-unknown", lambda: wsloss.semi_supervised_targets(LOGITS, TAGS, method="em"), ValueError,
         "method must be"),
    case("masks-without-strong",
         lambda: wsloss.semi_supervised_targets(LOGITS, TAGS, torch.zeros(2, 5, 6, dtype=torch.long)), ValueError,
         "masks need strong"),
    case("masks-of-another-width",
         lambda: wsloss.semi_supervised_targets(LOGITS, TAGS, torch.zeros(2, 5, 5, dtype=torch.long),
                                                torch.ones(2, dtype=torch.bool)), ValueError, "masks must be integer"),
    case("strong-of-another-batch",
         lambda: wsloss.semi_supervised_targets(LOGITS, TAGS, torch.zeros(2, 5, 6, dtype=torch.long),
                                                torch.ones(3, dtype=torch.bool)), ValueError, "strong must be 2 bools"),
])
def test_semi_supervised_targets_refuse_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_em_adapt_loss_refuses_labels_of_another_class_count():
    with pytest.raises(ValueError, match="labels"):
        wsloss.EMAdaptLoss()(LOGITS, TAGS[:, :3])


# The raw em_adapt op checks its own arguments, beneath the Python ones.

FLAT_LOGITS = LOGITS.reshape(2, 4, 30)
PLAIN_ORDER = torch.arange(4).expand(2, 4)


def test_em_adapt_op_refuses_present_of_another_batch():
    with pytest.raises(ValueError, match="em_adapt: present must be"):
        torch.ops.wsloss.em_adapt(FLAT_LOGITS, TAGS[:1], PLAIN_ORDER, 0.4, 0.2, True, 1e-5)


def test_em_adapt_op_refuses_an_order_that_is_not_int64():
    with pytest.raises(TypeError, match="em_adapt: order must be int64"):
        torch.ops.wsloss.em_adapt(FLAT_LOGITS, TAGS, PLAIN_ORDER.int(), 0.4, 0.2, True, 1e-5)


def test_em_adapt_op_refuses_a_portion_above_one():
    with pytest.raises(ValueError, match="em_adapt: bg_portion and fg_portion"):
        torch.ops.wsloss.em_adapt(FLAT_LOGITS, TAGS, PLAIN_ORDER, 2.0, 0.2, True, 1e-5)


def test_em_adapt_op_refuses_zero_classes():
    with pytest.raises(ValueError, match="class count K must be >= 1"):
        torch.ops.wsloss.em_adapt(torch.zeros(1, 0, 1), torch.zeros(1, 0, dtype=torch.bool),
                                  torch.zeros(1, 0, dtype=torch.long), 0.4, 0.2, True, 1e-5)


def test_em_adapt_op_skips_order_entries_outside_the_classes(device):
    """Entries of the visiting order outside 0..K-1 are skipped, never read out of bounds."""
    flat = FLAT_LOGITS.to(device)
    order = torch.tensor([[99, -5, 0, 7], [3, 1000, -1, 2]], device=device)
    labels, biases = torch.ops.wsloss.em_adapt(flat, TAGS.to(device), order, 0.4, 0.2, True, 1e-5)
    assert ((labels >= 0) & (labels < 4)).all()
    assert biases[0, 1:].eq(0).all() and biases[1, :3].eq(0).all()  # the orders reach only classes 0 and 3


# Dense CRF inference (docs/DESIGN.md §5) and Bbox-Seg.

PROBS = torch.softmax(torch.randn(2, 4, 8, 9), 1)


@pytest.mark.parametrize("call, error, match", [
    case("3d", lambda: wsloss.dense_crf(PROBS[0], IMAGES), ValueError, "unary_or_probs must be 4-D"),
    case("integer", lambda: wsloss.dense_crf(PROBS.long(), IMAGES), TypeError,
         "unary_or_probs must be a floating-point"),
    case("no-classes", lambda: wsloss.dense_crf(PROBS[:, :0], IMAGES), ValueError, "unary_or_probs must not be empty"),
    case("nan", lambda: wsloss.dense_crf(PROBS.clone().fill_(float("nan")), IMAGES), ValueError,
         "unary_or_probs must be finite"),
    case("every-logit-minus-inf", lambda: wsloss.dense_crf(torch.full_like(PROBS, -float("inf")), IMAGES,
                                                            kind="logits"), ValueError, "every score is -inf"),
])
def test_dense_crf_refuses_bad_unaries(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    case("numpy", lambda: wsloss.dense_crf(PROBS, IMAGES.numpy()), TypeError, "images must be a torch.Tensor"),
    case("another-batch", lambda: wsloss.dense_crf(PROBS, IMAGES[:1]), ValueError,
         "images must be B x C x H x W = 2 x C x 8 x 9"),
    case("another-width", lambda: wsloss.dense_crf(PROBS, IMAGES[..., :4]), ValueError,
         "images must be B x C x H x W"),
    case("another-device", lambda: wsloss.dense_crf(PROBS, IMAGES.to("meta")), ValueError, "one device"),
    case("inf", lambda: wsloss.dense_crf(PROBS, IMAGES.clone().fill_(float("inf"))), ValueError,
         "features must be finite"),
])
def test_dense_crf_refuses_bad_images(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    case("iterations-negative", lambda: wsloss.dense_crf(PROBS, IMAGES, iterations=-1), ValueError,
         "iterations must be an integer >= 0"),
    case("iterations-float", lambda: wsloss.dense_crf(PROBS, IMAGES, iterations=2.5), ValueError,
         "iterations must be an integer"),
    case("w_bilateral-negative", lambda: wsloss.dense_crf(PROBS, IMAGES, w_bilateral=-1), ValueError,
         "w_bilateral must be >= 0"),
    case("w_gaussian-inf", lambda: wsloss.dense_crf(PROBS, IMAGES, w_gaussian=float("inf")), ValueError,
         "w_gaussian must be finite"),
    case("theta_alpha-zero", lambda: wsloss.dense_crf(PROBS, IMAGES, theta_alpha=0), ValueError,
         "theta_alpha must be finite and > 0"),
    case("theta_beta-string", lambda: wsloss.dense_crf(PROBS, IMAGES, theta_beta="3"), TypeError,
         "theta_beta must be a real number"),
    case("theta_gamma-nan", lambda: wsloss.dense_crf(PROBS, IMAGES, theta_gamma=float("nan")), ValueError,
         "theta_gamma must be"),
    case("clip-zero", lambda: wsloss.dense_crf(PROBS, IMAGES, clip=0), ValueError, "clip must be finite and > 0"),
    case("clip-above-1", lambda: wsloss.dense_crf(PROBS, IMAGES, clip=2), ValueError, r"clip must be in \(0, 1\]"),
])
def test_dense_crf_refuses_bad_numeric_parameters(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    case("normalization-unknown", lambda: wsloss.dense_crf(PROBS, IMAGES, normalization="NORMALIZE_SYMMETRIC"),
         ValueError, "normalization must be one of 'symmetric', 'before', 'after', 'none'"),
    case("kind-unknown", lambda: wsloss.dense_crf(PROBS, IMAGES, kind="softmax"), ValueError,
         "kind must be one of 'probabilities'"),
    case("module-normalization-unknown", lambda: wsloss.DenseCRF(normalization="x")(PROBS, IMAGES), ValueError,
         "normalization must be"),
])
def test_dense_crf_refuses_unknown_option_names(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    case("3x3-for-4-classes", lambda: wsloss.dense_crf(PROBS, IMAGES, compatibility=torch.eye(3)), ValueError,
         r"compatibility must be a K vector or a K x K matrix of numbers \(K = 4\), got torch.float32 of shape \(3, 3\)"),
    case("bool", lambda: wsloss.dense_crf(PROBS, IMAGES, compatibility=torch.eye(4).bool()), ValueError,
         "compatibility"),
    case("another-device", lambda: wsloss.dense_crf(PROBS, IMAGES, compatibility=torch.eye(4).to("meta")),
         ValueError, "one device"),
    case("ragged-list", lambda: wsloss.dense_crf(PROBS, IMAGES, compatibility=[[1, 2], [3]]), TypeError,
         "compatibility must be"),
    case("nan", lambda: wsloss.dense_crf(PROBS, IMAGES, compatibility=torch.full((4,), float("nan"))), ValueError,
         "compatibility must be finite"),
])
def test_dense_crf_refuses_a_bad_compatibility(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    case("images-3d", lambda: wsloss.bbox_seg(IMAGES[0], [[], []], [[], []]), ValueError, "images must be 4-D"),
    case("boxes-of-another-batch", lambda: wsloss.bbox_seg(IMAGES, [[]], [[]]), ValueError,
         r"one entry per image \(2\)"),
    case("background-class", lambda: wsloss.bbox_seg(IMAGES, [[[0, 0, 2, 2]], []], [[0], []]), ValueError,
         "classes >= 1"),
    case("centre_fraction-zero",
         lambda: wsloss.bbox_seg(IMAGES, [[[0, 0, 2, 2]], []], [[1], []], centre_fraction=0), ValueError,
         r"centre_fraction must be in \(0, 1\]"),
    case("min_confidence-2", lambda: wsloss.bbox_seg(IMAGES, [[], []], [[], []], min_confidence=2),
         ValueError, "min_confidence"),
    case("ignore_index-float", lambda: wsloss.bbox_seg(IMAGES, [[], []], [[], []], ignore_index=1.5), TypeError,
         "ignore_index"),
    case("kind-unary", lambda: wsloss.bbox_seg(IMAGES, [[], []], [[], []], kind="unary"), TypeError, "kind"),
])
def test_bbox_seg_refuses_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
