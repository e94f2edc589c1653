"""The demo's outputs: results.json, results.md and a PNG figure of predictions."""
import json
from typing import Dict, List

import numpy as np
import torch

from .data import CLASS_NAMES, IGNORE, Split

# PASCAL VOC's first colours; unlabelled (IGNORE) pixels are drawn as a dimmed image.
PALETTE = np.array([[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]], dtype=np.uint8)


def gap_recovered(rows: Dict[str, float], row: str, low: str = "pce", high: str = "full") -> float:
    """The share of the gap between `low` and `high` that `row` closes."""
    return (rows[row] - rows[low]) / max(rows[high] - rows[low], 1e-12)


def write_json(path: str, results: Dict) -> None:
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


def write_markdown(path: str, results: Dict) -> None:
    rows = results["rows"]
    settings = results["settings"]
    lines = ["# wsloss demo: training a segmentation network from cheap annotations", "",
             f"{settings['train_images']} training and {settings['test_images']} held-out images of "
             f"{settings['size']}x{settings['size']} ({', '.join(CLASS_NAMES)}), {settings['steps']} steps "
             f"({settings['schedule']} schedule) of "
             f"{settings['batch_size']} images per row, device {settings['device']}, "
             f"{results['machine']['threads']} CPU threads, {results['total_seconds']:.0f} s in all.", "",
             f"Scribbles cover {100 * results['data']['scribbled']:.1f}% of the training pixels; "
             f"{results['data']['boxes_per_image']:.1f} boxes per image.", "",
             "| row | supervision | mIoU | share of full | train s |", "|---|---|---|---|---|"]
    for row in rows:
        share = "-" if row["share_of_full"] is None else f"{100 * row['share_of_full']:.0f}%"
        lines.append(f"| {row['name']} | {row['supervision']} | {100 * row['miou']:.1f} | {share} | "
                     f"{row['seconds']:.0f} |")
    if "gap_recovered" in results:
        lines += ["", "Share of the gap between partial cross-entropy and full supervision that each "
                  "scribble regularizer closes: "
                  + ", ".join(f"{name} {100 * value:.0f}%" for name, value in results["gap_recovered"].items()) + "."]
    lines += ["", "mIoU: PASCAL VOC's mean intersection over union over the classes, counted over the whole "
              "held-out set.", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def _colour(labels: torch.Tensor, image: np.ndarray) -> np.ndarray:
    values = labels.cpu().numpy()
    out = PALETTE[np.clip(values, 0, len(PALETTE) - 1)]
    unlabelled = values == IGNORE
    out[unlabelled] = image[unlabelled] // 3
    return out


def write_figure(path: str, split: Split, predictions: Dict[str, torch.Tensor], scores: Dict[str, float],
                 examples: List[int]) -> None:
    """One line per example image: image, its scribbles and boxes, ground truth, each row's prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    columns = 4 + len(predictions)
    figure, axes = plt.subplots(len(examples), columns, figsize=(1.3 * columns, 1.45 * len(examples) + 0.4),
                                squeeze=False)
    for line, b in enumerate(examples):
        image = split.images[b].permute(1, 2, 0).clamp(0, 255).byte().numpy()
        tags = ", ".join(CLASS_NAMES[k] for k in torch.nonzero(split.tags[b]).flatten().tolist() if k)
        panels = [(image, "image", f"tags: {tags}"), (_colour(split.scribbles[b], image), "scribbles", None),
                  (image, "boxes", None), (_colour(split.masks[b], image), "ground truth", None)]
        panels += [(_colour(p[b], image), f"{name}\n{100 * scores[name]:.1f}", None) for name, p in predictions.items()]
        for column, (picture, title, caption) in enumerate(panels):
            axis = axes[line, column]
            axis.imshow(picture, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if line == 0:
                axis.set_title(title, fontsize=7)
            if caption:
                axis.set_xlabel(caption, fontsize=6)
            if title == "boxes":
                for (x0, y0, x1, y1), cls in zip(split.boxes[b], split.box_classes[b]):
                    axis.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, linewidth=1.2,
                                             edgecolor=PALETTE[cls] / 255 * 0.5 + 0.5))
    figure.suptitle("wsloss demo: held-out images; mIoU (%) of each training row over the held-out set", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
