"""The regularized-loss family, forward+backward, beside DenseCRFLoss.

B=8, K=21, 512x512 photographs (scikit-image samples), random smooth softmax segmentations,
all-ones ROIs; dense losses at scale_factor 0.5 with sigma_rgb=15, sigma_xy=100. Per loss the
median of --repeats forward+backward steps, its ratio to DenseCRFLoss's step (the target
for dense losses: at most 2x), and for the grid CRF its ratio to one pass over S
(a copy of the segmentations: their bytes read and written once; target: at most 2x).

    python benchmarks/regularized.py [--device cuda] [--json results.json]
"""
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402
from dense_crf_loss import kernel_medians_us, timed  # noqa: E402

import wsloss  # noqa: E402


def losses(scale_factor):
    dense = dict(sigma_rgb=15.0, sigma_xy=100.0, scale_factor=scale_factor)
    return {
        "DenseCRFLoss": wsloss.DenseCRFLoss(2e-9, **dense),
        "DenseCRFLoss exact": wsloss.DenseCRFLoss(2e-9, gradient="exact", **dense),
        "NormalizedCutLoss": wsloss.NormalizedCutLoss(1.0, **dense),
        "NormalizedCutLoss exact": wsloss.NormalizedCutLoss(1.0, gradient="exact", **dense),
        "KernelCutLoss": wsloss.KernelCutLoss(1.0, 2e-9, **dense),
        "QuadraticCRFLoss": wsloss.QuadraticCRFLoss(1e-9, **dense),
        "GridCRFLoss 4 quadratic": wsloss.GridCRFLoss(1e-3, 10.0, 4, "quadratic"),
        "GridCRFLoss 8 bilinear": wsloss.GridCRFLoss(1e-3, 10.0, 8, "bilinear"),
        "EntropyLoss": wsloss.EntropyLoss(0.1),
    }


def main():
    parser = workloads.workload_parser(__doc__, 7, "wsloss-bench/regularized.json")
    parser.add_argument("--scale-factor", type=float, default=0.5)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    device = args.device
    images = workloads.photographs(args.batch, args.size).to(device)
    seg = workloads.segmentations(args.batch, args.classes, args.size, generator).to(device).requires_grad_()
    roi = torch.ones(args.batch, args.size, args.size, device=device)
    labels = torch.randint(0, args.classes, roi.shape, generator=generator).to(device)
    labels[torch.rand(roi.shape, generator=generator).to(device) > 0.03] = 255
    machine = dict(platform=platform.platform(), cpus=os.cpu_count(), threads=torch.get_num_threads(),
                   torch=torch.__version__, wsloss=wsloss.__version__,
                   gpu=torch.cuda.get_device_name() if device == "cuda" else None)

    def step(module):
        def run():
            seg.grad = None
            loss = module(seg, roi) if not module.needs_images else module(images, seg, roi)
            loss.backward()
        return run

    rows = {name: timed(step(module), args.repeats, device) for name, module in losses(args.scale_factor).items()}
    logits = seg.detach().clone().requires_grad_()
    rows["PartialCrossEntropyLoss"] = timed(lambda: wsloss.PartialCrossEntropyLoss()(logits, labels).backward(),
                                            args.repeats, device)
    copy = torch.empty_like(seg)
    one_pass = timed(lambda: copy.copy_(seg.detach()), args.repeats, device)
    allocating_pass = timed(lambda: seg.detach() * 2, args.repeats, device)  # as a gradient is: fresh memory
    print(f"# forward+backward, B={args.batch}, K={args.classes}, {args.size}x{args.size} photographs, dense losses "
          f"at scale {args.scale_factor}, median of {args.repeats} (ms), device={device}")
    print("# " + ", ".join(f"{k}={v}" for k, v in machine.items() if v is not None))
    print(f"# one pass over S (copy of {seg.numel() * 4 / 1e6:.0f} MB): {one_pass * 1e3:.2f} ms; "
          f"into fresh memory (S * 2): {allocating_pass * 1e3:.2f} ms")
    base = rows["DenseCRFLoss"]
    print(f"{'loss':<26} {'ms':>9} {'x DenseCRF':>10} {'x pass':>7}")
    for name, seconds in rows.items():
        print(f"{name:<26} {seconds * 1e3:9.2f} {seconds / base:10.2f} {seconds / one_pass:7.1f}")
    if device == "cuda":  # where a grid CRF step's GPU time goes
        for name, module in losses(args.scale_factor).items():
            if name.startswith("GridCRFLoss"):
                medians = kernel_medians_us(step(module), args.repeats)
                print(f"# {name}: GPU time per call (us, median of {args.repeats}): total {sum(medians.values()):.0f}; "
                      + ", ".join(f"{kernel[:40]} {us:.0f}" for kernel, us in sorted(medians.items(),
                                                                                 key=lambda item: -item[1])[:6]))
    workloads.write_json(args.json, machine=machine, args=vars(args), one_pass_ms=one_pass * 1e3, allocating_pass_ms=allocating_pass * 1e3, rows={name: seconds * 1e3 for name, seconds in rows.items()})


if __name__ == "__main__":
    main()
