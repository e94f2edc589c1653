"""Inputs of the canonical DenseCRFLoss workload: photographs (scikit-image's sample
images, public domain / CC0) or uniform noise, B x 3 x S x S in 0..255, with random
softmax segmentations and all-ones ROIs."""
import argparse
import json
import os
from typing import Optional

import torch
import torch.nn.functional as F

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "colorwheel")


def photographs(batch: int, size: int) -> torch.Tensor:
    import skimage.data

    images = []
    for i in range(batch):
        image = torch.from_numpy(getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()[..., :3].copy())
        h, w = image.shape[:2]
        side = min(h, w)
        square = image[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
        square = square.permute(2, 0, 1)[None].float()
        images.append(F.interpolate(square, size=(size, size), mode="bilinear", align_corners=False))
    return torch.cat(images).round().clamp(0, 255)


def noise(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=generator) * 255


def segmentations(batch: int, classes: int, size: int, generator: torch.Generator) -> torch.Tensor:
    logits = torch.randn(batch, classes, size // 8, size // 8, generator=generator) * 4
    return torch.softmax(F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False), dim=1)


def workload_parser(description: str, repeats: int, json_path: str,
                    repeats_help: Optional[str] = None) -> argparse.ArgumentParser:
    """The arguments every workload script takes: device, B, K, S, repeats and the JSON output."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=repeats, help=repeats_help)
    parser.add_argument("--json", default=json_path)
    return parser


def write_json(path: str, **results) -> None:
    """The results as one JSON file (its folder made if need be), and a line saying where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {path}")
