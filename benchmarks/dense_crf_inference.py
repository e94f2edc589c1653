"""Dense CRF mean-field inference: wsloss (CPU, CUDA) beside pydensecrf and the exact dense sum.

B=8, K=21, 512x512 photographs (scikit-image samples), smooth random softmax maps as the
unary, DeepLab's parameters (10 iterations, w=4/3, theta 67/3/1), symmetric normalization.
Per backend the median of --repeats whole calls, the peak memory a call adds, and (wsloss)
the split into the two lattice builds and the iterations; pydensecrf, when installed
(never required), runs its images one by one on one thread, as its API does, on the same
inputs, and its marginals are compared with wsloss's. The exact dense mean field (float64,
one 64x64 image) gives the lattice's approximation error. Prints a table, writes JSON.

    python benchmarks/dense_crf_inference.py [--device cuda] [--json wsloss-bench/crf.json]
"""
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402
from dense_crf_loss import kernel_medians_us, step_memory_mb, timed  # noqa: E402

import wsloss  # noqa: E402
from wsloss.crf import _scores, lattice_kernels, mean_field  # noqa: E402

PARAMS = dict(iterations=10, w_bilateral=4.0, theta_alpha=67.0, theta_beta=3.0, w_gaussian=3.0, theta_gamma=1.0)


def pydensecrf_call(probs, images):
    """pydensecrf on each image in turn (its API is one image at a time), K x H x W each."""
    import pydensecrf.densecrf as dcrf

    batch, classes, height, width = probs.shape
    out = []
    for b in range(batch):
        d = dcrf.DenseCRF2D(width, height, classes)
        p = probs[b].numpy().reshape(classes, -1)
        d.setUnaryEnergy(np.ascontiguousarray(-np.log(np.clip(p, 1e-5, 1))))
        d.addPairwiseGaussian(sxy=PARAMS["theta_gamma"], compat=PARAMS["w_gaussian"])
        rgb = np.ascontiguousarray(images[b].permute(1, 2, 0).numpy().astype(np.uint8))
        d.addPairwiseBilateral(sxy=PARAMS["theta_alpha"], srgb=PARAMS["theta_beta"], rgbim=rgb,
                               compat=PARAMS["w_bilateral"])
        out.append(np.array(d.inference(PARAMS["iterations"])).reshape(classes, height, width))
    return torch.from_numpy(np.stack(out))


def split_ms(probs, images, repeats, device):
    """One call timed apart: the lattice builds with the two normalizations, the iterations,
    and one 21-channel filtering per kernel (ms)."""
    scores = _scores(probs, "probabilities", 1e-5)
    options = {k: v for k, v in PARAMS.items() if k != "iterations"}

    def setup():
        return lattice_kernels(images, scores, normalization="symmetric", **options)

    kernels = setup()
    return dict(setup_ms=timed(setup, repeats, device) * 1e3,
                iterations_ms=timed(lambda: mean_field(scores, kernels, None, PARAMS["iterations"]), repeats,
                                    device) * 1e3,
                bilateral_filter_ms=timed(lambda: kernels[0].filter(scores), repeats, device) * 1e3,
                gaussian_filter_ms=timed(lambda: kernels[1].filter(scores), repeats, device) * 1e3)


def exact_error(generator):
    """wsloss against the exact dense mean field (float64) on one 64x64 photograph, K=21."""
    images = workloads.photographs(1, 64)
    probs = workloads.segmentations(1, 21, 64, generator)
    options = dict(PARAMS, theta_alpha=8.0)  # 67 px would span the whole 64x64 image
    start = time.perf_counter()
    exact = wsloss.exact.dense_crf(probs, images, **options)
    exact_s = time.perf_counter() - start
    start = time.perf_counter()
    got = wsloss.dense_crf(probs.double(), images, **options)
    lattice_s = time.perf_counter() - start
    return dict(exact_ms=exact_s * 1e3, lattice_ms=lattice_s * 1e3,
                relative_l2=((got - exact).norm() / exact.norm()).item(),
                mean_abs=(got - exact).abs().mean().item(), max_abs=(got - exact).abs().max().item(),
                labels_agree=(got.argmax(1) == exact.argmax(1)).double().mean().item())


def main():
    parser = workloads.workload_parser(__doc__, 3, "wsloss-bench/crf.json", "CPU and pydensecrf (CUDA: 5x as many)")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    images = workloads.photographs(args.batch, args.size)
    probs = workloads.segmentations(args.batch, args.classes, args.size, generator)
    machine = dict(platform=platform.platform(), cpus=os.cpu_count(), threads=torch.get_num_threads(),
                   torch=torch.__version__, wsloss=wsloss.__version__,
                   gpu=torch.cuda.get_device_name() if args.device == "cuda" else None)
    print(f"# dense CRF inference, B={args.batch}, K={args.classes}, {args.size}x{args.size} photographs, "
          f"{PARAMS}, median of {args.repeats} (CUDA: {5 * args.repeats}), ms")
    print("# " + ", ".join(f"{k}={v}" for k, v in machine.items() if v is not None))

    rows, outputs = {}, {}
    devices = ["cpu"] + (["cuda"] if args.device == "cuda" else [])
    for device in devices:
        p, im = probs.to(device), images.to(device)
        repeats = args.repeats * (5 if device == "cuda" else 1)
        outputs[device] = wsloss.dense_crf(p, im, **PARAMS).cpu()
        row = dict(ms=timed(lambda: wsloss.dense_crf(p, im, **PARAMS), repeats, device) * 1e3,
                   memory_mb=step_memory_mb(lambda: wsloss.dense_crf(p, im, **PARAMS), device))
        row.update(split_ms(p, im, repeats, device))
        if device == "cuda":
            medians = kernel_medians_us(lambda: wsloss.dense_crf(p, im, **PARAMS), 3)
            row["gpu_us_top"] = dict(sorted(medians.items(), key=lambda item: -item[1])[:8])
        rows[f"wsloss {device}"] = row
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        print("# pydensecrf not installed: its row is left out")
    else:
        outputs["pydensecrf"] = pydensecrf_call(probs, images)
        torch.set_num_threads(1)  # measure it as it runs: one thread (it has no threading)
        rows["pydensecrf"] = dict(ms=timed(lambda: pydensecrf_call(probs, images), args.repeats, "cpu") * 1e3,
                                  memory_mb=step_memory_mb(lambda: pydensecrf_call(probs, images), "cpu"))
        torch.set_num_threads(machine["threads"])
    base = outputs["cpu"]
    for name, out in outputs.items():
        if name != "cpu":
            rows[name if name == "pydensecrf" else f"wsloss {name}"].update(
                max_abs_vs_cpu=(out - base).abs().max().item(),
                labels_agree_vs_cpu=(out.argmax(1) == base.argmax(1)).double().mean().item())

    print(f"{'backend':<12} {'ms':>9} {'MB':>7} {'setup':>7} {'iters':>8} {'bil filt':>8} {'gau filt':>8} "
          f"{'vs cpu max|dQ|':>14} {'labels':>7}")
    for name, row in rows.items():
        cells = [f"{row.get(key, float('nan')):>{width}.1f}" for key, width in
                 (("setup_ms", 7), ("iterations_ms", 8), ("bilateral_filter_ms", 8), ("gaussian_filter_ms", 8))]
        agree = (f"{row['max_abs_vs_cpu']:14.2e} {row['labels_agree_vs_cpu']:7.5f}" if "max_abs_vs_cpu" in row
                 else f"{'-':>14} {'-':>7}")
        print(f"{name:<12} {row['ms']:9.1f} {row['memory_mb']:7.0f} {' '.join(cells)} {agree}")
    if "pydensecrf" in rows:
        print(f"# wsloss cpu is {rows['pydensecrf']['ms'] / rows['wsloss cpu']['ms']:.2f}x faster than pydensecrf")
    if "gpu_us_top" in rows.get("wsloss cuda", {}):
        print("# CUDA GPU time per call (us): " + ", ".join(
            f"{k[:40]} {v:.0f}" for k, v in rows["wsloss cuda"]["gpu_us_top"].items()))
    exact = exact_error(generator)
    print("# exact dense mean field (float64, one 64x64 photograph, K=21, theta_alpha=8): "
          + ", ".join(f"{k} {v:.4g}" for k, v in exact.items()))
    workloads.write_json(args.json, machine=machine, args=vars(args), params=PARAMS, rows=rows, exact=exact)


if __name__ == "__main__":
    main()
