// The call recipe shared by the CPU and CUDA wrappers of wsloss::grid_crf(_backward): the checks,
// the contiguous inputs, the output and the per-image views.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "grid_crf_math.h"

namespace wsloss {

inline void check_grid_crf(const at::Tensor& segmentations, const at::Tensor& images, const at::Tensor& rois,
                           double sigma, int64_t neighbourhood) {
  TORCH_CHECK_VALUE(segmentations.dim() == 4, "grid_crf: segmentations must be [B, K, H, W], got shape ",
                    segmentations.sizes());
  TORCH_CHECK_TYPE(segmentations.scalar_type() == at::kFloat || segmentations.scalar_type() == at::kDouble,
                   "grid_crf: segmentations must be float32 or float64, got ", segmentations.scalar_type());
  const int64_t batch = segmentations.size(0), height = segmentations.size(2), width = segmentations.size(3);
  TORCH_CHECK_VALUE(images.dim() == 4 && images.size(0) == batch && images.size(2) == height &&
                        images.size(3) == width,
                    "grid_crf: images must be [B, C, H, W] = [", batch, ", C, ", height, ", ", width, "], got ",
                    images.sizes());
  TORCH_CHECK_VALUE(rois.dim() == 3 && rois.size(0) == batch && rois.size(1) == height && rois.size(2) == width,
                    "grid_crf: rois must be [B, H, W] = [", batch, ", ", height, ", ", width, "], got ",
                    rois.sizes());
  TORCH_CHECK_TYPE(images.scalar_type() == segmentations.scalar_type() &&
                       rois.scalar_type() == segmentations.scalar_type(),
                   "grid_crf: images and rois must have the segmentations' dtype ", segmentations.scalar_type(),
                   ", got ", images.scalar_type(), " and ", rois.scalar_type());
  TORCH_CHECK_VALUE(images.device() == segmentations.device() && rois.device() == segmentations.device(),
                    "grid_crf: segmentations, images and rois must be on one device, got ", segmentations.device(),
                    ", ", images.device(), " and ", rois.device());
  TORCH_CHECK_VALUE(std::isfinite(sigma) && sigma > 0, "grid_crf: sigma must be finite and > 0, got ", sigma);
  // The exponent factor 1 / (2 sigma^2) must be a normal number of the kernel's dtype: an infinite
  // one makes equal colours' weight exp(-0 * inf) NaN, a zero one exp(-inf * 0) (docs/DESIGN.md §6).
  const double scale = 1.0 / (2.0 * sigma * sigma);
  const bool single = segmentations.scalar_type() == at::kFloat;
  const double largest = single ? std::numeric_limits<float>::max() : std::numeric_limits<double>::max();
  const double smallest = single ? std::numeric_limits<float>::min() : std::numeric_limits<double>::min();
  TORCH_CHECK_VALUE(scale <= largest && scale >= smallest, "grid_crf: 1 / (2 sigma^2) must be a normal ",
                    segmentations.scalar_type(), " number, got sigma ", sigma);
  TORCH_CHECK_VALUE(neighbourhood == 4 || neighbourhood == 8, "grid_crf: neighbourhood must be 4 or 8, got ",
                    neighbourhood);
}

inline void check_grid_crf_backward(const at::Tensor& grad_energy, const at::Tensor& segmentations,
                                    const at::Tensor& images, const at::Tensor& rois, double sigma,
                                    int64_t neighbourhood) {
  check_grid_crf(segmentations, images, rois, sigma, neighbourhood);
  TORCH_CHECK_VALUE(grad_energy.sizes() == rois.sizes(), "grid_crf_backward: grad_energy must be [B, H, W] = ",
                    rois.sizes(), ", got ", grad_energy.sizes());
  TORCH_CHECK_TYPE(grad_energy.scalar_type() == segmentations.scalar_type(),
                   "grid_crf_backward: grad_energy must have the segmentations' dtype");
  TORCH_CHECK_VALUE(grad_energy.device() == segmentations.device(),
                    "grid_crf_backward: grad_energy must be on the segmentations' device");
}

// The checked inputs, contiguous, and the output to fill: the energy [B, H, W] (grid_crf) or the
// gradient like the segmentations (grid_crf_backward, which also has grad_energy).
struct GridCrfCall {
  at::Tensor segmentations, images, rois, grad_energy, out;
};

// After check_grid_crf (and, on CUDA, under the device guard); the energy with `options` (the
// segmentations' dtype and device).
inline GridCrfCall grid_crf_call(const at::Tensor& segmentations, const at::Tensor& images, const at::Tensor& rois,
                                 const at::TensorOptions& options) {
  return {segmentations.contiguous(), images.contiguous(), rois.contiguous(), at::Tensor(),
          at::empty({segmentations.size(0), segmentations.size(2), segmentations.size(3)}, options)};
}

// After check_grid_crf_backward (and, on CUDA, under the device guard); the gradient with `options`.
inline GridCrfCall grid_crf_backward_call(const at::Tensor& grad_energy, const at::Tensor& segmentations,
                                          const at::Tensor& images, const at::Tensor& rois,
                                          const at::TensorOptions& options) {
  GridCrfCall call{segmentations.contiguous(), images.contiguous(), rois.contiguous(), grad_energy.contiguous()};
  call.out = at::empty_like(call.segmentations, options);
  return call;
}

// The contrast weights' exp(-|I_p - I_q|^2 * scale): scale = 1 / (2 sigma^2).
inline double grid_contrast_scale(double sigma) { return 1.0 / (2.0 * sigma * sigma); }

// Image b of a call.
template <typename T>
GridCrfImage<T> grid_crf_image(const GridCrfCall& call, int64_t b, double sigma, bool bilinear) {
  const int64_t classes = call.segmentations.size(1), channels = call.images.size(1);
  const int64_t height = call.segmentations.size(2), width = call.segmentations.size(3), n = height * width;
  return {call.segmentations.data_ptr<T>() + b * classes * n,
          call.images.data_ptr<T>() + b * channels * n,
          call.rois.data_ptr<T>() + b * n,
          classes,
          channels,
          height,
          width,
          static_cast<T>(grid_contrast_scale(sigma)),
          bilinear};
}

}  // namespace wsloss
