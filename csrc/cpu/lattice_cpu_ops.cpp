// CPU kernels of wsloss::lattice_build, lattice_filter and lattice_filter_into: thin
// torch wrappers over the torch-free core in lattice_cpu.h.
#include <ATen/MemoryOverlap.h>
#include <torch/library.h>

#include <algorithm>

#include "../lattice_call.h"
#include "aten_parallel_for.h"
#include "lattice_cpu.h"

namespace wsloss {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lattice_build_cpu(const at::Tensor& features_in) {
  check_lattice_features(features_in);
  const LatticeBuildCall call = lattice_build_call(features_in, features_in.options());
  const at::Tensor& features = call.features;
  const int64_t batch = call.batch, pixels = call.pixels;
  const int d = call.d;
  const auto int_options = features.options().dtype(at::kInt);
  const at::Tensor &vertices = call.vertices, &weights = call.weights;
  cpu::LatticeBuilder builder(features.data_ptr<float>(), batch, d, pixels,
                              vertices.data_ptr<int32_t>(), weights.data_ptr<float>());
  TORCH_CHECK_VALUE(builder.embed_and_hash(cpu::AtenParallelFor{}),
                    "lattice_build: features must be finite and within +-", kMaxFeatureMagnitude,
                    " (check images for NaN/Inf and sigmas for tiny values)");
  const std::vector<int64_t>& offsets = builder.offsets();
  const int64_t num_vertices = offsets.back();
  at::Tensor neighbours = at::empty({num_vertices, d + 1, 2}, int_options);
  at::Tensor splat_ptr = at::empty({num_vertices + 1}, int_options);
  at::Tensor splat_index = at::empty({batch * pixels * (d + 1)}, int_options);
  builder.finish(neighbours.data_ptr<int32_t>(), splat_ptr.data_ptr<int32_t>(),
                 splat_index.data_ptr<int32_t>(), cpu::AtenParallelFor{});
  at::Tensor offsets_tensor = at::empty({batch + 1}, features.options().dtype(at::kLong));
  std::copy(offsets.begin(), offsets.end(), offsets_tensor.data_ptr<int64_t>());
  return {offsets_tensor, vertices, weights, neighbours, splat_ptr, splat_index};
}

// out = A values (transpose: A^T values) into the caller's `out` ([B, C, N], values'
// dtype, contiguous); `workspace` (1-D, values' dtype) is grown when too small and kept, so
// a caller filtering again and again touches no fresh memory (fresh pages cost as much as
// the filtering itself on some machines).
void lattice_filter_into_cpu(const at::Tensor& vertices_in, const at::Tensor& weights_in,
                             const at::Tensor& neighbours_in, const at::Tensor& splat_ptr_in,
                             const at::Tensor& splat_index_in, const at::Tensor& values, bool transpose,
                             const at::Tensor& out, const at::Tensor& workspace, bool validate) {
  check_lattice_filter(vertices_in, weights_in, neighbours_in, splat_ptr_in, splat_index_in, values);
  check_lattice_filter_into(values, out, workspace);
  const LatticeFilterCall call =
      lattice_filter_call(vertices_in, weights_in, neighbours_in, splat_ptr_in, splat_index_in, values);
  if (validate) check_lattice_tensors(call);
  const at::Tensor in = values.contiguous();
  at::assert_no_overlap(out, in);
  const int64_t batch = call.batch, channels = call.channels, pixels = call.pixels;
  const cpu::LatticeView lattice{call.vertices.data_ptr<int32_t>(),    call.weights.data_ptr<float>(),
                                 call.neighbours.data_ptr<int32_t>(),  call.splat_ptr.data_ptr<int32_t>(),
                                 call.splat_index.data_ptr<int32_t>(), batch,
                                 pixels,                               call.num_vertices,
                                 call.d};
  // Channel chunks bound the scratch lattice (about 256 MB for two float buffers).
  const int64_t row_budget = std::max<int64_t>(1, (int64_t{32} << 20) / (lattice.num_vertices + 1));
  const int64_t chunk =
      std::max<int64_t>(1, std::min<int64_t>({channels, cpu::kMaxChunkChannels, row_budget}));
  // One image per thread when there are enough images, else a gather over the CSR.
  const bool scatter = batch >= at::get_num_threads();
  const int64_t scratch = 2 * (lattice.num_vertices + 1) * chunk + (scatter ? 0 : batch * pixels * chunk);
  if (workspace.numel() < scratch) workspace.resize_({scratch});
  at::assert_no_overlap(workspace, in);
  at::assert_no_overlap(workspace, out);
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "lattice_filter_cpu", [&] {
    scalar_t* lattice_a = workspace.data_ptr<scalar_t>();
    scalar_t* lattice_b = lattice_a + (lattice.num_vertices + 1) * chunk;
    scalar_t* pixel_major = scatter ? nullptr : lattice_b + (lattice.num_vertices + 1) * chunk;
    for (int64_t c0 = 0; c0 < channels; c0 += chunk) {
      cpu::lattice_filter<scalar_t>(lattice, in.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                    channels, c0, std::min(chunk, channels - c0), transpose,
                                    lattice_a, lattice_b, pixel_major, cpu::AtenParallelFor{});
    }
  });
}

at::Tensor lattice_filter_cpu(const at::Tensor& vertices, const at::Tensor& weights, const at::Tensor& neighbours,
                              const at::Tensor& splat_ptr, const at::Tensor& splat_index, const at::Tensor& values,
                              bool transpose, bool validate) {
  // lattice_filter_into checks values (and everything else) before touching out.
  at::Tensor out = at::empty(values.sizes(), values.options().memory_format(at::MemoryFormat::Contiguous));
  lattice_filter_into_cpu(vertices, weights, neighbours, splat_ptr, splat_index, values, transpose, out,
                          at::empty({0}, values.options()), validate);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(wsloss, CPU, m) {
  m.impl("lattice_build", &lattice_build_cpu);
  m.impl("lattice_filter", &lattice_filter_cpu);
  m.impl("lattice_filter_into", &lattice_filter_into_cpu);
}

}  // namespace wsloss
