// Argument checks shared by the CPU and CUDA wrappers of the lattice ops. They raise
// ValueError / TypeError in Python (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE).
#pragma once

#include <ATen/ATen.h>

#include "lattice_math.h"

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
  TORCH_CHECK_VALUE(neighbours.dim() == 3 && neighbours.size(1) == d1 && neighbours.size(2) == 2 &&
                        splat_ptr.dim() == 1 && splat_ptr.size(0) == neighbours.size(0) + 1 &&
                        splat_index.numel() == vertices.numel(),
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

}  // namespace wsloss
