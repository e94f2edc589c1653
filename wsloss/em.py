"""EM pseudo-labels for weak supervision (Papandreou et al., ICCV 2015), docs/DESIGN.md §4.

The E-step of "Weakly- and Semi-Supervised Learning of a Deep Convolutional Network for
Semantic Image Segmentation": the network's own logits, biased towards the classes an
image is tagged with (or the boxes drawn on it), give hard pseudo-labels; the M-step is
plain cross-entropy against them (``EMAdaptLoss``, ``EMFixedLoss``). No gradient flows
through an E-step.

Image-level labels are either a B x K bool tensor (``labels[b, c]``: class c is in
image b; class 0 is the background) or integer class indices, B x L, padded with
negative values or ``ignore_index`` (the DeepLab list format).
"""
import math
from numbers import Integral
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch

from ._checks import axes_text, check_integer, check_real, check_tensor, shape_text
from ._ops import ops
from ._precision import compute_dtype
from .crf import dense_crf

__all__ = ["em_fixed", "em_adapt", "bbox_rect", "bbox_em_fixed", "bbox_seg", "semi_supervised_targets"]

ImageLabels = Union[torch.Tensor, Sequence[Sequence[int]]]


def _check_logits(logits) -> torch.Tensor:
    """B x K x H x W (images) or B x K x D x H x W (volumes): every E-step works per image over
    all its pixels or voxels, whatever their layout."""
    check_tensor("logits", logits, dims=(4, 5), floating=True)
    return logits.detach()


def _per_image(values: torch.Tensor, spatial_axes: int) -> torch.Tensor:
    """B or B x K values viewed to broadcast against B x <spatial> or B x K x <spatial>."""
    return values.reshape(values.shape + (1,) * spatial_axes)


def _present_classes(labels: ImageLabels, logits: torch.Tensor, ignore_index: Optional[int] = None) -> torch.Tensor:
    """Image-level labels as a B x K bool tensor on the logits' device."""
    batch, classes = logits.shape[:2]
    if not isinstance(labels, torch.Tensor):
        if not isinstance(labels, Sequence) or len(labels) != batch:
            found = type(labels).__name__ + (f" of length {len(labels)}" if isinstance(labels, Sequence) else "")
            raise TypeError(f"labels must be a tensor or a list of {batch} lists of class indices, got {found}")
        longest = max((len(row) for row in labels), default=0)
        rows = [list(row) + [-1] * (longest - len(row)) for row in labels]
        if any(not isinstance(v, Integral) for row in rows for v in row):
            raise TypeError("labels must hold integer class indices")
        labels = torch.tensor(rows, dtype=torch.int64).reshape(batch, longest).to(logits.device)
    if labels.device != logits.device:
        raise ValueError(f"labels must be on the logits' device {logits.device}, got {labels.device}")
    if labels.dtype == torch.bool:
        if labels.shape != (batch, classes):
            raise ValueError(f"labels (bool) must be B x K = {batch} x {classes}, got shape {tuple(labels.shape)}")
        return labels
    if labels.dtype == torch.uint8:  # a common stand-in for bool: as indices it would be misread
        raise TypeError("labels must be bool (multi-hot B x K) or int64/int32 class indices, got uint8; "
                        "use labels.bool() for a multi-hot mask")
    if labels.is_floating_point() or labels.is_complex() or labels.dim() != 2 or labels.shape[0] != batch:
        raise TypeError(
            f"labels must be a B x K bool tensor or B x L integer class indices (B = {batch}), got "
            f"{labels.dtype} of shape {tuple(labels.shape)}"
        )
    labels = labels.long()
    filler = labels < 0
    if ignore_index is not None:
        filler |= labels == ignore_index
    # An index list is a rarer input than a bool tensor; checking it costs one sync.
    if bool(((labels >= classes) & ~filler).any()):
        raise ValueError(f"labels hold class indices outside 0..{classes - 1} (ignore_index={ignore_index})")
    present = torch.zeros(batch, classes + 1, dtype=torch.bool, device=labels.device)
    present.scatter_(1, torch.where(filler, classes, labels), True)
    return present[:, :classes]


def _argmax_last(scores: torch.Tensor) -> torch.Tensor:
    """argmax over dim 1 with ties to the larger index (DESIGN §4)."""
    if scores.is_cuda:
        return (scores.shape[1] - 1) - scores.flip(1).argmax(1)
    # On CPU a running maximum over the contiguous class planes is faster than torch's strided
    # argmax over dim 1 (and its flipped copy); the figures are in benchmarks/RESULTS.md.
    best = scores[:, 0].clone()
    labels = torch.zeros(best.shape, dtype=torch.int64, device=scores.device)
    for c in range(1, scores.shape[1]):
        plane = scores[:, c]
        take = plane >= best
        best = torch.where(take, plane, best)
        labels.masked_fill_(take, c)
    return labels


@torch.no_grad()
def em_fixed(logits: torch.Tensor, labels: ImageLabels, fg_bias: float = 5.0, bg_bias: float = 3.0,
             suppress_absent: bool = False, ignore_index: Optional[int] = None) -> torch.Tensor:
    """EM-Fixed pseudo-labels (Papandreou et al., ICCV 2015, section 3.1), B x H x W int64
    (B x D x H x W for volumes).

    argmax over classes of the logits plus bg_bias on the background channel and fg_bias on
    every present foreground class; absent classes are left as they are (the reference)
    or, with suppress_absent, never win. Ties go to the larger class index.
    """
    logits = _check_logits(logits)
    fg_bias, bg_bias = check_real("fg_bias", fg_bias), check_real("bg_bias", bg_bias)
    present = _present_classes(labels, logits, ignore_index)
    scores = logits.to(compute_dtype(logits.dtype))
    bias = present.to(scores.dtype) * fg_bias  # in the scores' dtype: float64 logits keep fg_bias exact
    bias[:, 0] = bg_bias
    spatial_axes = logits.dim() - 2
    scores = scores + _per_image(bias, spatial_axes)
    if suppress_absent:
        absent = ~present
        absent[:, 0] = False
        scores = scores.masked_fill(_per_image(absent, spatial_axes), -math.inf)
    return _argmax_last(scores)


def _visiting_order(present: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    batch, classes = present.shape
    if generator is None:
        return torch.arange(classes, device=present.device).expand(batch, classes)
    # Background first, the foreground classes shuffled per image (as the original does).
    shuffled = torch.rand(batch, classes - 1, generator=generator, device=generator.device).argsort(1) + 1
    order = torch.cat((torch.zeros(batch, 1, dtype=torch.int64, device=shuffled.device), shuffled), dim=1)
    return order.to(present.device)


@torch.no_grad()
def em_adapt(logits: torch.Tensor, labels: ImageLabels, fg_portion: float = 0.2, bg_portion: float = 0.4,
             suppress_absent: bool = True, margin: float = 1e-5, ignore_index: Optional[int] = None,
             generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """EM-Adapt pseudo-labels (Papandreou et al., ICCV 2015, section 3.1; DESIGN §4).

    Per image, each present class l in turn (background first, then the foreground
    classes ascending, or in a random order drawn from ``generator``) gets the adaptive
    bias b_l that makes it tie or beat the running maximum on at least a fraction rho_l
    of the pixels (rho = bg_portion for the background, fg_portion otherwise): b_l is
    the k-th smallest of M - F_l, k = min(floor(rho_l N), N - 1). With suppress_absent,
    absent classes are clipped below the least present score (minus margin) first.

    Returns (labels B x H x W int64 (B x D x H x W for volumes: N counts voxels), ties to the
    larger class index; biases B x K, 0
    for classes without one, float32 or float64). float16/bfloat16 are computed in float32.
    A generator on another device than the logits costs one small copy of the order.
    Non-finite logits are not checked (that would need a host sync): they give labels in
    0..K-1 and may give NaN biases, never a crash.
    """
    logits = _check_logits(logits)
    for name, value in (("fg_portion", fg_portion), ("bg_portion", bg_portion)):
        if not 0.0 <= check_real(name, value) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    margin = check_real("margin", margin)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    present = _present_classes(labels, logits, ignore_index)
    batch, classes = logits.shape[:2]
    flat = logits.to(compute_dtype(logits.dtype)).reshape(batch, classes, -1)
    pseudo, biases = ops.em_adapt(flat, present, _visiting_order(present, generator), float(bg_portion),
                                  float(fg_portion), bool(suppress_absent), margin)
    return pseudo.reshape((batch,) + tuple(logits.shape[2:])), biases


def _box_span(lo: float, hi: float, size: int) -> slice:
    # Pixel i (covering [i, i + 1)) is inside when its centre i + 0.5 lies in [lo, hi).
    return slice(min(max(math.ceil(lo - 0.5), 0), size), min(max(math.ceil(hi - 0.5), 0), size))


class _BoxSpan(NamedTuple):
    """A box as index ranges, outermost axis first ((rows, columns), or (slices, rows, columns)), and its class."""
    spans: Tuple[slice, ...]
    label: int


def _image_boxes(boxes: Sequence, classes: Sequence, size: Sequence[int]) -> List[List[_BoxSpan]]:
    """Per image, its boxes as index ranges, largest area (volume) first, so that painting them
    in order leaves each pixel to the smallest box, ties to the later. A box is x0, y0, x1, y1
    for images (size = (H, W)) and x0, y0, z0, x1, y1, z1 for volumes (size = (D, H, W))."""
    if len(boxes) != len(classes):
        raise ValueError(f"boxes and classes must list the same number of images, got {len(boxes)} and {len(classes)}")
    axes = len(size)
    coordinates = 2 * axes
    form = "x0, y0, x1, y1" if axes == 2 else "x0, y0, z0, x1, y1, z1"
    spans = []
    for b, (image_boxes, image_classes) in enumerate(zip(boxes, classes)):
        given = torch.as_tensor(image_boxes, dtype=torch.float64)
        if given.numel() % coordinates or (given.dim() > 1 and given.shape[-1] != coordinates):
            raise ValueError(f"boxes[{b}] must hold {coordinates} coordinates per box ({form}) for a size of "
                             f"{axes} axes {tuple(size)}, got shape {tuple(given.shape)}")
        coords = given.reshape(-1, coordinates).tolist()
        labels = torch.as_tensor(image_classes).reshape(-1).tolist()
        if len(coords) != len(labels):
            raise ValueError(f"image {b}: {len(coords)} boxes but {len(labels)} classes")
        for box, label in zip(coords, labels):
            if not all(math.isfinite(v) for v in box) or any(box[axes + i] < box[i] for i in range(axes)):
                raise ValueError(f"boxes[{b}] must be finite {form} with each lower bound <= its upper bound, "
                                 f"got {box}")
            if isinstance(label, bool) or not isinstance(label, Integral) or label < 1:
                raise ValueError(f"classes[{b}] must be integer classes >= 1 (0 is the background), got {label!r}")
        # Coordinates run x, y[, z]; the size and the spans run outermost first.
        extents = [math.prod(box[axes + i] - box[i] for i in range(axes)) for box in coords]
        image_spans = []
        for i in sorted(range(len(coords)), key=lambda i: -extents[i]):
            box = coords[i]
            image_spans.append(_BoxSpan(tuple(_box_span(box[axis], box[axes + axis], size[axes - 1 - axis])
                                              for axis in reversed(range(axes))), labels[i]))
        spans.append(image_spans)
    return spans


def bbox_rect(boxes: Sequence, classes: Sequence, *size: int,
              device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """Bbox-Rect label maps (Papandreou et al., ICCV 2015, section 3.2), B x H x W int64, or
    B x D x H x W for volumes: ``bbox_rect(boxes, classes, height, width)`` or
    ``bbox_rect(boxes, classes, depth, height, width)``.

    boxes[b]: image b's boxes, n_b x 4 (x0, y0, x1, y1), or n_b x 6 (x0, y0, z0, x1, y1, z1) for
    volumes, in pixel coordinates, upper bounds exclusive (pixel i covers [i, i + 1); it is
    inside when its centre is); classes[b]: their n_b classes, each >= 1. A pixel takes the class
    of the smallest box (by area or volume) that holds it (equal: the later box); outside
    every box it is background (0).
    (VOC's 1-based inclusive xmin..xmax is x0 = xmin - 1, x1 = xmax.)
    """
    if len(size) not in (2, 3):
        raise ValueError(f"size must be height, width or depth, height, width, got {len(size)} numbers: {size}")
    size = tuple(check_integer(name, value, 1) for name, value in zip(("depth", "height", "width")[-len(size):], size))
    spans = _image_boxes(boxes, classes, size)
    out = torch.zeros((len(spans),) + size, dtype=torch.int64, device=device)
    for b, image_spans in enumerate(spans):
        for box in image_spans:
            out[(b,) + box.spans] = box.label
    return out


@torch.no_grad()
def bbox_em_fixed(logits: torch.Tensor, rect_labels: torch.Tensor, fg_bias: float = 5.0,
                  bg_bias: float = 3.0) -> torch.Tensor:
    """Bbox-EM-Fixed pseudo-labels (Papandreou et al., ICCV 2015, section 3.2), B x H x W int64
    (B x D x H x W for volumes, with B x K x D x H x W logits).

    On a Bbox-Rect map (``bbox_rect``): the background gets bg_bias everywhere, a box's
    class gets fg_bias inside its box (where rect_labels holds it); argmax, ties to the
    larger class index. rect_labels values outside 1..K-1 give no foreground bias.
    """
    logits = _check_logits(logits)
    fg_bias, bg_bias = check_real("fg_bias", fg_bias), check_real("bg_bias", bg_bias)
    check_tensor("rect_labels", rect_labels, dims=(logits.dim() - 1,))
    batch, classes = logits.shape[:2]
    if rect_labels.shape != (batch,) + logits.shape[2:]:
        raise ValueError(f"rect_labels must be B x {axes_text(logits.dim() - 2)} = "
                         f"{shape_text((batch,) + logits.shape[2:])}, got {tuple(rect_labels.shape)}")
    if rect_labels.device != logits.device:
        raise ValueError(f"rect_labels must be on the logits' device {logits.device}, got {rect_labels.device}")
    if rect_labels.dtype == torch.bool or rect_labels.is_floating_point() or rect_labels.is_complex():
        raise TypeError(f"rect_labels must be an integer tensor, got {rect_labels.dtype}")
    scores = logits.to(compute_dtype(logits.dtype))
    foreground = _per_image(torch.arange(classes, device=logits.device)[None], logits.dim() - 2)
    inside = (rect_labels[:, None] == foreground) & (foreground > 0)
    scores = scores + inside.to(scores.dtype) * fg_bias
    scores[:, 0] += bg_bias
    return _argmax_last(scores)


@torch.no_grad()
def semi_supervised_targets(logits: torch.Tensor, labels: ImageLabels, masks: Optional[torch.Tensor] = None,
                            strong: Optional[torch.Tensor] = None, method: str = "em_adapt",
                            ignore_index: Optional[int] = None, **options: Any) -> torch.Tensor:
    """Cross-entropy targets for a batch mixing strong and weak images (DESIGN §4), B x H x W int64
    (B x D x H x W for volumes; masks likewise).

    Images with strong[b] keep masks[b] (which may hold ignore_index); the others get the
    E-step pseudo-labels of ``method`` ("em_adapt" or "em_fixed", with its ``options``)
    from their image-level labels. Without masks every image is weak.
    """
    logits = _check_logits(logits)
    if method == "em_adapt":
        targets = em_adapt(logits, labels, ignore_index=ignore_index, **options)[0]
    elif method == "em_fixed":
        targets = em_fixed(logits, labels, ignore_index=ignore_index, **options)
    else:
        raise ValueError(f"method must be 'em_adapt' or 'em_fixed', got {method!r}")
    if masks is None:
        if strong is not None:
            raise ValueError("strong needs masks")
        return targets
    batch, spatial = logits.shape[0], tuple(logits.shape[2:])
    check_tensor("masks", masks, dims=(logits.dim() - 1,))
    if masks.shape != (batch,) + spatial or masks.is_floating_point() or masks.dtype == torch.bool:
        raise ValueError(f"masks must be integer B x {axes_text(logits.dim() - 2)} = {shape_text((batch,) + spatial)} "
                         f"(the logits' size), got {masks.dtype} of shape {tuple(masks.shape)}")
    if strong is None:
        raise ValueError("masks need strong (B bools: which images keep their masks)")
    check_tensor("strong", strong, dims=(1,))
    if strong.dtype != torch.bool or strong.shape != (batch,):
        raise ValueError(f"strong must be {batch} bools, got {strong.dtype} of shape {tuple(strong.shape)}")
    for name, t in (("masks", masks), ("strong", strong)):
        if t.device != logits.device:
            raise ValueError(f"{name} must be on the logits' device {logits.device}, got {t.device}")
    return torch.where(_per_image(strong, len(spatial)), masks.long(), targets)


@torch.no_grad()
def bbox_seg(images: torch.Tensor, boxes: Sequence, classes: Sequence, centre_fraction: float = 0.2,
             min_confidence: float = 0.7, ignore_index: int = 255, **crf_options: Any) -> torch.Tensor:
    """Bbox-Seg pseudo-labels (Papandreou et al., ICCV 2015, section 3.2), B x H x W int64, or
    B x D x H x W for volumes (images B x C x D x H x W, boxes of 6 coordinates).

    Dense CRF inference (``wsloss.dense_crf`` with ``crf_options``) over one label per box
    plus the background, batched over the images: outside every box only the background
    is allowed; inside boxes, the background and the boxes that hold the pixel, with a
    uniform unary; the centre of each box (centre_fraction of its area or volume, same centre
    and aspect ratio) is fixed to that box (overlaps: the smallest box). Each pixel takes
    the class of its most probable label; where that probability is below
    min_confidence it gets ignore_index (undecided). Boxes and classes as ``bbox_rect``.
    """
    check_tensor("images", images, dims=(4, 5), real=True)
    if not 0.0 < check_real("centre_fraction", centre_fraction) <= 1.0:
        raise ValueError(f"centre_fraction must be in (0, 1], got {centre_fraction}")
    if not 0.0 <= check_real("min_confidence", min_confidence) <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, Integral):
        raise TypeError(f"ignore_index must be an integer, got {type(ignore_index).__name__}")
    batch, spatial = images.shape[0], tuple(images.shape[2:])
    spans = _image_boxes(boxes, classes, spatial)
    if len(spans) != batch:
        raise ValueError(f"boxes must list one entry per image ({batch}), got {len(spans)}")
    labels = 1 + max(len(image_spans) for image_spans in spans)
    dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    logits = torch.full((batch, labels) + spatial, -math.inf, dtype=dtype, device=images.device)
    logits[:, 0] = 0.0
    label_classes = [[0] * labels for _ in range(batch)]
    side = math.sqrt(centre_fraction) if len(spatial) == 2 else math.pow(centre_fraction, 1 / 3)

    def centre(span: slice) -> slice:  # at least one pixel of a non-empty box
        lo, hi = span.start, span.stop
        if hi <= lo:
            return slice(lo, lo)
        size = max(1, round((hi - lo) * side))
        start = lo + (hi - lo - size) // 2
        return slice(start, start + size)

    for b, image_spans in enumerate(spans):
        for j, box in enumerate(image_spans, start=1):
            logits[(b, j) + box.spans] = 0.0
            label_classes[b][j] = box.label
        for j, box in enumerate(image_spans, start=1):  # largest first: the smallest stays
            middle = tuple(centre(span) for span in box.spans)
            logits[(b, slice(None)) + middle] = -math.inf
            logits[(b, j) + middle] = 0.0
    q = dense_crf(logits, images, kind="logits", **crf_options)
    confidence, best = q.max(dim=1)
    label_classes = torch.tensor(label_classes, dtype=torch.int64, device=images.device)
    out = torch.gather(label_classes, 1, best.flatten(1)).reshape(best.shape)
    return out.masked_fill_(confidence < min_confidence, ignore_index)
