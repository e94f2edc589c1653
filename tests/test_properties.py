"""Property-based robustness tests (hypothesis; docs/DESIGN.md §6).

Over random shapes (1 x 1 images, K = 1, K = 22), dtypes, memory layouts, devices, ROIs,
extreme sigmas (1e-3 to 1e6) and non-finite values, every public entry point either gives
a correct result or raises a clear ValueError / TypeError naming the argument: never a
crash, never a silent NaN. "Correct" is checked against an independent computation where
one is cheap (cross-entropy, entropy, grid CRF, lattice adjointness, marginals summing to
one), and otherwise as invariance: the dense losses give the same value and gradient on
contiguous float32 (float64) copies of the inputs, so layout and dtype change nothing
beyond the rounding of the inputs themselves.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

import wsloss
from helpers import random_photo, requires_cuda
from wsloss import functional as WF

DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
IMAGE_DTYPES = (torch.uint8, torch.float16, torch.float32, torch.float64)
LAYOUTS = ("contiguous", "channels_last", "transposed", "strided")
MAX_FEATURE = 1e7  # the lattice's documented feature range


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The inputs here are tiny: on a busy machine with few cores OpenMP's spinning threads make
    each example many times slower, so this module runs on one thread (the kernels are deterministic)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def checked(max_examples):
    return settings(max_examples=max_examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_finite_loss_and_grad(loss, segmentations):
    """A finite 0-dim loss in the compute dtype whose backward gives segmentations a finite
    gradient of their own dtype and shape; returns the compute dtype."""
    dtype = compute_dtype(segmentations.dtype)
    assert loss.shape == () and loss.dtype == dtype and torch.isfinite(loss)
    loss.backward()
    grad = segmentations.grad
    assert grad.shape == segmentations.shape and grad.dtype == segmentations.dtype
    assert torch.isfinite(grad).all()
    return dtype


# ----------------------------------------------------------------------------- strategies


def log_uniform(low, high):
    """Floats spread evenly in log scale over [low, high], the endpoints included."""
    exponents = st.floats(math.log10(low), math.log10(high))
    return st.one_of(st.sampled_from([low, high]), exponents.map(lambda e: min(max(10.0 ** e, low), high)))


def merged(*strategies):
    """One dict from the dicts the strategies draw."""
    return st.tuples(*strategies).map(lambda parts: {k: v for part in parts for k, v in part.items()})


seeds = st.integers(0, 2 ** 32 - 1)
sigmas = log_uniform(1e-3, 1e6)


def generator(seed):
    return torch.Generator().manual_seed(seed)


def compute_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def eps(dtype):
    return torch.finfo(dtype).eps


def with_layout(x, layout):
    """The same values as x in another memory layout (a view where possible)."""
    if layout == "channels_last" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "transposed" and x.dim() >= 2:
        return x.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "strided" and x.dim() >= 2:
        big = x.new_zeros(x.shape[:-2] + (2 * x.shape[-2] + 1, 3 * x.shape[-1]))
        view = big[..., 1::2, ::3]
        view.copy_(x)
        return view
    return x.contiguous()


def leaf(x):
    """x as a leaf tensor that requires grad, keeping its strides."""
    return x.detach().requires_grad_()


def make_images(g, batch, channels, height, width, kind, dtype, scale=1.0):
    """Colours in 0..255 (times scale): uniform noise, piecewise-smooth photos or flat."""
    if kind == "photo":
        images = random_photo(batch, height, width, g, channels)
    elif kind == "flat":
        images = torch.rand(batch, channels, 1, 1, generator=g).expand(batch, channels, height, width) * 255
    else:
        images = torch.rand(batch, channels, height, width, generator=g) * 255
    if dtype == torch.uint8:
        return images.round().to(torch.uint8)
    return (images.double() * scale).to(dtype)


def make_rois(g, kind, dtype, batch, height, width):
    if kind == "none":
        return None
    if kind == "zeros":
        return torch.zeros(batch, height, width, dtype=dtype)
    if kind == "binary":
        return (torch.rand(batch, height, width, generator=g) < 0.7).to(dtype)
    if kind == "one_channel":
        return torch.rand(batch, 1, height, width, generator=g).to(dtype)
    return torch.rand(batch, height, width, generator=g).to(dtype)


@st.composite
def roi_options(draw):
    kind = draw(st.sampled_from(["none", "random", "binary", "zeros", "one_channel"]))
    if kind == "binary":
        dtype = draw(st.sampled_from([torch.bool, torch.uint8, torch.float32]))
    else:
        dtype = draw(st.sampled_from([torch.float16, torch.float32, torch.float64]))
    return dict(roi=kind, roi_dtype=dtype, roi_layout=draw(st.sampled_from(LAYOUTS)))


@st.composite
def image_options(draw, max_size=13):
    image_dtype = draw(st.sampled_from(IMAGE_DTYPES))
    return dict(
        batch=draw(st.integers(1, 3)),
        height=draw(st.integers(1, max_size)),
        width=draw(st.integers(1, max_size)),
        channels=draw(st.integers(1, 4)),
        image_kind=draw(st.sampled_from(["noise", "photo", "flat"])),
        image_dtype=image_dtype,
        image_layout=draw(st.sampled_from(LAYOUTS)),
        seed=draw(seeds),
    )


@st.composite
def segmentation_options(draw):
    return dict(
        classes=draw(st.sampled_from([1, 2, 3, 21, 22])),
        seg_dtype=draw(st.sampled_from(FLOATS)),
        seg_layout=draw(st.sampled_from(LAYOUTS)),
        logit_scale=draw(st.sampled_from([0.1, 1.0, 5.0, 30.0])),
    )


DENSE = {
    "crf": (wsloss.DenseCRFLoss, WF.dense_crf_loss),
    "ncut": (wsloss.NormalizedCutLoss, WF.normalized_cut_loss),
    "quadratic": (wsloss.QuadraticCRFLoss, WF.quadratic_crf_loss),
    "kernel_cut": (wsloss.KernelCutLoss, WF.kernel_cut_loss),
}


@st.composite
def dense_cases(draw):
    case = draw(image_options()) | draw(segmentation_options()) | draw(roi_options())
    kind = draw(st.sampled_from(sorted(DENSE)))
    weight = st.sampled_from([1.0, 0.5, -2.0, 0.0, 3.0])
    case |= dict(
        kind=kind,
        form=draw(st.sampled_from(["module", "functional"])),
        weights=(draw(weight), draw(weight)) if kind == "kernel_cut" else (draw(weight),),
        image_scale=draw(st.sampled_from([1.0, 1.0, 1.0, 1e5])),  # 1e5: features may leave the range
        sigma_rgb=draw(sigmas),
        sigma_xy=draw(sigmas),
        scale_factor=draw(st.sampled_from([1.0, 0.5, 0.75])),
        gradient=draw(st.sampled_from(["reference", "exact"])),
    )
    return case


def dense_inputs(case, device):
    """images, segmentations (a leaf with grad, in its layout) and ROIs of a drawn case."""
    g = generator(case["seed"])
    batch, height, width = case["batch"], case["height"], case["width"]
    images = make_images(g, batch, case["channels"], height, width, case["image_kind"], case["image_dtype"],
                         case.get("image_scale", 1.0))
    logits = torch.randn(batch, case["classes"], height, width, generator=g, dtype=torch.float64)
    segmentations = torch.softmax(logits * case["logit_scale"], 1).to(case["seg_dtype"])
    rois = make_rois(g, case["roi"], case["roi_dtype"], batch, height, width)
    images = with_layout(images.to(device), case["image_layout"])
    segmentations = leaf(with_layout(segmentations.to(device), case["seg_layout"]))
    if rois is not None:
        rois = with_layout(rois.to(device), case["roi_layout"])
    return images, segmentations, rois


def dense_loss(case, images, segmentations, rois, form=None):
    module, function = DENSE[case["kind"]]
    args = (case["sigma_rgb"], case["sigma_xy"], case["scale_factor"], case["gradient"])
    if (form or case["form"]) == "module":
        return module(*case["weights"], *args)(images, segmentations, rois)
    return function(images, segmentations, rois, *case["weights"], *args)


def shrinks_to_nothing(height, width, scale_factor):
    return scale_factor != 1.0 and (int(height * scale_factor) < 1 or int(width * scale_factor) < 1)


def colour_features_out_of_range(images, sigma_rgb, scale_factor):
    """Whether the lattice sees a colour feature that is not finite or beyond 1e7 (the loss
    resamples the images with 'nearest' before building it; the xy features stay small here)."""
    colours = images.to(torch.float32)
    if scale_factor != 1.0:
        colours = F.interpolate(colours, scale_factor=scale_factor)
    features = colours / torch.tensor(sigma_rgb, dtype=torch.float32, device=colours.device)
    return not bool(torch.isfinite(features).all()) or float(features.abs().max()) > MAX_FEATURE


def kernel_mass(images, rois, case, batch, height, width):
    """(1/B) sum_b r_b^T A_b r_b: bounds sum_k S~_k^T A S~_k and sum_k (S~_k^2)^T A r for
    probabilities S and r in [0, 1], so it sets the scale of the loss terms' rounding."""
    ones = torch.ones(batch, 1, height, width, dtype=torch.float64, device=images.device)
    return -float(WF.dense_crf_loss(images, ones, rois, 1.0, case["sigma_rgb"], case["sigma_xy"],
                                    case["scale_factor"]))


# ----------------------------------------------------------------------------- 1. dense losses


# A class whose probability is ~1e-25 at every pixel (softmax of a confident network):
# its volume d^T S~ squared underflows in float32.
TINY_CLASS = dict(batch=1, height=1, width=1, channels=3, image_kind="noise", image_dtype=torch.float32,
                  image_layout="contiguous", seed=1, classes=3, seg_dtype=torch.float32, seg_layout="contiguous",
                  logit_scale=30.0, roi="none", roi_dtype=torch.float32, roi_layout="contiguous", kind="ncut",
                  form="functional", weights=(1.0,), image_scale=1.0, sigma_rgb=10.0, sigma_xy=10.0,
                  scale_factor=1.0, gradient="reference")


# float16 probabilities of 22 classes, most of them 0: the normalized cut's gradient of a class
# of tiny volume exceeds float16's range.
HALF_GRADIENT_OVERFLOW = dict(batch=2, height=2, width=6, channels=1, image_kind="noise", image_dtype=torch.uint8,
                              image_layout="contiguous", seed=1, classes=22, seg_dtype=torch.float16,
                              seg_layout="contiguous", logit_scale=30.0, roi="random", roi_dtype=torch.float16,
                              roi_layout="contiguous", kind="kernel_cut", form="module", weights=(1.0, 1.0),
                              image_scale=1.0, sigma_rgb=0.001, sigma_xy=0.001, scale_factor=1.0,
                              gradient="reference")


@pytest.mark.parametrize("device", DEVICES)
@checked(2000)
@given(case=dense_cases())
@example(case=TINY_CLASS)
@example(case=HALF_GRADIENT_OVERFLOW)
def test_dense_losses_are_correct_or_refuse_clearly(device, case):
    """A dense loss is a finite 0-dim float32/float64 tensor with a gradient of the segmentations'
    dtype and shape (finite where it fits that dtype), equal to the loss of contiguous float32 (float64) copies
    of the same values; or a ValueError naming scale_factor / the out-of-range features.
    An all-zero ROI gives exactly 0 and a zero gradient."""
    images, segmentations, rois = dense_inputs(case, device)
    batch, classes, height, width = segmentations.shape
    if shrinks_to_nothing(height, width, case["scale_factor"]):
        event("refused: scale_factor")
        with pytest.raises(ValueError, match="scale_factor"):
            dense_loss(case, images, segmentations, rois)
        return
    if colour_features_out_of_range(images, case["sigma_rgb"], case["scale_factor"]):
        event("refused: features out of range")
        with pytest.raises(ValueError, match="features|images"):
            dense_loss(case, images, segmentations, rois)
        return

    loss = dense_loss(case, images, segmentations, rois)
    dtype = compute_dtype(segmentations.dtype)
    assert loss.shape == () and loss.dtype == dtype and loss.device == segmentations.device
    assert torch.isfinite(loss), loss
    loss.backward()
    grad = segmentations.grad
    assert grad.shape == segmentations.shape and grad.dtype == segmentations.dtype

    # The same values, contiguous, in the compute dtype, through the functional form.
    ref_images = images.to(torch.float32).contiguous()
    ref_segmentations = leaf(segmentations.detach().to(dtype).contiguous())
    ref_rois = (torch.ones(batch, height, width, device=images.device) if rois is None
                else rois.reshape(batch, height, width).to(dtype).contiguous())
    expected = dense_loss(case, ref_images, ref_segmentations, ref_rois, form="functional")
    expected.backward()
    # Finite wherever the gradient fits the segmentations' dtype; a float16 one that does not (the
    # normalized cut of a class of tiny volume) is Inf, as torch's own (DESIGN §6).
    fits = ref_segmentations.grad.abs() <= torch.finfo(segmentations.dtype).max
    assert torch.isfinite(grad[fits]).all(), grad

    if case["roi"] == "zeros":
        assert loss.item() == 0.0
        assert (grad == 0).all()
        return

    # The inputs are the same numbers, so the kernels see the same values: the rounding
    # allowed is the compute dtype's (and the gradient's final rounding to its dtype).
    precision = eps(dtype)
    mass = kernel_mass(ref_images, ref_rois, case, batch, height, width)
    weights = [abs(w) for w in case["weights"]]
    scale = {"crf": weights[0] * mass, "ncut": weights[0] * classes, "quadratic": weights[0] * 4 * mass,
             "kernel_cut": weights[0] * classes + weights[-1] * mass}[case["kind"]]
    torch.testing.assert_close(loss, expected, rtol=16 * precision, atol=16 * precision * scale)
    ref_grad = ref_segmentations.grad.to(segmentations.dtype).to(dtype)
    grad_scale = float(ref_grad[fits].abs().max()) if fits.any() else 0.0
    torch.testing.assert_close(grad.to(dtype), ref_grad, rtol=2 * eps(segmentations.dtype),
                               atol=64 * precision * grad_scale)


# ----------------------------------------------------------------------------- 2. non-finite input

NON_FINITE = (math.nan, math.inf, -math.inf)
IMAGE_ENTRY_POINTS = ("crf", "ncut", "quadratic", "kernel_cut", "grid", "dense_crf", "lattice")


def image_entry_point(name, images, segmentations, options):
    if name in DENSE:
        return DENSE[name][1](images, segmentations, None, 1.0, *([0.5] if name == "kernel_cut" else []),
                              options["sigma_rgb"], options["sigma_xy"], options["scale_factor"])
    if name == "grid":
        return WF.grid_crf_loss(images, segmentations, None, 1.0, options["sigma_rgb"])
    if name == "dense_crf":
        return wsloss.dense_crf(segmentations, images, options["iterations"], options["w_bilateral"],
                                options["sigma_xy"], options["sigma_rgb"])
    return wsloss.PermutohedralLattice(wsloss.bilateral_features(images, options["sigma_rgb"], options["sigma_xy"]))


@pytest.mark.parametrize("device", DEVICES)
@checked(600)
@given(name=st.sampled_from(IMAGE_ENTRY_POINTS), bad=st.sampled_from(NON_FINITE),
       dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]),
       batch=st.integers(1, 3), channels=st.integers(1, 4), height=st.integers(2, 9), width=st.integers(2, 9),
       scale_factor=st.sampled_from([1.0, 0.5, 0.75]), iterations=st.integers(0, 2),
       w_bilateral=st.sampled_from([0.0, 4.0]), sigma_rgb=sigmas, sigma_xy=sigmas, seed=seeds, data=st.data())
def test_non_finite_images_are_refused(device, name, bad, dtype, batch, channels, height, width, scale_factor,
                                       iterations, w_bilateral, sigma_rgb, sigma_xy, seed, data):
    """NaN or +-Inf in the images raises a ValueError naming images / features, also in a pixel
    that a downscale drops. Only where the images are never read (dense_crf without its
    bilateral kernel) may it instead give the same result as a finite colour there."""
    g = generator(seed)
    images = make_images(g, batch, channels, height, width, "noise", dtype).to(device)
    segmentations = torch.softmax(torch.randn(batch, 3, height, width, generator=g), 1).to(device)
    b, c, y, x = (data.draw(st.integers(0, n - 1)) for n in (batch, channels, height, width))
    poisoned = images.clone()
    poisoned[b, c, y, x] = bad
    options = dict(sigma_rgb=sigma_rgb, sigma_xy=sigma_xy, iterations=iterations, w_bilateral=w_bilateral,
                   scale_factor=scale_factor if name in DENSE else 1.0)
    if colour_features_out_of_range(images, sigma_rgb, options["scale_factor"]):
        return  # finite images that are refused anyway (checked in the dense-loss test)
    used = name != "dense_crf" or (iterations > 0 and w_bilateral > 0)
    event(f"pixel used: {used}")
    if used:
        with pytest.raises(ValueError, match="images|features"):
            image_entry_point(name, poisoned, segmentations, options)
        return
    try:
        result = image_entry_point(name, poisoned, segmentations, options)
    except ValueError as error:
        assert "images" in str(error) or "features" in str(error)
        return
    expected = image_entry_point(name, images, segmentations, options)
    assert torch.isfinite(result).all()
    torch.testing.assert_close(result, expected, rtol=0, atol=0)


SEGMENTATION_LOSSES = ("crf", "ncut", "quadratic", "kernel_cut", "grid", "entropy")


@pytest.mark.parametrize("device", DEVICES)
@checked(600)
@given(name=st.sampled_from(SEGMENTATION_LOSSES), bad=st.sampled_from(NON_FINITE), dtype=st.sampled_from(FLOATS),
       batch=st.integers(1, 3), classes=st.sampled_from([1, 2, 3, 21]), height=st.integers(1, 9),
       width=st.integers(1, 9), roi=st.sampled_from(["none", "random", "binary", "zeros"]), sigma=sigmas,
       seed=seeds, data=st.data())
def test_non_finite_segmentations_propagate(device, name, bad, dtype, batch, classes, height, width, roi, sigma,
                                            seed, data):
    """NaN in the segmentations gives a NaN loss, +-Inf a non-finite one (as torch's own
    losses do, so that AMP's GradScaler sees it), wherever it is, also outside the ROI;
    never an exception or a crash, and backward runs."""
    g = generator(seed)
    images = make_images(g, batch, 3, height, width, "photo", torch.float32).to(device)
    segmentations = torch.softmax(torch.randn(batch, classes, height, width, generator=g), 1).to(dtype)
    rois = make_rois(g, roi, torch.float32, batch, height, width)
    index = tuple(data.draw(st.integers(0, n - 1)) for n in segmentations.shape)
    segmentations[index] = bad
    segmentations = leaf(segmentations.to(device))
    rois = None if rois is None else rois.to(device)
    if name in DENSE:
        weights = (1.0, 0.5) if name == "kernel_cut" else (1.0,)
        loss = dense_loss(dict(kind=name, form="functional", weights=weights, sigma_rgb=sigma, sigma_xy=sigma,
                               scale_factor=1.0, gradient="exact"), images, segmentations, rois)
    elif name == "grid":
        loss = WF.grid_crf_loss(images, segmentations, rois, 1.0, sigma)
    else:
        loss = WF.entropy_loss(segmentations, rois)
    assert loss.shape == ()
    if math.isnan(bad):
        assert torch.isnan(loss), loss
    else:
        assert not torch.isfinite(loss), loss
    loss.backward()
    assert segmentations.grad.shape == segmentations.shape


# ----------------------------------------------------------------------------- 3. empty input

EMPTY_ENTRY_POINTS = {
    # name: (call(images, segmentations, labels, present), the tensor arguments it may name)
    "DenseCRFLoss": (lambda i, s, l, p: wsloss.DenseCRFLoss(1.0, 15.0, 10.0)(i, s), "images|segmentations"),
    "NormalizedCutLoss": (lambda i, s, l, p: wsloss.NormalizedCutLoss(1.0, 15.0, 10.0)(i, s),
                          "images|segmentations"),
    "QuadraticCRFLoss": (lambda i, s, l, p: wsloss.QuadraticCRFLoss(1.0, 15.0, 10.0)(i, s), "images|segmentations"),
    "KernelCutLoss": (lambda i, s, l, p: wsloss.KernelCutLoss(1.0, 0.5, 15.0, 10.0)(i, s), "images|segmentations"),
    "dense_crf_loss": (lambda i, s, l, p: WF.dense_crf_loss(i, s, None, 1.0, 15.0, 10.0, 0.5),
                       "images|segmentations"),
    "grid_crf_loss": (lambda i, s, l, p: WF.grid_crf_loss(i, s, None, 1.0, 10.0), "images|segmentations"),
    "entropy_loss": (lambda i, s, l, p: WF.entropy_loss(s), "segmentations"),
    "partial_cross_entropy": (lambda i, s, l, p: WF.partial_cross_entropy(s, l), "logits"),
    "em_adapt": (lambda i, s, l, p: wsloss.em_adapt(s, p), "logits"),
    "em_fixed": (lambda i, s, l, p: wsloss.em_fixed(s, p), "logits"),
    "dense_crf": (lambda i, s, l, p: wsloss.dense_crf(s, i, 1), "unary_or_probs|images"),
    "PermutohedralLattice": (lambda i, s, l, p: wsloss.PermutohedralLattice(s), "features"),
    "PermutohedralLattice (B x d x N)": (lambda i, s, l, p: wsloss.PermutohedralLattice(s.flatten(2)), "features"),
}


@pytest.mark.parametrize("device", DEVICES)
@checked(300)
@given(name=st.sampled_from(sorted(EMPTY_ENTRY_POINTS)), empty=st.sampled_from(["batch", "classes", "height", "width"]),
       sizes=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)),
       dtype=st.sampled_from(FLOATS))
def test_empty_inputs_are_refused(device, name, empty, sizes, dtype):
    """B = 0, K = 0 (d = 0 features), H = 0 or W = 0: a ValueError that names the empty
    argument, for every entry point."""
    batch, classes, height, width = (0 if dim == empty else n
                                     for dim, n in zip(["batch", "classes", "height", "width"], sizes))
    images = (torch.rand(batch, 3, height, width) * 255).to(device)
    segmentations = torch.full((batch, classes, height, width), 1.0 / max(classes, 1), dtype=dtype, device=device)
    labels = torch.zeros(batch, height, width, dtype=torch.int64, device=device)
    present = torch.ones(batch, classes, dtype=torch.bool, device=device)
    call, names = EMPTY_ENTRY_POINTS[name]
    with pytest.raises(ValueError, match=rf"({names}) must not be empty"):
        call(images, segmentations, labels, present)


# ----------------------------------------------------------------------------- 4. the lattice


@st.composite
def lattice_cases(draw):
    return dict(
        batch=draw(st.integers(1, 3)),
        dim=draw(st.integers(1, 16)),
        pixels=draw(st.integers(1, 50)),
        feature_scale=draw(log_uniform(1e-3, 1e8)),
        feature_dtype=draw(st.sampled_from(FLOATS)),
        feature_layout=draw(st.sampled_from(["contiguous", "transposed", "strided"])),
        channels=draw(st.integers(1, 4)),
        value_dtype=draw(st.sampled_from(FLOATS)),
        seed=draw(seeds),
    )


def lattice_features(case, device):
    """The drawn features, and whether they are within the lattice's range (finite in float32
    and at most 1e7 in magnitude)."""
    g = generator(case["seed"])
    features = (torch.randn(case["batch"], case["dim"], case["pixels"], generator=g, dtype=torch.float64)
                * case["feature_scale"])
    features = with_layout(features.to(case["feature_dtype"]).to(device), case["feature_layout"])
    as_float = features.to(torch.float32)
    in_range = bool(torch.isfinite(as_float).all()) and float(as_float.abs().max()) <= MAX_FEATURE
    return features, in_range, g


@pytest.mark.parametrize("device", DEVICES)
@checked(700)
@given(case=lattice_cases())
def test_lattice_filters_in_range_features_and_refuses_the_rest(device, case):
    """Features (B x d x N, d = 1..16, any float dtype and layout) within +-1e7 build a lattice
    whose filtering is finite, of the values' shape and dtype, and normalizes an all-ones image
    to ones (both ways); beyond 1e7 (or not finite in float32) a ValueError names the features."""
    batch, pixels, channels = case["batch"], case["pixels"], case["channels"]
    features, in_range, g = lattice_features(case, device)
    if not in_range:
        event("refused: features out of range")
        with pytest.raises(ValueError, match="features"):
            wsloss.PermutohedralLattice(features)
        return
    lattice = wsloss.PermutohedralLattice(features)

    values = torch.randn(batch, channels, pixels, generator=g).to(case["value_dtype"]).to(device)
    filtered = lattice.filter(values)
    assert filtered.shape == values.shape and filtered.dtype == values.dtype
    assert torch.isfinite(filtered).all()

    ones = torch.ones(batch, 1, pixels, device=device)
    for transpose in (False, True):
        normalized = lattice.filter(ones, normalize=True, transpose=transpose)
        torch.testing.assert_close(normalized, ones, rtol=0, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@checked(300)
@given(case=lattice_cases())
def test_lattice_transposed_filtering_is_the_adjoint(device, case):
    """<A U, X> = <U, A^T X> for float64 values U and X, on any in-range features."""
    batch, pixels, channels = case["batch"], case["pixels"], case["channels"]
    features, in_range, g = lattice_features(case, device)
    assume(in_range)
    lattice = wsloss.PermutohedralLattice(features)
    u = torch.randn(batch, channels, pixels, generator=g, dtype=torch.float64).to(device)
    x = torch.randn(batch, channels, pixels, generator=g, dtype=torch.float64).to(device)
    au, atx = lattice.filter(u), lattice.filter(x, transpose=True)
    left, right = (au * x).sum((1, 2)), (u * atx).sum((1, 2))
    bound = float(au.norm() * x.norm() + u.norm() * atx.norm())
    torch.testing.assert_close(left, right, rtol=0, atol=1e-12 * bound + 1e-300)


# ----------------------------------------------------------------------------- 5. EM pseudo-labels


@st.composite
def em_cases(draw):
    dtype = draw(st.sampled_from(FLOATS))
    top = min(30.0, math.log10(torch.finfo(dtype).max) - 2)  # |logits| far below the dtype's overflow
    return dict(
        batch=draw(st.integers(1, 3)),
        classes=draw(st.integers(1, 22)),
        height=draw(st.integers(1, 9)),
        width=draw(st.integers(1, 9)),
        dtype=dtype,
        layout=draw(st.sampled_from(LAYOUTS)),
        logit_scale=draw(log_uniform(1e-3, 10.0 ** top)),
        ties=draw(st.booleans()),
        present_fraction=draw(st.sampled_from([0.0, 0.3, 0.7, 1.0])),
        suppress_absent=draw(st.booleans()),
        seed=draw(seeds),
    )


def em_inputs(case, device):
    g = generator(case["seed"])
    shape = (case["batch"], case["classes"], case["height"], case["width"])
    logits = torch.randn(shape, generator=g, dtype=torch.float64)
    if case["ties"]:
        logits = logits.mul(2).round()
    logits = with_layout((logits * case["logit_scale"]).to(case["dtype"]).to(device), case["layout"])
    present = torch.rand(case["batch"], case["classes"], generator=g) < case["present_fraction"]
    return logits, present.to(device)


def index_lists(present, ignore_index):
    """The DeepLab list form of a B x K mask: each image's classes, padded with -1 and ignore_index."""
    rows = [torch.nonzero(row).flatten().tolist() for row in present.cpu()]
    longest = max(len(row) for row in rows)
    return [row + [-1, ignore_index] + [-1] * (longest - len(row)) for row in rows]


def plain_argmax(scores):
    """argmax over dim 1, ties to the larger class index."""
    return (scores.shape[1] - 1) - scores.flip(1).argmax(1)


def check_pseudo_labels(labels, logits, present, suppress_absent, suppress_background):
    batch, classes, height, width = logits.shape
    assert labels.dtype == torch.int64 and labels.shape == (batch, height, width)
    assert labels.device == logits.device
    assert ((labels >= 0) & (labels < classes)).all()
    if suppress_absent:
        allowed = present.clone()
        if not suppress_background:
            allowed[:, 0] = True
        for b in range(batch):
            if present[b].any():
                assert allowed[b][labels[b]].all(), (labels[b], present[b])


def em_adapt_options(case, fg_portion, bg_portion, margin, shuffle):
    """em_adapt's keyword arguments, and a function giving a fresh generator for the
    foreground order (the same order on every call), or None."""
    options = dict(fg_portion=fg_portion, bg_portion=bg_portion, suppress_absent=case["suppress_absent"],
                   margin=margin)
    order = (lambda: torch.Generator().manual_seed(case["seed"])) if shuffle else (lambda: None)
    return options, order


@pytest.mark.parametrize("device", DEVICES)
@checked(700)
@given(case=em_cases(), fg_portion=st.floats(0, 1), bg_portion=st.floats(0, 1),
       margin=st.sampled_from([1e-5, 1e-2, 1.0]), shuffle=st.booleans())
# Logits -1874 (background, present) and -994 (absent): -1874 - 1e-5 rounds to -1874 in float32.
@example(case=dict(batch=1, classes=2, height=1, width=1, dtype=torch.float32, layout="contiguous",
                   logit_scale=1000.0, ties=False, present_fraction=0.3, suppress_absent=True, seed=6),
         fg_portion=0.2, bg_portion=0.4, margin=1e-5, shuffle=False)
def test_em_adapt_gives_labels_of_present_classes_and_nonnegative_biases(device, case, fg_portion, bg_portion,
                                                                         margin, shuffle):
    """em_adapt on finite logits of any float dtype: int64 B x H x W labels in 0..K-1; with
    suppress_absent only present classes win in an image with any; an image with none gets
    the plain argmax; biases finite B x K, >= 0, 0 for absent classes (DESIGN §4)."""
    logits, present = em_inputs(case, device)
    options, order = em_adapt_options(case, fg_portion, bg_portion, margin, shuffle)
    labels, biases = wsloss.em_adapt(logits, present, generator=order(), **options)
    check_pseudo_labels(labels, logits, present, case["suppress_absent"], suppress_background=True)
    assert biases.shape == present.shape and biases.dtype == compute_dtype(logits.dtype)
    assert torch.isfinite(biases).all(), biases
    assert (biases[~present] == 0).all() and (biases >= 0).all()
    none_present = ~present.any(1)
    expected = plain_argmax(logits.to(compute_dtype(logits.dtype)))
    assert torch.equal(labels[none_present], expected[none_present])


@pytest.mark.parametrize("device", DEVICES)
@checked(300)
@given(case=em_cases(), fg_portion=st.floats(0, 1), bg_portion=st.floats(0, 1),
       margin=st.sampled_from([1e-5, 1e-2, 1.0]), shuffle=st.booleans())
def test_em_adapt_takes_index_lists_as_the_bool_mask(device, case, fg_portion, bg_portion, margin, shuffle):
    """The DeepLab index-list form of the image labels gives em_adapt's labels and biases of the
    B x K bool mask."""
    logits, present = em_inputs(case, device)
    options, order = em_adapt_options(case, fg_portion, bg_portion, margin, shuffle)
    labels, biases = wsloss.em_adapt(logits, present, generator=order(), **options)
    from_lists = wsloss.em_adapt(logits, index_lists(present, 255), ignore_index=255, generator=order(), **options)
    assert torch.equal(from_lists[0], labels) and torch.equal(from_lists[1], biases)


@pytest.mark.parametrize("device", DEVICES)
@checked(700)
@given(case=em_cases(), fg_bias=st.floats(-10, 10), bg_bias=st.floats(-10, 10))
# Equal float64 logits and equal biases: a tie, which the larger class index wins.
@example(case=dict(batch=1, classes=2, height=1, width=1, dtype=torch.float64, layout="contiguous",
                   logit_scale=0.001, ties=True, present_fraction=1.0, suppress_absent=False, seed=1),
         fg_bias=1.481573732352004, bg_bias=1.481573732352004)
def test_em_fixed_labels_are_the_argmax_of_the_biased_logits(device, case, fg_bias, bg_bias):
    """em_fixed: int64 B x H x W labels, the argmax (ties to the larger index) of the logits
    plus bg_bias on the background and fg_bias on present classes; with suppress_absent a
    present class or the background (DESIGN §4)."""
    logits, present = em_inputs(case, device)
    labels = wsloss.em_fixed(logits, present, fg_bias, bg_bias, case["suppress_absent"])
    check_pseudo_labels(labels, logits, present, case["suppress_absent"], suppress_background=False)
    dtype = compute_dtype(logits.dtype)
    bias = torch.where(present, torch.tensor(fg_bias, dtype=dtype, device=device), 0.0)
    bias[:, 0] = bg_bias
    scores = logits.to(dtype) + bias[:, :, None, None]
    if case["suppress_absent"]:
        absent = ~present
        absent[:, 0] = False
        scores = scores.masked_fill(absent[:, :, None, None], -math.inf)
    assert torch.equal(labels, plain_argmax(scores))


@pytest.mark.parametrize("device", DEVICES)
@checked(300)
@given(case=em_cases(), fg_bias=st.floats(-10, 10), bg_bias=st.floats(-10, 10))
def test_em_fixed_takes_index_lists_as_the_bool_mask(device, case, fg_bias, bg_bias):
    """The DeepLab index-list form of the image labels gives em_fixed's labels of the B x K bool mask."""
    logits, present = em_inputs(case, device)
    labels = wsloss.em_fixed(logits, present, fg_bias, bg_bias, case["suppress_absent"])
    from_lists = wsloss.em_fixed(logits, index_lists(present, 255), fg_bias, bg_bias, case["suppress_absent"],
                                 ignore_index=255)
    assert torch.equal(from_lists, labels)


@pytest.mark.parametrize("device", DEVICES)
@checked(400)
@given(case=em_cases(), bad=st.lists(st.sampled_from(NON_FINITE), min_size=1, max_size=5), data=st.data())
def test_em_on_non_finite_logits_never_crashes(device, case, bad, data):
    """Non-finite logits are not checked (DESIGN §6: that would need a host sync), but they still
    give labels in 0..K-1 from both E-steps, never a crash."""
    logits, present = em_inputs(case, device)
    logits = logits.clone()
    for value in bad:
        logits[tuple(data.draw(st.integers(0, n - 1)) for n in logits.shape)] = value
    labels, biases = wsloss.em_adapt(logits, present, suppress_absent=case["suppress_absent"])
    check_pseudo_labels(labels, logits, present, suppress_absent=False, suppress_background=False)
    assert biases.shape == present.shape
    labels = wsloss.em_fixed(logits, present, suppress_absent=case["suppress_absent"])
    check_pseudo_labels(labels, logits, present, suppress_absent=False, suppress_background=False)


# ----------------------------------------------------------------------------- 6. dense CRF inference


@st.composite
def crf_cases(draw):
    kind = draw(st.sampled_from(["probabilities", "logits", "unary"]))
    compatibility = draw(st.sampled_from([None, "vector", "matrix"]))
    return draw(image_options(max_size=9)) | dict(
        classes=draw(st.integers(1, 22)),
        dtype=draw(st.sampled_from(FLOATS)),
        layout=draw(st.sampled_from(LAYOUTS)),
        kind=kind,
        scale=draw(st.sampled_from([0.1, 1.0, 10.0, 100.0])),
        iterations=draw(st.integers(0, 3)),
        w_bilateral=draw(st.sampled_from([0.0, 1.0, 4.0, 10.0])),
        w_gaussian=draw(st.sampled_from([0.0, 1.0, 3.0, 10.0])),
        theta_alpha=draw(sigmas), theta_beta=draw(sigmas), theta_gamma=draw(sigmas),
        normalization=draw(st.sampled_from(["symmetric", "before", "after", "none"])),
        compatibility=compatibility,
    )


def crf_inputs(case, device):
    """The drawn unaries (probabilities, logits or -logits, in their dtype and layout), images
    and dense_crf's other arguments."""
    g = generator(case["seed"])
    batch, classes, height, width = case["batch"], case["classes"], case["height"], case["width"]
    images = make_images(g, batch, case["channels"], height, width, case["image_kind"], case["image_dtype"])
    raw = torch.randn(batch, classes, height, width, generator=g, dtype=torch.float64) * case["scale"]
    inputs = torch.softmax(raw, 1) if case["kind"] == "probabilities" else raw
    inputs = with_layout(inputs.to(case["dtype"]).to(device), case["layout"])
    images = with_layout(images.to(device), case["image_layout"])
    compatibility = None
    if case["compatibility"] == "vector":
        compatibility = torch.rand(classes, generator=g) * 2
    elif case["compatibility"] == "matrix":
        compatibility = 1 - torch.eye(classes) + 0.5 * torch.rand(classes, classes, generator=g)
    options = dict(iterations=case["iterations"], w_bilateral=case["w_bilateral"], theta_alpha=case["theta_alpha"],
                   theta_beta=case["theta_beta"], w_gaussian=case["w_gaussian"], theta_gamma=case["theta_gamma"],
                   compatibility=None if compatibility is None else compatibility.to(device),
                   normalization=case["normalization"], kind=case["kind"])
    return inputs, images, options


@pytest.mark.parametrize("device", DEVICES)
@checked(500)
@given(case=crf_cases())
def test_dense_crf_returns_marginals_summing_to_one(device, case):
    """dense_crf gives marginals of the input's shape and dtype, finite, in [0, 1], summing
    to 1 over K to the dtype's rounding (DESIGN §5)."""
    inputs, images, options = crf_inputs(case, device)
    classes = case["classes"]
    q = wsloss.dense_crf(inputs, images, **options)
    assert q.shape == inputs.shape and q.dtype == inputs.dtype and q.device == inputs.device
    assert torch.isfinite(q).all(), q
    assert ((q >= 0) & (q <= 1)).all()
    total = q.to(torch.float64).sum(1)
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=4 * classes * eps(q.dtype))


@pytest.mark.parametrize("device", DEVICES)
@checked(300)
@given(case=crf_cases())
def test_dense_crf_marginals_are_independent_of_layout_and_dtype(device, case):
    """Layout and dtype change nothing beyond the rounding of the inputs: dense_crf gives the
    marginals of contiguous float32 (float64) copies of the same values, rounded to the dtype."""
    inputs, images, options = crf_inputs(case, device)
    q = wsloss.dense_crf(inputs, images, **options)
    dtype = compute_dtype(q.dtype)
    expected = wsloss.dense_crf(inputs.to(dtype).contiguous(), images.to(torch.float32).contiguous(), **options)
    torch.testing.assert_close(q.to(dtype), expected.to(q.dtype).to(dtype), rtol=0,
                               atol=2 * eps(q.dtype) + 64 * eps(dtype))


# ----------------------------------------------------------------------------- 7. other losses


@st.composite
def cross_entropy_cases(draw):
    return dict(
        batch=draw(st.integers(1, 3)),
        classes=draw(st.integers(1, 22)),
        spatial=draw(st.sampled_from([(), (1, 1)]) | st.tuples(st.integers(1, 9), st.integers(1, 9))),
        dtype=draw(st.sampled_from(FLOATS)),
        layout=draw(st.sampled_from(LAYOUTS)),
        label_dtype=draw(st.sampled_from([torch.int64, torch.int32, torch.int16])),
        ignore_index=draw(st.sampled_from([255, -100, -1, 0])),
        labelled=draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
        logit_scale=draw(st.sampled_from([0.1, 1.0, 10.0, 100.0])),
        nan=draw(st.booleans()),
        seed=draw(seeds),
    )


@pytest.mark.parametrize("device", DEVICES)
@checked(1000)
@given(case=cross_entropy_cases())
def test_partial_cross_entropy_is_cross_entropy_on_the_labelled_pixels(device, case):
    """partial_cross_entropy equals torch's cross_entropy over the pixels whose label is in
    0..K-1 and not ignore_index (labels outside are unlabelled), 0 with a zero gradient when
    none is; NaN logits give NaN only at a labelled pixel."""
    g = generator(case["seed"])
    batch, classes, spatial = case["batch"], case["classes"], case["spatial"]
    logits = torch.randn((batch, classes) + spatial, generator=g, dtype=torch.float64) * case["logit_scale"]
    labels = torch.randint(-3, classes + 3, (batch,) + spatial, generator=g)
    labels = torch.where(torch.rand(labels.shape, generator=g) < 0.2, case["ignore_index"], labels)
    labels = torch.where(torch.rand(labels.shape, generator=g) < case["labelled"], labels, case["ignore_index"])
    if case["nan"]:
        logits.view(-1)[int(torch.randint(logits.numel(), (), generator=g))] = math.nan
    logits = leaf(with_layout(logits.to(case["dtype"]).to(device), case["layout"]))
    labels = labels.to(case["label_dtype"]).to(device)

    loss = WF.partial_cross_entropy(logits, labels, case["ignore_index"])
    dtype = compute_dtype(logits.dtype)
    assert loss.shape == () and loss.dtype == dtype

    valid = (labels.long() != case["ignore_index"]) & (labels >= 0) & (labels < classes)
    reference = leaf(logits.detach().to(dtype).contiguous())
    targets = torch.where(valid, labels.long(), -100)
    expected = F.cross_entropy(reference, targets, ignore_index=-100, reduction="sum") / valid.sum().clamp_min(1)
    tolerance = 64 * eps(dtype) * max(1.0, case["logit_scale"])
    torch.testing.assert_close(loss, expected, rtol=tolerance, atol=tolerance, equal_nan=True)
    if not valid.any():
        assert loss.item() == 0.0
    if case["nan"]:
        return  # a NaN logit gives a NaN gradient at its pixel, labelled or not (as torch's own)
    assert torch.isfinite(loss)
    loss.backward()
    expected.backward()
    assert logits.grad.dtype == logits.dtype and torch.isfinite(logits.grad).all()
    if not valid.any():
        assert (logits.grad == 0).all()
    torch.testing.assert_close(logits.grad.to(dtype), reference.grad.to(logits.dtype).to(dtype),
                               rtol=2 * eps(logits.dtype), atol=tolerance / valid.sum().clamp_min(1).item())


@pytest.mark.parametrize("device", DEVICES)
@checked(800)
@given(case=merged(image_options(max_size=9), segmentation_options(), roi_options()),
       exact_zeros=st.booleans(), weight=st.sampled_from([1.0, 0.1, -2.0, 0.0]))
def test_entropy_loss_is_the_roi_weighted_mean_entropy_with_its_gradient(device, case, exact_zeros, weight):
    """entropy_loss is weight times the ROI-weighted mean of -sum_k S log S (0 log 0 = 0),
    finite, with a finite gradient -(log S + 1) weight r / sum r wherever S > 0."""
    g = generator(case["seed"])
    batch, classes, height, width = case["batch"], case["classes"], case["height"], case["width"]
    probabilities = torch.softmax(torch.randn(batch, classes, height, width, generator=g) * case["logit_scale"], 1)
    if exact_zeros:
        probabilities = probabilities * (torch.rand(probabilities.shape, generator=g) < 0.5)
        probabilities = probabilities / probabilities.sum(1, keepdim=True).clamp_min(1e-30)
    segmentations = leaf(with_layout(probabilities.to(case["seg_dtype"]).to(device), case["seg_layout"]))
    rois = make_rois(g, case["roi"], case["roi_dtype"], batch, height, width)
    if rois is not None:
        rois = with_layout(rois.to(device), case["roi_layout"])

    loss = WF.entropy_loss(segmentations, rois, weight)
    dtype = assert_finite_loss_and_grad(loss, segmentations)
    grad = segmentations.grad

    s = segmentations.detach().to(dtype)
    r = torch.ones(batch, height, width, dtype=dtype) if rois is None else rois.reshape(batch, height, width)
    r = r.to(dtype).to(device)
    coefficient = r * (weight / r.sum().clamp_min(1))
    expected = (torch.special.entr(s).sum(1) * coefficient).sum()
    torch.testing.assert_close(loss, expected, rtol=1e-5 if dtype == torch.float32 else 1e-12,
                               atol=16 * eps(dtype) * abs(weight))
    expected_grad = (-(s.log() + 1) * coefficient[:, None]).to(segmentations.dtype).to(dtype)
    positive = s >= torch.finfo(dtype).tiny
    torch.testing.assert_close(grad.to(dtype)[positive], expected_grad[positive], rtol=2 * eps(grad.dtype),
                               atol=4 * eps(dtype) * abs(weight))


def grid_reference(images, segmentations, rois, weight, sigma, neighbourhood, relaxation):
    """The grid CRF by shifted slices, float64: each unordered pair of 4/8-neighbours once,
    w_pq = r_p r_q exp(-|I_p - I_q|^2 / (2 sigma^2)) / dist(p, q)."""
    pairs = [((slice(None), slice(None, -1)), (slice(None), slice(1, None)), 1.0),
             ((slice(None, -1), slice(None)), (slice(1, None), slice(None)), 1.0)]
    if neighbourhood == 8:
        pairs += [((slice(None, -1), slice(None, -1)), (slice(1, None), slice(1, None)), 0.5 ** 0.5),
                  ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1)), 0.5 ** 0.5)]
    total = segmentations.new_zeros(())
    for p, q, inverse_length in pairs:
        distance = (images[(..., *p)] - images[(..., *q)]).square().sum(1)
        w = rois[(..., *p)] * rois[(..., *q)] * torch.exp(-distance / (2 * sigma ** 2)) * inverse_length
        a, b = segmentations[(..., *p)], segmentations[(..., *q)]
        term = (a - b).square() if relaxation == "quadratic" else (a + b) / 2 - a * b
        total = total + (w * term.sum(1)).sum()
    return total * weight / segmentations.shape[0]


@pytest.mark.parametrize("device", DEVICES)
@checked(800)
@given(case=merged(image_options(max_size=9), segmentation_options(), roi_options()), sigma=sigmas,
       weight=st.sampled_from([1.0, 0.1, -2.0, 0.0]), neighbourhood=st.sampled_from([4, 8]),
       relaxation=st.sampled_from(["quadratic", "bilinear"]))
def test_grid_crf_loss_equals_the_float64_pair_sum(device, case, sigma, weight, neighbourhood, relaxation):
    """grid_crf_loss is finite with a finite gradient of the segmentations' dtype, equal
    (value and gradient) to a float64 sum over neighbour pairs of the same inputs."""
    g = generator(case["seed"])
    batch, classes, height, width = case["batch"], case["classes"], case["height"], case["width"]
    images = make_images(g, batch, case["channels"], height, width, case["image_kind"], case["image_dtype"])
    probabilities = torch.softmax(torch.randn(batch, classes, height, width, generator=g) * case["logit_scale"], 1)
    segmentations = leaf(with_layout(probabilities.to(case["seg_dtype"]).to(device), case["seg_layout"]))
    images = with_layout(images.to(device), case["image_layout"])
    rois = make_rois(g, case["roi"], case["roi_dtype"], batch, height, width)
    if rois is not None:
        rois = with_layout(rois.to(device), case["roi_layout"])

    loss = WF.grid_crf_loss(images, segmentations, rois, weight, sigma, neighbourhood, relaxation)
    dtype = assert_finite_loss_and_grad(loss, segmentations)
    grad = segmentations.grad

    # The kernel computes in the compute dtype from the inputs rounded to it.
    s = leaf(segmentations.detach().to(dtype).double())
    r = torch.ones(batch, height, width, device=device) if rois is None else rois.reshape(batch, height, width)
    expected = grid_reference(images.to(dtype).double(), s, r.to(dtype).double(), weight, sigma, neighbourhood,
                              relaxation)
    expected.backward()
    # All pair terms have one sign; each is at most 1 per class, rounded to a few eps, and its
    # weight's exponent carries float32 rounding (rtol). Per pixel at most 8 terms of slope <= 2.
    pairs = (2 if neighbourhood == 4 else 4) * batch * height * width
    precision = 1e-4 if dtype == torch.float32 else 1e-10
    scale = abs(weight) * pairs * classes / batch
    torch.testing.assert_close(loss.double(), expected, rtol=precision, atol=8 * eps(dtype) * scale)
    torch.testing.assert_close(grad.double(), s.grad.to(grad.dtype).double(), rtol=2 * eps(grad.dtype) + precision,
                               atol=precision * 16 * abs(weight) / batch)
