"""The volume demo: scribble-supervised 3D segmentation of synthetic scans (docs/DESIGN.md §10).

python -m wsloss.demo.volumes [--quick] [--seeds 3] [--validation] [--device cuda] [--out DIR]

Each scan is D x S x S voxels of 2 x 1 x 1 (thick slices, as in CT or MRI), one intensity
channel: a textured background with one to three ellipsoidal organs of two classes, each
class its own textured intensity, the three distributions overlapping. The scribbles are drawn
as annotators draw them: on three slices only, one stroke inside every organ the slice cuts and
two across the background; the rest of the volume is unlabelled. A small 3D network is trained
with partial cross-entropy on the scribbles ("pce"), with pCE plus the 3D DenseCRFLoss ("pce +
densecrf", Tang et al., ECCV 2018, with voxel spacing and scale (1, 0.5, 0.5)), and on the full
masks ("full"). Reported: the mean Dice of the two organ classes on held-out scans, mean and
spread over training seeds. Settings (SETTINGS) are chosen with --validation, which measures on
scans split off the training set, never on the test scans.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import wsloss

from .data import IGNORE, _stroke

CLASS_NAMES = ("background", "organ A", "organ B")
SPACING = (2.0, 1.0, 1.0)  # voxel size: slices twice as thick as the pixels are wide
# Chosen on the validation scans (python -m wsloss.demo.volumes --validation --set crf_weight=...);
# the figures are in docs/demo.md.
SETTINGS = dict(steps=300, batch=4, lr=3e-3, crf_weight=2.0, sigma_rgb=15.0, sigma_xy=4.0, warmup=100)
QUICK = dict(train=4, test=2, depth=8, size=16, steps=3, batch=2, warmup=1)
FULL = dict(train=48, test=16, depth=16, size=40)
VALIDATION_SCANS = 12
INTENSITY = (70.0, 125.0, 165.0)  # class means; textures of +-25 and noise of 12 make them overlap


class VolumeSet(NamedTuple):
    scans: torch.Tensor  # B x 1 x D x H x W float32, 0..255
    masks: torch.Tensor  # B x D x H x W int64
    scribbles: torch.Tensor  # B x D x H x W int64, IGNORE where nothing was drawn


def _texture(shape: Tuple[int, ...], cell: int, generator: torch.Generator) -> torch.Tensor:
    """A smooth random field in [-1, 1] varying over about `cell` voxels in-plane."""
    coarse = torch.rand((1, 1, max(2, shape[0] // max(1, cell // 2))) + tuple(max(2, s // cell) for s in shape[1:]),
                        generator=generator) * 2 - 1
    return F.interpolate(coarse, size=shape, mode="trilinear", align_corners=False)[0, 0]


def make_volumes(count: int, depth: int, size: int, seed: int) -> VolumeSet:
    """count scans; the same seed gives the same set."""
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    shape = (depth, size, size)
    z, y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) + 0.5 for n in shape), indexing="ij")
    scans = torch.empty((count, 1) + shape)
    masks = torch.zeros((count,) + shape, dtype=torch.int64)
    scribbles = torch.full((count,) + shape, IGNORE, dtype=torch.int64)
    for b in range(count):
        label = torch.zeros(shape, dtype=torch.int64)
        for _ in range(rng.integers(1, 4)):
            radii = rng.uniform(0.15, 0.3, 3) * size
            radii[0] /= SPACING[0]  # physical round shapes are flat in voxels of thick slices
            centre = [rng.uniform(0.25 * n, 0.75 * n) for n in shape]
            inside = sum(((c - m) / r) ** 2 for c, m, r in zip((z, y, x), centre, radii)) < 1
            label[inside] = int(rng.integers(1, len(CLASS_NAMES)))
        intensity = torch.zeros(shape)
        for cls, mean in enumerate(INTENSITY):
            texture = 25 * _texture(shape, int(rng.integers(3, 8)), generator)
            intensity = torch.where(label == cls, mean + texture, intensity)
        scans[b, 0] = (intensity + 12 * torch.randn(shape, generator=generator)).clamp(0, 255).round()
        masks[b] = label
        strokes = scribbles[b]
        for s in (depth // 4, depth // 2, (3 * depth) // 4):  # three annotated slices
            plane = label[s].numpy()
            for cls in range(1, len(CLASS_NAMES)):
                region = plane == cls
                if region.sum() >= 4:
                    strokes[s][torch.from_numpy(_stroke(region, int(1.5 * math.sqrt(region.sum())), rng))] = cls
            for _ in range(2):
                strokes[s][torch.from_numpy(_stroke(plane == 0, size, rng))] = 0
    return VolumeSet(scans, masks, scribbles)


class VolumeNet(nn.Module):
    """A small dilated 3D network: 1 channel in, K scores out, same size."""

    def __init__(self, classes: int = len(CLASS_NAMES), width: int = 16):
        super().__init__()
        layers: List[nn.Module] = []
        channels = 1
        for dilation in (1, 2, 4, 1):
            layers += [nn.Conv3d(channels, width, 3, padding=(1, dilation, dilation), dilation=(1, dilation, dilation)),
                       nn.GroupNorm(4, width), nn.ReLU()]
            channels = width
        layers.append(nn.Conv3d(width, classes, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, scans: torch.Tensor) -> torch.Tensor:
        return self.layers((scans - 120.0) / 60.0)


def dice(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """The mean over the organ classes of 2 |P n T| / (|P| + |T|), over all scans."""
    scores = []
    for cls in range(1, len(CLASS_NAMES)):
        p, t = predicted == cls, truth == cls
        scores.append(2 * (p & t).sum().item() / max(1, p.sum().item() + t.sum().item()))
    return sum(scores) / len(scores)


def train_row(row: str, train: VolumeSet, settings: Dict, device: torch.device, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = VolumeNet().to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings["lr"])
    # The regularizer joins after `warmup` steps of pCE alone, as rloss trains: on a network that
    # still predicts noise it pulls towards one label everywhere.
    partial = wsloss.RegularizedLoss(ignore_index=IGNORE)
    regularized = partial if row != "pce + densecrf" else wsloss.RegularizedLoss(
        ignore_index=IGNORE, densecrf=wsloss.DenseCRFLoss(settings["crf_weight"], settings["sigma_rgb"],
                                                          settings["sigma_xy"], scale_factor=(1.0, 0.5, 0.5),
                                                          reduction="mean", spacing=SPACING))
    generator = torch.Generator().manual_seed(seed)
    count = train.scans.shape[0]
    for step in range(int(settings["steps"])):
        pick = torch.randperm(count, generator=generator)[:int(settings["batch"])]
        scans = train.scans[pick].to(device)
        logits = net(scans)
        if row == "full":
            loss = F.cross_entropy(logits, train.masks[pick].to(device))
        else:
            criterion = partial if step < settings["warmup"] else regularized
            loss = criterion(logits, train.scribbles[pick].to(device), scans)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net


@torch.no_grad()
def predict(net: nn.Module, scans: torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.cat([net(scans[i:i + 4].to(device)).argmax(1).cpu() for i in range(0, scans.shape[0], 4)])


ROWS = ("pce", "pce + densecrf", "full")


def run(out: str = "wsloss-demo-volumes", device: str = "cpu", quick: bool = False, seeds: int = 3,
        validation: bool = False, overrides: Optional[Dict[str, float]] = None, seed: int = 0,
        rows: Sequence[str] = ROWS) -> Dict:
    """Train each of `rows` with `seeds` training seeds; write results.json and results.md to `out`."""
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        raise ValueError(f"unknown rows {unknown}; the rows are {', '.join(ROWS)}")
    settings = dict(SETTINGS, **(QUICK if quick else {}))
    for name, value in (overrides or {}).items():
        if name not in SETTINGS:
            raise ValueError(f"unknown setting {name!r}; the settings are {', '.join(SETTINGS)}")
        settings[name] = value
    sizes = QUICK if quick else FULL
    torch_device = torch.device(device)
    train = make_volumes(sizes["train"], sizes["depth"], sizes["size"], seed)
    if validation:  # the last training scans, held out of training: settings are chosen on them
        keep = sizes["train"] - (1 if quick else VALIDATION_SCANS)
        test = VolumeSet(*(t[keep:] for t in train))
        train = VolumeSet(*(t[:keep] for t in train))
    else:
        test = make_volumes(sizes["test"], sizes["depth"], sizes["size"], seed + 1000)
    scribbled = (train.scribbles != IGNORE).float().mean().item()
    results_rows = {}
    for row in rows:
        scores, seconds = [], []
        for s in range(seeds):
            start = time.perf_counter()
            net = train_row(row, train, settings, torch_device, seed + s)
            seconds.append(time.perf_counter() - start)
            scores.append(dice(predict(net, test.scans, torch_device), test.masks))
            print(f"{row}: seed {seed + s}, Dice {scores[-1]:.3f}, {seconds[-1]:.1f} s", flush=True)
        results_rows[row] = dict(dice=scores, mean=statistics.mean(scores),
                         sd=statistics.stdev(scores) if len(scores) > 1 else None, seconds=seconds)
    results = dict(settings=settings, sizes=sizes, spacing=SPACING, scribbled_share=scribbled,
                   evaluated_on="validation scans (split off the training set)" if validation else "test scans",
                   device=device, threads=torch.get_num_threads(), torch=torch.__version__, rows=results_rows)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown_table(results))
    return results


def markdown_table(results: Dict) -> str:
    seeds = len(next(iter(results["rows"].values()))["dice"])
    lines = [f"Mean organ Dice on {results['evaluated_on']} ({seeds} training seeds: "
             f"mean ± sd); {results['scribbled_share']:.2%} of the training voxels scribbled.", "",
             "| row | supervision | Dice |", "|---|---|---|"]
    supervision = {"pce": "scribbles on 3 slices", "pce + densecrf": "the same scribbles", "full": "full masks"}
    for row, r in results["rows"].items():
        spread = "" if r["sd"] is None else f" ± {100 * r['sd']:.1f}"
        lines.append(f"| {row} | {supervision[row]} | {100 * r['mean']:.1f}{spread} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wsloss.demo.volumes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="wsloss-demo-volumes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="a tiny run of every row, for tests (seconds)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="the data's seed and the first training seed")
    parser.add_argument("--validation", action="store_true", help="measure on scans split off the training set")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows (default: {','.join(ROWS)})")
    args = parser.parse_args(argv)
    try:
        overrides = {}
        for item in args.set:
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set takes NAME=NUMBER, got {item!r}")
            overrides[name] = float(value)
        results = run(args.out, args.device, args.quick, args.seeds, args.validation, overrides, args.seed,
                      args.rows.split(","))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
