// Argument checks shared by the CPU and CUDA wrappers of wsloss::grid_crf(_backward).
#pragma once

#include <ATen/ATen.h>

#include "grid_crf_math.h"

namespace wsloss {

inline void check_grid_crf(const at::Tensor& segmentations, const at::Tensor& edge_weights) {
  TORCH_CHECK_VALUE(segmentations.dim() == 4, "grid_crf: segmentations must be [B, K, H, W], got shape ",
                    segmentations.sizes());
  TORCH_CHECK_TYPE(segmentations.scalar_type() == at::kFloat || segmentations.scalar_type() == at::kDouble,
                   "grid_crf: segmentations must be float32 or float64, got ", segmentations.scalar_type());
  const int64_t batch = segmentations.size(0), height = segmentations.size(2), width = segmentations.size(3);
  TORCH_CHECK_VALUE(edge_weights.dim() == 4 && edge_weights.size(0) == batch &&
                        (edge_weights.size(1) == 2 || edge_weights.size(1) == 4) && edge_weights.size(2) == height &&
                        edge_weights.size(3) == width,
                    "grid_crf: edge_weights must be [B, E, H, W] = [", batch, ", 2 or 4, ", height, ", ", width,
                    "], got ", edge_weights.sizes());
  TORCH_CHECK_TYPE(edge_weights.scalar_type() == segmentations.scalar_type(),
                   "grid_crf: edge_weights must have the segmentations' dtype ", segmentations.scalar_type(),
                   ", got ", edge_weights.scalar_type());
  TORCH_CHECK_VALUE(edge_weights.device() == segmentations.device(),
                    "grid_crf: segmentations and edge_weights must be on one device, got ",
                    segmentations.device(), " and ", edge_weights.device());
}

inline void check_grid_crf_backward(const at::Tensor& grad_energy, const at::Tensor& segmentations,
                                    const at::Tensor& edge_weights) {
  check_grid_crf(segmentations, edge_weights);
  const int64_t batch = segmentations.size(0), height = segmentations.size(2), width = segmentations.size(3);
  TORCH_CHECK_VALUE(grad_energy.dim() == 3 && grad_energy.size(0) == batch && grad_energy.size(1) == height &&
                        grad_energy.size(2) == width,
                    "grid_crf_backward: grad_energy must be [B, H, W] = [", batch, ", ", height, ", ", width,
                    "], got ", grad_energy.sizes());
  TORCH_CHECK_TYPE(grad_energy.scalar_type() == segmentations.scalar_type(),
                   "grid_crf_backward: grad_energy must have the segmentations' dtype");
  TORCH_CHECK_VALUE(grad_energy.device() == segmentations.device(),
                    "grid_crf_backward: grad_energy must be on the segmentations' device");
}

template <typename T>
GridCrfImage<T> grid_crf_image(const at::Tensor& segmentations, const at::Tensor& edge_weights, int64_t b,
                               bool bilinear) {
  const int64_t classes = segmentations.size(1), height = segmentations.size(2), width = segmentations.size(3);
  return {segmentations.data_ptr<T>() + b * classes * height * width,
          edge_weights.data_ptr<T>() + b * edge_weights.size(1) * height * width, classes, height, width, bilinear};
}

}  // namespace wsloss
