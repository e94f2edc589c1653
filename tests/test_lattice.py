"""The permutohedral lattice ops against docs/DESIGN.md §1, the exact Gaussian and each other."""
import numpy as np
import pytest
import torch

import spec_lattice
import wsloss
from helpers import lattice_matrices, random_photo
from wsloss import PermutohedralLattice


def random_features(batch, d, n, generator, spread=3.0):
    return torch.rand(batch, d, n, generator=generator) * spread


@pytest.mark.parametrize("d", [1, 2, 3, 5, 8, 16])
def test_matrix_equals_spec_step_by_step(d, rng):
    n = 40
    features = random_features(1, d, n, rng, spread=2.0)
    # Quantized features make remainder ties (DESIGN §1 steps 4-5) common.
    features[:, :, : n // 2] = torch.round(features[:, :, : n // 2] * 4) / 4
    lattice = PermutohedralLattice(features)
    for transpose in (False, True):
        expected, vertices = spec_lattice.lattice_matrix(features[0].numpy(), transpose)
        assert lattice.num_vertices == vertices
        matrix = lattice_matrices(lattice, transpose)[0].cpu().numpy()
        np.testing.assert_allclose(matrix, expected, rtol=1e-12, atol=1e-14)


def test_scale_factors_d5():
    assert spec_lattice.scales(5) == [np.float32(v) for v in (3.4641018, 2.0, 1.4142137, 1.0954452, 0.89442724)]


@pytest.mark.parametrize("d", [1, 2, 5, 9, 16])
@pytest.mark.parametrize("channels", [1, 4, 33, 70])
def test_adjoint(d, channels, rng, device):
    batch, n = 2, 67
    lattice = PermutohedralLattice(random_features(batch, d, n, rng).to(device))
    x = torch.randn(batch, channels, n, generator=rng, dtype=torch.float64).to(device)
    y = torch.randn(batch, channels, n, generator=rng, dtype=torch.float64).to(device)
    lhs = (lattice.filter(x) * y).sum()
    rhs = (x * lattice.filter(y, transpose=True)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12)


def test_lattice_is_not_symmetric(rng):
    """DESIGN §1: A and A^T differ (about 2% on photographs), so transpose is no no-op."""
    images = random_photo(1, 40, 50, rng)
    lattice = PermutohedralLattice(wsloss.bilateral_features(images, 15.0, 10.0))
    x = torch.rand(1, 2, 40, 50, generator=rng, dtype=torch.float64)
    a, at = lattice.filter(x), lattice.filter(x, transpose=True)
    assert ((a - at).norm() / a.norm()).item() > 1e-3


@pytest.mark.parametrize("d", [2, 5])
def test_against_exact_gaussian(d, rng):
    """The lattice approximates c W. Normalized filters remove c; what is left is bounded."""
    batch, h, w = 2, 19, 23
    images = random_photo(batch, h, w, rng)
    features = wsloss.bilateral_features(images, 20.0, 6.0)[:, :d] if d == 5 else wsloss.spatial_features(images, 3.0)
    values = torch.rand(batch, 4, h, w, generator=rng)
    lattice = PermutohedralLattice(features)
    approx = lattice.filter(values.double(), normalize=True)
    exact = wsloss.exact.dense_gaussian_filter(features, values, normalize=True)
    rel = ((approx - exact).norm() / exact.norm()).item()
    print(f"d={d}: normalized lattice vs exact Gaussian, relative L2 error {rel:.4f}")
    assert rel < 0.05
    # unnormalized: best constant c and what remains after it
    a = lattice.filter(values.double())
    e = wsloss.exact.dense_gaussian_filter(features, values)
    c = ((a * e).sum() / (e * e).sum()).item()
    rest = ((a - c * e).norm() / (c * e).norm()).item()
    print(f"d={d}: A ~ c W with c={c:.3f}, relative error after c {rest:.3f}")
    assert 0.3 < c < 1.0 and rest < 0.2


def test_gradcheck_filter(rng, device):
    lattice = PermutohedralLattice(random_features(2, 3, 13, rng).to(device))
    values = torch.rand(2, 3, 13, generator=rng, dtype=torch.float64).to(device).requires_grad_()
    for transpose in (False, True):
        assert torch.autograd.gradcheck(lambda v: lattice.filter(v, transpose=transpose), (values,))
        assert torch.autograd.gradgradcheck(lambda v: lattice.filter(v, transpose=transpose), (values,))
    assert torch.autograd.gradcheck(lambda v: lattice.filter(v, normalize=True), (values,))


def test_compile_fullgraph(rng, device):
    features = random_features(2, 5, 50, rng).to(device)
    values = torch.rand(2, 3, 50, generator=rng).to(device)

    def filtered(f, v):
        return PermutohedralLattice(f).filter(v, normalize=True)

    compiled = torch.compile(filtered, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(features, values), filtered(features, values))


@pytest.mark.parametrize("d", [2, 5, 16])
def test_batch_equals_one_by_one(d, rng, device):
    sizes = 8
    features = torch.cat(
        [random_features(1, d, 97, rng, spread=s) for s in np.linspace(0.5, 6.0, sizes)]
    ).to(device)
    values = torch.randn(sizes, 21, 97, generator=rng).to(device)
    batched = PermutohedralLattice(features)
    together = batched.filter(values)
    counts = batched.offsets.diff()
    for b in range(sizes):
        single = PermutohedralLattice(features[b : b + 1])
        assert single.num_vertices == counts[b].item()
        assert torch.equal(together[b : b + 1], single.filter(values[b : b + 1]))


def test_structure(rng, device):
    batch, d, n = 3, 4, 200
    lattice = PermutohedralLattice(random_features(batch, d, n, rng).to(device))
    m = lattice.num_vertices
    assert lattice.offsets[0] == 0 and lattice.offsets[-1] == m
    torch.testing.assert_close(lattice.weights.sum(-1), torch.ones(batch, n, device=device))
    assert (lattice.weights >= -1e-6).all()
    # each pixel's corners lie in its own image's vertex range
    lo = lattice.offsets[:-1].view(batch, 1, 1)
    hi = lattice.offsets[1:].view(batch, 1, 1)
    assert ((lattice.vertices >= lo) & (lattice.vertices < hi)).all()
    # neighbour relation is symmetric: the + neighbour's - neighbour is the vertex itself
    nb = lattice.neighbours.long()
    ids = torch.arange(m, device=device).view(m, 1)
    plus = nb[:, :, 1]
    present = plus < m
    back = nb[plus.clamp(max=m - 1), torch.arange(d + 1, device=device).expand(m, d + 1), 0]
    assert torch.equal(back[present], ids.expand(m, d + 1)[present])
    # CSR holds every (pixel, corner) slot exactly once, at its vertex
    ptr = lattice.splat_ptr.long()
    assert ptr[0] == 0 and ptr[-1] == batch * n * (d + 1) and (ptr.diff() > 0).all()
    assert torch.equal(lattice.splat_index.sort().values.long(), torch.arange(batch * n * (d + 1), device=device))
    owner = torch.repeat_interleave(torch.arange(m, device=device), ptr.diff())
    assert torch.equal(lattice.vertices.reshape(-1)[lattice.splat_index.long()].long(), owner)


def test_hash_table_grows_on_many_vertices(rng):
    """Noise features in 16 dimensions put nearly every corner at a new vertex: the table
    starts at 2N slots and must grow several times without losing or duplicating one."""
    n = 1000
    features = random_features(1, 16, n, rng, spread=50.0)
    lattice = PermutohedralLattice(features)
    keys = {key for p in range(n) for key in spec_lattice.embed(features[0, :, p].numpy(), 16)[0]}
    assert lattice.num_vertices == len(keys) > 0.9 * n * 17
    x = torch.randn(1, 3, n, generator=rng, dtype=torch.float64)
    y = torch.randn(1, 3, n, generator=rng, dtype=torch.float64)
    assert torch.allclose((lattice.filter(x) * y).sum(), (x * lattice.filter(y, transpose=True)).sum(), rtol=1e-12)


def test_constant_features_filter_to_weighted_mean(rng):
    features = torch.zeros(1, 5, 30)
    values = torch.rand(1, 2, 30, generator=rng, dtype=torch.float64)
    out = PermutohedralLattice(features).filter(values, normalize=True)
    torch.testing.assert_close(out, values.mean(-1, keepdim=True).expand_as(out))


def test_threads_do_not_change_results(rng):
    features = random_features(3, 5, 4000, rng)
    values = torch.rand(3, 21, 4000, generator=rng)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = PermutohedralLattice(features).filter(values)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, PermutohedralLattice(features).filter(values))


def test_half_precision_values(rng):
    lattice = PermutohedralLattice(random_features(1, 3, 64, rng))
    values = torch.rand(1, 2, 64, generator=rng)
    for dtype in (torch.float16, torch.bfloat16):
        out = lattice.filter(values.to(dtype))
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), lattice.filter(values), rtol=1e-2, atol=1e-2)


def test_features_of_4d_and_3d_shapes_agree(rng):
    features = random_features(2, 5, 6 * 7, rng)
    values = torch.rand(2, 3, 6 * 7, generator=rng)
    flat = PermutohedralLattice(features).filter(values)
    grid = PermutohedralLattice(features.reshape(2, 5, 6, 7)).filter(values.reshape(2, 3, 6, 7))
    assert torch.equal(flat, grid.reshape(2, 3, -1))


def test_feature_division_is_exact():
    """bilateral_features divides in float32 exactly like the reference's C++."""
    images = torch.rand(1, 3, 17, 29) * 255
    sigma_rgb, sigma_xy = 13.0, 80.0 * 0.5
    f = wsloss.bilateral_features(images, sigma_rgb, sigma_xy)
    x = np.arange(29, dtype=np.float32) / np.float32(sigma_xy)
    np.testing.assert_array_equal(f[0, 0, 0].numpy(), x)
    np.testing.assert_array_equal(f[0, 2:].numpy(), images[0].numpy() / np.float32(sigma_rgb))


@pytest.mark.parametrize("batch", [1, 5])  # the gather and the scatter splat (2 threads here)
def test_filter_into_equals_filter_and_reuses_its_workspace(batch, rng, device):
    """lattice_filter_into (CPU and CUDA): the same bits as lattice_filter, into the caller's memory."""
    lattice = PermutohedralLattice(random_features(batch, 5, 301, rng).to(device))
    workspace = torch.empty(0, dtype=torch.float64, device=device)
    for channels in (3, 40, 1):  # 40 > 32: two channel chunks; then a smaller call reuses the workspace
        values = torch.rand(batch, channels, 301, generator=rng, dtype=torch.float64).to(device)
        for transpose in (False, True):
            out = torch.full_like(values, float("nan"))
            torch.ops.wsloss.lattice_filter_into(*lattice.tensors, values, transpose, out, workspace)
            assert torch.equal(out, torch.ops.wsloss.lattice_filter(*lattice.tensors, values, transpose))
        if channels == 40:
            grown = workspace.data_ptr(), workspace.numel()
    assert (workspace.data_ptr(), workspace.numel()) == grown and grown[1] > 0
    values = torch.rand(batch, 4, 301, generator=rng).to(device)
    empty = torch.empty(0, device=device)
    for out, workspace, match in ((torch.empty(batch, 5, 301, device=device), empty, "out must be a contiguous"),
                                  (torch.empty_like(values).double(), empty, "out must be"),
                                  (torch.empty(batch, 301, 4, device=device).transpose(1, 2), empty, "out must be"),
                                  (torch.empty_like(values), empty.double(), "workspace must be a 1-D"),
                                  (torch.empty_like(values), torch.empty(2, 2, device=device),
                                   "workspace must be a 1-D")):
        with pytest.raises(ValueError, match=match):
            torch.ops.wsloss.lattice_filter_into(*lattice.tensors, values, False, out, workspace)
    for out, workspace in ((values, torch.empty(0, device=device)), (torch.empty_like(values), values.flatten())):
        with pytest.raises(RuntimeError, match="refer to a single memory location"):
            torch.ops.wsloss.lattice_filter_into(*lattice.tensors, values, False, out, workspace)


def test_apply_equals_lattice_filter(rng, device):
    """PermutohedralLattice.apply, the one low-level filtering: lattice_filter's bits with and
    without out; out is written in place and returned, the lattice's workspace kept and reused."""
    batch, n = 3, 211
    lattice = PermutohedralLattice(random_features(batch, 5, n, rng).to(device))
    for dtype in (torch.float64, torch.float32):
        for channels in (40, 3):  # the larger first: the smaller reuses the workspace
            values = torch.rand(batch, channels, n, generator=rng, dtype=dtype).to(device)
            for transpose in (False, True):
                expected = torch.ops.wsloss.lattice_filter(*lattice.tensors, values, transpose)
                assert torch.equal(lattice.apply(values, transpose), expected)
                assert torch.equal(lattice.apply(values, transpose=transpose), expected)
                out = torch.full_like(values, float("nan"))
                address = out.data_ptr()
                assert lattice.apply(values, transpose, out=out) is out
                assert out.data_ptr() == address and torch.equal(out, expected)
            if channels == 40:
                workspace = lattice._workspace
                kept = workspace.data_ptr(), workspace.numel()
        assert lattice._workspace is workspace and workspace.dtype == dtype
        assert (workspace.data_ptr(), workspace.numel()) == kept and kept[1] > 0
    # filter is apply in the features' layout
    values = torch.rand(batch, 2, n, generator=rng, dtype=torch.float64).to(device)
    assert torch.equal(lattice.filter(values, transpose=True), lattice.apply(values, True))
    # into out is not differentiable
    with pytest.raises(ValueError, match="out: .*not differentiable"):
        lattice.apply(values.requires_grad_(), out=torch.empty_like(values))
