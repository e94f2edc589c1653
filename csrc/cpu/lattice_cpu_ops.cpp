// CPU kernels of wsloss::lattice_build, lattice_filter and lattice_filter_into: thin
// torch wrappers over the torch-free core in lattice_cpu.h and lattice_filter_cpu.h.
#include <ATen/MemoryOverlap.h>
#include <ATen/Version.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../lattice_call.h"
#include "aten_parallel_for.h"
#include "parallel_for.h"
#include "lattice_cpu.h"
#include "lattice_filter_cpu.h"

namespace wsloss {
namespace cpu {

// True when the filter runs its AVX2 build: this binary has one and torch's CPU capability
// includes AVX2 (ATEN_CPU_CAPABILITY=default turns both off, as for torch's own kernels).
bool filter_uses_avx2() {
  static const bool avx2 = [] {
    const std::string capability = at::get_cpu_capability();
    return avx2_filter_kernels<float>() != nullptr && (capability == "AVX2" || capability == "AVX512");
  }();
  return avx2;
}

}  // namespace cpu

namespace {

// The filter's kernels that this CPU runs (the same bits either way).
template <typename scalar_t>
const cpu::FilterKernels<scalar_t>& filter_kernels() {
  return cpu::filter_uses_avx2() ? *cpu::avx2_filter_kernels<scalar_t>() : cpu::kFilterKernels<scalar_t>;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lattice_build_cpu(const at::Tensor& features_in, bool splat_csr) {
  check_lattice_features(features_in);
  const LatticeBuildCall call = lattice_build_call(features_in, features_in.options());
  const at::Tensor& features = call.features;
  const int64_t batch = call.batch, pixels = call.pixels;
  const int d = call.d;
  const auto int_options = features.options().dtype(at::kInt);
  const at::Tensor &vertices = call.vertices, &weights = call.weights;
  cpu::LatticeBuilder builder(features.data_ptr<float>(), batch, d, pixels,
                              vertices.data_ptr<int32_t>(), weights.data_ptr<float>());
  TORCH_CHECK_VALUE(builder.embed_and_hash(cpu::AtenParallelFor{}, at::get_num_threads()),
                    "lattice_build: features must be finite and within +-", kMaxFeatureMagnitude,
                    " (check images for NaN/Inf and sigmas for tiny values)");
  const std::vector<int64_t>& offsets = builder.offsets();
  const int64_t num_vertices = offsets.back();
  at::Tensor neighbours = empty_output({num_vertices, d + 1, 2}, int_options);
  // Without the CSR (the caller's choice, when no filtering of this lattice will gather): two
  // empty tensors, a pass and B N (d+1) int32 fewer.
  at::Tensor splat_ptr = at::empty({splat_csr ? num_vertices + 1 : 0}, int_options);
  at::Tensor splat_index = empty_output({splat_csr ? batch * pixels * (d + 1) : 0}, int_options);
  builder.finish(neighbours.data_ptr<int32_t>(), splat_csr ? splat_ptr.data_ptr<int32_t>() : nullptr,
                 splat_csr ? splat_index.data_ptr<int32_t>() : nullptr, cpu::AtenParallelFor{});
  at::Tensor offsets_tensor = at::empty({batch + 1}, features.options().dtype(at::kLong));
  std::copy(offsets.begin(), offsets.end(), offsets_tensor.data_ptr<int64_t>());
  return {offsets_tensor, vertices, weights, neighbours, splat_ptr, splat_index};
}

// out = A values (transpose: A^T values) into the caller's `out` ([B, C, N], values'
// dtype, contiguous); `workspace` (1-D, values' dtype) is grown when too small and kept, so
// a caller filtering again and again touches no fresh memory (fresh pages cost as much as
// the filtering itself on some machines). An undefined workspace (a one-shot filtering): the
// scratch comes fresh from empty_output and goes with the call. `op` names the calling op in errors.
void filter_into_cpu(const at::Tensor& vertices_in, const at::Tensor& weights_in, const at::Tensor& neighbours_in,
                     const at::Tensor& splat_ptr_in, const at::Tensor& splat_index_in, const at::Tensor& values,
                     bool transpose, const at::Tensor& out, const at::Tensor& workspace, bool validate,
                     const std::optional<at::Tensor>& scale_in, const std::optional<at::Tensor>& scale_out,
                     const std::optional<at::Tensor>& add, int64_t softmax_group, const char* op) {
  check_lattice_filter(vertices_in, weights_in, neighbours_in, splat_ptr_in, splat_index_in, values);
  if (workspace.defined()) check_lattice_filter_into(values, out, workspace);
  check_filter_affine(values, out, scale_in, scale_out, add, softmax_group, op);
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
  // How the threads share the work. All three add each vertex's contributions in the same
  // (pixel, corner) order, so they give identical results for any thread count:
  //  - images: when there are enough images, one image per thread, a whole serial filtering
  //    (scatter, blur, slice) of each: its blur passes touch its own lattice rows only, with
  //    no barrier between them (about 30% faster than a blur of all images at once with
  //    200,000 vertices an image, 2 threads);
  //  - channel groups: else, with enough channels, one group of channels per thread, each a
  //    whole serial filtering (scatter, blur, slice) in its own lattice buffers: every thread
  //    streams the lattice once, and the vertex rows it scatters into stay in cache;
  //  - gather: else (few images and channels), per vertex over the CSR, from a pixel-major copy;
  //    a lattice built without the CSR scatters here too, with fewer threads than images.
  const int64_t threads = at::get_num_threads();
  // First vertex of each image, then M: an image's first vertex is its first pixel's first corner
  // (kept in [previous image's, M], so that even a malformed lattice's ranges stay in the buffers).
  std::vector<int64_t> first_vertex;
  if (batch >= threads) {
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t first = pixels > 0 ? lattice.vertices[b * pixels * (lattice.d + 1)] : lattice.num_vertices;
      first_vertex.push_back(std::clamp<int64_t>(first, b > 0 ? first_vertex.back() : 0, lattice.num_vertices));
    }
  }
  first_vertex.push_back(lattice.num_vertices);
  // The lattice of a caller that validates may not be one the build made: its images are
  // filtered apart only where they own their vertices.
  const bool by_images =
      batch >= threads && (!validate || cpu::images_own_their_vertices(lattice, first_vertex, cpu::AtenParallelFor{}));
  const int64_t groups = by_images || channels < threads ? 1 : threads;
  const bool gather = !by_images && groups == 1 && call.splat_ptr.numel() > 0;
  // Channel chunks bound the scratch lattices (about 256 MB for all float buffers).
  const int64_t rows = lattice.num_vertices + 1;
  const int64_t row_budget = std::max<int64_t>(1, (int64_t{32} << 20) / rows / groups);
  const int64_t group_channels = (channels + groups - 1) / groups;
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>({group_channels, cpu::kMaxChunkChannels, row_budget}));
  const int64_t lanes = cpu::padded_channels(chunk);  // a scratch row's width
  const int64_t scratch = groups * 2 * rows * lanes + (gather ? batch * pixels * lanes : 0);
  const at::Tensor scratch_tensor = workspace.defined() ? workspace : empty_output({scratch}, values.options());
  if (scratch_tensor.numel() < scratch) scratch_tensor.resize_({scratch});
  at::assert_no_overlap(scratch_tensor, in);
  at::assert_no_overlap(scratch_tensor, out);
  for (const auto* part : {&scale_in, &scale_out, &add})
    if (part->has_value()) at::assert_no_overlap(scratch_tensor, part->value());
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "lattice_filter_cpu", [&] {
    // Contiguous copies of the optional parts, alive for the whole filtering.
    const at::Tensor in_scale = scale_in ? scale_in->contiguous() : at::Tensor();
    const at::Tensor out_scale = scale_out ? scale_out->contiguous() : at::Tensor();
    const at::Tensor addend = add ? add->contiguous() : at::Tensor();
    const cpu::FilterAffine<scalar_t> affine{pixel_scale<scalar_t>(in_scale), pixel_scale<scalar_t>(out_scale),
                                             addend.defined() ? addend.data_ptr<scalar_t>() : nullptr};
    const cpu::FilterKernels<scalar_t>& kernels = filter_kernels<scalar_t>();
    // Channels [begin, end) in chunks, with the lattice buffers at `buffers`.
    auto filter_channels = [&](int64_t begin, int64_t end, scalar_t* buffers,
                               const cpu::ParallelForFunction& parallel_for) {
      scalar_t* pixel_major = gather ? buffers + 2 * rows * lanes : nullptr;
      for (int64_t c0 = begin; c0 < end; c0 += chunk) {
        kernels.filter(lattice, in.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), channels, c0,
                       std::min(chunk, end - c0), transpose, buffers, buffers + rows * lanes, pixel_major,
                       parallel_for, affine);
      }
    };
    scalar_t* buffers = scratch_tensor.data_ptr<scalar_t>();
    if (by_images) {
      cpu::clear_missing_rows(buffers, buffers + rows * lanes, lattice.num_vertices, lanes);
      at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          const cpu::LatticeRange part{b, b + 1, first_vertex[b], first_vertex[b + 1]};
          for (int64_t c0 = 0; c0 < channels; c0 += chunk) {
            kernels.filter_images(lattice, part, in.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), channels, c0,
                                  std::min(chunk, channels - c0), lanes, transpose, buffers, buffers + rows * lanes,
                                  affine);
          }
        }
      });
      return;
    }
    if (groups == 1) {
      filter_channels(0, channels, buffers, cpu::AtenParallelFor{});
      return;
    }
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g) {
        filter_channels(g * channels / groups, (g + 1) * channels / groups, buffers + g * 2 * rows * lanes,
                        cpu::SerialFor{});
      }
    });
  });
  if (softmax_group > 0) {
    // torch's own softmax, in place: measured against the same softmax in the slice's tiles
    // (SSE, where torch's kernel has AVX2), one pass of it is faster (benchmarks/RESULTS.md).
    at::Tensor classes = out.view({batch, channels / softmax_group, softmax_group, pixels});
    at::softmax_out(classes, classes, 2);
  }
}

void lattice_filter_into_cpu(const at::Tensor& vertices, const at::Tensor& weights, const at::Tensor& neighbours,
                             const at::Tensor& splat_ptr, const at::Tensor& splat_index, const at::Tensor& values,
                             bool transpose, const at::Tensor& out, const at::Tensor& workspace, bool validate,
                             const std::optional<at::Tensor>& scale_in, const std::optional<at::Tensor>& scale_out,
                             const std::optional<at::Tensor>& add, int64_t softmax_group) {
  filter_into_cpu(vertices, weights, neighbours, splat_ptr, splat_index, values, transpose, out, workspace, validate,
                  scale_in, scale_out, add, softmax_group, "lattice_filter_into");
}

at::Tensor lattice_filter_cpu(const at::Tensor& vertices, const at::Tensor& weights, const at::Tensor& neighbours,
                              const at::Tensor& splat_ptr, const at::Tensor& splat_index, const at::Tensor& values,
                              bool transpose, bool validate, const std::optional<at::Tensor>& scale_in,
                              const std::optional<at::Tensor>& scale_out) {
  // filter_into_cpu checks values (and everything else) before touching out.
  at::Tensor out = empty_output(values.sizes(), values.options());
  filter_into_cpu(vertices, weights, neighbours, splat_ptr, splat_index, values, transpose, out, at::Tensor(), validate,
                  scale_in, scale_out, std::nullopt, 0, "lattice_filter");
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(wsloss, CPU, m) {
  m.impl("lattice_build", &lattice_build_cpu);
  m.impl("lattice_filter", &lattice_filter_cpu);
  m.impl("lattice_filter_into", &lattice_filter_into_cpu);
}

}  // namespace wsloss
