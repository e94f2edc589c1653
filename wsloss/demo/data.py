"""The demo's segmentation set: objects cut from real photographs, pasted on real backgrounds.

Every class has its own appearance, drawn from a region of a photograph that scikit-image ships
(public domain / CC0): brick, grass, gravel and moon-surface textures, each tinted its own
colour. Each object is a random star-shaped blob at a random position on a crop of a real scene,
so the ground truth is exact. Training images come from the top 60% of every source photograph,
held-out images from the bottom 40%: no test pixel was ever seen in training.

The annotations are derived from the ground truth the way people draw them: scribbles (thin
strokes inside every object and across the background), tight bounding boxes, and image-level
tags.
"""
import math
from typing import Dict, List, NamedTuple, Tuple

import numpy as np
import torch
import torch.nn.functional as F

IGNORE = 255
CLASS_NAMES = ("background", "brick", "grass", "gravel", "moon")
# (scikit-image sample, RGB tint of the grey texture). Each is stationary (the same texture in its
# training and held-out parts); a photograph whose parts differ (immunohistochemistry: tissue on
# top, mostly pale stroma below) would test recognition under a shift, not the supervision.
CLASS_SOURCES = (("brick", (1.0, 0.62, 0.45)), ("grass", (0.62, 0.95, 0.45)), ("gravel", (0.65, 0.72, 1.0)),
                 ("moon", (0.95, 0.6, 1.0)))
BACKGROUND_SOURCES = ("astronaut", "coffee", "rocket", "stereo_motorcycle", "chelsea", "hubble_deep_field")
TRAIN_ROWS = 0.6  # share of each photograph's rows that training crops come from


class Split(NamedTuple):
    """A set of images and their annotations (tensors on the CPU)."""

    images: torch.Tensor  # B x 3 x H x W float32 RGB in 0..255
    masks: torch.Tensor  # B x H x W int64 ground truth
    scribbles: torch.Tensor  # B x H x W int64, IGNORE where nothing was drawn
    tags: torch.Tensor  # B x K bool, background included
    boxes: List[List[List[float]]]  # per image, x0, y0, x1, y1 (exclusive) of each object
    box_classes: List[List[int]]


def _load(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    return np.ascontiguousarray(image[..., :3]) if image.ndim == 3 else image


def _as_tensor(image: np.ndarray, tint) -> torch.Tensor:
    """3 x H x W float32 in 0..255; a grey texture is tinted so that each class has a colour."""
    pixels = torch.from_numpy(image).float()
    if pixels.ndim == 2:
        pixels = pixels[None] * torch.tensor(tint).view(3, 1, 1)
    else:
        pixels = pixels.permute(2, 0, 1)
    return pixels.contiguous()


class _Photo:
    """One source photograph's train or test part, cropped at random scales."""

    def __init__(self, pixels: torch.Tensor, train: bool):
        rows = round(pixels.shape[1] * TRAIN_ROWS)
        self.pixels = pixels[:, :rows] if train else pixels[:, rows:]

    def crop(self, size: int, short_side: float, rng: np.random.Generator) -> torch.Tensor:
        _, h, w = self.pixels.shape
        scale = short_side / min(h, w)
        resized = F.interpolate(self.pixels[None], size=(max(size, round(h * scale)), max(size, round(w * scale))),
                                mode="bilinear", align_corners=False, antialias=True)[0]
        y = rng.integers(0, resized.shape[1] - size + 1)
        x = rng.integers(0, resized.shape[2] - size + 1)
        return resized[:, y:y + size, x:x + size]


def _blob(size: int, radius: float, rng: np.random.Generator) -> np.ndarray:
    """A random star-shaped region: r(theta) = radius (1 + sum_k a_k cos(k theta + phi_k))."""
    cy, cx = rng.uniform(0.15 * size, 0.85 * size, 2)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    theta = np.arctan2(yy - cy, xx - cx)
    r = np.ones_like(theta)
    for k in range(1, 5):
        r += rng.uniform(0, 0.3 / k) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    return np.hypot(yy - cy, xx - cx) < radius * r


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    m = torch.from_numpy(mask)[None, None].float()
    return (-F.max_pool2d(-m, 2 * steps + 1, stride=1, padding=steps))[0, 0].numpy() > 0.5


def _stroke(region: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth hand-drawn-like stroke that stays inside region: a random walk with momentum,
    one pixel wide, drawn from a random start both ways."""
    out = np.zeros_like(region)
    ys, xs = np.nonzero(region)
    if len(ys) == 0:
        return out
    start = rng.integers(len(ys))
    heading = rng.uniform(0, 2 * math.pi)
    for direction in (0.0, math.pi):
        y, x, angle = ys[start] + 0.5, xs[start] + 0.5, heading + direction
        for _ in range(length // 2):
            iy, ix = int(y), int(x)
            if not (0 <= iy < region.shape[0] and 0 <= ix < region.shape[1] and region[iy, ix]):
                break
            out[iy, ix] = True
            angle += rng.normal(0, 0.25)
            y, x = y + math.sin(angle), x + math.cos(angle)
    return out


def make_split(count: int, size: int, seed: int, train: bool) -> Split:
    """count composed images of size x size; the same seed gives the same set."""
    rng = np.random.default_rng(seed)
    backgrounds = [_Photo(_as_tensor(_load(name), None), train) for name in BACKGROUND_SOURCES]
    textures = [_Photo(_as_tensor(_load(name), tint), train) for name, tint in CLASS_SOURCES]
    classes = len(CLASS_NAMES)
    images = torch.empty(count, 3, size, size)
    masks = torch.zeros(count, size, size, dtype=torch.int64)
    scribbles = torch.full((count, size, size), IGNORE, dtype=torch.int64)
    tags = torch.zeros(count, classes, dtype=torch.bool)
    boxes: List[List[List[float]]] = []
    box_classes: List[List[int]] = []
    for b in range(count):
        image = backgrounds[rng.integers(len(backgrounds))].crop(size, rng.uniform(1.2, 2.5) * size, rng)
        label = np.zeros((size, size), dtype=np.int64)
        instance = np.zeros((size, size), dtype=np.int64)
        objects = rng.integers(1, 4)
        object_classes = rng.integers(1, classes, objects)
        for i, cls in enumerate(object_classes, start=1):
            region = _blob(size, rng.uniform(0.13, 0.3) * size, rng)
            texture = textures[cls - 1].crop(size, rng.uniform(1.5, 4.0) * size, rng)
            jitter = torch.from_numpy(rng.uniform(0.85, 1.15, 3)).float().view(3, 1, 1)
            where = torch.from_numpy(region)
            image = torch.where(where, (texture * jitter).clamp(0, 255), image)
            label[region], instance[region] = cls, i
        image_boxes, image_classes = [], []
        strokes = np.full((size, size), IGNORE, dtype=np.int64)
        for i, cls in enumerate(object_classes, start=1):
            visible = instance == i
            if visible.sum() < 0.005 * size * size:
                continue  # hidden behind later objects: nobody would annotate it
            ys, xs = np.nonzero(visible)
            image_boxes.append([float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)])
            image_classes.append(int(cls))
            inner = _erode(visible, max(1, size // 32))
            strokes[_stroke(inner if inner.any() else visible, int(1.5 * math.sqrt(visible.sum())), rng)] = cls
        background = _erode(label == 0, max(1, size // 32))
        for _ in range(2):
            strokes[_stroke(background, size, rng)] = 0
        images[b] = image.round()
        masks[b] = torch.from_numpy(label)
        scribbles[b] = torch.from_numpy(strokes)
        tags[b, 0] = True
        tags[b, torch.unique(masks[b])] = True
        boxes.append(image_boxes)
        box_classes.append(image_classes)
    return Split(images, masks, scribbles, tags, boxes, box_classes)


def split_off(split: Split, count: int) -> Tuple[Split, Split]:
    """(the split less its last count images, those count images): a validation set drawn from
    the training images, to choose settings on without the held-out test images."""
    if not 0 < count < split.images.shape[0]:
        raise ValueError(f"count must be in 1..{split.images.shape[0] - 1}, got {count}")
    keep = split.images.shape[0] - count
    return _subset(split, slice(0, keep)), _subset(split, slice(keep, None))


def _subset(split: Split, images: slice) -> Split:
    return Split(split.images[images], split.masks[images], split.scribbles[images], split.tags[images],
                 split.boxes[images], split.box_classes[images])


def statistics(split: Split) -> Dict[str, float]:
    """How much each annotation tells: the share of pixels scribbled and boxes per image."""
    return {"images": split.images.shape[0], "scribbled": float((split.scribbles != IGNORE).float().mean()),
            "boxes_per_image": sum(len(b) for b in split.boxes) / max(1, len(split.boxes))}
