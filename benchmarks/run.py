"""Every wsloss op and loss on every available backend, over image sizes and batch sizes.

    python -m benchmarks [--device cpu,cuda] [--sizes 64,128,256,512,1024] [--batches 1,4,16]
                         [--ops ...] [--repeats 5] [--budget 5] [--out wsloss-bench] [--quick]

Backends: ``cpu`` and ``cuda`` (wsloss's kernels, CUDA where torch sees a GPU), ``exact`` (the
exact dense float64 sums of ``wsloss.exact``, O(N^2), on small images only) and installed
peers, detected and never required: ``pydensecrf`` (Kraehenbuehl's C++ code, one image at a
time) for dense CRF inference. Inputs: scikit-image photographs (noise when scikit-image is
absent), K=21 smooth random softmax maps. Each case: the median of --repeats calls after one
warm-up (CUDA synchronized), and the peak memory one call adds (CPU: resident set; CUDA:
allocated). Cases run from the least work to the most; a case whose time, extrapolated from
the last one (linearly in pixels; in pixel pairs for the exact sums), would pass --budget
seconds is skipped and reported so.
Prints a table and writes results.json and a log-log plot (time against pixels per batch, one
panel per op, one line per backend and batch) to --out.
"""
import argparse
import json
import math
import os
import platform
import sys
import time
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402
from dense_crf_loss import step_memory_mb, timed  # noqa: E402

import wsloss  # noqa: E402

CLASSES = 21
DENSE = dict(sigma_rgb=15.0, sigma_xy=100.0, scale_factor=1.0)
CRF = dict(iterations=10, w_bilateral=4.0, theta_alpha=67.0, theta_beta=3.0, w_gaussian=3.0, theta_gamma=1.0)
EXACT_MAX_PIXELS = 128 * 128  # the exact sums are O(N^2): beyond this they take minutes


class Inputs:
    """One (size, batch) workload on one device."""

    def __init__(self, batch: int, size: int, device: str, generator: torch.Generator):
        try:
            images = workloads.photographs(batch, size)
        except ImportError:
            images = workloads.noise(batch, size, generator)
        self.images = images.to(device)
        self.probs = workloads.segmentations(batch, CLASSES, size, generator).to(device)
        self.logits = self.probs.log().requires_grad_()
        self.labels = torch.randint(0, CLASSES, (batch, size, size), generator=generator).to(device)
        self.labels[torch.rand(batch, size, size, generator=generator).to(device) > 0.03] = 255  # scribbles: 3%
        self.tags = torch.zeros(batch, CLASSES, dtype=torch.bool, device=device)
        self.tags[:, 0] = True
        self.tags[torch.arange(batch), 1 + torch.arange(batch) % (CLASSES - 1)] = True  # one object class each
        self.boxes = [[[size * 0.2, size * 0.25, size * 0.7, size * 0.8]] for _ in range(batch)]
        self.box_classes = [[1 + b % (CLASSES - 1)] for b in range(batch)]


def _backward(loss_fn: Callable[["Inputs", torch.Tensor], torch.Tensor]) -> Callable[["Inputs"], None]:
    """forward + backward of a loss of the softmax of the logits."""

    def step(x: Inputs) -> None:
        x.logits.grad = None
        loss_fn(x, x.logits.softmax(1)).backward()

    return step


def _lattice(x: Inputs):
    return wsloss.PermutohedralLattice(wsloss.bilateral_features(x.images, DENSE["sigma_rgb"], DENSE["sigma_xy"]))


def _pydensecrf(x: Inputs) -> None:
    from dense_crf_inference import PARAMS, pydensecrf_call

    assert PARAMS == CRF
    pydensecrf_call(x.probs.cpu(), x.images.cpu())


def _exact_crf_loss(x: Inputs, s: torch.Tensor) -> torch.Tensor:
    return wsloss.exact.dense_crf_loss(x.images, s, torch.ones_like(s[:, 0]), 1e-9, **DENSE)


def _exact_filter(x: Inputs) -> None:
    features = wsloss.bilateral_features(x.images, DENSE["sigma_rgb"], DENSE["sigma_xy"])
    wsloss.exact.dense_gaussian_filter(features, x.probs)


# op -> {backend kind: step}; "native" runs on the cpu and cuda backends.
OPS: Dict[str, Dict[str, Callable[[Inputs], None]]] = {
    "lattice_build": {"native": _lattice},
    "lattice_filter": {"native": lambda x: x.lattice.filter(x.probs), "exact": _exact_filter},
    "DenseCRFLoss": {"native": _backward(lambda x, s: wsloss.DenseCRFLoss(1e-9, **DENSE)(x.images, s)),
                     "exact": _backward(_exact_crf_loss)},
    "NormalizedCutLoss": {"native": _backward(lambda x, s: wsloss.NormalizedCutLoss(1.0, **DENSE)(x.images, s))},
    "KernelCutLoss": {"native": _backward(lambda x, s: wsloss.KernelCutLoss(1.0, 1e-9, **DENSE)(x.images, s))},
    "QuadraticCRFLoss": {"native": _backward(lambda x, s: wsloss.QuadraticCRFLoss(1e-9, **DENSE)(x.images, s))},
    "GridCRFLoss": {"native": _backward(lambda x, s: wsloss.GridCRFLoss(1e-3, 10.0, 8, "bilinear")(x.images, s))},
    "EntropyLoss": {"native": _backward(lambda x, s: wsloss.EntropyLoss(0.1)(s))},
    "PartialCrossEntropyLoss": {"native": _backward(lambda x, s: wsloss.PartialCrossEntropyLoss()(x.logits, x.labels))},
    "em_adapt": {"native": lambda x: wsloss.em_adapt(x.logits.detach(), x.tags)},
    "em_fixed": {"native": lambda x: wsloss.em_fixed(x.logits.detach(), x.tags)},
    "dense_crf": {"native": lambda x: wsloss.dense_crf(x.probs, x.images, **CRF),
                  "exact": lambda x: wsloss.exact.dense_crf(x.probs, x.images, **CRF),
                  "pydensecrf": _pydensecrf},
    "bbox_seg": {"native": lambda x: wsloss.bbox_seg(x.images, x.boxes, x.box_classes)},
}


def available_backends(devices: List[str]) -> List[str]:
    backends = [d for d in devices if d == "cpu" or (d == "cuda" and torch.cuda.is_available())]
    backends.append("exact")
    try:
        import pydensecrf.densecrf  # noqa: F401

        backends.append("pydensecrf")
    except ImportError:
        pass
    return backends


def run_case(op: str, backend: str, size: int, batch: int, repeats: int, seed: int) -> Dict:
    device = backend if backend in ("cpu", "cuda") else "cpu"
    step = OPS[op]["native" if backend in ("cpu", "cuda") else backend]
    x = Inputs(batch, size, device, torch.Generator().manual_seed(seed))
    if op == "lattice_filter" and backend != "exact":
        x.lattice = _lattice(x)
    seconds = timed(lambda: step(x), repeats, device)
    return {"ms": seconds * 1e3, "peak_mb": max(0.0, step_memory_mb(lambda: step(x), device))}


def work(backend: str, size: int, batch: int) -> int:
    """What a call's time grows with: the pixels, or their pairs for the exact O(N^2) sums."""
    pixels = size * size
    return batch * pixels * (pixels if backend == "exact" else 1)


def run(ops: List[str], backends: List[str], sizes: List[int], batches: List[int], repeats: int, budget: float,
        seed: int = 0, log=print) -> List[Dict]:
    cases = sorted(((size * size * batch, size, batch) for size in sizes for batch in batches))
    results = []
    for op in ops:
        for backend in backends:
            kind = "native" if backend in ("cpu", "cuda") else backend
            if kind not in OPS[op]:
                continue
            last: Optional[Dict] = None
            for pixels, size, batch in cases:
                row = {"op": op, "backend": backend, "size": size, "batch": batch, "pixels": pixels}
                estimate = last["ms"] / 1e3 * work(backend, size, batch) / work(backend, last["size"], last["batch"]) \
                    if last else 0.0
                if backend == "exact" and size * size > EXACT_MAX_PIXELS:
                    row["skipped"] = f"exact sums only up to {EXACT_MAX_PIXELS} pixels per image"
                elif estimate * (repeats + 2) > budget * repeats and last is not None:
                    row["skipped"] = f"about {estimate:.1f} s per call, over the budget"
                else:
                    try:
                        row.update(run_case(op, backend, size, batch, repeats, seed))
                        last = row
                    except (torch.OutOfMemoryError, MemoryError) as error:  # report, go on
                        row["skipped"] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
                        torch.cuda.empty_cache() if torch.cuda.is_available() else None
                results.append(row)
                log(format_row(row))
    return results


HEADER = f"{'op':<24}{'backend':<11}{'size':>6}{'batch':>6}{'ms':>12}{'ns/px':>12}{'peak MB':>9}"


def format_row(row: Dict) -> str:
    start = f"{row['op']:<24}{row['backend']:<11}{row['size']:>6}{row['batch']:>6}"
    if "skipped" in row:
        return f"{start}  skipped: {row['skipped']}"
    return f"{start}{row['ms']:>12.3f}{row['ms'] * 1e6 / row['pixels']:>12.1f}{row['peak_mb']:>9.0f}"


def plot(results: List[Dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    # Plain labels (20k, 1M; 0.5, 20 ms) at 10^n, and at 2 and 5 x 10^n on axes spanning at most
    # two decades, none on the minor ticks: matplotlib's default mathtext labels of the minor
    # ticks overlap on short axes.
    def plain(value, _position):
        for limit, suffix in ((1e6, "M"), (1e3, "k")):
            if value >= limit:
                return f"{value / limit:g}{suffix}"
        return f"{value:g}"

    ops = list(dict.fromkeys(r["op"] for r in results if "ms" in r))
    columns = min(4, len(ops))
    lines = -(-len(ops) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4 * columns, 3.2 * lines), squeeze=False)
    for axis, op in zip(axes.flat, ops):
        series = {}
        for r in results:
            if r["op"] == op and "ms" in r:
                series.setdefault((r["backend"], r["batch"]), []).append((r["pixels"], r["ms"]))
        for (backend, batch), points in sorted(series.items()):
            points.sort()
            axis.plot([p for p, _ in points], [t for _, t in points], marker="o", markersize=3,
                      label=f"{backend} B={batch}")
        axis.set_xscale("log")
        axis.set_yscale("log")
        for which, limits in ((axis.xaxis, axis.get_xlim()), (axis.yaxis, axis.get_ylim())):
            decades = math.log10(limits[1] / limits[0])
            which.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 2 else (1.0,),
                                               numticks=12))
            which.set_major_formatter(FuncFormatter(plain))
            which.set_minor_formatter(NullFormatter())
        axis.tick_params(labelsize=7)
        axis.set_title(op, fontsize=9)
        axis.set_xlabel("pixels per batch", fontsize=8)
        axis.set_ylabel("ms", fontsize=8)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=6)
    for axis in list(axes.flat)[len(ops):]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def machine() -> Dict:
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "wsloss": wsloss.__version__, "date": time.strftime("%Y-%m-%d")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _int_list(text: str) -> List[int]:
    values = [int(v) for v in text.split(",") if v]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu,cuda", help="wsloss backends to try (default: cpu,cuda)")
    parser.add_argument("--sizes", type=_int_list, default=[64, 128, 256, 512, 1024])
    parser.add_argument("--batches", type=_int_list, default=[1, 4, 16])
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated, default: all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=5.0, help="seconds per call beyond which a case is skipped")
    parser.add_argument("--out", default="wsloss-bench")
    parser.add_argument("--quick", action="store_true", help="sizes 32,64, batches 1,2, 2 repeats (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.batches, args.repeats = [32, 64], [1, 2], 2
    ops = args.ops.split(",")
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        parser.error(f"unknown ops {unknown}; choose among {', '.join(OPS)}")
    devices = args.device.split(",")
    if not set(devices) <= {"cpu", "cuda"}:
        parser.error(f"--device takes cpu and/or cuda, got {args.device!r}")
    if "cuda" in devices and not torch.cuda.is_available():
        print("# CUDA not available: no cuda rows")
    backends = available_backends(devices)
    info = machine()
    print("# " + ", ".join(f"{k}={v}" for k, v in info.items()) + f"; backends: {', '.join(backends)}")
    print(f"# median of {args.repeats} calls; ns/px: per pixel of the batch; K={CLASSES}")
    print(HEADER)
    results = run(ops, backends, args.sizes, args.batches, args.repeats, args.budget)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"machine": info, "backends": backends, "repeats": args.repeats, "results": results}, f, indent=1)
    written = [os.path.join(args.out, "results.json")]
    if any("ms" in r for r in results):
        written.append(os.path.join(args.out, "results.png"))
        plot(results, written[-1])
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
