"""EM-Adapt bias estimation (wsloss.em_adapt), B=8, K=21, at 65x65 (DeepLab's fc8) and 512x512.

Backends side by side in one run, median of --repeats: wsloss's C++ kernel on the CPU,
a vectorized torch version (torch.kthvalue, one host loop over the visiting steps, never
over images) on each device, and wsloss's CUDA kernel. Tags as in PASCAL VOC (the
background and 1 to 3 objects per image) and the worst case (all 21 classes). On CUDA
also the bandwidth floor: one read of the logits at the measured copy bandwidth. Each
backend's labels and biases are checked against wsloss's CPU result.

    python benchmarks/em.py [--device cuda] [--json wsloss-bench/em.json]
"""
import argparse
import math
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402
from dense_crf_loss import copy_bandwidth, timed  # noqa: E402

import wsloss  # noqa: E402


def em_adapt_torch(logits, present, fg_portion=0.2, bg_portion=0.4, suppress_absent=True, margin=1e-5):
    """docs/DESIGN.md §4 in vectorized torch: all images at once, one step per visited class rank."""
    batch, classes, height, width = logits.shape
    n = height * width
    scores = logits.reshape(batch, classes, n)
    m = scores.masked_fill(~present[:, :, None], -math.inf).amax(1)
    position = present.cumsum(1) - 1  # each present class's place in the visiting order
    counts = present.sum(1)
    biases = torch.zeros(batch, classes, dtype=scores.dtype, device=scores.device)
    k_bg, k_fg = (min(int(math.floor(rho * n)), n - 1) + 1 for rho in (bg_portion, fg_portion))
    for t in range(int(counts.max())):  # one host sync
        visited = present & (position == t)
        active = counts > t
        cls = visited.to(torch.int8).argmax(1)
        f = scores.gather(1, cls[:, None, None].expand(batch, 1, n))[:, 0]
        diff = m - f
        diff = torch.where(diff == 0, 0.0, diff)
        b = torch.where(cls == 0, diff.kthvalue(k_bg, 1).values, diff.kthvalue(k_fg, 1).values)
        b = torch.where(active, b, 0.0)
        biases = biases + visited * b[:, None]
        m = torch.where(active[:, None], torch.maximum(m, f + b[:, None]), m)
    biased = scores + biases[:, :, None]
    if suppress_absent:
        cap = scores.masked_fill(~present[:, :, None], math.inf).amin(1, keepdim=True) - margin
        clipped = torch.minimum(scores, cap)
        biased = torch.where(present[:, :, None] | ~present.any(1)[:, None, None], biased, clipped)
    labels = (classes - 1) - biased.flip(1).argmax(1)
    return labels.reshape(batch, height, width), biases


def workload(batch, classes, size, tags, generator):
    """Smooth logits like a network's (upsampled coarse maps plus noise) and image tags."""
    coarse = torch.randn(batch, classes, max(2, size // 16), max(2, size // 16), generator=generator) * 4
    logits = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    logits = logits + 0.5 * torch.randn(batch, classes, size, size, generator=generator)
    present = torch.zeros(batch, classes, dtype=torch.bool)
    present[:, 0] = True
    if tags == "all":
        present[:] = True
    else:
        for b in range(batch):
            objects = int(torch.randint(1, 4, (), generator=generator))
            present[b, 1 + torch.randperm(classes - 1, generator=generator)[:objects]] = True
    return logits, present


def run(args, size, tags, generator):
    logits, present = workload(args.batch, args.classes, size, tags, generator)
    expected = wsloss.em_adapt(logits, present)
    backends = {"wsloss cpu": ("cpu", wsloss.em_adapt), "torch cpu": ("cpu", em_adapt_torch)}
    if args.device == "cuda":
        backends.update({"wsloss cuda": ("cuda", wsloss.em_adapt), "torch cuda": ("cuda", em_adapt_torch)})
    row = dict(size=size, tags=tags, present_per_image=present.sum().item() / args.batch)
    for name, (device, fn) in backends.items():
        x, p = logits.to(device), present.to(device)
        labels, biases = fn(x, p)
        agree = torch.equal(labels.cpu(), expected[0]) and torch.allclose(biases.cpu(), expected[1], rtol=0, atol=1e-6)
        row[name] = dict(ms=timed(lambda: fn(x, p), args.repeats, device) * 1e3, agrees=agree)
    if args.device == "cuda":
        row["floor_ms"] = logits.numel() * logits.element_size() / args.copy_bandwidth * 1e3
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--sizes", type=int, nargs="+", default=[65, 512])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", default="wsloss-bench/em.json")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    machine = dict(platform=platform.platform(), cpus=os.cpu_count(), threads=torch.get_num_threads(),
                   torch=torch.__version__, wsloss=wsloss.__version__,
                   gpu=torch.cuda.get_device_name() if args.device == "cuda" else None)
    args.copy_bandwidth = copy_bandwidth("cuda", args.repeats) if args.device == "cuda" else None
    print(f"# wsloss.em_adapt, B={args.batch}, K={args.classes}, float32, median of {args.repeats} (ms)")
    print("# " + ", ".join(f"{k}={v}" for k, v in machine.items() if v is not None))
    rows = [run(args, size, tags, generator) for size in args.sizes for tags in ("voc", "all")]
    names = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    print(f"{'size':>5} {'tags':>4} {'classes/img':>11} " + " ".join(f"{n:>12}" for n in names)
          + (f" {'floor':>7} {'x floor':>7}" if args.device == "cuda" else ""))
    for r in rows:
        line = f"{r['size']:>5} {r['tags']:>4} {r['present_per_image']:11.1f} " + " ".join(
            f"{r[n]['ms']:11.3f}{'' if r[n]['agrees'] else '!'}" for n in names)
        if args.device == "cuda":
            line += f" {r['floor_ms']:7.3f} {r['wsloss cuda']['ms'] / r['floor_ms']:7.1f}"
        print(line)
    if not all(r[n]["agrees"] for r in rows for n in names):
        print("! marks a backend whose labels or biases differ from wsloss's CPU result")
    workloads.write_json(args.json, machine=machine, args={k: v for k, v in vars(args).items()}, rows=rows)


if __name__ == "__main__":
    main()
