"""wsloss inside real training code: torch.compile, opcheck, autocast, DDP, threads, determinism,
memory over many steps, and the installed package's build report."""
import gc
import importlib
import inspect
import os
import socket
import subprocess
import sys
import threading

import pytest
import torch
import torch.nn.functional as F

import ddp_worker
import wsloss
from helpers import CUDA, random_photo

B, K, H, W = 2, 5, 12, 11


def _losses():
    """name -> (loss module, call(module, scores, images, labels, present, roi) -> loss), scores
    being the probabilities for a module that takes them and the logits for the others."""
    on_probabilities = lambda m, s, i, l, p, r: m(i, s, r)  # noqa: E731
    return {
        "DenseCRFLoss": (wsloss.DenseCRFLoss(1e-3, 15.0, 10.0, 0.5), on_probabilities),
        "DenseCRFLoss(mean)": (wsloss.DenseCRFLoss(0.5, 15.0, 10.0, 0.5, reduction="mean"), on_probabilities),
        "NormalizedCutLoss": (wsloss.NormalizedCutLoss(0.5, 15.0, 10.0), on_probabilities),
        "KernelCutLoss": (wsloss.KernelCutLoss(0.5, 0.1, 15.0, 10.0, 0.5, gradient="exact"), on_probabilities),
        "QuadraticCRFLoss": (wsloss.QuadraticCRFLoss(0.5, 15.0, 10.0), on_probabilities),
        "GridCRFLoss": (wsloss.GridCRFLoss(0.5, 15.0, 8, "bilinear"), on_probabilities),
        "EntropyLoss": (wsloss.EntropyLoss(0.5), lambda m, s, i, l, p, r: m(s, r)),
        "PartialCrossEntropyLoss": (wsloss.PartialCrossEntropyLoss(), lambda m, s, i, l, p, r: m(s, l)),
        "RegularizedLoss": (wsloss.RegularizedLoss(densecrf=wsloss.DenseCRFLoss(1e-3, 15.0, 10.0, 0.5),
                                                   entropy=wsloss.EntropyLoss(0.1)),
                            lambda m, s, i, l, p, r: m(s, l, i, r)),
        "EMAdaptLoss": (wsloss.EMAdaptLoss(), lambda m, s, i, l, p, r: m(s, p)),
        "EMFixedLoss": (wsloss.EMFixedLoss(suppress_absent=True), lambda m, s, i, l, p, r: m(s, p)),
    }


TAKES_PROBABILITIES = {"DenseCRFLoss", "DenseCRFLoss(mean)", "NormalizedCutLoss", "KernelCutLoss", "QuadraticCRFLoss", "GridCRFLoss",
                       "EntropyLoss"}
LOSSES = sorted(_losses())


def _batch(rng, device):
    images = random_photo(B, H, W, rng).round().to(device)
    labels = torch.randint(0, K, (B, H, W), generator=rng)
    labels[:, ::2] = 255  # unlabelled rows, as scribbles leave them
    present = torch.rand(B, K, generator=rng) < 0.5
    present[:, 0] = True
    roi = (torch.rand(B, H, W, generator=rng) > 0.2).float()
    return images, labels.to(device), present.to(device), roi.to(device)


def _network(device, dtype=torch.float32):
    torch.manual_seed(0)
    network = torch.nn.Conv2d(3, K, 3, padding=1)
    with torch.no_grad():  # multiples of 1/64: on integer images / 256 every sum is exact, in any order
        for parameter in network.parameters():
            parameter.copy_((parameter * 64).round() / 64)
    return network.to(device, dtype)


def _loss(name, network, batch):
    module, call = _losses()[name]
    images, labels, present, roi = batch
    # Exact scores, whatever order eager and compiled convolutions add in: the EM losses' E-step
    # is discrete, and a last-bit difference once moved a pseudo-label and the loss by 7e-4.
    scores = network(images / 256)
    if name in TAKES_PROBABILITIES:
        scores = torch.softmax(scores, 1)
    return call(module, scores, images, labels, present, roi)


def _loss_and_grad(name, network, batch, loss_fn=_loss):
    loss = loss_fn(name, network, batch)
    return loss, torch.autograd.grad(loss, network.weight)[0]


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_compiles_fullgraph(name, device, rng):
    """A model plus the loss compiles as one graph (inductor) and gives the eager loss and gradient."""
    batch, network = _batch(rng, device), _network(device)
    eager, eager_grad = _loss_and_grad(name, network, batch)
    torch._dynamo.reset()
    loss, grad = _loss_and_grad(name, network, batch, torch.compile(_loss, fullgraph=True))
    torch.testing.assert_close(loss, eager, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(grad, eager_grad, rtol=1e-4, atol=1e-7)


def test_dense_crf_inference_compiles_fullgraph(device, rng):
    """The DenseCRF module compiles as one graph and gives the eager marginals."""
    images, _, _, _ = _batch(rng, device)
    logits = torch.randn(B, K, H, W, generator=rng).to(device)
    crf = wsloss.DenseCRF(iterations=3, kind="logits")
    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(crf, fullgraph=True)(logits, images), crf(logits, images),
                               rtol=1e-5, atol=1e-6)


def _opcheck_inputs(device, rng):
    """Sample arguments for every wsloss op (a new op must be added here)."""
    features = (torch.rand(2, 5, 31, generator=rng) * 3).to(device)
    lattice = wsloss.PermutohedralLattice(features, splat_csr=True)
    images, seg, roi = (random_photo(2, 6, 7, rng).double(),
                        torch.softmax(torch.randn(2, 4, 6, 7, generator=rng, dtype=torch.float64), 1),
                        (torch.rand(2, 6, 7, generator=rng) > 0.2).double())
    images, seg, roi = images.to(device), seg.to(device), roi.to(device)
    grad_energy = torch.rand(2, 6, 7, generator=rng, dtype=torch.float64).to(device)
    logits = torch.randn(2, 5, 42, generator=rng).to(device)
    present = torch.tensor([[True, False, True, False, True], [False, True, False, False, False]], device=device)
    order = torch.arange(5, device=device).expand(2, 5).contiguous()
    cases = {"lattice_build": [(features,)], "grid_crf": [], "grid_crf_backward": [], "lattice_filter": [],
             "lattice_filter_into": [],
             "em_adapt": [(logits, present, order, 0.4, 0.2, suppress, 1e-5) for suppress in (False, True)]}
    for dtype in (torch.float32, torch.float64):
        values = torch.rand(2, 7, 31, generator=rng, dtype=dtype).to(device).requires_grad_()
        cases["lattice_filter"] += [(*lattice.tensors, values, transpose) for transpose in (False, True)]
        cases["lattice_filter"].append((*lattice.tensors, values, True, False, (values[:1, :1] + 1).detach(),
                                        (values[:, :1, :1] * 2).detach().requires_grad_()))
        plain = values.detach()
        cases["lattice_filter_into"] += [(*lattice.tensors, plain, transpose, torch.empty_like(plain),
                                          plain.new_empty(0)) for transpose in (False, True)]
        cases["lattice_filter_into"].append((*lattice.tensors, plain, False, torch.empty_like(plain), plain.new_empty(0),
                                             False, plain.new_ones(1, 1, 31), plain[:, :1] + 1, plain.clone()))
        cases["lattice_filter_into"].append((*lattice.tensors, plain, False, torch.empty_like(plain), plain.new_empty(0),
                                             False, None, plain[:, :1] + 1, plain.clone(), 7))
    if device == "cpu":  # a CPU lattice may be built without the splat CSR (CUDA refuses to)
        bare = wsloss.PermutohedralLattice(features, splat_csr=False)
        cases["lattice_build"].append((features, False))
        cases["lattice_filter"].append((*bare.tensors, values, False))
        cases["lattice_filter_into"].append((*bare.tensors, plain, True, torch.empty_like(plain), plain.new_empty(0)))
    cases["resample_down"] = [(seg.clone().requires_grad_(), None, [0.5, 0.5]), (seg, roi[:, :3, :3], [0.5, 0.5]),
                              (seg.unsqueeze(2).expand(2, 4, 3, 6, 7).clone(), None, [1.0, 0.37, 0.6])]
    cases["resample_down_backward"] = [(seg[:, :, :3, :3].clone().requires_grad_(), roi[:, :3, :3], None, [6, 7], [0.5, 0.5]),
                                       (seg[:, :, :3, :3].clone().requires_grad_(), None, seg[:, :, 0, 0] + 1, [6, 7], [0.5, 0.5])]
    cases["row_dot"] = [(seg.flatten(2), seg.flatten(2)), (seg.flatten(2).float(), roi.flatten(1)[:, None].float())]
    for neighbourhood in (4, 8):
        for bilinear in (False, True):
            options = (images, roi, 20.0, neighbourhood, bilinear)
            cases["grid_crf"].append((seg.clone().requires_grad_(),) + options)
            cases["grid_crf_backward"].append((grad_energy, seg) + options)
    return cases


def test_opcheck_passes_for_every_op(device, rng):
    """torch.library.opcheck (schema, fake kernel and its strides, autograd registration,
    torch.compile) passes for every op of the wsloss namespace, on every device it runs on."""
    registered = {name.split("::")[1] for name in torch._C._dispatch_get_all_op_names() if name.startswith("wsloss::")}
    cases = _opcheck_inputs(device, rng)
    assert set(cases) == registered
    for name, calls in cases.items():
        assert calls
        for args in calls:
            torch.library.opcheck(getattr(torch.ops.wsloss, name).default, args)


@pytest.mark.parametrize("name", LOSSES)
def test_loss_under_autocast_is_float32_and_close_to_the_float32_loss(name, device, rng):
    """Under autocast the network runs in float16/bfloat16, the loss is float32 and matches the
    float32 loss within the half precision's rounding; parameter gradients stay float32."""
    batch, network = _batch(rng, device), _network(device)
    reference, reference_grad = _loss_and_grad(name, network, batch)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast(device, dtype=dtype):
            assert network(batch[0]).dtype == dtype
            loss, grad = _loss_and_grad(name, network, batch)
        assert loss.dtype == torch.float32 and grad.dtype == torch.float32
        tolerance = 3e-2 if dtype == torch.bfloat16 else 4e-3
        torch.testing.assert_close(loss, reference, rtol=tolerance, atol=tolerance * 1e-2)
        assert torch.isfinite(grad).all()
        assert F.cosine_similarity(grad.flatten(), reference_grad.flatten(), dim=0) > 0.98


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_give_the_float32_loss_of_their_rounded_values(name, dtype, device, rng):
    """Half scores (and images) give a float32 loss equal to the float32 computation on the same
    rounded values (the lattice accumulates in float32), and a gradient in the input's dtype."""
    images, labels, present, roi = _batch(rng, device)
    module, call = _losses()[name]
    images = images.to(dtype)
    scores = torch.randn(B, K, H, W, generator=rng)
    if name in TAKES_PROBABILITIES:
        scores = torch.softmax(scores, 1)
    half = scores.to(device, dtype).requires_grad_()
    loss = call(module, half, images, labels, present, roi)
    upcast = half.detach().float().requires_grad_()
    expected = call(module, upcast, images.float(), labels, present, roi)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-7)
    loss.backward()
    expected.backward()
    assert half.grad.dtype == dtype
    torch.testing.assert_close(half.grad, upcast.grad.to(dtype))


def assert_resample_is_interpolate(values, factors, rng, rois=None):
    """wsloss::resample_down gives F.interpolate's bi/trilinear downscale (align_corners=False)
    times the ROIs, to float rounding, and its backward F.interpolate's gradient (masked)."""
    values = values.requires_grad_()
    mode = "bilinear" if values.dim() == 4 else "trilinear"
    resampled = torch.ops.wsloss.resample_down(values, rois, factors)
    expected = F.interpolate(values, scale_factor=factors[0] if len(set(factors)) == 1 else factors, mode=mode,
                             align_corners=False)
    if rois is not None:
        expected = expected * rois.unsqueeze(1)
    tolerance = dict(rtol=1e-12, atol=1e-12) if values.dtype == torch.float64 else dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(resampled, expected, **tolerance)
    grad = torch.rand(expected.shape, generator=rng, dtype=values.dtype).to(values.device)
    (mine,) = torch.autograd.grad(resampled, values, grad)
    (theirs,) = torch.autograd.grad(expected, values, grad)
    torch.testing.assert_close(mine, theirs, **tolerance)
    return resampled, mine


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale_factor", [0.5, 0.37, 0.25, 0.999, 1.0, 1 / 3])
def test_resample_down_is_interpolate_and_its_backward_a_gather(scale_factor, dtype, device, rng):
    """The dense losses' downscale of S (DESIGN §2) against F.interpolate, odd sizes, with and
    without ROIs; the backward writes every element (no zero fill, ROI-masked)."""
    values = torch.rand(3, 5, 13, 18, generator=rng, dtype=dtype).to(device)
    down = [int(13 * scale_factor), int(18 * scale_factor)]
    rois = (torch.rand(3, *down, generator=rng) > 0.3).to(device, dtype)
    assert_resample_is_interpolate(values, (scale_factor, scale_factor), rng)
    assert_resample_is_interpolate(values.detach(), (scale_factor, scale_factor), rng, rois)


def test_resample_down_of_volumes_is_trilinear_interpolate_per_axis(device, rng):
    """Volumes (DESIGN §10): one factor per axis, kept thick slices."""
    values = torch.rand(2, 3, 7, 13, 18, generator=rng, dtype=torch.float64).to(device)
    rois = (torch.rand(2, 7, 6, 9, generator=rng) > 0.3).to(device, torch.float64)
    for factors in ((1.0, 0.5, 0.5), (0.5, 0.37, 0.8), (0.3, 1.0, 0.5)):
        assert_resample_is_interpolate(values.detach().clone(), factors, rng)
    assert_resample_is_interpolate(values.detach().clone(), (1.0, 0.5, 0.5), rng, rois)


def test_resample_down_backward_is_deterministic_and_twice_differentiable(device, rng):
    """The gather is bitwise reproducible (no atomics), scales each image's channels by its
    channel_weights, and the two ops are each other's adjoints, so gradcheck and gradgradcheck hold."""
    values = torch.rand(2, 3, 11, 14, generator=rng, dtype=torch.float64).to(device).requires_grad_()
    rois = (torch.rand(2, 5, 7, generator=rng) > 0.3).to(device, torch.float64)
    grad = torch.rand(2, 3, 5, 7, generator=rng, dtype=torch.float64).to(device)
    first = torch.ops.wsloss.resample_down_backward(grad, rois, None, [11, 14], [0.5, 0.5])
    assert torch.equal(first, torch.ops.wsloss.resample_down_backward(grad, rois, None, [11, 14], [0.5, 0.5]))
    weights = torch.rand(2, 3, generator=rng, dtype=torch.float64).to(device)
    weighted = torch.ops.wsloss.resample_down_backward(grad, rois, weights, [11, 14], [0.5, 0.5])
    torch.testing.assert_close(weighted, first * weights[:, :, None, None], rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match=r"channel_weights must be \[B, C\]"):
        torch.ops.wsloss.resample_down_backward(grad, rois, weights[:, :2], [11, 14], [0.5, 0.5])
    resample = lambda v: torch.ops.wsloss.resample_down(v, rois, [0.5, 0.5])  # noqa: E731
    assert torch.autograd.gradcheck(resample, (values,))
    assert torch.autograd.gradgradcheck(resample, (values,))


@pytest.mark.parametrize("call, message", [
    (lambda v: torch.ops.wsloss.resample_down(v, None, [0.5]), "one factor per spatial axis"),
    (lambda v: torch.ops.wsloss.resample_down(v, None, [0.5, 1.5]), r"in \(0, 1\]"),
    (lambda v: torch.ops.wsloss.resample_down(v, None, [0.5, 0.01]), "to nothing"),
    (lambda v: torch.ops.wsloss.resample_down(v, torch.ones(2, 4, 5), [0.5, 0.5]), "rois must be"),
    (lambda v: torch.ops.wsloss.resample_down(v[0], None, [0.5, 0.5]), "values must be"),
    (lambda v: torch.ops.wsloss.resample_down_backward(v, None, None, [8, 9, 2], [0.5, 0.5, 0.5]), "input_size"),
    (lambda v: torch.ops.wsloss.resample_down_backward(v, None, None, [8, 9], [0.5, 0.5]), "grad must be"),
])
def test_resample_down_refuses_bad_arguments_naming_them(call, message):
    with pytest.raises(ValueError, match=message):
        call(torch.rand(2, 3, 8, 9))
    with pytest.raises(TypeError, match="float32 or float64"):
        torch.ops.wsloss.resample_down(torch.ones(2, 3, 8, 9, dtype=torch.int32), None, [0.5, 0.5])


@pytest.fixture
def deterministic():
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


def _every_output(device, rng):
    """Every loss's value and gradient (in its input: torch's conv backward sums in an order that
    depends on the thread count), and the E-steps' and dense CRF's outputs, on one batch."""
    images, labels, present, roi = _batch(rng, device)
    logits = torch.randn(B, K, H, W, generator=rng).to(device).requires_grad_()
    outputs = []
    for name, (module, call) in sorted(_losses().items()):
        scores = torch.softmax(logits, 1) if name in TAKES_PROBABILITIES else logits
        loss = call(module, scores, images, labels, present, roi)
        outputs += [loss, torch.autograd.grad(loss, logits)[0]]
    logits = logits.detach()
    outputs += list(wsloss.em_adapt(logits, present, generator=torch.Generator(device).manual_seed(1)))
    outputs.append(wsloss.em_fixed(logits, present))
    outputs.append(wsloss.dense_crf(torch.softmax(logits, 1), images, iterations=3))
    outputs.append(wsloss.bbox_seg(images, [[[1, 1, 8, 9]], [[0, 2, 5, 11]]], [[1], [2]], iterations=3))
    return outputs


def _bitwise_equal(first, second):
    return all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(first, second))


def _random_seed():
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed={seed}")
    return seed


def test_deterministic_mode_is_bitwise_reproducible(device, deterministic):
    """With torch.use_deterministic_algorithms(True) every op runs (none refuses) and repeats
    bit for bit."""
    seed = _random_seed()
    first = _every_output(device, torch.Generator().manual_seed(seed))
    assert _bitwise_equal(first, _every_output(device, torch.Generator().manual_seed(seed)))


def test_deterministic_mode_on_cpu_is_bitwise_independent_of_the_thread_count(deterministic):
    seed = _random_seed()
    first = _every_output("cpu", torch.Generator().manual_seed(seed))
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:
        assert _bitwise_equal(first, _every_output("cpu", torch.Generator().manual_seed(seed)))
    finally:
        torch.set_num_threads(threads)


def test_two_python_threads_at_once_get_what_each_gets_alone(rng):
    """Two Python threads calling the CPU kernels at once get what each gets alone."""
    batches = [_batch(rng, "cpu") for _ in range(2)]
    networks = [_network("cpu") for _ in range(2)]
    names = ["DenseCRFLoss", "KernelCutLoss", "GridCRFLoss", "EMAdaptLoss"]
    alone = [[_loss_and_grad(name, networks[i], batches[i]) for name in names] for i in range(2)]
    together, errors = [[], []], []
    start = threading.Barrier(2)

    def work(i):
        try:
            start.wait()
            for _ in range(10):
                together[i].append([_loss_and_grad(name, networks[i], batches[i]) for name in names])
        except Exception as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for i in range(2):
        assert len(together[i]) == 10
        for results in together[i]:
            assert _bitwise_equal([t for pair in alone[i] for t in pair], [t for pair in results for t in pair])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_over_two_processes_trains_to_the_parameters_of_one_process(tmp_path):
    """DistributedDataParallel over 2 gloo processes, each computing DenseCRFLoss on its own
    half of the batch, trains to the parameters of one process on the whole batch."""
    out, port = tmp_path / "ddp.pt", _free_port()
    worker = os.path.join(os.path.dirname(__file__), "ddp_worker.py")
    processes = [subprocess.Popen([sys.executable, worker, str(rank), "2", str(port), str(out)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    for process in processes:
        output = process.communicate(timeout=240)[0]
        assert process.returncode == 0, output
    distributed = torch.load(out)
    single = ddp_worker.train().state_dict()
    initial = ddp_worker.make_network().state_dict()
    for name, value in single.items():
        assert not torch.equal(value, initial[name])  # it trained
        torch.testing.assert_close(distributed[name], value, rtol=1e-5, atol=1e-6)


def _resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_no_memory_growth_over_1000_steps(device, rng):
    """1000 forward+backward steps of the whole loss family (and an E-step) leave the memory
    where it was after warm-up: allocated CUDA memory exactly, process RSS on CPU."""
    images = random_photo(2, 48, 40, rng).to(device)
    seeds = torch.randint(0, 6, (2, 48, 40), generator=rng).to(device)
    present = torch.tensor([[True, True, False, True, False, False], [True, False, True, False, False, True]],
                           device=device)
    logits = torch.randn(2, 6, 48, 40, generator=rng).to(device).requires_grad_()
    criterion = wsloss.RegularizedLoss(densecrf=wsloss.DenseCRFLoss(1e-3, 15.0, 10.0, 0.5),
                                       kernelcut=wsloss.KernelCutLoss(0.1, 0.01, 15.0, 10.0),
                                       grid=wsloss.GridCRFLoss(0.1, 15.0), entropy=wsloss.EntropyLoss(0.1))
    em = wsloss.EMAdaptLoss()

    def steps(count):
        for _ in range(count):
            logits.grad = None
            (criterion(logits, seeds, images) + em(logits, present)).backward()
        gc.collect()
        if device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.memory_allocated()
        return _resident_mb()

    warm = steps(100)
    after = steps(1000)
    if device == "cuda":
        assert after == warm
    else:  # one leaked 2 x 6 x 48 x 40 tensor per step would be 90 MB
        assert after - warm < 8, (warm, after)


def test_build_config_reports_the_versions_threads_and_cuda_build():
    config = wsloss.build_config()
    assert config["wsloss"] == wsloss.__version__
    assert config["torch"] == torch.__version__
    assert torch.__version__.startswith(config["compiled_against_torch"])
    assert config["threads"] == torch.get_num_threads()
    assert config["cuda_kernels"] == wsloss._ops.HAS_CUDA_KERNELS
    assert bool(config["cuda_archs"]) == config["cuda_kernels"]
    assert all(arch.startswith("sm_") for arch in config["cuda_archs"])


def _shown_config(capsys):
    wsloss.show_config()
    return capsys.readouterr().out


def test_show_config_prints_the_versions_threads_and_cuda_kernels(capsys):
    printed = _shown_config(capsys)
    assert f"wsloss {wsloss.__version__}" in printed and f"torch {torch.__version__}" in printed
    assert f"{torch.get_num_threads()} threads" in printed
    assert ("CUDA kernels: yes" if CUDA or wsloss.build_config()["cuda_kernels"] else "CUDA kernels: no") in printed


def test_python_m_wsloss_info_prints_the_heading_of_show_config(capsys):
    printed = _shown_config(capsys)
    cli = subprocess.run([sys.executable, "-m", "wsloss.info"], capture_output=True, text=True, cwd=os.path.dirname(__file__))
    assert cli.returncode == 0 and cli.stdout.splitlines()[0] == printed.splitlines()[0], cli.stderr


def _public_callables():
    for name in wsloss.__all__ + [f"functional.{n}" for n in wsloss.functional.__all__]:
        obj = wsloss
        for part in name.split("."):
            obj = getattr(obj, part)
        if inspect.isclass(obj):
            yield from ((f"{name}.{m}", getattr(obj, m)) for m in ("__init__", "forward", "filter") if m in vars(obj))
        elif callable(obj):
            yield name, obj


def test_public_api_annotates_every_parameter_and_result():
    untyped = []
    for name, function in _public_callables():
        signature = inspect.signature(function)
        untyped += [f"{name}({p.name})" for p in signature.parameters.values()
                    if p.name != "self" and p.annotation is inspect.Parameter.empty]
        if not name.endswith("__init__") and signature.return_annotation is inspect.Signature.empty:
            untyped.append(f"{name} -> ?")
    assert not untyped


def test_mypy_accepts_the_installed_package(tmp_path):
    """py.typed, and a stub for the compiled _C, make the package checkable."""
    checked = subprocess.run([sys.executable, "-m", "mypy", "-p", "wsloss", "--cache-dir", str(tmp_path)],
                             capture_output=True, text=True, cwd=tmp_path)
    assert checked.returncode == 0 and "Success" in checked.stdout, checked.stdout + checked.stderr


def test_reference_is_the_deprecated_name_of_exact(monkeypatch):
    """wsloss.reference, the deprecated alias of wsloss.exact, imports for one more release: with a
    DeprecationWarning, its functions being wsloss.exact's."""
    if "reference" in vars(wsloss):  # vars, not hasattr: hasattr would import it through wsloss.__getattr__
        monkeypatch.delattr(wsloss, "reference")
    monkeypatch.delitem(sys.modules, "wsloss.reference", raising=False)
    with pytest.warns(DeprecationWarning, match="wsloss.reference is renamed wsloss.exact"):
        reference = importlib.import_module("wsloss.reference")
    assert reference.__all__ == wsloss.exact.__all__
    for name in wsloss.exact.__all__:
        assert getattr(reference, name) is getattr(wsloss.exact, name)


def test_import_wsloss_leaves_reference_unimported_until_its_first_use(tmp_path):
    lazy = ("import sys, wsloss; assert 'wsloss.reference' not in sys.modules; "
            "assert wsloss.reference.dense_crf is wsloss.exact.dense_crf")
    checked = subprocess.run([sys.executable, "-c", lazy], capture_output=True, text=True, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr


def test_large_cpu_outputs_reuse_the_memory_of_freed_ones():
    """CPU outputs of 8 MiB and more come from wsloss's pool of freed ones (docs/DESIGN.md §2,
    fresh memory): the next output of the same size takes the freed block, already mapped."""
    values = torch.rand(1, 2, 1100, 1100)  # 9.7 MB
    first = torch.ops.wsloss.resample_down(values, None, [1.0, 1.0])
    pointer = first.data_ptr()
    del first
    second = torch.ops.wsloss.resample_down(values, None, [1.0, 1.0])
    assert second.data_ptr() == pointer
    assert torch.equal(second, values)
