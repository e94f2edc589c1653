// CUDA kernels of wsloss::lattice_build, lattice_filter and lattice_filter_into: thin torch
// wrappers that allocate from the caching allocator and launch on the current stream.
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../lattice_call.h"
#include "lattice_cuda.h"

namespace wsloss {
namespace {

at::Tensor workspace(size_t bytes, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(std::max<size_t>(bytes, 1))}, like.options().dtype(at::kByte));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lattice_build_cuda(const at::Tensor& features_in, bool splat_csr) {
  check_lattice_features(features_in);
  TORCH_CHECK_VALUE(splat_csr, "lattice_build: a CUDA lattice always has its splat CSR (its splat gathers); "
                    "pass splat_csr=True");
  // Refused before anything is allocated: the one hash table's slots are indexed in int32.
  const int64_t capacity = cuda::table_capacity(features_in.size(2), static_cast<int>(features_in.size(1)));
  TORCH_CHECK_VALUE(features_in.size(0) * capacity < (int64_t{1} << 31),
                    "lattice_build: batch too large for one hash table (B = ", features_in.size(0), ", N = ",
                    features_in.size(2), ", d = ", features_in.size(1), "); split it");
  const c10::cuda::CUDAGuard guard(features_in.device());
  const LatticeBuildCall call = lattice_build_call(features_in, features_in.options());
  const at::Tensor &features = call.features, &vertices = call.vertices, &weights = call.weights;
  const int64_t batch = call.batch, pixels = call.pixels;
  const int d = call.d;
  const int64_t corners = batch * pixels * (d + 1);
  const auto ints = features.options().dtype(at::kInt);
  if (corners == 0) {  // no pixels: an empty lattice
    return {at::zeros({batch + 1}, features.options().dtype(at::kLong)), vertices, weights,
            at::empty({0, d + 1, 2}, ints), at::zeros({1}, ints), at::empty({0}, ints)};
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  at::Tensor remainder = at::empty({corners}, ints);
  at::Tensor rank = at::empty({corners}, features.options().dtype(at::kChar));
  // coordinate minima and maxima [2][B][d], then the key layout
  const int64_t layout_ints = (sizeof(cuda::KeyLayout) + sizeof(int32_t) - 1) / sizeof(int32_t);
  at::Tensor key_ranges = at::empty({2 * batch * d + layout_ints}, ints);
  at::Tensor table_key = at::empty({batch * capacity}, features.options().dtype(at::kLong));
  at::Tensor table_corner = at::empty({batch * capacity}, ints);
  at::Tensor first = at::empty({corners}, ints);
  at::Tensor vertex_id = at::empty({corners}, ints);
  const size_t scan_bytes = cuda::scan_workspace_bytes(corners);
  at::Tensor scan_workspace = workspace(scan_bytes, features);
  at::Tensor offsets = at::empty({batch + 1}, features.options().dtype(at::kLong));
  at::Tensor status = at::empty({2}, ints);
  int32_t* ranges = key_ranges.data_ptr<int32_t>();
  const cuda::BuildBuffers buffers{features.data_ptr<float>(), batch, pixels, d, capacity,
                                   remainder.data_ptr<int32_t>(), rank.data_ptr<int8_t>(), weights.data_ptr<float>(),
                                   vertices.data_ptr<int32_t>(), ranges, ranges + batch * d,
                                   reinterpret_cast<cuda::KeyLayout*>(ranges + 2 * batch * d),
                                   reinterpret_cast<cuda::PackedKey*>(table_key.data_ptr<int64_t>()),
                                   table_corner.data_ptr<int32_t>(), first.data_ptr<int32_t>(),
                                   vertex_id.data_ptr<int32_t>(), offsets.data_ptr<int64_t>(),
                                   status.data_ptr<int32_t>()};
  C10_CUDA_CHECK(cuda::lattice_build_count(buffers, scan_workspace.data_ptr(), scan_bytes, stream));
  const at::Tensor status_host = status.cpu();  // the build's one host sync: sizes the outputs
  TORCH_CHECK_VALUE(status_host[1].item<int32_t>() == 0, "lattice_build: features must be finite and within +-",
                    kMaxFeatureMagnitude, " (check images for NaN/Inf and sigmas for tiny values)");
  const int64_t num_vertices = status_host[0].item<int32_t>();

  at::Tensor neighbours = at::empty({num_vertices, d + 1, 2}, ints);
  at::Tensor splat_ptr = at::empty({num_vertices + 1}, ints);
  at::Tensor splat_index = at::empty({corners}, ints);
  at::Tensor owner = at::empty({num_vertices}, ints);
  at::Tensor sort_keys = at::empty({corners}, ints);
  at::Tensor sort_values = at::empty({corners}, ints);
  const size_t sort_bytes = cuda::sort_workspace_bytes(corners);
  at::Tensor sort_workspace = workspace(sort_bytes, features);
  const cuda::FinishBuffers finish{num_vertices, neighbours.data_ptr<int32_t>(), splat_ptr.data_ptr<int32_t>(),
                                   splat_index.data_ptr<int32_t>(), owner.data_ptr<int32_t>(),
                                   sort_keys.data_ptr<int32_t>(), sort_values.data_ptr<int32_t>(),
                                   sort_workspace.data_ptr(), sort_bytes};
  C10_CUDA_CHECK(cuda::lattice_build_finish(buffers, finish, stream));
  return {offsets, vertices, weights, neighbours, splat_ptr, splat_index};
}

// The scratch of one filtering, in values: the two lattices [M+1][C] and the splat's
// carries [chunks][C].
int64_t filter_scratch_size(const at::Tensor& vertices, const at::Tensor& neighbours, int64_t channels) {
  const int64_t chunks = cuda::splat_chunks(vertices.size(0), vertices.size(1) * vertices.size(2));
  return (2 * (neighbours.size(0) + 1) + chunks) * channels;
}

// out = softmax_groups(add + scale_out * A (scale_in * values)) (transpose: A^T), [B, C, N]
// contiguous, each part optional (the kernels' own passes, FilterBuffers), with `scratch` (at
// least filter_scratch_size values of values' dtype) for the lattices. Arguments checked, device guarded.
void launch_filter(const LatticeFilterCall& call, const at::Tensor& values, bool transpose, const at::Tensor& out,
                   const at::Tensor& scratch, const std::optional<at::Tensor>& scale_in,
                   const std::optional<at::Tensor>& scale_out, const std::optional<at::Tensor>& add,
                   int64_t softmax_group) {
  const int64_t batch = call.batch, channels = call.channels, pixels = call.pixels;
  const int64_t num_vertices = call.num_vertices;
  // Pixel-major input, so that the threads of one splat entry read consecutive channels;
  // the slice writes the channel-planar result directly.
  const at::Tensor in = values.transpose(1, 2).contiguous();
  // Contiguous parts, alive until the kernels are queued (the caching allocator keeps their
  // memory for this stream's later work).
  const at::Tensor in_scale = scale_in ? scale_in->contiguous() : at::Tensor();
  const at::Tensor out_scale = scale_out ? scale_out->contiguous() : at::Tensor();
  const at::Tensor addend = add ? add->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "lattice_filter_cuda", [&] {
    scalar_t* lattice_a = scratch.data_ptr<scalar_t>();
    scalar_t* lattice_b = lattice_a + (num_vertices + 1) * channels;
    const cuda::FilterBuffers<scalar_t> buffers{
        call.vertices.data_ptr<int32_t>(), call.weights.data_ptr<float>(), call.neighbours.data_ptr<int32_t>(),
        call.splat_ptr.data_ptr<int32_t>(), call.splat_index.data_ptr<int32_t>(), batch, pixels, num_vertices,
        channels, call.d, in.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), lattice_a, lattice_b,
        lattice_b + (num_vertices + 1) * channels, pixel_scale<scalar_t>(in_scale), pixel_scale<scalar_t>(out_scale),
        addend.defined() ? addend.data_ptr<scalar_t>() : nullptr, softmax_group};
    C10_CUDA_CHECK(cuda::lattice_filter<scalar_t>(buffers, transpose, c10::cuda::getCurrentCUDAStream()));
  });
}

// The same filtering into the caller's out ([B, C, N], values' dtype, contiguous), the
// lattices in `workspace` (1-D, values' dtype), grown when too small and kept: the CPU op's
// contract, so that a loop reuses its memory on either device and no caller branches on it.
// `op` names the calling op in errors.
void filter_into_cuda(const at::Tensor& vertices, const at::Tensor& weights, const at::Tensor& neighbours,
                      const at::Tensor& splat_ptr, const at::Tensor& splat_index, const at::Tensor& values,
                      bool transpose, const at::Tensor& out, const at::Tensor& workspace, bool validate,
                      const std::optional<at::Tensor>& scale_in, const std::optional<at::Tensor>& scale_out,
                      const std::optional<at::Tensor>& add, int64_t softmax_group, const char* op) {
  check_lattice_filter(vertices, weights, neighbours, splat_ptr, splat_index, values);
  check_splat_csr_present(splat_ptr);
  check_lattice_filter_into(values, out, workspace);
  check_filter_affine(values, out, scale_in, scale_out, add, softmax_group, op);
  const c10::cuda::CUDAGuard guard(values.device());
  const LatticeFilterCall call = lattice_filter_call(vertices, weights, neighbours, splat_ptr, splat_index, values);
  if (validate) check_lattice_tensors(call);
  at::assert_no_overlap(out, values);
  const int64_t scratch = filter_scratch_size(vertices, neighbours, values.size(1));
  if (workspace.numel() < scratch) workspace.resize_({scratch});
  at::assert_no_overlap(workspace, values);
  at::assert_no_overlap(workspace, out);
  for (const auto* part : {&scale_in, &scale_out, &add})
    if (part->has_value()) at::assert_no_overlap(workspace, part->value());
  launch_filter(call, values, transpose, out, workspace, scale_in, scale_out, add, softmax_group);
}

void lattice_filter_into_cuda(const at::Tensor& vertices, const at::Tensor& weights, const at::Tensor& neighbours,
                              const at::Tensor& splat_ptr, const at::Tensor& splat_index, const at::Tensor& values,
                              bool transpose, const at::Tensor& out, const at::Tensor& workspace, bool validate,
                              const std::optional<at::Tensor>& scale_in, const std::optional<at::Tensor>& scale_out,
                              const std::optional<at::Tensor>& add, int64_t softmax_group) {
  filter_into_cuda(vertices, weights, neighbours, splat_ptr, splat_index, values, transpose, out, workspace, validate,
                   scale_in, scale_out, add, softmax_group, "lattice_filter_into");
}

at::Tensor lattice_filter_cuda(const at::Tensor& vertices, const at::Tensor& weights, const at::Tensor& neighbours,
                               const at::Tensor& splat_ptr, const at::Tensor& splat_index, const at::Tensor& values,
                               bool transpose, bool validate, const std::optional<at::Tensor>& scale_in,
                               const std::optional<at::Tensor>& scale_out) {
  // filter_into_cuda checks values (and everything else) before touching out.
  at::Tensor out = at::empty(values.sizes(), values.options());
  filter_into_cuda(vertices, weights, neighbours, splat_ptr, splat_index, values, transpose, out,
                   at::empty({0}, values.options()), validate, scale_in, scale_out, std::nullopt, 0, "lattice_filter");
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(wsloss, CUDA, m) {
  m.impl("lattice_build", &lattice_build_cuda);
  m.impl("lattice_filter", &lattice_filter_cuda);
  m.impl("lattice_filter_into", &lattice_filter_into_cuda);
}

}  // namespace wsloss
