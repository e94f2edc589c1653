"""The demo's network, its training rows (one per kind of supervision) and the mIoU."""
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

import wsloss
from .data import CLASS_NAMES, IGNORE, Split

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


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
    images: torch.Tensor
    masks: torch.Tensor
    scribbles: torch.Tensor
    tags: torch.Tensor
    targets: Optional[torch.Tensor]  # the row's pseudo-labels, made once before training
    ramp: float  # 0 -> 1 over the first part of training: the regularizers' weight factor


@dataclass
class Row:
    """One line of the table: how a network is trained from one kind of annotation."""

    name: str
    supervision: str
    loss: Callable[[torch.Tensor, Batch], torch.Tensor]
    targets: Optional[Callable[[Split, torch.device], torch.Tensor]] = None


def make_rows(crf_weight: float, ncut_weight: float, entropy_weight: float, sigma_rgb: float, sigma_xy: float,
              scale: float) -> List[Row]:
    pce = wsloss.PartialCrossEntropyLoss(ignore_index=IGNORE)
    em_adapt = wsloss.EMAdaptLoss(fg_portion=0.2, bg_portion=0.4, ignore_index=IGNORE)

    def scribble_row(name: str, **regularizers: nn.Module) -> Row:
        def loss(logits, b):
            total = pce(logits, b.scribbles)
            probabilities = logits.softmax(1) if regularizers else None
            for term in regularizers.values():
                args = (b.images, probabilities) if getattr(term, "needs_images", False) else (probabilities,)
                total = total + b.ramp * term(*args)
            return total
        return Row(name, "scribbles", loss)

    def rect_targets(split: Split, device: torch.device) -> torch.Tensor:
        h, w = split.masks.shape[-2:]
        return wsloss.bbox_rect(split.boxes, split.box_classes, h, w, device=device)

    def seg_targets(split: Split, device: torch.device) -> torch.Tensor:
        return wsloss.bbox_seg(split.images.to(device), split.boxes, split.box_classes)

    def ce_targets(logits, b):
        return F.cross_entropy(logits, b.targets, ignore_index=IGNORE)

    def em_fixed_targets(logits, b):
        assert b.targets is not None  # the row's targets are its Bbox-Rect maps
        return F.cross_entropy(logits, wsloss.bbox_em_fixed(logits.detach(), b.targets))

    # reduction="mean": the weight means the same at any image size, scale and sigma_xy.
    densecrf = wsloss.DenseCRFLoss(crf_weight, sigma_rgb, sigma_xy, scale, reduction="mean")
    return [
        Row("full", "full masks", lambda logits, b: F.cross_entropy(logits, b.masks)),
        scribble_row("pce"),
        scribble_row("pce+densecrf", densecrf=densecrf),
        scribble_row("pce+densecrf+entropy", densecrf=densecrf, entropy=wsloss.EntropyLoss(entropy_weight)),
        scribble_row("pce+ncut", ncut=wsloss.NormalizedCutLoss(ncut_weight, sigma_rgb, sigma_xy, scale)),
        Row("bbox-rect", "boxes", ce_targets, rect_targets),
        Row("bbox-seg", "boxes", ce_targets, seg_targets),
        Row("bbox-em-fixed", "boxes", em_fixed_targets, rect_targets),
        Row("tags-em-adapt", "image-level tags", lambda logits, b: em_adapt(logits, b.tags)),
    ]


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


def train_row(row: Row, train: Split, steps: int, batch_size: int, lr: float, device: torch.device, seed: int,
              rampup: float = 0.3, progress: bool = True) -> Dict[str, Any]:
    """Trains a fresh network (same initialization and batch order for every row); the regularizers
    ramp up linearly over the first `rampup` share of the steps. Returns the net, losses, seconds."""
    torch.manual_seed(seed)
    net = SegmentationNet(len(CLASS_NAMES)).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    order = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    targets = row.targets(train, device) if row.targets is not None else None
    images, masks, scribbles, tags = (t.to(device) for t in (train.images, train.masks, train.scribbles, train.tags))
    bar = _Progress(row.name, steps, progress)
    losses = []
    net.train()
    for step in range(steps):
        index = torch.randint(0, images.shape[0], (batch_size,), generator=order).to(device)
        flip = bool(torch.randint(0, 2, (1,), generator=order))
        pick = (lambda t: t[index].flip(-1) if flip else t[index])
        batch = Batch(pick(images), pick(masks), pick(scribbles), tags[index],
                      pick(targets) if targets is not None else None, min(1.0, step / (rampup * steps + 1e-9)))
        loss = row.loss(net(batch.images), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.update(step + 1, losses[-1])
    return {"net": net, "losses": losses, "seconds": time.perf_counter() - start}
