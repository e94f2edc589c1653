"""The demo's outputs: results.json, results.md and a PNG figure of predictions."""
import json
from typing import Dict, List

import numpy as np
import torch

from .data import CLASS_NAMES, IGNORE, Split

# PASCAL VOC's first colours, by class index.
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


def _colour(labels: torch.Tensor) -> np.ndarray:
    return PALETTE[np.clip(labels.cpu().numpy(), 0, len(PALETTE) - 1)]


def _strokes(scribbles: torch.Tensor, image: np.ndarray) -> np.ndarray:
    """The scribbles in the class colours, widened to 3 pixels for the eye, over a washed-out
    grey copy of the image (on which the black background strokes stay visible)."""
    grey = image.mean(axis=2, keepdims=True)
    out = np.repeat(155 + 0.35 * grey, 3, axis=2).astype(np.uint8)
    labels = scribbles.cpu().numpy()
    drawn = labels != IGNORE
    height, width = labels.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            target = (slice(max(dy, 0), height + min(dy, 0)), slice(max(dx, 0), width + min(dx, 0)))
            source = (slice(max(-dy, 0), height + min(-dy, 0)), slice(max(-dx, 0), width + min(-dx, 0)))
            take = drawn[source]
            out[target][take] = PALETTE[labels[source][take]]
    return out


def write_figure(path: str, split: Split, predictions: Dict[str, torch.Tensor], scores: Dict[str, float],
                 examples: List[int]) -> None:
    """One line per example image: image, its scribbles and boxes, ground truth, each row's prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    columns = 4 + len(predictions)
    figure, axes = plt.subplots(len(examples), columns, figsize=(1.3 * columns, 1.45 * len(examples) + 0.7),
                                squeeze=False)
    for line, b in enumerate(examples):
        image = split.images[b].permute(1, 2, 0).clamp(0, 255).byte().numpy()
        tags = ", ".join(CLASS_NAMES[k] for k in torch.nonzero(split.tags[b]).flatten().tolist() if k)
        panels = [(image, "image", f"tags: {tags}"), (_strokes(split.scribbles[b], image), "scribbles", None),
                  (image, "boxes", None), (_colour(split.masks[b]), "ground truth", None)]
        panels += [(_colour(p[b]), f"{name}\n{100 * scores[name]:.1f}", None) for name, p in predictions.items()]
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
    legend = [Patch(facecolor=PALETTE[k] / 255, edgecolor="grey", label=name) for k, name in enumerate(CLASS_NAMES)]
    legend.append(Patch(facecolor=(0.8, 0.8, 0.8), edgecolor="grey", label="not scribbled"))
    figure.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def summarize(runs: List[Dict]) -> str:
    """A markdown table of several runs' results (one per seed): per row the mean and standard
    deviation of the mIoU and of the share of full, and each seed's mIoU."""
    names = [row["name"] for row in runs[0]["rows"]]
    seeds = [run["settings"].get("seed", index) for index, run in enumerate(runs)]
    lines = [f"| row | supervision | mIoU, mean ± sd of {len(runs)} | share of full | "
             + " | ".join(f"seed {seed}" for seed in seeds) + " |",
             "|---|---|---|---|" + "---|" * len(runs)]
    for name in names:
        rows = [next(row for row in run["rows"] if row["name"] == name) for run in runs]
        miou = np.array([100 * row["miou"] for row in rows])
        shares = [row["share_of_full"] for row in rows]
        share = "-" if None in shares else f"{100 * np.mean(shares):.0f}% ± {100 * np.std(shares, ddof=1):.0f}"
        lines.append(f"| {name} | {rows[0]['supervision']} | {miou.mean():.1f} ± {miou.std(ddof=1):.1f} | {share} | "
                     + " | ".join(f"{value:.1f}" for value in miou) + " |")
    if all("gap_recovered" in run for run in runs):
        lines += ["", "Share of the gap between pce and full that each scribble regularizer closes, mean ± sd: "
                  + ", ".join(f"{name} {100 * np.mean(values):.0f}% ± {100 * np.std(values, ddof=1):.0f}"
                              for name, values in ((name, [run["gap_recovered"][name] for run in runs])
                                                   for name in runs[0]["gap_recovered"])) + "."]
    seconds = [run["total_seconds"] for run in runs]
    lines += ["", f"Each run: {min(seconds) / 60:.1f} to {max(seconds) / 60:.1f} minutes, "
              f"{runs[0]['machine']['threads']} threads, torch {runs[0]['machine']['torch']}."]
    return "\n".join(lines)

