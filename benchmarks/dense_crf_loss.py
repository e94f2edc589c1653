"""DenseCRFLoss forward+backward on the canonical workload.

B=8, K=21, 512x512, sigma_rgb=15, sigma_xy=100, scale_factor 0.5 and 1.0, photographs and
noise; per configuration the median of --repeats runs of the whole step and of its parts
(lattice build, one filtering), and the peak memory a step adds; plus the exact dense reference on a
small image. On CUDA also: the same step on the CPU engine (same inputs, same run), the
per-kernel split of one build and one filtering (torch.profiler), and the filter's bandwidth
floor (bytes it must move / measured device copy bandwidth). Prints tables and writes JSON.

With --rloss PATH (CPU): rloss's own DenseCRFLoss beside wsloss's, in this one run, interleaved
(rloss step, wsloss step, rloss step, ...), each step a fresh clone of S then forward+backward, as a
training loop's softmax output is fresh; beside them the step's floor: that clone and one more
read of S into a fresh tensor (what a step that reads S once and writes its gradient once must
cost), and how far the two losses and gradients agree. PATH: a folder (or several, joined by
os.pathsep) from which `import DenseCRFLoss` gives the user's own rloss module (rloss's
pytorch/pytorch-deeplab_v3_plus/DenseCRFLoss.py with its .cuda() calls removed) and `import
bilateralfilter` the wrapper they built from rloss's sources. wsloss never ships or builds rloss.

    python benchmarks/dense_crf_loss.py [--device cuda] [--json results.json]
    python benchmarks/dense_crf_loss.py --rloss PATH [--scales 0.5 1.0] [--repeats 5]
"""
import importlib
import os
import platform
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402

import wsloss  # noqa: E402


def timed(fn, repeats, device, warm_up=True):
    """Median seconds of `repeats` calls, after one warm-up call unless warm_up=False."""
    def once():
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    if warm_up:
        once()
    return statistics.median(once() for _ in range(repeats))


# Kernel name fragments of each part of the CUDA engine (csrc/cuda/lattice_cuda.cu).
KERNEL_PARTS = (("splat", ("splat_chunk", "splat_carry")), ("blur", ("blur_kernel",)), ("slice", ("slice_kernel",)),
                ("build", ("range_init", "embed_kernel", "key_layout", "insert_kernel", "first_kernel",
                           "offsets_kernel", "owner_kernel", "vertex_id_kernel", "neighbours_kernel", "iota_kernel",
                           "splat_ptr_kernel", "DeviceScan", "DeviceRadixSort", "cub::")),
                ("memset", ("Memset",)))


def kernel_medians_us(fn, repeats):
    """Median GPU time (us) per call of fn of each kernel, by name (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    times = {}
    for _ in range(repeats):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        sums = {}
        for event in prof.events():
            if event.device_type == torch.autograd.DeviceType.CUDA:
                sums[event.name] = sums.get(event.name, 0.0) + event.time_range.elapsed_us()
        for name, us in sums.items():
            times.setdefault(name, []).append(us)
    return {name: statistics.median(values) for name, values in times.items()}


def kernel_split_ms(fn, repeats):
    """GPU time per call of each part: build kernels, splat / blur / slice kernels, memsets,
    and other (torch's layout copies)."""
    totals = {part: 0.0 for part, _ in KERNEL_PARTS + (("other", ()),)}
    for name, us in kernel_medians_us(fn, repeats).items():
        part = next((p for p, names in KERNEL_PARTS if any(n in name for n in names)), "other")
        totals[part] += us / 1e3
    return totals


LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def launches_and_syncs(fn, prepare=lambda: None):
    """The CUDA kernel launches and host synchronizations of one call of fn (torch.profiler's
    runtime API events on any thread, autograd's included, within the call's time range), after
    prepare() outside the measured range."""
    from torch.profiler import ProfilerActivity, profile, record_function

    prepare()
    fn()
    prepare()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with record_function("wsloss_measured_call"):
            fn()
    events = prof.events()
    span = next(e for e in events if e.name == "wsloss_measured_call").time_range
    inside = [e.name for e in events if span.start <= e.time_range.start and e.time_range.end <= span.end]
    return sum(name in LAUNCHES for name in inside), sum(name in SYNCS for name in inside)


def copy_bandwidth(device, repeats):
    """Bytes per second of a large device-to-device copy (read + write)."""
    source = torch.empty(2**28, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    return 2 * source.numel() / timed(lambda: target.copy_(source), repeats, device)


def filter_floor_bytes(pixels_total, d, num_vertices, channels, value_bytes=4):
    """What one filtering must move at least: the values in and out, each pixel's d+1
    vertex ids, weights and splat entries once, and the lattice rows written by the splat,
    read and written by each of the d+1 blur steps, and read by the slice."""
    return (2 * pixels_total * channels * value_bytes + 12 * pixels_total * (d + 1)
            + (2 * (d + 1) + 2) * num_vertices * channels * value_bytes)


def _status_kb(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def step_memory_mb(step, device):
    """Peak memory one step adds on top of what is held before it (inputs, torch itself)."""
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    if not os.path.exists("/proc/self/clear_refs"):  # not Linux: the process high-water mark
        step()
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    before = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets the peak resident set size (VmHWM)
    step()
    return (_status_kb("VmHWM") - before) / 1024


def run_config(kind, scale, args, generator):
    device = args.device
    images = workloads.photographs(args.batch, args.size) if kind == "photographs" else workloads.noise(
        args.batch, args.size, generator)
    seg = workloads.segmentations(args.batch, args.classes, args.size, generator)
    images, seg = images.to(device), seg.to(device)
    roi = torch.ones(args.batch, args.size, args.size, device=device)
    loss_fn = wsloss.DenseCRFLoss(1e-9, args.sigma_rgb, args.sigma_xy, scale)

    def step():
        s = seg.detach().requires_grad_()
        loss_fn(images, s, roi).backward()

    def resampling_only():  # the same torch resampling and autograd, no lattice
        s = seg.detach().requires_grad_()
        small_seg = torch.nn.functional.interpolate(s, scale_factor=scale, mode="bilinear") if scale != 1 else s
        small_roi = torch.nn.functional.interpolate(roi[:, None], scale_factor=scale) if scale != 1 else roi[:, None]
        (small_seg * small_roi).square().sum().backward()

    step_s = timed(step, args.repeats, device)
    floor_s = timed(resampling_only, args.repeats, device)
    memory_mb = step_memory_mb(step, device)
    small = torch.nn.functional.interpolate(images, scale_factor=scale) if scale != 1 else images
    features = wsloss.bilateral_features(small, args.sigma_rgb, args.sigma_xy * scale)
    lattice = wsloss.PermutohedralLattice(features)
    values = torch.rand(args.batch, args.classes, *small.shape[2:], generator=generator).to(device)
    build_s = timed(lambda: wsloss.PermutohedralLattice(features), args.repeats, device)
    filter_s = timed(lambda: lattice.filter(values), args.repeats, device)
    row = dict(images=kind, scale_factor=scale, step_s=step_s, resampling_s=floor_s, build_s=build_s, filter_s=filter_s,
               vertices_per_image=lattice.num_vertices / args.batch, pixels_per_image=small.shape[2] * small.shape[3],
               step_memory_mb=memory_mb)
    if device == "cuda":
        row["build_split_ms"] = kernel_split_ms(lambda: wsloss.PermutohedralLattice(features), args.repeats)
        row["filter_split_ms"] = kernel_split_ms(lambda: lattice.filter(values), args.repeats)
        floor = filter_floor_bytes(lattice.vertices.shape[0] * lattice.vertices.shape[1], features.shape[1],
                                   lattice.num_vertices, args.classes)
        row["filter_floor_s"] = floor / args.copy_bandwidth
        cpu_images, cpu_seg, cpu_roi = images.cpu(), seg.cpu(), roi.cpu()

        def cpu_step():  # the CPU engine, same inputs
            s = cpu_seg.detach().requires_grad_()
            loss_fn(cpu_images, s, cpu_roi).backward()

        row["cpu_step_s"] = timed(cpu_step, max(1, min(args.repeats, 3)), "cpu")
        row["step_launches"], row["step_syncs"] = launches_and_syncs(step)
        held = {}

        def forward():
            held["loss"] = loss_fn(images, seg.detach().requires_grad_(), roi)

        row["backward_launches"], row["backward_syncs"] = launches_and_syncs(lambda: held["loss"].backward(), forward)
    return row


def load_rloss(path):
    """The user's rloss DenseCRFLoss class, imported from `path` (after torch: libgomp)."""
    sys.path[:0] = path.split(os.pathsep)
    return importlib.import_module("DenseCRFLoss").DenseCRFLoss


def rloss_float64_sum(loss, seg, scale):
    """rloss's own loss summed in float64: -sum S~ (A S~) / B over the A S~ its autograd node keeps
    (ctx.AS) and its S~ (F.interpolate, all-ones ROIs), so that how far rloss's float32 dot
    product is from its own products is told apart from how far wsloss's products are from rloss's."""
    node = loss.grad_fn
    while not hasattr(node, "AS"):
        node = next(n for n, _ in node.next_functions if n is not None)
    small = torch.nn.functional.interpolate(seg, scale_factor=scale, mode="bilinear", align_corners=False)
    return -(small.double() * torch.from_numpy(node.AS).double()).sum() / seg.shape[0]


def run_side_by_side(kind, scale, args, generator, rloss_class):
    """rloss and wsloss DenseCRFLoss steps interleaved in this process, and the floor (DESIGN §2)."""
    images = workloads.photographs(args.batch, args.size) if kind == "photographs" else workloads.noise(
        args.batch, args.size, generator)
    seg = workloads.segmentations(args.batch, args.classes, args.size, generator)
    roi = torch.ones(args.batch, args.size, args.size)
    losses = {"rloss": rloss_class(1.0, args.sigma_rgb, args.sigma_xy, scale),
              "wsloss": wsloss.DenseCRFLoss(1.0, args.sigma_rgb, args.sigma_xy, scale)}

    def step(name):
        s = seg.clone().requires_grad_()
        loss = losses[name](images, s, roi.clone())
        loss.backward()
        return loss, s.grad

    def floor():
        s = seg.clone()
        torch.empty_like(s).copy_(s)

    (rloss_value, rloss_grad), (wsloss_value, wsloss_grad) = step("rloss"), step("wsloss")
    rloss_sum = rloss_float64_sum(rloss_value, seg, scale)
    floor()
    times = {"rloss": [], "wsloss": [], "floor": []}
    for _ in range(args.repeats):
        for name in ("rloss", "wsloss"):
            times[name].append(timed(lambda: step(name), 1, "cpu", warm_up=False))
        times["floor"].append(timed(floor, 1, "cpu", warm_up=False))
    ratios = [r / w for r, w in zip(times["rloss"], times["wsloss"])]
    return dict(images=kind, scale_factor=scale, **{f"{name}_s": values for name, values in times.items()},
                rloss_over_wsloss=statistics.median(ratios), ratio_range=(min(ratios), max(ratios)),
                wsloss_over_floor=statistics.median(times["wsloss"]) / statistics.median(times["floor"]),
                loss_relative_difference=abs(wsloss_value.double() / rloss_value.double() - 1).item(),
                rloss_summation_error=abs(rloss_value.double() / rloss_sum - 1).item(),
                loss_difference_to_rloss_float64_sum=abs(wsloss_value.double() / rloss_sum - 1).item(),
                grad_max_difference=(wsloss_grad - rloss_grad).abs().max().item(),
                grad_max=rloss_grad.abs().max().item())


def print_side_by_side(rows, args):
    print(f"# side by side with rloss (its own build), interleaved, {args.repeats} steps each, "
          f"{torch.get_num_threads()} threads; step = clone of S + forward + backward; floor = that clone + one "
          f"more read of S into a fresh tensor; loss rel diff: wsloss against rloss; rloss sum err: rloss's loss "
          f"against the float64 sum of its own products; vs its f64 sum: wsloss against that sum")
    print(f"{'images':<12} {'scale':>5} {'rloss ms':>9} {'wsloss ms':>10} {'floor ms':>9} {'rloss/wsloss':>13} "
          f"{'range':>11} {'wsloss/floor':>13} {'loss rel diff':>14} {'rloss sum err':>14} {'vs its f64 sum':>15} "
          f"{'grad max diff':>14}")
    for r in rows:
        ms = {name: statistics.median(r[f"{name}_s"]) * 1e3 for name in ("rloss", "wsloss", "floor")}
        print(f"{r['images']:<12} {r['scale_factor']:>5} {ms['rloss']:9.1f} {ms['wsloss']:10.1f} {ms['floor']:9.1f} "
              f"{r['rloss_over_wsloss']:12.2f}x {r['ratio_range'][0]:5.2f}-{r['ratio_range'][1]:<5.2f} "
              f"{r['wsloss_over_floor']:12.2f}x {r['loss_relative_difference']:14.2e} "
              f"{r['rloss_summation_error']:14.2e} {r['loss_difference_to_rloss_float64_sum']:15.2e} "
              f"{r['grad_max_difference']:9.2e}/{r['grad_max']:.0e}")


def run_exact(args, generator):
    """Exact dense reference vs the lattice on one small image (N = 64 x 64)."""
    images = workloads.photographs(1, 64).to(args.device)
    seg = workloads.segmentations(1, args.classes, 64, generator).to(args.device)
    roi = torch.ones(1, 64, 64, device=args.device)
    sigma_xy = args.sigma_xy * 64 / args.size  # same relative spatial extent as the big images
    lattice_s = timed(lambda: wsloss.DenseCRFLoss(1.0, args.sigma_rgb, sigma_xy, 1.0)(images, seg, roi),
                      args.repeats, args.device)
    exact_s = timed(lambda: wsloss.exact.dense_crf_loss(images, seg, roi, 1.0, args.sigma_rgb, sigma_xy),
                    args.repeats, args.device)
    ratio = (wsloss.DenseCRFLoss(1.0, args.sigma_rgb, sigma_xy, 1.0)(images, seg, roi)
             / wsloss.exact.dense_crf_loss(images, seg, roi, 1.0, args.sigma_rgb, sigma_xy)).item()
    return dict(size=64, lattice_forward_s=lattice_s, exact_forward_s=exact_s, lattice_over_exact_loss=ratio)


def main():
    parser = workloads.workload_parser(__doc__, 5, "wsloss-bench/densecrf.json")
    parser.add_argument("--sigma-rgb", type=float, default=15.0)
    parser.add_argument("--sigma-xy", type=float, default=100.0)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--inputs", nargs="+", default=["photographs", "noise"])
    parser.add_argument("--rloss", metavar="PATH", help="time the user's own rloss build beside wsloss (CPU)")
    args = parser.parse_args()
    if args.rloss and args.device != "cpu":
        parser.error("--rloss: rloss runs on the CPU only")
    generator = torch.Generator().manual_seed(0)

    machine = dict(platform=platform.platform(), processor=platform.processor() or platform.machine(),
                   cpus=os.cpu_count(), threads=torch.get_num_threads(), torch=torch.__version__,
                   wsloss=wsloss.__version__, device=args.device,
                   gpu=torch.cuda.get_device_name() if args.device == "cuda" else None)
    print(f"# DenseCRFLoss forward+backward, B={args.batch}, K={args.classes}, {args.size}x{args.size}, "
          f"sigma_rgb={args.sigma_rgb}, sigma_xy={args.sigma_xy}, median of {args.repeats}")
    print("# " + ", ".join(f"{k}={v}" for k, v in machine.items() if v is not None))
    if args.rloss:
        rloss_class = load_rloss(args.rloss)
        rows = [run_side_by_side(kind, scale, args, generator, rloss_class) for scale in args.scales
                for kind in args.inputs]
        print_side_by_side(rows, args)
        workloads.write_json(args.json, machine=machine, args=vars(args), side_by_side=rows)
        return
    args.copy_bandwidth = copy_bandwidth(args.device, args.repeats) if args.device == "cuda" else None
    rows = [run_config(kind, scale, args, generator) for scale in args.scales for kind in args.inputs]
    print("# step: DenseCRFLoss forward+backward; torch: the same resampling and autograd without the lattice "
          "(part of step); build, filter: one lattice_build, one 21-channel lattice_filter (part of step)")
    header = f"{'images':<12} {'scale':>5} {'step ms':>9} {'torch ms':>9} {'build ms':>9} {'filter ms':>9} {'vertices/img':>12} " \
             f"{'step MB':>8}"
    print(header)
    for r in rows:
        print(f"{r['images']:<12} {r['scale_factor']:>5} {r['step_s'] * 1e3:9.1f} {r['resampling_s'] * 1e3:9.1f} {r['build_s'] * 1e3:9.1f} "
              f"{r['filter_s'] * 1e3:9.1f} {r['vertices_per_image']:12.0f} {r['step_memory_mb']:8.0f}")
    if args.device == "cuda":
        print(f"# CUDA kernel split (ms, median of {args.repeats}, torch.profiler); copy bandwidth "
              f"{args.copy_bandwidth / 1e9:.0f} GB/s; floor: the bytes one filtering must move / copy bandwidth")
        parts = [p for p, _ in KERNEL_PARTS] + ["other"]
        print("# launches / host syncs of one step (forward+backward) and of its backward alone (torch.profiler)")
        for r in rows:
            print(f"{r['images']:<12} {r['scale_factor']:>5} step {r['step_launches']} launches, {r['step_syncs']} "
                  f"syncs; backward {r['backward_launches']} launches, {r['backward_syncs']} syncs")
        print(f"{'images':<12} {'scale':>5} {'op':>7} " + " ".join(f"{p:>7}" for p in parts)
              + f" {'floor ms':>9} {'x floor':>8} {'cpu step ms':>12} {'cpu/cuda':>9}")
        for r in rows:
            for op in ("build", "filter"):
                split = r[f"{op}_split_ms"]
                line = f"{r['images']:<12} {r['scale_factor']:>5} {op:>7} " + " ".join(f"{split[p]:7.3f}" for p in parts)
                if op == "filter":
                    line += (f" {r['filter_floor_s'] * 1e3:9.3f} {r['filter_s'] / r['filter_floor_s']:8.1f}"
                             f" {r['cpu_step_s'] * 1e3:12.1f} {r['cpu_step_s'] / r['step_s']:8.0f}x")
                print(line)
    exact = run_exact(args, generator)
    print(f"exact dense reference, 1x{args.classes}x64x64 forward: {exact['exact_forward_s'] * 1e3:.1f} ms; "
          f"lattice {exact['lattice_forward_s'] * 1e3:.2f} ms; lattice/exact loss = "
          f"{exact['lattice_over_exact_loss']:.3f}")
    workloads.write_json(args.json, machine=machine, args=vars(args), rows=rows, exact=exact)


if __name__ == "__main__":
    main()
