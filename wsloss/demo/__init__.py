"""The wsloss demo: one small network trained from every kind of supervision, as in the papers' tables.

``python -m wsloss.demo`` (needs ``pip install wsloss[demo]``: scikit-image for the photographs,
matplotlib for the figure) composes a segmentation set from real photographs (``wsloss.demo.data``),
derives scribbles, boxes and image-level tags from its exact ground truth, trains the same network
(same initialization, same batches) once per row and seed, and reports the mIoU of each on
held-out images, beside the papers' figures:

- ``full``: cross-entropy on full masks (the ceiling);
- ``pce``: partial cross-entropy on scribbles; ``pce+entropy``, ``pce+densecrf``,
  ``pce+densecrf+entropy``, ``pce+ncut``, ``pce+kernelcut``: with the regularized losses of
  Tang et al. (CVPR 2018, ECCV 2018);
- ``bbox-rect``, ``bbox-seg``, ``bbox-em-fixed``: boxes, with the pseudo-labels of Papandreou
  et al. (ICCV 2015);
- ``tags-em-fixed``, ``tags-em-adapt``: image-level tags only, from a tags-only classifier start;
- ``semi-tags-em-adapt``, ``semi-bbox-em-fixed``: full masks for 10% of the images, tags or boxes
  for the rest (Papandreou et al.'s semi-supervised setting).
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
# times the mean affinity mass (2.7e5) of the 64x64 training images at these sigmas. The EM
# settings and the semi-supervised mix were chosen on the validation split (docs/demo.md).
SETTINGS: Dict[str, Any] = {
    "size": 64, "train_images": 2048, "test_images": 256, "batch_size": 16, "lr": 3e-3, "rampup": 0.3,
    "sigma_rgb": 15.0, "sigma_xy": 8.0, "scale_factor": 1.0, "crf_weight": 4.0, "ncut_weight": 0.03,
    "kernelcut_ncut_weight": 0.01, "entropy_weight": 0.1,
    "fg_bias": 5.0, "bg_bias": 3.0, "fg_portion": 0.1, "bg_portion": 0.5,
    "strong_share": 0.1, "strong_batch_share": 0.5, "warmup_share": 0.5,
}
# Training steps per row. "short" keeps the whole demo within minutes on 2 CPU cores; "long"
# trains the networks closer to convergence, where the regularized losses show more of their
# effect (docs/demo.md).
SCHEDULES = {"short": 450, "long": 1500}
QUICK = {"size": 32, "train_images": 64, "test_images": 16, "steps": 60, "batch_size": 8}
# Images held out of the training set by --validation, to choose settings on (never the test set).
VALIDATION_IMAGES = 256
ROW_NAMES = [row.name for row in train.make_rows(SETTINGS)]


def _check_settings(settings: Dict[str, Any], overrides: Optional[Dict[str, Any]]) -> None:
    for name, value in (overrides or {}).items():
        if name not in SETTINGS or name in ("size", "train_images", "test_images", "batch_size"):
            raise ValueError(f"overrides must name settings among {', '.join(sorted(SETTINGS))} "
                             f"(not the data's size), got {name!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"overrides[{name!r}] must be a number, got {value!r}")
        if name.endswith("_share") and not 0 < value < 1:
            raise ValueError(f"overrides[{name!r}] must be in (0, 1), got {value!r}")
        settings[name] = float(value)


def run(out: str = "wsloss-demo", device: Union[str, torch.device] = "cpu", quick: bool = False,
        schedule: Optional[str] = None, steps: Optional[int] = None, seed: int = 0, rows: Optional[List[str]] = None,
        progress: bool = True, seeds: int = 1, validation: bool = False,
        overrides: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
    """Trains one network per kind of supervision and writes results.json, results.md, demo.png to out.

    schedule: "short" (the default on CPU) or "long" (the default on CUDA); steps overrides it.
    seeds: every row is trained with the training seeds seed, ..., seed + seeds - 1 (initialization
    and batch order) on the same data (drawn from seed); the table gives their mean and standard
    deviation. validation: train on the training images less VALIDATION_IMAGES of them and measure
    on those, to choose settings without the test images. overrides: settings to change (SETTINGS).
    Returns the results ({"rows": [{"name", "miou", "miou_sd", "runs", ...}], "settings", ...}).
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
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
        settings["steps"] = steps
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    _check_settings(settings, overrides)
    selected = ROW_NAMES if rows is None else rows
    unknown = [name for name in selected if name not in ROW_NAMES]
    if unknown or not selected:
        raise ValueError(f"rows must be names among {', '.join(ROW_NAMES)}; got {', '.join(unknown) or 'none'}")
    settings.update(device=str(device), seed=seed, seeds=seeds, validation=validation)
    started = time.perf_counter()
    size = settings["size"]
    train_split = data.make_split(settings["train_images"], size, seed, train=True)
    if validation:
        held_out = min(VALIDATION_IMAGES, settings["train_images"] // 4)
        train_split, test_split = data.split_off(train_split, held_out)
        settings["test_images"] = held_out
    else:
        test_split = data.make_split(settings["test_images"], size, seed + 1, train=False)
    all_rows = {row.name: row for row in train.make_rows(settings)}
    warmup_steps = round(settings["warmup_share"] * settings["steps"])
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in selected}
    classifiers: List[Dict[str, Any]] = []
    predictions: Dict[str, torch.Tensor] = {}
    for run_seed in range(seed, seed + seeds):
        tag = f" (seed {run_seed})" if seeds > 1 else ""
        warmup = None
        if any(all_rows[name].warmup for name in selected):
            classifier = train.tag_classifier(train_split, warmup_steps, settings["batch_size"], settings["lr"], device,
                                              run_seed, progress, "tags classifier" + tag)
            warmup = {k: v.clone() for k, v in classifier["net"].state_dict().items()}
            iou = train.class_iou(train.confusion(train.predict(classifier["net"], test_split, device),
                                                  test_split.masks))
            classifiers.append({"seed": run_seed, "miou": float(iou.nanmean()), "steps": warmup_steps,
                                "seconds": classifier["seconds"]})
        for name in selected:
            row = all_rows[name]
            trained = train.train_row(row, train_split, settings["steps"] - (warmup_steps if row.warmup else 0),
                                      settings["batch_size"], settings["lr"], device, run_seed, settings["rampup"],
                                      progress, warmup if row.warmup else None, seed, name + tag)
            predicted = train.predict(trained["net"], test_split, device)
            if run_seed == seed:
                predictions[name] = predicted
            iou = train.class_iou(train.confusion(predicted, test_split.masks))
            losses = trained["losses"]
            window = max(1, len(losses) // 10)
            runs[name].append({
                "seed": run_seed, "miou": float(iou.nanmean()),
                "class_iou": {c: None if v != v else v for c, v in zip(data.CLASS_NAMES, iou.tolist())},
                "seconds": trained["seconds"], "steps": len(losses), "loss_first": sum(losses[:window]) / window,
                "loss_last": sum(losses[-window:]) / window})
    results = report.summarize(runs, all_rows, warmup_steps)
    results.update(settings=settings, data=data.statistics(train_split), tag_classifier=classifiers,
                   machine={"platform": platform.platform(), "processor": platform.processor(),
                            "threads": torch.get_num_threads(), "torch": torch.__version__, "cpus": os.cpu_count()},
                   total_seconds=time.perf_counter() - started)
    os.makedirs(out, exist_ok=True)
    paths = {"json": os.path.join(out, "results.json"), "markdown": os.path.join(out, "results.md"),
             "figure": os.path.join(out, "demo.png")}
    scores = {row["name"]: row["runs"][0]["miou"] for row in results["rows"]}
    examples = list(range(min(4, test_split.images.shape[0])))
    report.write_figure(paths["figure"], test_split, predictions, scores, examples)
    report.write_markdown(paths["markdown"], results)
    report.write_json(paths["json"], results)
    results["paths"] = paths
    return results
