"""The demo's network, its training rows (one per kind of supervision) and the mIoU."""
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import wsloss
from .data import CLASS_NAMES, IGNORE, Split

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
# Log-sum-exp pooling sharpness of the tags classifier (chosen on the validation split, docs/demo.md).
LSE_SHARPNESS = 10.0


class SegmentationNet(nn.Module):
    """A small DeepLab-v3+-like fully-convolutional network: a dilated encoder at output stride 4
    and a decoder that joins its upsampled features with full-resolution ones, so that
    boundaries can be drawn to the pixel but must be learned."""

    def __init__(self, classes: int, width: int = 32, fine: int = 16):
        super().__init__()

        def block(cin, cout, stride=1, dilation=1, kernel=3):
            return [nn.Conv2d(cin, cout, kernel, stride, padding=dilation * (kernel // 2), dilation=dilation,
                              bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.stem = nn.Sequential(*block(3, fine))
        self.encoder = nn.Sequential(*block(fine, width, stride=2), *block(width, 2 * width, stride=2),
                                     *block(2 * width, 2 * width, dilation=2), *block(2 * width, 2 * width, dilation=4),
                                     *block(2 * width, 2 * width, dilation=8), *block(2 * width, fine, kernel=1))
        self.decoder = nn.Sequential(*block(2 * fine, fine), nn.Conv2d(fine, classes, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fine = self.stem((images - MEAN.to(images)) / STD.to(images))
        coarse = F.interpolate(self.encoder(fine), size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return self.decoder(torch.cat((fine, coarse), 1))


@dataclass
class Batch:
    """One training batch: the images and only the annotations its row uses (None otherwise)."""

    images: torch.Tensor
    masks: Optional[torch.Tensor] = None  # full masks; in a semi-supervised row, IGNORE on the weak images
    scribbles: Optional[torch.Tensor] = None
    boxes: Optional[torch.Tensor] = None  # Bbox-Rect maps of the boxes (wsloss.bbox_rect)
    tags: Optional[torch.Tensor] = None
    targets: Optional[torch.Tensor] = None  # the row's pseudo-labels, made once before training
    strong: Optional[torch.Tensor] = None  # B bools: the images whose full mask this row may use
    ramp: float = 1.0  # 0 -> 1 over the first part of training: the regularizers' weight factor


@dataclass
class Row:
    """One line of the table: how a network is trained from one kind of annotation.

    annotations: the Split fields the row may read (the others never reach it); warmup: start from
    the tags-only classifier (``tag_classifier``); strong_share: the share of the training images
    whose full mask a semi-supervised row may use, strong_batch_share: their share of each batch.
    """

    name: str
    supervision: str
    annotations: Tuple[str, ...]
    loss: Callable[[torch.Tensor, Batch], torch.Tensor]
    targets: Optional[Callable[[Split, torch.device], torch.Tensor]] = None
    warmup: bool = False
    strong_share: float = 0.0
    strong_batch_share: float = 0.0


def make_rows(settings: Dict[str, Any]) -> List[Row]:
    """The demo's rows, in the order of the table (docs/demo.md says what each one is)."""
    s = settings
    pce = wsloss.PartialCrossEntropyLoss(ignore_index=IGNORE)
    em_fixed = wsloss.EMFixedLoss(s["fg_bias"], s["bg_bias"], suppress_absent=True, ignore_index=IGNORE)
    em_adapt = wsloss.EMAdaptLoss(fg_portion=s["fg_portion"], bg_portion=s["bg_portion"], ignore_index=IGNORE)
    # reduction="mean": the weights mean the same at any image size, scale and sigma_xy.
    kernel = (s["sigma_rgb"], s["sigma_xy"], s["scale_factor"])
    densecrf = wsloss.DenseCRFLoss(s["crf_weight"], *kernel, reduction="mean")
    entropy = wsloss.EntropyLoss(s["entropy_weight"])

    def scribble_row(name: str, *regularizers: nn.Module) -> Row:
        def loss(logits: torch.Tensor, b: Batch) -> torch.Tensor:
            total = pce(logits, _given(b.scribbles))
            probabilities = logits.softmax(1) if regularizers else None
            for term in regularizers:
                args = (b.images, probabilities) if getattr(term, "needs_images", False) else (probabilities,)
                total = total + b.ramp * term(*args)
            return total
        return Row(name, "scribbles", ("scribbles",), loss)

    def seg_targets(split: Split, device: torch.device) -> torch.Tensor:
        return wsloss.bbox_seg(split.images.to(device), split.boxes, split.box_classes)

    def box_em_fixed(logits: torch.Tensor, b: Batch) -> torch.Tensor:
        return wsloss.bbox_em_fixed(logits.detach(), _given(b.boxes), s["fg_bias"], s["bg_bias"])

    def semi_boxes(logits: torch.Tensor, b: Batch) -> torch.Tensor:
        targets = torch.where(_given(b.strong)[:, None, None], _given(b.masks), box_em_fixed(logits, b))
        return pce(logits, targets)

    semi = {"strong_share": s["strong_share"], "strong_batch_share": s["strong_batch_share"]}
    return [
        Row("full", "full masks", ("masks",), lambda logits, b: pce(logits, _given(b.masks))),
        scribble_row("pce"),
        scribble_row("pce+entropy", entropy),
        scribble_row("pce+densecrf", densecrf),
        scribble_row("pce+densecrf+entropy", densecrf, entropy),
        scribble_row("pce+ncut", wsloss.NormalizedCutLoss(s["ncut_weight"], *kernel)),
        scribble_row("pce+kernelcut", wsloss.KernelCutLoss(s["kernelcut_ncut_weight"], s["crf_weight"], *kernel,
                                                           reduction="mean")),
        Row("bbox-rect", "boxes", ("boxes",), lambda logits, b: pce(logits, _given(b.boxes))),
        Row("bbox-seg", "boxes", ("boxes",), lambda logits, b: pce(logits, _given(b.targets)), seg_targets),
        Row("bbox-em-fixed", "boxes", ("boxes",), lambda logits, b: pce(logits, box_em_fixed(logits, b))),
        Row("tags-em-fixed", "image-level tags", ("tags",), lambda logits, b: em_fixed(logits, _given(b.tags)),
            warmup=True),
        Row("tags-em-adapt", "image-level tags", ("tags",), lambda logits, b: em_adapt(logits, _given(b.tags)),
            warmup=True),
        Row("semi-tags-em-adapt", f"{s['strong_share']:.0%} full masks, tags", ("masks", "tags"),
            lambda logits, b: em_adapt(logits, _given(b.tags), _given(b.masks), _given(b.strong)), **semi),
        Row("semi-bbox-em-fixed", f"{s['strong_share']:.0%} full masks, boxes", ("masks", "boxes"), semi_boxes,
            **semi),
    ]


def _given(annotation: Optional[torch.Tensor]) -> torch.Tensor:
    """An annotation a row's loss reads: a row that reads one it was not given is a bug."""
    if annotation is None:
        raise RuntimeError("a demo row read an annotation that its Row.annotations does not list")
    return annotation


def predict(net: nn.Module, split: Split, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """Labels of every image of split, B x H x W int64 on the CPU."""
    net.eval()
    with torch.no_grad():
        return torch.cat([net(split.images[start:start + batch_size].to(device)).argmax(1).cpu()
                          for start in range(0, split.images.shape[0], batch_size)])


def confusion(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """K x K counts of (true class, predicted class) over a whole set of label maps."""
    classes = len(CLASS_NAMES)
    pairs = truth * classes + predicted
    return torch.bincount(pairs.flatten(), minlength=classes * classes).view(classes, classes)


def class_iou(matrix: torch.Tensor) -> torch.Tensor:
    """Intersection over union of each class from whole-set counts (PASCAL VOC's measure), NaN for
    a class neither present nor predicted; the mIoU is the mean over the others."""
    tp = matrix.diag().double()
    union = matrix.sum(0).double() + matrix.sum(1).double() - tp
    return tp / union


class _Progress:
    """A row's training progress on stderr: tqdm's bar on a terminal; otherwise (a log file, a
    pipe, or no tqdm) one plain line per tenth of the steps."""

    def __init__(self, label: str, total: int, enabled: bool):
        self.label, self.total, self.enabled, self.start = label, total, enabled, time.perf_counter()
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm  # type: ignore[import-untyped, import-not-found]
            except ImportError:
                return
            self.bar = tqdm(total=total, desc=f"{label:<22}", unit="step", file=sys.stderr, dynamic_ncols=True)

    def update(self, done: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self.bar.update(1)
            if done == self.total:
                self.bar.close()
        elif self.enabled and (done % max(1, self.total // 10) == 0 or done == self.total):
            print(f"{self.label}: step {done}/{self.total}, loss {loss:.4f}, "
                  f"{time.perf_counter() - self.start:.1f} s", file=sys.stderr, flush=True)


def strong_images(count: int, share: float, data_seed: int) -> torch.Tensor:
    """The fixed set of training images whose full masks the semi-supervised rows may use: count
    bools, ceil(share * count) of them true, drawn once from the data seed (the same for every
    row and training seed)."""
    chosen = torch.randperm(count, generator=torch.Generator().manual_seed(data_seed))[:math.ceil(share * count)]
    return torch.zeros(count, dtype=torch.bool).index_fill_(0, chosen, True)


def _annotations(row: Row, split: Split, device: torch.device, strong: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The whole training set's annotations that row may read, on device; nothing else."""
    given: Dict[str, torch.Tensor] = {}
    for name in row.annotations:
        if name == "masks":
            # A semi-supervised row sees no pixel of a weak image's mask.
            given[name] = split.masks.masked_fill(~strong[:, None, None], IGNORE) if row.strong_share else split.masks
        elif name == "boxes":
            given[name] = wsloss.bbox_rect(split.boxes, split.box_classes, *split.images.shape[-2:])
        else:
            given[name] = getattr(split, name)
    if row.strong_share:
        given["strong"] = strong
    return {name: t.to(device) for name, t in given.items()}


def _batches(count: int, batch_size: int, strong: Optional[torch.Tensor], strong_batch_share: float,
             generator: torch.Generator):
    """Endless (indices, flip) draws; with strong, every batch holds ceil(batch_size *
    strong_batch_share) images of the strong set and the rest from the others, as the paper's
    semi-supervised batches mix a fixed proportion of both."""
    if strong is not None:
        pools = (torch.nonzero(strong).flatten(), torch.nonzero(~strong).flatten())
        sizes = (math.ceil(batch_size * strong_batch_share), batch_size - math.ceil(batch_size * strong_batch_share))
    while True:
        if strong is None:
            index = torch.randint(0, count, (batch_size,), generator=generator)
        else:
            index = torch.cat([pool[torch.randint(0, len(pool), (size,), generator=generator)]
                               for pool, size in zip(pools, sizes)])
        yield index, bool(torch.randint(0, 2, (1,), generator=generator))


def _new_net(seed: int, device: torch.device) -> nn.Module:
    torch.manual_seed(seed)
    return SegmentationNet(len(CLASS_NAMES)).to(device)


def _fit(net: nn.Module, steps: int, lr: float, step_loss: Callable[[int], torch.Tensor], bar: "_Progress") -> List[float]:
    """steps of Adam with a one-cycle learning rate; step_loss(step) is the step's loss."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses: List[float] = []
    net.train()
    for step in range(steps):
        loss = step_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.update(step + 1, losses[-1])
    return losses


def tag_classifier(train: Split, steps: int, batch_size: int, lr: float, device: torch.device, seed: int,
                   progress: bool = True, label: str = "tags classifier") -> Dict[str, Any]:
    """The tags rows' start, from the image-level tags alone: the segmentation network trained as a
    multi-label classifier, its class score maps pooled per image by log-sum-exp (Pinheiro &
    Collobert, CVPR 2015: between the mean and the max, so a class needs evidence somewhere,
    not everywhere) under a binary cross-entropy against the tags, background included.
    (The papers' networks start from ImageNet classifiers; ours start from scratch.)
    Returns the net, losses, seconds."""
    net = _new_net(seed, device)
    tags = train.tags.to(device).float()
    images = train.images.to(device)
    draws = _batches(images.shape[0], batch_size, None, 0.0, torch.Generator().manual_seed(seed))

    def step_loss(step: int) -> torch.Tensor:
        index, flip = next(draws)
        batch = images[index.to(device)]
        scores = net(batch.flip(-1) if flip else batch).flatten(2)
        pooled = (torch.logsumexp(LSE_SHARPNESS * scores, 2) - math.log(scores.shape[2])) / LSE_SHARPNESS
        return F.binary_cross_entropy_with_logits(pooled, tags[index.to(device)])

    start = time.perf_counter()
    losses = _fit(net, steps, lr, step_loss, _Progress(label, steps, progress))
    return {"net": net, "losses": losses, "seconds": time.perf_counter() - start}


def train_row(row: Row, train: Split, steps: int, batch_size: int, lr: float, device: torch.device, seed: int,
              rampup: float = 0.3, progress: bool = True, warmup: Optional[Dict[str, torch.Tensor]] = None,
              data_seed: int = 0, label: Optional[str] = None) -> Dict[str, Any]:
    """Trains a network for row: fresh from seed (the same initialization and batch order for every
    row of a seed), or, given warmup (a state dict), from it. The regularizers ramp up linearly over
    the first `rampup` share of the steps. Returns the net, losses, seconds."""
    net = _new_net(seed, device)
    if warmup is not None:
        net.load_state_dict(warmup)
    start = time.perf_counter()
    strong = strong_images(train.images.shape[0], row.strong_share, data_seed)
    given = _annotations(row, train, device, strong)
    targets = row.targets(train, device) if row.targets is not None else None
    images = train.images.to(device)
    draws = _batches(images.shape[0], batch_size, strong if row.strong_share else None, row.strong_batch_share,
                     torch.Generator().manual_seed(seed))

    def step_loss(step: int) -> torch.Tensor:
        index, flip = next(draws)
        index = index.to(device)

        def pick(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            if t is None or t.dim() < 3:  # tags and strong: per image, nothing to flip
                return None if t is None else t[index]
            return t[index].flip(-1) if flip else t[index]

        batch = Batch(_given(pick(images)), pick(given.get("masks")), pick(given.get("scribbles")), pick(given.get("boxes")),
                      pick(given.get("tags")), pick(targets), pick(given.get("strong")),
                      min(1.0, step / (rampup * steps + 1e-9)))
        return row.loss(net(batch.images), batch)

    losses = _fit(net, steps, lr, step_loss, _Progress(label or row.name, steps, progress))
    return {"net": net, "losses": losses, "seconds": time.perf_counter() - start}
