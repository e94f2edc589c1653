// The call recipe shared by the CPU and CUDA wrappers of the lattice ops: the checks (they raise
// ValueError / TypeError in Python: TORCH_CHECK_VALUE / TORCH_CHECK_TYPE), the contiguous inputs
// and the outputs both devices allocate alike.
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>

#include <optional>
#include <utility>

#include "lattice_math.h"
#include "output_memory.h"

namespace wsloss {

inline void check_lattice_features(const at::Tensor& features) {
  TORCH_CHECK_VALUE(features.dim() == 3, "lattice_build: features must be [B, d, N], got shape ",
                    features.sizes());
  TORCH_CHECK_TYPE(features.scalar_type() == at::kFloat,
                   "lattice_build: features must be float32, got ", features.scalar_type());
  const int64_t d = features.size(1);
  TORCH_CHECK_VALUE(d >= 1 && d <= kMaxFeatureDim, "lattice_build: feature dimension d must be in 1..",
                    kMaxFeatureDim, ", got ", d);
  TORCH_CHECK_VALUE(features.size(0) * features.size(2) * (d + 1) < (int64_t{1} << 31),
                    "lattice_build: B * N * (d + 1) must be below 2^31, got shape ", features.sizes());
}

inline void check_lattice_filter(const at::Tensor& vertices, const at::Tensor& weights,
                                 const at::Tensor& neighbours, const at::Tensor& splat_ptr,
                                 const at::Tensor& splat_index, const at::Tensor& values) {
  TORCH_CHECK_VALUE(vertices.dim() == 3 && weights.sizes() == vertices.sizes(),
                    "lattice_filter: vertices and weights must both be [B, N, d+1], got ",
                    vertices.sizes(), " and ", weights.sizes());
  TORCH_CHECK_TYPE(vertices.scalar_type() == at::kInt && weights.scalar_type() == at::kFloat &&
                       neighbours.scalar_type() == at::kInt && splat_ptr.scalar_type() == at::kInt &&
                       splat_index.scalar_type() == at::kInt,
                   "lattice_filter: lattice tensors must come from lattice_build (int32 indices, "
                   "float32 weights)");
  const int64_t d1 = vertices.size(2);
  // The CSR is [M+1] and [B N (d+1)], or both empty (built without it, CPU).
  const bool splat_csr = neighbours.dim() == 3 && splat_ptr.dim() == 1 &&
                         splat_ptr.size(0) == neighbours.size(0) + 1 && splat_index.numel() == vertices.numel();
  const bool no_splat_csr = splat_ptr.numel() == 0 && splat_index.numel() == 0;
  TORCH_CHECK_VALUE(neighbours.dim() == 3 && neighbours.size(1) == d1 && neighbours.size(2) == 2 &&
                        (splat_csr || no_splat_csr),
                    "lattice_filter: inconsistent lattice tensors: neighbours ", neighbours.sizes(),
                    ", splat_ptr ", splat_ptr.sizes(), ", splat_index ", splat_index.sizes());
  TORCH_CHECK_TYPE(values.scalar_type() == at::kFloat || values.scalar_type() == at::kDouble,
                   "lattice_filter: values must be float32 or float64, got ", values.scalar_type());
  TORCH_CHECK_VALUE(values.dim() == 3 && values.size(0) == vertices.size(0) &&
                        values.size(2) == vertices.size(1),
                    "lattice_filter: values must be [B, C, N] = [", vertices.size(0), ", C, ",
                    vertices.size(1), "], got ", values.sizes());
  for (const at::Tensor* t : {&weights, &neighbours, &splat_ptr, &splat_index, &values})
    TORCH_CHECK_VALUE(t->device() == vertices.device(),
                      "lattice_filter: all tensors must be on one device, got ", vertices.device(),
                      " and ", t->device());
}

// The CUDA filtering's splat gathers over the CSR, which a CPU lattice may have been built without.
inline void check_splat_csr_present(const at::Tensor& splat_ptr) {
  TORCH_CHECK_VALUE(splat_ptr.numel() > 0, "lattice_filter: this lattice has no splat CSR (built on the CPU with "
                    "splat_csr=False), which the CUDA filtering needs; build the lattice on the GPU");
}

// lattice_filter_into's own arguments, after check_lattice_filter: out [B, C, N] like values
// (its dtype and device), contiguous; workspace 1-D of values' dtype on its device.
inline void check_lattice_filter_into(const at::Tensor& values, const at::Tensor& out, const at::Tensor& workspace) {
  TORCH_CHECK_VALUE(out.sizes() == values.sizes() && out.scalar_type() == values.scalar_type() &&
                        out.is_contiguous() && out.device() == values.device(),
                    "lattice_filter_into: out must be a contiguous ", values.scalar_type(), " tensor of shape ",
                    values.sizes(), " like values, got ", out.scalar_type(), " ", out.sizes());
  TORCH_CHECK_VALUE(workspace.dim() == 1 && workspace.scalar_type() == values.scalar_type() &&
                        workspace.device() == values.device(),
                    "lattice_filter_into: workspace must be a 1-D ", values.scalar_type(), " tensor, got ",
                    workspace.scalar_type(), " ", workspace.sizes());
}

// lattice_filter(_into)'s optional message parts (out = softmax_groups(add + scale_out * A
// (scale_in * values))): each scale [B or 1, 1, N or 1] (broadcast over images, channels and
// pixels), add [B, C, N] like values, not overlapping out; all of values' dtype and device;
// softmax_group 0 or a divisor of C. `op` names the op in errors.
inline void check_filter_affine(const at::Tensor& values, const at::Tensor& out,
                                const std::optional<at::Tensor>& scale_in, const std::optional<at::Tensor>& scale_out,
                                const std::optional<at::Tensor>& add, int64_t softmax_group, const char* op) {
  const int64_t batch = values.size(0), pixels = values.size(2);
  TORCH_CHECK_VALUE(softmax_group == 0 || (softmax_group > 0 && values.size(1) % softmax_group == 0), op,
                    ": softmax_group must be 0 (no softmax) or a positive divisor of the channels (C = ",
                    values.size(1), "), got ", softmax_group);
  for (const auto& [name, scale] : {std::pair<const char*, const std::optional<at::Tensor>*>{"scale_in", &scale_in},
                                    {"scale_out", &scale_out}}) {
    if (!scale->has_value()) continue;
    const at::Tensor& t = scale->value();
    TORCH_CHECK_VALUE(t.dim() == 3 && (t.size(0) == 1 || t.size(0) == batch) && t.size(1) == 1 &&
                          (t.size(2) == 1 || t.size(2) == pixels),
                      op, ": ", name, " must be [B or 1, 1, N or 1] = [", batch, " or 1, 1, ",
                      pixels, " or 1], got ", t.sizes());
    TORCH_CHECK_TYPE(t.scalar_type() == values.scalar_type() && t.device() == values.device(),
                     op, ": ", name, " must be ", values.scalar_type(), " on ", values.device(),
                       " like values, got ", t.scalar_type(), " on ", t.device());
    at::assert_no_overlap(out, t);
  }
  if (!add.has_value()) return;
  const at::Tensor& t = add.value();
  TORCH_CHECK_VALUE(t.sizes() == values.sizes(), op, ": add must be [B, C, N] like values ",
                    values.sizes(), ", got ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == values.scalar_type() && t.device() == values.device(),
                   op, ": add must be ", values.scalar_type(), " on ", values.device(),
                   " like values, got ", t.scalar_type(), " on ", t.device());
  at::assert_no_overlap(out, t);
}

// A checked, contiguous scale of check_filter_affine ([B or 1, 1, N or 1]) as the kernels'
// PixelScale (strides 0 where it broadcasts); undefined: no scale.
template <typename scalar_t>
PixelScale<scalar_t> pixel_scale(const at::Tensor& scale) {
  if (!scale.defined()) return PixelScale<scalar_t>{};
  return PixelScale<scalar_t>{scale.data_ptr<scalar_t>(), scale.size(0) == 1 ? 0 : scale.size(2),
                              scale.size(2) == 1 ? 0 : 1};
}

// lattice_build's contiguous features and its per-corner outputs vertices [B, N, d+1] int32 and
// weights [B, N, d+1] float32.
struct LatticeBuildCall {
  at::Tensor features, vertices, weights;
  int64_t batch, pixels;
  int d;
};

// After check_lattice_features (and, on CUDA, under the device guard); the outputs with `options`
// (the features' dtype and device).
inline LatticeBuildCall lattice_build_call(const at::Tensor& features_in, const at::TensorOptions& options) {
  const at::Tensor features = features_in.contiguous();
  const int64_t batch = features.size(0), pixels = features.size(2);
  const int d = static_cast<int>(features.size(1));
  at::Tensor vertices = empty_output({batch, pixels, d + 1}, options.dtype(at::kInt));
  at::Tensor weights = empty_output({batch, pixels, d + 1}, options);
  return {features, vertices, weights, batch, pixels, d};
}

// A filtering's lattice tensors, contiguous, and its sizes: B, C, N (from values), the vertex
// count M and the feature dimension d.
struct LatticeFilterCall {
  at::Tensor vertices, weights, neighbours, splat_ptr, splat_index;
  int64_t batch, channels, pixels, num_vertices;
  int d;
};

// After check_lattice_filter (and, on CUDA, under the device guard).
inline LatticeFilterCall lattice_filter_call(const at::Tensor& vertices, const at::Tensor& weights,
                                             const at::Tensor& neighbours, const at::Tensor& splat_ptr,
                                             const at::Tensor& splat_index, const at::Tensor& values) {
  return {vertices.contiguous(),   weights.contiguous(), neighbours.contiguous(),     splat_ptr.contiguous(),
          splat_index.contiguous(), values.size(0),      values.size(1),             values.size(2),
          neighbours.size(0),       static_cast<int>(vertices.size(2)) - 1};
}

// The lattice tensors of a public lattice_filter call, checked for everything the filtering
// dereferences (docs/DESIGN.md §6), so that tensors not from one lattice_build (corrupted, or
// mixed from two lattices) are a ValueError, never a read out of bounds. With
// P = B N (d+1) corners, M vertices and E = N (d+1) corners per image, the CSR is a bijection
// that keeps images apart:
//   splat_ptr starts at 0, ends at P and strictly increases (every vertex has a corner), and
//   a vertex's entries lie in one image's block of E entries;
//   every splat_index is a corner of the entry's image, listed under the vertex that corner
//   names (vertices), in increasing order within a vertex; hence each corner is listed once
//   and every vertex index lies in [0, M);
//   every neighbour lies in [0, M] (M: missing).
// Without a CSR (a CPU lattice built without it), only that every vertex and neighbour index lies
// in range. Device-agnostic ATen passes and one host sync; the wrappers call it unless told the
// tensors come straight from lattice_build (PermutohedralLattice).
inline void check_lattice_tensors(const LatticeFilterCall& call) {
  const int64_t corners = call.vertices.numel(), num_vertices = call.num_vertices;
  const int64_t image_corners = call.pixels * (call.d + 1);
  if (call.splat_ptr.numel() == 0) {  // no CSR (the splat scatters): every index in range suffices
    const at::Tensor valid = ((call.vertices >= 0) & (call.vertices < num_vertices)).all() &
                             ((call.neighbours >= 0) & (call.neighbours <= num_vertices)).all();
    TORCH_CHECK_VALUE(valid.item<bool>(), "lattice_filter: the lattice tensors are not from one lattice_build (an index out of "
                      "range); pass the tensors of one PermutohedralLattice unchanged");
    return;
  }
  const at::Tensor ptr = call.splat_ptr.to(at::kLong);
  at::Tensor valid = (ptr[0] == 0) & (ptr[num_vertices] == corners) &
                     ((call.neighbours >= 0) & (call.neighbours <= num_vertices)).all();
  if (num_vertices > 0) {
    const at::Tensor begin = ptr.slice(0, 0, num_vertices), end = ptr.slice(0, 1);
    valid = valid & (end > begin).all();
    if (image_corners > 0) valid = valid & (begin.div(image_corners, "floor") ==
                                            (end - 1).div(image_corners, "floor")).all();
  }
  if (corners > 0 && image_corners > 0) {
    const at::Tensor index = call.splat_index.to(at::kLong);
    const at::Tensor entries = at::arange(corners, ptr.options());
    valid = valid & ((index >= 0) & (index < corners)).all() &
            (index.div(image_corners, "floor") == entries.div(image_corners, "floor")).all();
    // The vertex owning entry s (-1 or M where splat_ptr is out of order: refused above).
    const at::Tensor owner = at::searchsorted(ptr, entries, /*out_int32=*/false, /*right=*/true) - 1;
    const at::Tensor named = call.vertices.reshape({-1}).index({index.clamp(0, corners - 1)}).to(at::kLong);
    valid = valid & (named == owner).all();
    if (corners > 1) {
      const at::Tensor same_vertex = owner.slice(0, 1) == owner.slice(0, 0, corners - 1);
      valid = valid & (same_vertex.logical_not() | (index.slice(0, 1) > index.slice(0, 0, corners - 1))).all();
    }
  }
  TORCH_CHECK_VALUE(valid.item<bool>(),
                    "lattice_filter: the lattice tensors are not from one lattice_build (an index out of range, "
                    "splat_ptr out of order, or tensors of two lattices); pass the tensors of one "
                    "PermutohedralLattice unchanged");
}

}  // namespace wsloss
