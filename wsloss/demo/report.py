"""The demo's outputs: results.json, results.md and a PNG figure of predictions."""
import json
import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from .data import CLASS_NAMES, IGNORE, Split

# PASCAL VOC's first colours, by class index.
PALETTE = np.array([[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]], dtype=np.uint8)


# The published figures beside which each row is shown: (mIoU %, source key). Each paper's
# share of full supervision is against its own full-supervision figure (SOURCES).
SOURCES: Dict[str, Dict[str, Any]] = {
    "tang": {"cite": "Tang et al., ECCV 2018 (rloss README, Table 1: DeepLab-LargeFOV, VOC 2012 val)",
             "full": 63.0},
    "tang-entropy": {"cite": "Tang et al., ECCV 2018 (pCE + entropy, DeepLab-LargeFOV, VOC 2012 val)",
                     "full": 63.0},
    "papandreou": {"cite": "Papandreou et al., ICCV 2015 (Tables 1-2, VOC 2012 val)", "full": 67.6},
}
PAPERS = {
    "full": (63.0, "tang"), "pce": (55.8, "tang"), "pce+entropy": (59.9, "tang-entropy"),
    "pce+densecrf": (62.3, "tang"), "bbox-rect": (52.5, "papandreou"), "bbox-seg": (60.6, "papandreou"),
    "bbox-em-fixed": (54.1, "papandreou"), "tags-em-fixed": (20.8, "papandreou"),
    "tags-em-adapt": (38.2, "papandreou"), "semi-tags-em-adapt": (64.6, "papandreou"),
    "semi-bbox-em-fixed": (65.1, "papandreou"),
}


def paper(name: str) -> Optional[Dict[str, Any]]:
    """The papers' figure for a row: mIoU (%), share of that paper's full supervision, source."""
    if name not in PAPERS:
        return None
    miou, key = PAPERS[name]
    return {"miou": miou, "share_of_full": miou / SOURCES[key]["full"], "source": SOURCES[key]["cite"]}


def paper_gaps() -> Dict[str, float]:
    """The share of the pce-to-full gap that each scribble regularizer closes in Tang et al."""
    return {name: (miou - PAPERS["pce"][0]) / (PAPERS["full"][0] - PAPERS["pce"][0])
            for name, (miou, _) in PAPERS.items() if name.startswith("pce+")}


def gap_recovered(rows: Dict[str, float], row: str, low: str = "pce", high: str = "full") -> float:
    """The share of the gap between `low` and `high` that `row` closes."""
    return (rows[row] - rows[low]) / max(rows[high] - rows[low], 1e-12)


def _mean_sd(values: List[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (None for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(runs: Dict[str, List[Dict[str, Any]]], rows: Dict[str, Any], warmup_steps: int) -> Dict[str, Any]:
    """The results' rows (mean and spread over the seeds, each seed's run kept) and the gaps."""
    seeds = len(next(iter(runs.values())))
    full = [run["miou"] for run in runs["full"]] if "full" in runs else None
    out_rows = []
    for name, row_runs in runs.items():
        if full is not None:
            for run, ceiling in zip(row_runs, full):
                run["share_of_full"] = run["miou"] / ceiling
        miou, miou_sd = _mean_sd([run["miou"] for run in row_runs])
        share, share_sd = (_mean_sd([run["share_of_full"] for run in row_runs]) if full is not None
                           else (None, None))
        out_rows.append({"name": name, "supervision": rows[name].supervision, "miou": miou, "miou_sd": miou_sd,
                         "share_of_full": share, "share_of_full_sd": share_sd,
                         "warmup_steps": warmup_steps if rows[name].warmup else 0, "paper": paper(name),
                         "seeds": seeds, "runs": row_runs})
    results: Dict[str, Any] = {"rows": out_rows}
    if "full" in runs and "pce" in runs:
        gaps = {}
        for name in runs:
            if name.startswith("pce+"):
                shares = [gap_recovered({r: runs[r][i]["miou"] for r in ("full", "pce", name)}, name)
                          for i in range(seeds)]
                mean, sd = _mean_sd(shares)
                gaps[name] = {"mean": mean, "sd": sd, "runs": shares}
        results["gap_recovered"] = gaps
    return results


def write_json(path: str, results: Dict) -> None:
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


def _percent(mean: Optional[float], sd: Optional[float], digits: int = 1, unit: str = "") -> str:
    """100 * mean (and ± 100 * sd when there is one), e.g. "84.7 ± 1.2" or "62% ± 9"."""
    if mean is None:
        return "-"
    return f"{100 * mean:.{digits}f}{unit}" + (f" ± {100 * sd:.{digits}f}" if sd is not None else "")


def _paper_cells(name: str) -> str:
    published = paper(name)
    if published is None:
        return "- | -"
    return f"{published['miou']:.1f} | {100 * published['share_of_full']:.0f}%"


def markdown_table(results: Dict) -> str:
    """The table of the README and results.md: ours (mean ± sd over the seeds) beside the papers'."""
    seeds = results["rows"][0]["seeds"]
    spread = f", mean ± sd of {seeds} seeds" if seeds > 1 else ""
    lines = [f"| row | supervision | mIoU{spread} | share of full | paper mIoU | paper share of full |",
             "|---|---|---|---|---|---|"]
    for row in results["rows"]:
        lines.append(f"| {row['name']} | {row['supervision']} | {_percent(row['miou'], row['miou_sd'])} | "
                     f"{_percent(row['share_of_full'], row['share_of_full_sd'], 0, '%')} | "
                     f"{_paper_cells(row['name'])} |")
    return "\n".join(lines)


def write_markdown(path: str, results: Dict) -> None:
    rows = results["rows"]
    settings = results["settings"]
    measured_on = "validation images (held out of the training set)" if settings["validation"] else "held-out images"
    lines = ["# wsloss demo: training a segmentation network from cheap annotations", "",
             f"{settings['train_images']} training and {settings['test_images']} {measured_on} of "
             f"{settings['size']}x{settings['size']} ({', '.join(CLASS_NAMES)}), {settings['steps']} steps "
             f"({settings['schedule']} schedule) of {settings['batch_size']} images per row, "
             f"{settings['seeds']} training seed(s) from {settings['seed']}, device {settings['device']}, "
             f"{results['machine']['threads']} CPU threads, {results['total_seconds']:.0f} s in all.", "",
             f"Scribbles cover {100 * results['data']['scribbled']:.1f}% of the training pixels; "
             f"{results['data']['boxes_per_image']:.1f} boxes per image.", "", markdown_table(results)]
    if "gap_recovered" in results:
        lines += ["", "Share of the gap between partial cross-entropy and full supervision that each scribble "
                  "regularizer closes: " + ", ".join(f"{name} {_percent(gap['mean'], gap['sd'], 0, '%')}"
                                                     for name, gap in results["gap_recovered"].items())
                  + "; in Tang et al.: " + ", ".join(f"{name} {100 * share:.0f}%" for name, share in
                                                     paper_gaps().items()) + "."]
    if results["tag_classifier"]:
        lines += ["", "The tags rows start from a classifier trained on the tags alone for "
                  f"{results['tag_classifier'][0]['steps']} of their steps; its own predictions score "
                  + ", ".join(f"{100 * c['miou']:.1f}" for c in results["tag_classifier"]) + " mIoU."]
    if rows[0]["seeds"] > 1:
        lines += ["", "| row | " + " | ".join(f"seed {run['seed']}" for run in rows[0]["runs"]) + " |",
                  "|---|" + "---|" * rows[0]["seeds"]]
        lines += [f"| {row['name']} | " + " | ".join(f"{100 * run['miou']:.1f}" for run in row["runs"]) + " |"
                  for row in rows]
    lines += ["", "mIoU: PASCAL VOC's mean intersection over union over the classes, counted over the whole "
              "held-out set. Paper: the published figure for the same method on PASCAL VOC 2012 val, and its "
              "share of that paper's full supervision; sources:"]
    lines += [f"- {source['cite']}: full supervision {source['full']:.1f}" for source in SOURCES.values()]
    lines.append("")
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
