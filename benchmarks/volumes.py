"""Volumes (docs/DESIGN.md §10): every loss, dense CRF inference and EM-Adapt on a CT-sized case,
beside SimpleCRF's densecrf3d and MONAI's CRF layer on the same volumes.

The case: B=2, K=4, one channel, 96 x 256 x 256 voxels (smooth 3D blobs with noise, 0..255),
smooth random softmax segmentations, losses at scale_factor (1, 0.5, 0.5), voxel spacing
(2.5, 1, 1). Per piece the median of --repeats forward+backward steps (inference: whole calls)
and the peak memory a step adds; beside the DenseCRFLoss step, the 2D step on the same number of
pixels (B=2 single-channel images of 2508 x 2508 at scale 0.5, as many downscaled pixels as the
volume has downscaled voxels). The peers, when installed (never required: a peer that is missing
or fails is reported so), run once each on the same volumes with the same parameters and
iterations: SimpleCRF one volume at a time on one thread, as its API runs; MONAI's CRF on the
batch. Each peer run is timed between two wsloss dense_crf calls, and its ratio is against their
mean, so that a machine whose speed drifts (a shared VM) weighs both sides alike. Their labels are compared with wsloss's (the models differ in normalization, so agreement
is a sanity check, not a target); wsloss's marginals are compared with the exact mean field on a
crop small enough for it. Prints a table, writes JSON.

    python benchmarks/volumes.py [--device cuda] [--repeats 3] [--crf-only] [--json wsloss-bench/volumes.json]
"""
import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402
from dense_crf_loss import step_memory_mb, timed  # noqa: E402

import wsloss  # noqa: E402

SPACING = (2.5, 1.0, 1.0)  # the losses' voxel size
SCALE = (1.0, 0.5, 0.5)
# Mean field in voxels (isotropic: MONAI's CRF takes no spacing), the same for every peer.
CRF = dict(iterations=5, w_bilateral=5.0, theta_alpha=5.0, theta_beta=10.0, w_gaussian=3.0, theta_gamma=3.0)


def scans(batch, depth, size, generator):
    """Smooth 3D blobs with noise, rounded to 0..255 (SimpleCRF takes uint8)."""
    coarse = torch.rand(batch, 1, max(2, depth // 8), max(2, size // 16), max(2, size // 16), generator=generator)
    smooth = F.interpolate(coarse * 255, size=(depth, size, size), mode="trilinear", align_corners=False)
    return (smooth + 6 * torch.randn(smooth.shape, generator=generator)).round().clamp(0, 255)


def softmax_maps(batch, classes, spatial, generator):
    coarse = torch.randn((batch, classes) + tuple(max(2, s // 8) for s in spatial), generator=generator) * 3
    mode = "trilinear" if len(spatial) == 3 else "bilinear"
    return torch.softmax(F.interpolate(coarse, size=spatial, mode=mode, align_corners=False), dim=1)


def loss_pieces():
    sigma = dict(sigma_rgb=15.0, sigma_xy=10.0, scale_factor=SCALE, spacing=SPACING)
    return {
        "DenseCRFLoss": wsloss.DenseCRFLoss(1e-9, **sigma),
        "NormalizedCutLoss": wsloss.NormalizedCutLoss(1.0, **sigma),
        "KernelCutLoss": wsloss.KernelCutLoss(1.0, 1e-9, **sigma),
        "QuadraticCRFLoss": wsloss.QuadraticCRFLoss(1e-9, **sigma),
        "GridCRFLoss (6)": wsloss.GridCRFLoss(1e-6, 15.0, neighbourhood=6, spacing=SPACING),
        "GridCRFLoss (26)": wsloss.GridCRFLoss(1e-6, 15.0, neighbourhood=26, spacing=SPACING),
        "EntropyLoss": wsloss.EntropyLoss(0.1),
    }


def time_step(loss, images, segmentations, rois, repeats, device):
    leaf = segmentations.clone().requires_grad_()

    def step():
        value = loss(leaf, rois) if not loss.needs_images else loss(images, leaf, rois)
        value.backward()
        leaf.grad = None

    return dict(step_ms=timed(step, repeats, device) * 1e3, step_mb=step_memory_mb(step, device))


def simplecrf_labels(probs, images):
    """SimpleCRF's densecrf3d on each volume in turn (one thread, its API): labels D x H x W."""
    import denseCRF3D

    param = dict(MaxIterations=float(CRF["iterations"]), PosW=CRF["w_gaussian"], PosRStd=CRF["theta_gamma"],
                 PosCStd=CRF["theta_gamma"], PosZStd=CRF["theta_gamma"], BilateralW=CRF["w_bilateral"],
                 BilateralRStd=CRF["theta_alpha"], BilateralCStd=CRF["theta_alpha"], BilateralZStd=CRF["theta_alpha"],
                 ModalityNum=1.0, BilateralModsStds=(CRF["theta_beta"],))
    out = []
    for b in range(probs.shape[0]):
        volume = np.ascontiguousarray(images[b].permute(1, 2, 3, 0).numpy().astype(np.uint8))
        p = np.ascontiguousarray(probs[b].permute(1, 2, 3, 0).numpy().astype(np.float32))
        out.append(torch.from_numpy(np.asarray(denseCRF3D.densecrf3d(volume, p, param)).astype(np.int64)))
    return torch.stack(out)


def monai_labels(probs, images):
    """MONAI's CRF layer on the batch (its own model: unnormalized kernels, update factor)."""
    from monai.networks.blocks import CRF as MonaiCRF

    layer = MonaiCRF(iterations=CRF["iterations"], bilateral_weight=CRF["w_bilateral"],
                     gaussian_weight=CRF["w_gaussian"], bilateral_spatial_sigma=CRF["theta_alpha"],
                     bilateral_color_sigma=CRF["theta_beta"], gaussian_spatial_sigma=CRF["theta_gamma"])
    with torch.no_grad():
        return layer(probs.clamp_min(1e-5).log(), images).argmax(1)


def run_peer(name, call, probs, images, reference_labels):
    try:
        start = time.perf_counter()
        labels = call(probs, images)
        seconds = time.perf_counter() - start
    except Exception as error:  # a peer that fails is reported, never required
        return dict(peer=name, status=f"{type(error).__name__}: {error}"[:200])
    agree = (labels == reference_labels).double().mean().item()
    return dict(peer=name, status="ok", seconds=seconds, labels_agree_with_wsloss=agree)


def exact_crop_agreement(images, probs, device):
    """wsloss's marginals against the exact dense mean field on a 12 x 24 x 24 crop (float64)."""
    crop = (slice(None), slice(None), slice(0, 12), slice(0, 24), slice(0, 24))
    small_images, small_probs = images[crop].cpu(), probs[crop].cpu().double()
    exact = wsloss.exact.dense_crf(small_probs, small_images, **CRF)
    got = wsloss.dense_crf(small_probs.to(device), small_images.to(device), **CRF).cpu()
    return dict(relative_l2=((got - exact).norm() / exact.norm()).item(),
                labels_agree=(got.argmax(1) == exact.argmax(1)).double().mean().item())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--depth", type=int, default=96)
    parser.add_argument("--size", type=int, default=256, help="height and width")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peers", nargs="*", default=["simplecrf", "monai"], help="peers to run (none: --peers)")
    parser.add_argument("--crf-only", action="store_true", help="dense CRF inference and its peers only")
    parser.add_argument("--json", default="wsloss-bench/volumes.json")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    device = args.device
    spatial = (args.depth, args.size, args.size)
    images = scans(args.batch, args.depth, args.size, generator)
    probs = softmax_maps(args.batch, args.classes, spatial, generator)
    rois = torch.ones((args.batch,) + spatial)
    on_device = [t.to(device) for t in (images, probs, rois)]
    machine = dict(platform=platform.platform(), cpus=os.cpu_count(), threads=torch.get_num_threads(),
                   torch=torch.__version__, wsloss=wsloss.__version__, device=device,
                   gpu=torch.cuda.get_device_name() if device == "cuda" else None)
    print(f"# volumes: B={args.batch}, K={args.classes}, 1 channel, {' x '.join(map(str, spatial))}, losses at "
          f"scale {SCALE}, spacing {SPACING}; median of {args.repeats}")
    print("# " + ", ".join(f"{k}={v}" for k, v in machine.items() if v is not None))

    rows = []
    for name, loss in ({} if args.crf_only else loss_pieces()).items():
        rows.append(dict(piece=name, **time_step(loss, *on_device, args.repeats, device)))
    if not args.crf_only:
        pixels = round((args.depth * args.size * args.size) ** 0.5)
        flat_images = scans(args.batch, 1, pixels, generator)[:, :, 0]
        flat = [t.to(device) for t in (flat_images, softmax_maps(args.batch, args.classes, (pixels, pixels),
                                                                 generator), torch.ones(args.batch, pixels, pixels))]
        rows.append(dict(piece=f"DenseCRFLoss 2D {pixels}x{pixels}, scale 0.5",
                         **time_step(wsloss.DenseCRFLoss(1e-9, 15.0, 10.0, 0.5), *flat, args.repeats, device)))
        del flat, flat_images

    def crf():
        return wsloss.dense_crf(on_device[1], on_device[0], **CRF)

    rows.append(dict(piece=f"dense_crf ({CRF['iterations']} iterations, full resolution)",
                     step_ms=timed(crf, args.repeats, device) * 1e3, step_mb=step_memory_mb(crf, device)))
    if not args.crf_only:
        logits = on_device[1].clamp_min(1e-5).log()
        tags = torch.ones(args.batch, args.classes, dtype=torch.bool, device=device)

        def adapt():
            return wsloss.em_adapt(logits, tags)

        rows.append(dict(piece="em_adapt", step_ms=timed(adapt, args.repeats, device) * 1e3,
                         step_mb=step_memory_mb(adapt, device)))
    print(f"{'piece':<52} {'ms':>10} {'MB':>8}")
    for r in rows:
        print(f"{r['piece']:<52} {r['step_ms']:10.1f} {r['step_mb']:8.0f}")
    if not args.crf_only:
        dense = next(r for r in rows if r["piece"] == "DenseCRFLoss")
        flat_row = next(r for r in rows if r["piece"].startswith("DenseCRFLoss 2D"))
        print(f"DenseCRFLoss volume step / 2D step on as many pixels: {dense['step_ms'] / flat_row['step_ms']:.2f}")

    labels = crf().argmax(1).cpu()
    peers = []
    for name in args.peers:
        call = {"simplecrf": simplecrf_labels, "monai": monai_labels}[name]
        before = timed(crf, 1, device, warm_up=False)
        result = run_peer(name, call, probs, images, labels)
        if result["status"] == "ok":
            around = [before, timed(crf, 1, device, warm_up=False)]
            result["wsloss_seconds_before_and_after"] = around
            result["wsloss_speedup"] = result["seconds"] / statistics.mean(around)
            print(f"{name}: {result['seconds']:.1f} s for the batch; wsloss dense_crf {around[0]:.2f} s before, "
                  f"{around[1]:.2f} s after: {result['wsloss_speedup']:.1f}x faster; labels agree with wsloss on "
                  f"{result['labels_agree_with_wsloss']:.3f}")
        else:
            print(f"{name}: not run ({result['status']})")
        peers.append(result)
    exact = exact_crop_agreement(images, probs, device)
    print(f"wsloss dense_crf against the exact mean field on a 12 x 24 x 24 crop: relative L2 "
          f"{exact['relative_l2']:.3f}, labels agree {exact['labels_agree']:.3f}")
    workloads.write_json(args.json, machine=machine, args=vars(args), rows=rows, peers=peers, exact_crop=exact)


if __name__ == "__main__":
    main()
