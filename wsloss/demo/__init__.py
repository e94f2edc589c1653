"""The wsloss demo: one small network trained from every kind of supervision, as in the papers' tables.

``python -m wsloss.demo`` (needs ``pip install wsloss[demo]``: scikit-image for the photographs,
matplotlib for the figure) composes a segmentation set from real photographs (``wsloss.demo.data``),
derives scribbles, boxes and image-level tags from its exact ground truth, trains the same network
(same initialization, same batches) once per row, and reports the mIoU of each on held-out images:

- ``full``: cross-entropy on full masks (the ceiling);
- ``pce``: partial cross-entropy on scribbles; ``pce+densecrf``, ``pce+densecrf+entropy``,
  ``pce+ncut``: with the regularized losses of Tang et al. (ECCV 2018, CVPR 2018);
- ``bbox-rect``, ``bbox-seg``, ``bbox-em-fixed``: boxes, with the pseudo-labels of Papandreou
  et al. (ICCV 2015);
- ``tags-em-adapt``: image-level tags with EM-Adapt (Papandreou et al., ICCV 2015).
"""
import importlib.util
import os
import platform
import time
from typing import Any, Dict, List, Optional, Union

import torch

_MISSING = [package for module, package in (("numpy", "numpy"), ("skimage", "scikit-image"),
                                            ("matplotlib", "matplotlib")) if importlib.util.find_spec(module) is None]
if _MISSING:
    raise ImportError(f"the wsloss demo needs {', '.join(_MISSING)}, which this Python does not have: "
                      f"pip install 'wsloss[demo]' (in a wsloss checkout: pip install '.[demo]')")

from . import data, report, train  # noqa: E402

__all__ = ["run", "ROW_NAMES"]

# crf_weight is DenseCRFLoss's with reduction="mean": 4.0 is the 1.5e-5 of rloss's "sum" reduction
# times the mean affinity mass (2.7e5) of the 64x64 training images at these sigmas.
SETTINGS: Dict[str, Any] = {"size": 64, "train_images": 2048, "test_images": 256, "batch_size": 16, "lr": 3e-3,
            "sigma_rgb": 15.0, "sigma_xy": 8.0, "scale_factor": 1.0, "crf_weight": 4.0, "ncut_weight": 0.03,
            "entropy_weight": 0.1, "rampup": 0.3}
# Training steps per row. "short" keeps the whole demo within minutes on 2 CPU cores; "long"
# trains the networks closer to convergence, where the regularized losses show more of their
# effect (docs/demo.md).
SCHEDULES = {"short": 550, "long": 1500}
QUICK = {"size": 32, "train_images": 64, "test_images": 16, "steps": 60, "batch_size": 8}
ROW_NAMES = [row.name for row in train.make_rows(1.0, 1.0, 1.0, 1.0, 1.0, 1.0)]


def run(out: str = "wsloss-demo", device: Union[str, torch.device] = "cpu", quick: bool = False, schedule: Optional[str] = None,
        steps: Optional[int] = None, seed: int = 0, rows: Optional[List[str]] = None, progress: bool = True) -> Dict[str, Any]:
    """Trains one network per kind of supervision and writes results.json, results.md, demo.png to out.

    schedule: "short" (the default on CPU) or "long" (the default on CUDA);
    steps overrides it. Returns the results ({"rows": [{"name", "miou", ...}], "settings", ...}).
    """
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be cpu or cuda, got {device!r}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is cuda but CUDA is not available")
    schedule = schedule or ("long" if device.type == "cuda" else "short")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    settings: Dict[str, Any] = dict(SETTINGS, schedule=schedule, steps=SCHEDULES[schedule])
    if quick:
        settings.update(QUICK, schedule="quick")
    if steps is not None:
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        settings["steps"] = steps
    selected = ROW_NAMES if rows is None else rows
    unknown = [name for name in selected if name not in ROW_NAMES]
    if unknown or not selected:
        raise ValueError(f"rows must be names among {', '.join(ROW_NAMES)}; got {', '.join(unknown) or 'none'}")
    settings["device"] = str(device)
    settings["seed"] = seed
    started = time.perf_counter()
    size = settings["size"]
    train_split = data.make_split(settings["train_images"], size, seed, train=True)
    test_split = data.make_split(settings["test_images"], size, seed + 1, train=False)
    all_rows = {row.name: row for row in train.make_rows(settings["crf_weight"], settings["ncut_weight"],
                                                          settings["entropy_weight"], settings["sigma_rgb"],
                                                          settings["sigma_xy"], settings["scale_factor"])}
    results_rows, predictions, scores = [], {}, {}
    for name in selected:
        trained = train.train_row(all_rows[name], train_split, settings["steps"], settings["batch_size"],
                                  settings["lr"], device, seed, settings["rampup"], progress)
        predictions[name] = train.predict(trained["net"], test_split, device)
        iou = train.class_iou(train.confusion(predictions[name], test_split.masks))
        scores[name] = float(iou.nanmean())
        losses = trained["losses"]
        window = max(1, len(losses) // 10)
        results_rows.append({
            "name": name, "supervision": all_rows[name].supervision, "miou": scores[name],
            "class_iou": {c: None if v != v else v for c, v in zip(data.CLASS_NAMES, iou.tolist())},
            "seconds": trained["seconds"], "steps": len(losses), "loss_first": sum(losses[:window]) / window,
            "loss_last": sum(losses[-window:]) / window,
        })
    full = scores.get("full")
    for row in results_rows:
        row["share_of_full"] = row["miou"] / full if full else None
    results: Dict[str, Any] = {"rows": results_rows, "settings": settings, "data": data.statistics(train_split),
               "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                           "torch": torch.__version__, "cpus": os.cpu_count()}}
    if "full" in scores and "pce" in scores:
        results["gap_recovered"] = {name: report.gap_recovered(scores, name) for name in scores
                                    if name.startswith("pce+")}
    results["total_seconds"] = time.perf_counter() - started
    os.makedirs(out, exist_ok=True)
    paths = {"json": os.path.join(out, "results.json"), "markdown": os.path.join(out, "results.md"),
             "figure": os.path.join(out, "demo.png")}
    examples = list(range(min(4, settings["test_images"])))
    report.write_figure(paths["figure"], test_split, predictions, scores, examples)
    report.write_markdown(paths["markdown"], results)
    report.write_json(paths["json"], results)
    results["paths"] = paths
    return results
