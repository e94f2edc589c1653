"""The permutohedral lattice ops against docs/DESIGN.md §1, the exact Gaussian and each other."""
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

import spec_lattice
import wsloss
from cpu_filter_worker import filter_cases
from helpers import lattice_matrices, random_photo, requires_cuda
from wsloss import PermutohedralLattice


def random_features(batch, d, n, generator, spread=3.0):
    return torch.rand(batch, d, n, generator=generator) * spread


# The matrix A against the spec and the exact Gaussian.


def assert_lattice_matches_the_spec(features):
    """The lattice of one image's features, its matrix and its transpose, against the spec's."""
    lattice = PermutohedralLattice(features)
    for transpose in (False, True):
        expected, vertices = spec_lattice.lattice_matrix(features[0].numpy(), transpose)
        assert lattice.num_vertices == vertices
        matrix = lattice_matrices(lattice, transpose)[0].cpu().numpy()
        np.testing.assert_allclose(matrix, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("d", [1, 2, 3, 5, 8, 16])
def test_lattice_matrix_and_its_transpose_equal_the_spec_step_by_step(d, rng):
    n = 40
    features = random_features(1, d, n, rng, spread=2.0)
    # Quantized features make remainder ties (DESIGN §1 steps 4-5) common.
    features[:, :, : n // 2] = torch.round(features[:, :, : n // 2] * 4) / 4
    assert_lattice_matches_the_spec(features)


@pytest.mark.parametrize("d", [2, 5, 7])
def test_lattice_of_features_near_the_range_limit_equals_the_spec(d, rng):
    """Features up to the 1e7 limit, where the elevated coordinates pass 2^22 and the rounding
    leaves the magic-number path, mixed pixel by pixel with small ones (the build embeds 4
    pixels at a time and takes such groups the scalar way); n = 41: a last partial group."""
    n = 41
    features = random_features(1, d, n, rng, spread=2.0)
    large = torch.rand(1, 1, n, generator=rng) < 0.3
    features = torch.where(large, (torch.rand(1, d, n, generator=rng) * 2 - 1) * 1e7, features)
    assert_lattice_matches_the_spec(features)


def test_spec_scale_factors_for_d5_are_the_designs_float32_values():
    """DESIGN §1 step 2 lists the d = 5 scale factors, one ulp off the correctly rounded ones."""
    assert spec_lattice.scales(5) == [np.float32(v) for v in (3.4641018, 2.0, 1.4142137, 1.0954452, 0.89442724)]


@pytest.mark.parametrize("d", [1, 2, 5, 9, 16])
@pytest.mark.parametrize("channels", [1, 4, 33, 70])
def test_transposed_filter_is_the_adjoint(d, channels, rng, device):
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


def photo_lattice_and_values(d, rng):
    """Spatial (d = 2) or bilateral (d = 5) features of 2 photographs of 19 x 23 pixels, their
    lattice, and 4 channels of values."""
    batch, h, w = 2, 19, 23
    images = random_photo(batch, h, w, rng)
    features = wsloss.bilateral_features(images, 20.0, 6.0)[:, :d] if d == 5 else wsloss.spatial_features(images, 3.0)
    values = torch.rand(batch, 4, h, w, generator=rng)
    return features, PermutohedralLattice(features), values


@pytest.mark.parametrize("d", [2, 5])
def test_normalized_filter_is_within_5_percent_of_the_normalized_exact_gaussian(d, rng):
    """DESIGN §1: normalizing removes the constant c; what is left is bounded."""
    features, lattice, values = photo_lattice_and_values(d, rng)
    approx = lattice.filter(values.double(), normalize=True)
    exact = wsloss.exact.dense_gaussian_filter(features, values, normalize=True)
    rel = ((approx - exact).norm() / exact.norm()).item()
    print(f"d={d}: normalized lattice vs exact Gaussian, relative L2 error {rel:.4f}")
    assert rel < 0.05


@pytest.mark.parametrize("d", [2, 5])
def test_filter_is_about_c_times_the_exact_gaussian(d, rng):
    """DESIGN §1: A ~ c W with c in 0.3..1; after the best c, under 20% relative error remains."""
    features, lattice, values = photo_lattice_and_values(d, rng)
    a = lattice.filter(values.double())
    e = wsloss.exact.dense_gaussian_filter(features, values)
    c = ((a * e).sum() / (e * e).sum()).item()
    rest = ((a - c * e).norm() / (c * e).norm()).item()
    print(f"d={d}: A ~ c W with c={c:.3f}, relative error after c {rest:.3f}")
    assert 0.3 < c < 1.0 and rest < 0.2


@pytest.mark.parametrize("d", [2, 5, 16])
@pytest.mark.parametrize("pixels, spreads", [(97, (0.5, 6.0)), (3001, (6.0, 0.5))])
def test_batched_lattice_equals_its_images_one_by_one(d, pixels, spreads, rng, device):
    """Each image's vertex ids, count and filtering as if built alone; 3001 pixels from the widest
    spread down: the CPU's hash tables then start with room for an earlier image's vertices."""
    sizes = 8
    features = torch.cat(
        [random_features(1, d, pixels, rng, spread=s) for s in np.linspace(*spreads, sizes)]
    ).to(device)
    values = torch.randn(sizes, 21, pixels, generator=rng).to(device)
    batched = PermutohedralLattice(features)
    together = batched.filter(values)
    counts = batched.offsets.diff()
    for b in range(sizes):
        single = PermutohedralLattice(features[b : b + 1])
        assert single.num_vertices == counts[b].item()
        assert torch.equal(batched.vertices[b] - batched.offsets[b], single.vertices[0])
        assert torch.equal(together[b : b + 1], single.filter(values[b : b + 1]))


# Gradients and compilation.


def gradcheck_case(rng, device):
    """A lattice over 2 x 13 pixels with 3 features, and float64 values that require grad."""
    lattice = PermutohedralLattice(random_features(2, 3, 13, rng).to(device))
    values = torch.rand(2, 3, 13, generator=rng, dtype=torch.float64).to(device).requires_grad_()
    return lattice, values


def test_filter_and_its_transpose_pass_gradcheck_and_gradgradcheck(rng, device):
    lattice, values = gradcheck_case(rng, device)
    for transpose in (False, True):
        assert torch.autograd.gradcheck(lambda v: lattice.filter(v, transpose=transpose), (values,))
        assert torch.autograd.gradgradcheck(lambda v: lattice.filter(v, transpose=transpose), (values,))


def test_scaled_filtering_passes_gradcheck_in_values_and_both_scales(rng, device):
    """scale_out * A (scale_in * V): gradients in V and in each scale, whatever it broadcasts over."""
    lattice, values = gradcheck_case(rng, device)
    for shape in ((2, 1, 13), (1, 1, 13), (1, 1, 1)):
        scales = [(torch.rand(shape, generator=rng, dtype=torch.float64) + 0.5).to(device).requires_grad_()
                  for _ in range(2)]
        for transpose in (False, True):
            def scaled(v, scale_in, scale_out):
                return lattice.apply(v, transpose, scale_in=scale_in, scale_out=scale_out)
            assert torch.autograd.gradcheck(scaled, (values, *scales)), (shape, transpose)
            assert torch.autograd.gradcheck(lambda v, s: lattice.apply(v, transpose, scale_in=s), (values, scales[0]))
            assert torch.autograd.gradcheck(lambda v, s: lattice.apply(v, transpose, scale_out=s), (values, scales[1]))


def test_normalized_filter_passes_gradcheck(rng, device):
    lattice, values = gradcheck_case(rng, device)
    assert torch.autograd.gradcheck(lambda v: lattice.filter(v, normalize=True), (values,))


def test_build_and_filter_compile_fullgraph_to_the_eager_result(rng, device):
    features = random_features(2, 5, 50, rng).to(device)
    values = torch.rand(2, 3, 50, generator=rng).to(device)

    def filtered(f, v):
        return PermutohedralLattice(f).filter(v, normalize=True)

    compiled = torch.compile(filtered, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(features, values), filtered(features, values))


# The lattice's tensors.

BATCH, D, N = 3, 4, 200  # the lattice whose tensors the tests below check


def structure_lattice(rng, device):
    return PermutohedralLattice(random_features(BATCH, D, N, rng).to(device), splat_csr=True)


def test_offsets_run_from_zero_to_the_vertex_count(rng, device):
    lattice = structure_lattice(rng, device)
    assert lattice.offsets[0] == 0 and lattice.offsets[-1] == lattice.num_vertices


def test_barycentric_weights_are_non_negative_and_sum_to_one(rng, device):
    lattice = structure_lattice(rng, device)
    torch.testing.assert_close(lattice.weights.sum(-1), torch.ones(BATCH, N, device=device))
    assert (lattice.weights >= -1e-6).all()


def test_each_pixels_vertices_lie_in_its_own_images_vertex_range(rng, device):
    lattice = structure_lattice(rng, device)
    lo = lattice.offsets[:-1].view(BATCH, 1, 1)
    hi = lattice.offsets[1:].view(BATCH, 1, 1)
    assert ((lattice.vertices >= lo) & (lattice.vertices < hi)).all()


def test_neighbour_relation_is_symmetric(rng, device):
    """The + neighbour's - neighbour along every axis is the vertex itself."""
    lattice = structure_lattice(rng, device)
    m = lattice.num_vertices
    nb = lattice.neighbours.long()
    ids = torch.arange(m, device=device).view(m, 1)
    plus = nb[:, :, 1]
    present = plus < m
    back = nb[plus.clamp(max=m - 1), torch.arange(D + 1, device=device).expand(m, D + 1), 0]
    assert torch.equal(back[present], ids.expand(m, D + 1)[present])


def test_splat_csr_holds_every_pixel_corner_slot_once_at_its_vertex(rng, device):
    lattice = structure_lattice(rng, device)
    m = lattice.num_vertices
    ptr = lattice.splat_ptr.long()
    assert ptr[0] == 0 and ptr[-1] == BATCH * N * (D + 1) and (ptr.diff() > 0).all()
    assert torch.equal(lattice.splat_index.sort().values.long(), torch.arange(BATCH * N * (D + 1), device=device))
    owner = torch.repeat_interleave(torch.arange(m, device=device), ptr.diff())
    assert torch.equal(lattice.vertices.reshape(-1)[lattice.splat_index.long()].long(), owner)


def test_hash_table_grows_without_losing_or_duplicating_a_vertex(rng):
    """Noise features in 16 dimensions put nearly every corner at a new vertex: the table
    starts at 2N slots and must grow several times; the vertices are the spec's keys, once
    each, and the grown table still filters with an exact adjoint."""
    n = 1000
    features = random_features(1, 16, n, rng, spread=50.0)
    lattice = PermutohedralLattice(features)
    keys = {key for p in range(n) for key in spec_lattice.embed(features[0, :, p].numpy(), 16)[0]}
    assert lattice.num_vertices == len(keys) > 0.9 * n * 17
    x = torch.randn(1, 3, n, generator=rng, dtype=torch.float64)
    y = torch.randn(1, 3, n, generator=rng, dtype=torch.float64)
    assert torch.allclose((lattice.filter(x) * y).sum(), (x * lattice.filter(y, transpose=True)).sum(), rtol=1e-12)


@pytest.mark.parametrize("d", [2, 5, 6, 7])
def test_vertex_ids_number_each_images_keys_by_first_pixel_and_corner(d, rng):
    """Smooth, image-like features whose simplices recur rows apart (the build reuses the ids of
    simplices it has seen for d <= 6): each image's ids are the spec's keys numbered by their first
    (pixel, corner), whatever path found them."""
    batch, height, width = 2, 40, 90
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    position = torch.stack([rows, cols]).reshape(2, -1).float() / 8
    phase = torch.rand(batch, d, 1, generator=rng) * 6
    colour = torch.sin(position.sum(0) / 3 + phase) * 2 + torch.rand(batch, d, height * width, generator=rng) * 0.05
    features = torch.cat([position.expand(batch, 2, -1), colour[:, : d - 2]], 1)
    lattice = PermutohedralLattice(features)
    for b in range(batch):
        ids, expected = {}, []
        for p in range(height * width):
            for key in spec_lattice.embed(features[b, :, p].numpy(), d)[0]:
                expected.append(ids.setdefault(key, len(ids)))
        assert len(ids) < height * width  # simplices recur: the ids of seen simplices are reused
        assert (lattice.vertices[b].reshape(-1) - lattice.offsets[b]).tolist() == expected


# Inputs: constant features, threads, dtypes, layouts.


def test_normalized_filter_of_constant_features_is_the_mean(rng):
    features = torch.zeros(1, 5, 30)
    values = torch.rand(1, 2, 30, generator=rng, dtype=torch.float64)
    out = PermutohedralLattice(features).filter(values, normalize=True)
    torch.testing.assert_close(out, values.mean(-1, keepdim=True).expand_as(out))


@pytest.mark.parametrize("batch", [1, 3])
def test_thread_count_does_not_change_the_lattice(batch, rng):
    """With fewer images than threads, the build hashes each image in ranges at once and merges
    them: the same tensors, vertex numbering included, as one thread."""
    features = random_features(batch, 5, 200_000, rng)  # enough pixels for three ranges
    features[:, :3] *= 0.05  # smooth, like an image, so ranges share vertices
    threads = torch.get_num_threads()
    built = []
    try:
        for count in (1, 2, 3, 7):
            torch.set_num_threads(count)
            lattice = PermutohedralLattice(features, splat_csr=True)
            built.append((lattice.offsets, *lattice.tensors))
            bare = PermutohedralLattice(features, splat_csr=False)  # the same, less the splat CSR
            assert bare.splat_ptr.numel() == 0 and bare.splat_index.numel() == 0
            assert all(torch.equal(a, b) for a, b in zip(built[-1][:4], (bare.offsets, *bare.tensors[:3])))
    finally:
        torch.set_num_threads(threads)
    for other in built[1:]:
        assert all(torch.equal(a, b) for a, b in zip(built[0], other))


@pytest.mark.parametrize("batch,channels", [(3, 21), (1, 21), (1, 1), (2, 70)])
def test_thread_count_does_not_change_the_filter(batch, channels, rng):
    """One thread, two and three split the splat by images, channel groups (70: chunks within a
    group) or the CSR gather (a lattice built without the CSR scatters instead); all must give
    the same bits."""
    features = random_features(batch, 5, 4000, rng)
    values = torch.rand(batch, channels, 4000, generator=rng)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            for splat_csr in (True, False, None):
                lattice = PermutohedralLattice(features, splat_csr=splat_csr)
                results.append((lattice.filter(values), lattice.filter(values, transpose=True)))
    finally:
        torch.set_num_threads(threads)
    for forward, transposed in results[1:]:
        assert torch.equal(forward, results[0][0]) and torch.equal(transposed, results[0][1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("splat_csr", [True, False])
def test_each_channel_filters_as_it_would_alone(dtype, splat_csr, rng):
    """A C-channel filtering is C one-channel ones, bit for bit: channel counts below, at and
    between the vector lanes the rows are padded to (4), two chunks (33), and pixel counts
    that are no multiple of the 4 x 4 transposes or the 64-pixel tiles; both splats."""
    for batch, pixels in ((1, 67), (3, 4001)):
        lattice = PermutohedralLattice(random_features(batch, 5, pixels, rng), splat_csr=splat_csr)
        for channels in (2, 3, 4, 5, 7, 9, 21, 33):
            values = torch.rand(batch, channels, pixels, generator=rng, dtype=dtype)
            for transpose in (False, True):
                alone = torch.cat([lattice.filter(values[:, ch:ch + 1], transpose=transpose)
                                   for ch in range(channels)], dim=1)
                assert torch.equal(lattice.filter(values, transpose=transpose), alone), (batch, channels, transpose)


def test_the_cpu_build_skips_the_splat_csr_only_where_every_filtering_scatters(rng):
    """Default: a CPU lattice of at least as many images as threads has no CSR (its filterings
    split by images), one of fewer images has it; CUDA lattices always have it."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        for batch, has_csr in ((2, True), (3, False), (4, False)):
            lattice = PermutohedralLattice(random_features(batch, 4, 500, rng))
            assert (lattice.splat_index.numel() > 0) == has_csr, batch
            assert (lattice.splat_ptr.numel() > 0) == has_csr, batch
    finally:
        torch.set_num_threads(threads)


@requires_cuda
def test_cuda_lattices_always_carry_the_splat_csr(rng):
    features = random_features(2, 4, 500, rng)
    with pytest.raises(ValueError, match="always has its splat CSR"):
        torch.ops.wsloss.lattice_build(features.cuda(), False)
    bare = PermutohedralLattice(features, splat_csr=False)
    moved = [t.cuda() for t in bare.tensors]
    with pytest.raises(ValueError, match="no splat CSR"):
        torch.ops.wsloss.lattice_filter(*moved, torch.rand(2, 3, 500, device="cuda"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_values_filter_to_their_dtype_within_1e_2_of_float32(dtype, rng):
    lattice = PermutohedralLattice(random_features(1, 3, 64, rng))
    values = torch.rand(1, 2, 64, generator=rng)
    out = lattice.filter(values.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), lattice.filter(values), rtol=1e-2, atol=1e-2)


def test_grid_and_flat_features_give_the_same_filter(rng):
    features = random_features(2, 5, 6 * 7, rng)
    values = torch.rand(2, 3, 6 * 7, generator=rng)
    flat = PermutohedralLattice(features).filter(values)
    grid = PermutohedralLattice(features.reshape(2, 5, 6, 7)).filter(values.reshape(2, 3, 6, 7))
    assert torch.equal(flat, grid.reshape(2, 3, -1))


def test_bilateral_features_are_one_float32_division_each():
    """bilateral_features divides in float32 exactly like the reference's C++ (DESIGN §1 step 1)."""
    images = torch.rand(1, 3, 17, 29) * 255
    sigma_rgb, sigma_xy = 13.0, 80.0 * 0.5
    f = wsloss.bilateral_features(images, sigma_rgb, sigma_xy)
    x = np.arange(29, dtype=np.float32) / np.float32(sigma_xy)
    np.testing.assert_array_equal(f[0, 0, 0].numpy(), x)
    np.testing.assert_array_equal(f[0, 2:].numpy(), images[0].numpy() / np.float32(sigma_rgb))
    # float64 images: rounded to float32 first; images that require grad: the differentiable copy
    assert torch.equal(wsloss.bilateral_features(images.double(), sigma_rgb, sigma_xy), f)
    differentiable = wsloss.bilateral_features(images.double().requires_grad_(), sigma_rgb, sigma_xy)
    assert differentiable.requires_grad and torch.equal(differentiable.detach(), f)


# lattice_filter_into (CPU and CUDA): lattice_filter into the caller's memory.

each_splat = pytest.mark.parametrize("batch", [1, 5])  # the gather and the scatter splat (2 threads here)


def into_lattice(batch, rng, device):
    """A lattice over batch x 301 pixels with 5 features."""
    return PermutohedralLattice(random_features(batch, 5, 301, rng).to(device))


@each_splat
def test_filter_into_writes_lattice_filters_bits(batch, rng, device):
    lattice = into_lattice(batch, rng, device)
    workspace = torch.empty(0, dtype=torch.float64, device=device)
    for channels in (3, 40, 1):  # 40 > 32: two channel chunks
        values = torch.rand(batch, channels, 301, generator=rng, dtype=torch.float64).to(device)
        for transpose in (False, True):
            out = torch.full_like(values, float("nan"))
            torch.ops.wsloss.lattice_filter_into(*lattice.tensors, values, transpose, out, workspace)
            assert torch.equal(out, torch.ops.wsloss.lattice_filter(*lattice.tensors, values, transpose))


@each_splat
def test_filter_into_grows_its_workspace_once_and_then_reuses_it(batch, rng, device):
    lattice = into_lattice(batch, rng, device)
    workspace = torch.empty(0, dtype=torch.float64, device=device)
    for channels in (3, 40, 1):  # the smaller call after 40 channels reuses the workspace
        values = torch.rand(batch, channels, 301, generator=rng, dtype=torch.float64).to(device)
        for transpose in (False, True):
            out = torch.full_like(values, float("nan"))
            torch.ops.wsloss.lattice_filter_into(*lattice.tensors, values, transpose, out, workspace)
        if channels == 40:
            grown = workspace.data_ptr(), workspace.numel()
    assert (workspace.data_ptr(), workspace.numel()) == grown and grown[1] > 0


@each_splat
def test_filter_into_refuses_an_out_or_workspace_of_the_wrong_shape_dtype_or_layout(batch, rng, device):
    lattice = into_lattice(batch, rng, device)
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


@each_splat
def test_filter_into_refuses_an_out_or_workspace_that_aliases_the_values(batch, rng, device):
    lattice = into_lattice(batch, rng, device)
    values = torch.rand(batch, 4, 301, generator=rng).to(device)
    for out, workspace in ((values, torch.empty(0, device=device)), (torch.empty_like(values), values.flatten())):
        with pytest.raises(RuntimeError, match="refer to a single memory location"):
            torch.ops.wsloss.lattice_filter_into(*lattice.tensors, values, False, out, workspace)


@each_splat
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_filter_into_adds_the_scaled_message_as_the_separate_products_and_sum(batch, dtype, rng, device):
    """out = add + scale_out * A (scale_in * values) (mean field's message, DESIGN §5): bit for bit
    the separate product, filtering, product and sum, for each broadcast of the scales."""
    lattice = into_lattice(batch, rng, device)
    workspace = torch.empty(0, dtype=dtype, device=device)
    for channels in (1, 4, 21, 40):  # fixed-width channel loops, the general one, and two chunks
        values = torch.rand(batch, channels, 301, generator=rng, dtype=dtype).to(device)
        add = torch.randn(batch, channels, 301, generator=rng, dtype=dtype).to(device)
        for shape in ((batch, 1, 301), (1, 1, 301), (1, 1, 1)):
            scale_in = torch.rand(shape, generator=rng, dtype=dtype).to(device) + 0.5
            scale_out = torch.rand(shape, generator=rng, dtype=dtype).to(device) + 0.5
            for transpose in (False, True):
                filtered = torch.ops.wsloss.lattice_filter(*lattice.tensors, values * scale_in, transpose)
                for parts, expected in (({"scale_in": scale_in}, filtered),
                                        ({"scale_in": scale_in, "scale_out": scale_out}, filtered * scale_out),
                                        ({"scale_in": scale_in, "scale_out": scale_out, "add": add},
                                         add + filtered * scale_out),
                                        ({"add": add}, add + torch.ops.wsloss.lattice_filter(*lattice.tensors, values,
                                                                                              transpose))):
                    out = torch.full_like(values, float("nan"))
                    torch.ops.wsloss.lattice_filter_into(*lattice.tensors, values, transpose, out, workspace, **parts)
                    assert torch.equal(out, expected), (channels, shape, transpose, sorted(parts))
                    if "add" not in parts:  # lattice_filter takes the scales too
                        out = torch.ops.wsloss.lattice_filter(*lattice.tensors, values, transpose, **parts)
                        assert torch.equal(out, expected), (channels, shape, transpose, sorted(parts))


@each_splat
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_filter_into_softmax_group_is_torch_softmax_of_the_message_over_each_group(batch, dtype, rng, device):
    """softmax_group = K: a whole mean-field update, softmax over each pixel's groups of K channels
    of add + scale_out * A (scale_in * values), as torch.softmax of the op's own message (CPU: bit
    for bit, torch's softmax in place; CUDA's slice: float64 1e-14, float32 4 ulp); -inf in add
    gives exactly 0; one image of 63 channels in groups of 21 is the dense CRF's stacked
    smoothness kernel."""
    lattice = into_lattice(batch, rng, device)
    workspace = torch.empty(0, dtype=dtype, device=device)
    tolerance = 1e-14 if dtype == torch.float64 else 5e-7
    for channels, groups in ((1, (1,)), (21, (21, 7, 3, 1)), (40, (40, 20, 8)), (63, (63, 21))):
        values = torch.rand(batch, channels, 301, generator=rng, dtype=dtype).to(device)
        add = 20 * torch.randn(batch, channels, 301, generator=rng, dtype=dtype).to(device)
        add[:, 0, :7] = -float("inf")  # a forbidden class (kind="logits")
        scale_in = torch.rand(batch, 1, 301, generator=rng, dtype=dtype).to(device) + 0.5
        scale_out = torch.rand(1, 1, 301, generator=rng, dtype=dtype).to(device) + 0.5
        message = torch.empty_like(values)
        torch.ops.wsloss.lattice_filter_into(*lattice.tensors, values, False, message, workspace, scale_in=scale_in,
                                             scale_out=scale_out, add=add)
        for group in groups:
            out = torch.full_like(values, float("nan"))
            torch.ops.wsloss.lattice_filter_into(*lattice.tensors, values, False, out, workspace, scale_in=scale_in,
                                                 scale_out=scale_out, add=add, softmax_group=group)
            expected = torch.softmax(message.view(batch, channels // group, group, 301), dim=2).view_as(values)
            if group == 1:  # softmax of one -inf: NaN, as torch's
                assert torch.isnan(out[:, 0, :7]).all() and torch.equal(out[:, :, 7:], expected[:, :, 7:])
                continue
            if device == "cpu":
                assert torch.equal(out, expected), (channels, group)
            assert torch.allclose(out, expected, rtol=tolerance, atol=0), (channels, group)
            assert torch.equal(out[:, 0, :7], torch.zeros_like(out[:, 0, :7]))
            sums = out.view(batch, channels // group, group, 301).sum(2)
            assert torch.allclose(sums, torch.ones_like(sums), atol=8 * group * torch.finfo(dtype).eps)


def test_filter_into_refuses_a_softmax_group_that_does_not_divide_the_channels(rng, device):
    lattice = into_lattice(2, rng, device)
    values = torch.rand(2, 21, 301, generator=rng).to(device)
    out, workspace = torch.empty_like(values), torch.empty(0, device=device)
    for group in (-1, 2, 22):
        with pytest.raises(ValueError, match=r"lattice_filter_into: softmax_group must be 0 \(no softmax\) or a "
                                             r"positive divisor of the channels \(C = 21\), got " + str(group)):
            torch.ops.wsloss.lattice_filter_into(*lattice.tensors, values, False, out, workspace, softmax_group=group)
    with pytest.raises(ValueError, match="add and softmax_group need out"):
        lattice.apply(values, softmax_group=21)


def test_filter_and_filter_into_refuse_message_parts_of_the_wrong_shape_dtype_device_or_aliasing_out(rng, device):
    lattice = into_lattice(2, rng, device)
    values = torch.rand(2, 4, 301, generator=rng).to(device)
    out, workspace = torch.empty_like(values), torch.empty(0, device=device)
    bad = [({"scale_in": torch.ones(3, 1, 301, device=device)}, ValueError, "scale_in must be"),
           ({"scale_out": torch.ones(2, 4, 301, device=device)}, ValueError, "scale_out must be"),
           ({"scale_out": torch.ones(2, 301, device=device)}, ValueError, "scale_out must be"),
           ({"scale_in": torch.ones(2, 1, 301, device=device, dtype=torch.float64)}, TypeError, "scale_in must be"),
           ({"add": torch.ones(2, 4, 300, device=device)}, ValueError, "add must be"),
           ({"add": torch.ones(2, 4, 301, device=device, dtype=torch.float64)}, TypeError, "add must be"),
           ({"add": out}, RuntimeError, "refer to a single memory location"),
           ({"scale_out": out.view(-1)[:301].view(1, 1, 301)}, RuntimeError, "single memory location")]
    if device == "cuda":
        bad.append(({"add": torch.ones(2, 4, 301)}, TypeError, "add must be"))
    for parts, error, match in bad:
        with pytest.raises(error, match=match):
            torch.ops.wsloss.lattice_filter_into(*lattice.tensors, values, False, out, workspace, **parts)
        if "add" not in parts and "single memory location" not in match:
            with pytest.raises(error, match="lattice_filter: " + match):
                torch.ops.wsloss.lattice_filter(*lattice.tensors, values, False, **parts)
    with pytest.raises(ValueError, match="add and softmax_group need out"):
        lattice.apply(values, add=values.clone())


# PermutohedralLattice.apply, the one low-level filtering.

APPLY_DTYPES = (torch.float64, torch.float32)
APPLY_CHANNELS = (40, 3)  # the larger first: the smaller reuses the workspace


def apply_lattice(rng, device):
    """A lattice over 3 x 211 pixels with 5 features."""
    return PermutohedralLattice(random_features(3, 5, 211, rng).to(device))


def apply_cases(lattice, rng, device):
    """(values, transpose, lattice_filter's result) for each dtype, channel count and direction."""
    for dtype in APPLY_DTYPES:
        for channels in APPLY_CHANNELS:
            values = torch.rand(3, channels, 211, generator=rng, dtype=dtype).to(device)
            for transpose in (False, True):
                yield values, transpose, torch.ops.wsloss.lattice_filter(*lattice.tensors, values, transpose)


def test_apply_returns_lattice_filters_bits(rng, device):
    lattice = apply_lattice(rng, device)
    for values, transpose, expected in apply_cases(lattice, rng, device):
        assert torch.equal(lattice.apply(values, transpose), expected)
        assert torch.equal(lattice.apply(values, transpose=transpose), expected)


def test_apply_writes_lattice_filters_bits_into_out_in_place_and_returns_it(rng, device):
    lattice = apply_lattice(rng, device)
    for values, transpose, expected in apply_cases(lattice, rng, device):
        out = torch.full_like(values, float("nan"))
        address = out.data_ptr()
        assert lattice.apply(values, transpose, out=out) is out
        assert out.data_ptr() == address and torch.equal(out, expected)


def test_apply_keeps_one_workspace_per_dtype_in_the_lattice_and_reuses_it(rng, device):
    lattice = apply_lattice(rng, device)
    for dtype in APPLY_DTYPES:
        for channels in APPLY_CHANNELS:
            values = torch.rand(3, channels, 211, generator=rng, dtype=dtype).to(device)
            for transpose in (False, True):
                lattice.apply(values, transpose, out=torch.full_like(values, float("nan")))
            if channels == 40:
                workspace = lattice._workspace
                kept = workspace.data_ptr(), workspace.numel()
        assert lattice._workspace is workspace and workspace.dtype == dtype
        assert (workspace.data_ptr(), workspace.numel()) == kept and kept[1] > 0


def test_filter_is_apply_in_the_features_layout(rng, device):
    lattice = apply_lattice(rng, device)
    values = torch.rand(3, 2, 211, generator=rng, dtype=torch.float64).to(device)
    assert torch.equal(lattice.filter(values, transpose=True), lattice.apply(values, True))


def test_apply_refuses_out_for_values_that_require_grad(rng, device):
    """Filtering into out is not differentiable."""
    lattice = apply_lattice(rng, device)
    values = torch.rand(3, 2, 211, generator=rng, dtype=torch.float64).to(device)
    with pytest.raises(ValueError, match="out: .*not differentiable"):
        lattice.apply(values.requires_grad_(), out=torch.empty_like(values))


def test_cpu_filter_gives_the_same_bits_with_and_without_avx2(tmp_path):
    """The filter's AVX2 build (x86-64, GCC; run where torch's CPU capability includes AVX2) and
    its baseline build (ATEN_CPU_CAPABILITY=default) filter every case to the same bits."""
    torch.save(filter_cases(torch.Generator().manual_seed(5)), tmp_path / "inputs.pt")
    worker = os.path.join(os.path.dirname(__file__), "cpu_filter_worker.py")
    results = {}
    for name, capability in (("native", None), ("baseline", "default")):
        env = dict(os.environ)
        env.pop("ATEN_CPU_CAPABILITY", None)
        if capability:
            env["ATEN_CPU_CAPABILITY"] = capability
        run = subprocess.run([sys.executable, worker, str(tmp_path / "inputs.pt"), str(tmp_path / f"{name}.pt")],
                             env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        results[name] = torch.load(tmp_path / f"{name}.pt")
    config = wsloss.build_config()
    avx2 = (platform.machine() in ("x86_64", "AMD64") and config["compiler"].startswith("gcc")
            and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"))
    assert results["native"]["cpu_filter"] == config["cpu_filter"] == ("avx2" if avx2 else "baseline")
    assert results["baseline"]["cpu_filter"] == "baseline"
    native, baseline = results["native"]["outputs"], results["baseline"]["outputs"]
    assert len(native) == len(baseline) == 768
    for got, expected in zip(native, baseline):
        assert torch.equal(got, expected)
