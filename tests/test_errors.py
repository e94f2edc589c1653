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


@pytest.mark.parametrize(
    "images, seg, roi, error, match",
    [
        (IMAGES[0], SEG, ROI, ValueError, "images must be 4-D"),
        (IMAGES, SEG[0], ROI, ValueError, "segmentations must be 4-D"),
        (IMAGES, SEG, ROI[0], ValueError, "ROIs must be"),
        (IMAGES, SEG.long(), ROI, TypeError, "segmentations must be a floating-point"),
        (IMAGES.numpy(), SEG, ROI, TypeError, "images must be a torch.Tensor"),
        (IMAGES[:1], SEG, ROI, ValueError, "images must be B x C x H x W"),
        (IMAGES[..., :5], SEG, ROI, ValueError, "images must be B x C x H x W"),
        (IMAGES, SEG, ROI[..., :5], ValueError, "ROIs must be B x H x W"),
        (IMAGES, SEG, torch.ones(2, 2, 8, 9), ValueError, "ROIs must be B x H x W or B x 1 x H x W"),
        (IMAGES, SEG[:, :0], ROI, ValueError, "segmentations must not be empty"),
        (IMAGES[:0], SEG[:0], ROI[:0], ValueError, "must not be empty"),
        (IMAGES.to(torch.complex64), SEG, ROI, TypeError, "images must hold real numbers"),
        (IMAGES.to("meta"), SEG, ROI, ValueError, "images must be on the CPU or on the device of segmentations"),
    ],
)
@pytest.mark.parametrize("loss", IMAGE_LOSSES, ids=lambda m: type(m).__name__)
def test_bad_tensors(images, seg, roi, error, match, loss):
    with pytest.raises(error, match=match):
        loss(images, seg, roi)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(sigma_rgb=0.0), ValueError, "sigma_rgb must be finite and > 0"),
        (dict(sigma_xy=-1.0), ValueError, "sigma_xy must be finite and > 0"),
        (dict(sigma_xy=float("inf")), ValueError, "sigma_xy"),
        (dict(scale_factor=0.0), ValueError, "scale_factor must be finite and > 0"),
        (dict(scale_factor=0.01), ValueError, "shrinks"),
        (dict(weight=float("nan")), ValueError, "weight must be finite"),
        (dict(weight="1"), TypeError, "weight must be a real number"),
        (dict(gradient="fast"), ValueError, "gradient must be one of"),
    ],
)
def test_bad_parameters(kwargs, error, match):
    params = dict(weight=1.0, sigma_rgb=15.0, sigma_xy=10.0, scale_factor=1.0) | kwargs
    with pytest.raises(error, match=match):
        DenseCRFLoss(**params)(IMAGES, SEG, ROI)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("loss", IMAGE_LOSSES, ids=lambda m: type(m).__name__)
def test_non_finite_images(bad, loss):
    images = IMAGES.clone()
    images[1, 2, 3, 4] = bad
    with pytest.raises(ValueError, match="finite"):
        loss(images, SEG, ROI)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: wsloss.GridCRFLoss(1.0, 0.0), ValueError, "sigma must be finite and > 0"),
        (lambda: wsloss.GridCRFLoss(1.0, 10.0, neighbourhood=6), ValueError, "neighbourhood must be 4 or 8"),
        (lambda: wsloss.GridCRFLoss(1.0, 10.0, relaxation="potts"), ValueError, "relaxation must be one of"),
        (lambda: wsloss.GridCRFLoss("1", 10.0), TypeError, "weight must be a real number"),
        (lambda: wsloss.KernelCutLoss(1.0, float("nan"), 15.0, 10.0), ValueError, "crf_weight must be finite"),
        (lambda: wsloss.NormalizedCutLoss(1.0, 15.0, 10.0, gradient="fast"), ValueError, "gradient must be one of"),
        (lambda: wsloss.QuadraticCRFLoss(1.0, -1.0, 10.0), ValueError, "sigma_rgb must be finite and > 0"),
    ],
)
def test_bad_regularizer_parameters(make, error, match):
    with pytest.raises(error, match=match):
        make()(IMAGES, SEG, ROI)


@pytest.mark.parametrize(
    "logits, labels, kwargs, error, match",
    [
        (SEG, ROI.long(), {}, None, None),
        (SEG, ROI, {}, TypeError, "labels must be an integer tensor"),
        (SEG.long(), ROI.long(), {}, TypeError, "logits must be a floating-point"),
        (SEG, ROI.long()[:, :4], {}, ValueError, "labels must be B x 8 x 9"),
        (SEG[0, 0, 0], ROI.long()[0, 0], {}, ValueError, "logits must be B x K"),
        (SEG, ROI.long().to("meta"), {}, ValueError, "one device"),
        (SEG, ROI.long(), dict(ignore_index=2.5), TypeError, "ignore_index must be an int"),
    ],
)
def test_bad_partial_cross_entropy(logits, labels, kwargs, error, match):
    if error is None:
        assert torch.isfinite(wsloss.functional.partial_cross_entropy(logits, labels, **kwargs))
        return
    with pytest.raises(error, match=match):
        wsloss.functional.partial_cross_entropy(logits, labels, **kwargs)


def test_bad_entropy_and_combinator_inputs():
    with pytest.raises(ValueError, match="segmentations must be 4-D"):
        wsloss.EntropyLoss()(SEG[0])
    with pytest.raises(ValueError, match="ROIs must be B x H x W"):
        wsloss.EntropyLoss()(SEG, ROI[:, :3])
    with pytest.raises(ValueError, match="weight must be finite"):
        wsloss.EntropyLoss(float("inf"))(SEG)


def test_tiny_sigma_is_refused_not_wrapped():
    """Features beyond int32 lattice coordinates fail clearly instead of wrapping."""
    with pytest.raises(ValueError, match="within"):
        DenseCRFLoss(1.0, 1e-6, 10.0, 1.0)(IMAGES, SEG, ROI)
    # extreme but representable sigmas work
    for sigma_rgb, sigma_xy in ((1e-3, 1e-3), (1e6, 1e6)):
        assert torch.isfinite(DenseCRFLoss(1.0, sigma_rgb, sigma_xy, 1.0)(IMAGES, SEG, ROI))


def test_lattice_errors():
    with pytest.raises(ValueError, match="features must be 3-D or 4-D"):
        PermutohedralLattice(torch.rand(3, 4))
    with pytest.raises(TypeError, match="features must be a floating-point"):
        PermutohedralLattice(torch.ones(1, 2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="feature dimension d must be in 1..16"):
        PermutohedralLattice(torch.rand(1, 17, 5))
    lattice = PermutohedralLattice(torch.rand(2, 3, 4, 5))
    with pytest.raises(ValueError, match="values must be B x C x 4 x 5"):
        lattice.filter(torch.rand(2, 1, 20))
    with pytest.raises(TypeError, match="values must be a floating-point"):
        lattice.filter(torch.ones(2, 1, 4, 5, dtype=torch.int32))
    with pytest.raises(ValueError, match="lattice_filter: values must be"):
        torch.ops.wsloss.lattice_filter(*lattice.tensors, torch.rand(2, 1, 7), False)
    with pytest.raises(ValueError, match="sigma_xy must be finite and > 0"):
        wsloss.spatial_features(IMAGES, 0)


LOGITS = torch.randn(2, 4, 5, 6)
TAGS = torch.tensor([[True, True, False, False], [True, False, False, True]])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: wsloss.em_adapt(LOGITS[0], TAGS), ValueError, "logits must be 4-D"),
        (lambda: wsloss.em_adapt(LOGITS.long(), TAGS), TypeError, "logits must be a floating-point"),
        (lambda: wsloss.em_adapt(LOGITS[:, :0], TAGS[:, :0]), ValueError, "logits must not be empty"),
        (lambda: wsloss.em_adapt(LOGITS, TAGS[:1]), ValueError, r"labels \(bool\) must be B x K = 2 x 4"),
        (lambda: wsloss.em_adapt(LOGITS, TAGS.float()), TypeError, "labels must be a B x K bool tensor or B x L"),
        (lambda: wsloss.em_adapt(LOGITS, TAGS.to(torch.uint8)), TypeError, r"got uint8; use labels.bool\(\)"),
        (lambda: wsloss.em_adapt(LOGITS, TAGS.to("meta")), ValueError, "labels must be on the logits' device"),
        (lambda: wsloss.em_adapt(LOGITS, [[0, 1]]), TypeError, "list of 2 lists"),
        (lambda: wsloss.em_adapt(LOGITS, [[0, 1.5], [0]]), TypeError, "integer class indices"),
        (lambda: wsloss.em_adapt(LOGITS, [[0, 4], [0]]), ValueError, r"outside 0..3"),
        (lambda: wsloss.em_adapt(LOGITS, TAGS, fg_portion=1.5), ValueError, r"fg_portion must be in \[0, 1\]"),
        (lambda: wsloss.em_adapt(LOGITS, TAGS, bg_portion=float("nan")), ValueError, "bg_portion must be finite"),
        (lambda: wsloss.em_adapt(LOGITS, TAGS, margin=-1.0), ValueError, "margin must be >= 0"),
        (lambda: wsloss.em_adapt(LOGITS, TAGS, generator=0), TypeError, "generator must be a torch.Generator"),
        (lambda: wsloss.em_fixed(LOGITS, TAGS, fg_bias="5"), TypeError, "fg_bias must be a real number"),
        (lambda: wsloss.bbox_em_fixed(LOGITS, torch.zeros(2, 5, 7, dtype=torch.long)), ValueError,
         "rect_labels must be B x H x W = 2 x 5 x 6"),
        (lambda: wsloss.bbox_em_fixed(LOGITS, torch.zeros(2, 5, 6)), TypeError, "rect_labels must be an integer"),
        (lambda: wsloss.bbox_rect([[[0, 0, 1, 1]]], [[1], [2]], 4, 4), ValueError, "same number of images"),
        (lambda: wsloss.bbox_rect([[[0, 0, 1, float("nan")]]], [[1]], 4, 4), ValueError, "boxes"),
        (lambda: wsloss.semi_supervised_targets(LOGITS, TAGS, method="em"), ValueError, "method must be"),
        (lambda: wsloss.semi_supervised_targets(LOGITS, TAGS, torch.zeros(2, 5, 6, dtype=torch.long)), ValueError,
         "masks need strong"),
        (lambda: wsloss.semi_supervised_targets(LOGITS, TAGS, torch.zeros(2, 5, 5, dtype=torch.long),
                                                torch.ones(2, dtype=torch.bool)), ValueError, "masks must be integer"),
        (lambda: wsloss.semi_supervised_targets(LOGITS, TAGS, torch.zeros(2, 5, 6, dtype=torch.long),
                                                torch.ones(3, dtype=torch.bool)), ValueError, "strong must be 2 bools"),
        (lambda: wsloss.EMAdaptLoss()(LOGITS, TAGS[:, :3]), ValueError, "labels"),
    ],
)
def test_e_step_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_em_adapt_op_errors():
    flat = LOGITS.reshape(2, 4, 30)
    order = torch.arange(4).expand(2, 4)
    with pytest.raises(ValueError, match="em_adapt: present must be"):
        torch.ops.wsloss.em_adapt(flat, TAGS[:1], order, 0.4, 0.2, True, 1e-5)
    with pytest.raises(TypeError, match="em_adapt: order must be int64"):
        torch.ops.wsloss.em_adapt(flat, TAGS, order.int(), 0.4, 0.2, True, 1e-5)
    with pytest.raises(ValueError, match="em_adapt: bg_portion and fg_portion"):
        torch.ops.wsloss.em_adapt(flat, TAGS, order, 2.0, 0.2, True, 1e-5)
    with pytest.raises(ValueError, match="class count K must be >= 1"):
        torch.ops.wsloss.em_adapt(torch.zeros(1, 0, 1), torch.zeros(1, 0, dtype=torch.bool),
                                  torch.zeros(1, 0, dtype=torch.long), 0.4, 0.2, True, 1e-5)


def test_em_adapt_order_out_of_range_is_skipped(device):
    """Entries of the visiting order outside 0..K-1 are skipped, never read out of bounds."""
    flat = LOGITS.reshape(2, 4, 30).to(device)
    order = torch.tensor([[99, -5, 0, 7], [3, 1000, -1, 2]], device=device)
    labels, biases = torch.ops.wsloss.em_adapt(flat, TAGS.to(device), order, 0.4, 0.2, True, 1e-5)
    assert ((labels >= 0) & (labels < 4)).all()
    assert biases[0, 1:].eq(0).all() and biases[1, :3].eq(0).all()  # only classes 0 and 3 were visited


PROBS = torch.softmax(torch.randn(2, 4, 8, 9), 1)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: wsloss.dense_crf(PROBS[0], IMAGES), ValueError, "unary_or_probs must be 4-D"),
        (lambda: wsloss.dense_crf(PROBS.long(), IMAGES), TypeError, "unary_or_probs must be a floating-point"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES.numpy()), TypeError, "images must be a torch.Tensor"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES[:1]), ValueError, "images must be B x C x H x W = 2 x C x 8 x 9"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES[..., :4]), ValueError, "images must be B x C x H x W"),
        (lambda: wsloss.dense_crf(PROBS[:, :0], IMAGES), ValueError, "unary_or_probs must not be empty"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES.to("meta")), ValueError, "one device"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES, iterations=-1), ValueError, "iterations must be an integer >= 0"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES, iterations=2.5), ValueError, "iterations must be an integer"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES, w_bilateral=-1), ValueError, "w_bilateral must be >= 0"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES, w_gaussian=float("inf")), ValueError, "w_gaussian must be finite"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES, theta_alpha=0), ValueError, "theta_alpha must be finite and > 0"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES, theta_beta="3"), TypeError, "theta_beta must be a real number"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES, theta_gamma=float("nan")), ValueError, "theta_gamma must be"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES, normalization="NORMALIZE_SYMMETRIC"), ValueError,
         "normalization must be one of 'symmetric', 'before', 'after', 'none'"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES, kind="softmax"), ValueError, "kind must be one of 'probabilities'"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES, clip=0), ValueError, "clip must be finite and > 0"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES, clip=2), ValueError, r"clip must be in \(0, 1\]"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES, compatibility=torch.eye(3)), ValueError,
         r"compatibility must be a K vector or a K x K matrix of numbers \(K = 4\), got torch.float32 of shape \(3, 3\)"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES, compatibility=torch.eye(4).bool()), ValueError, "compatibility"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES, compatibility=torch.eye(4).to("meta")), ValueError, "one device"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES, compatibility=[[1, 2], [3]]), TypeError, "compatibility must be"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES, compatibility=torch.full((4,), float("nan"))), ValueError,
         "compatibility must be finite"),
        (lambda: wsloss.dense_crf(PROBS.clone().fill_(float("nan")), IMAGES), ValueError, "unary_or_probs must be finite"),
        (lambda: wsloss.dense_crf(torch.full_like(PROBS, -float("inf")), IMAGES, kind="logits"), ValueError,
         "every score is -inf"),
        (lambda: wsloss.dense_crf(PROBS, IMAGES.clone().fill_(float("inf"))), ValueError, "features must be finite"),
        (lambda: wsloss.DenseCRF(normalization="x")(PROBS, IMAGES), ValueError, "normalization must be"),
        (lambda: wsloss.bbox_seg(IMAGES[0], [[], []], [[], []]), ValueError, "images must be 4-D"),
        (lambda: wsloss.bbox_seg(IMAGES, [[]], [[]]), ValueError, r"one entry per image \(2\)"),
        (lambda: wsloss.bbox_seg(IMAGES, [[[0, 0, 2, 2]], []], [[0], []]), ValueError, "classes >= 1"),
        (lambda: wsloss.bbox_seg(IMAGES, [[[0, 0, 2, 2]], []], [[1], []], centre_fraction=0), ValueError,
         r"centre_fraction must be in \(0, 1\]"),
        (lambda: wsloss.bbox_seg(IMAGES, [[], []], [[], []], min_confidence=2), ValueError, "min_confidence"),
        (lambda: wsloss.bbox_seg(IMAGES, [[], []], [[], []], ignore_index=1.5), TypeError, "ignore_index"),
        (lambda: wsloss.bbox_seg(IMAGES, [[], []], [[], []], kind="unary"), TypeError, "kind"),
    ],
)
def test_dense_crf_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
