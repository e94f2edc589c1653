// The call recipe shared by the CPU and CUDA wrappers of wsloss::grid_crf(_backward): the checks,
// the contiguous inputs, the output and the per-image views.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <optional>

#include "grid_crf_math.h"
#include "output_memory.h"

namespace wsloss {

// The spatial axes of a call: 2 for images (segmentations [B, K, H, W]), 3 for volumes
// ([B, K, D, H, W]); the segmentations' rank decides (docs/DESIGN.md §3).
inline int64_t grid_spatial_axes(const at::Tensor& segmentations) { return segmentations.dim() - 2; }

// The ops' spacing argument, float[]? in the schema (csrc/ops.cpp): (sy, sx), (sz, sy, sx) or None.
// (std::optional of an ArrayRef: torch infers the schema of this type, not of OptionalArrayRef.)
using GridSpacingArgument = std::optional<at::ArrayRef<double>>;

// The voxel spacing (sz, sy, sx) of a checked call: images have sz = 1 (they have one plane, so
// it never enters a distance); None is 1 on every axis.
struct GridSpacing {
  double z = 1, y = 1, x = 1;
};

inline GridSpacing grid_spacing(GridSpacingArgument spacing) {
  GridSpacing out;
  if (!spacing.has_value()) return out;
  const at::ArrayRef<double> values = *spacing;
  out.x = values.back();
  out.y = values[values.size() - 2];
  if (values.size() == 3) out.z = values[0];
  return out;
}

inline void check_grid_crf(const at::Tensor& segmentations, const at::Tensor& images, const at::Tensor& rois,
                           double sigma, int64_t neighbourhood, GridSpacingArgument spacing) {
  TORCH_CHECK_VALUE(segmentations.dim() == 4 || segmentations.dim() == 5,
                    "grid_crf: segmentations must be [B, K, H, W] (images) or [B, K, D, H, W] (volumes), got shape ",
                    segmentations.sizes());
  TORCH_CHECK_TYPE(segmentations.scalar_type() == at::kFloat || segmentations.scalar_type() == at::kDouble,
                   "grid_crf: segmentations must be float32 or float64, got ", segmentations.scalar_type());
  const bool volume = segmentations.dim() == 5;
  const at::IntArrayRef spatial = segmentations.sizes().slice(2);
  const char* layout = volume ? "D, H, W" : "H, W";
  TORCH_CHECK_VALUE(images.dim() == segmentations.dim() && images.size(0) == segmentations.size(0) &&
                        images.sizes().slice(2) == spatial,
                    "grid_crf: images must be [B, C, ", layout, "] with B = ", segmentations.size(0), " and ",
                    layout, " = ", spatial, " like the segmentations, got ", images.sizes());
  TORCH_CHECK_VALUE(rois.dim() == segmentations.dim() - 1 && rois.size(0) == segmentations.size(0) &&
                        rois.sizes().slice(1) == spatial,
                    "grid_crf: rois must be [B, ", layout, "] with B = ", segmentations.size(0), " and ", layout,
                    " = ", spatial, ", got ", rois.sizes());
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
  if (volume) {
    TORCH_CHECK_VALUE(neighbourhood == 6 || neighbourhood == 18 || neighbourhood == 26,
                      "grid_crf: neighbourhood must be 6, 18 or 26 for volumes, got ", neighbourhood);
  } else {
    TORCH_CHECK_VALUE(neighbourhood == 4 || neighbourhood == 8,
                      "grid_crf: neighbourhood must be 4 or 8 for images, got ", neighbourhood);
  }
  if (spacing.has_value()) {
    TORCH_CHECK_VALUE(static_cast<int64_t>(spacing->size()) == grid_spatial_axes(segmentations),
                      "grid_crf: spacing must have one entry per spatial axis (", volume ? "sz, sy, sx" : "sy, sx",
                      "), got ", *spacing);
    for (const double value : *spacing) {
      TORCH_CHECK_VALUE(std::isfinite(value) && value > 0, "grid_crf: spacing must be finite and > 0, got ", *spacing);
    }
    // The directions' 1 / dist must be normal numbers of the kernel's dtype, as the exponent
    // factor above: an infinite one gives infinite or NaN weights, a zero one drops pairs
    // silently (docs/DESIGN.md §6).
    const GridSpacing axes = grid_spacing(spacing);
    const int directions = grid_directions(neighbourhood);
    for (int e = 0; e < directions; ++e) {
      const double inverse = grid_inverse_length(directions, e, axes.z, axes.y, axes.x);
      TORCH_CHECK_VALUE(inverse <= largest && inverse >= smallest,
                        "grid_crf: spacing must give neighbour distances whose inverses are normal ",
                        segmentations.scalar_type(), " numbers, got ", *spacing);
    }
  }
}

inline void check_grid_crf_backward(const at::Tensor& grad_energy, const at::Tensor& segmentations,
                                    const at::Tensor& images, const at::Tensor& rois, double sigma,
                                    int64_t neighbourhood, GridSpacingArgument spacing) {
  check_grid_crf(segmentations, images, rois, sigma, neighbourhood, spacing);
  TORCH_CHECK_VALUE(grad_energy.sizes() == rois.sizes(), "grid_crf_backward: grad_energy must be shaped like the rois ",
                    rois.sizes(), ", got ", grad_energy.sizes());
  TORCH_CHECK_TYPE(grad_energy.scalar_type() == segmentations.scalar_type(),
                   "grid_crf_backward: grad_energy must have the segmentations' dtype");
  TORCH_CHECK_VALUE(grad_energy.device() == segmentations.device(),
                    "grid_crf_backward: grad_energy must be on the segmentations' device");
}

// The checked inputs, contiguous, and the output to fill: the energy [B, (D,) H, W] (grid_crf) or the
// gradient like the segmentations (grid_crf_backward, which also has grad_energy).
struct GridCrfCall {
  at::Tensor segmentations, images, rois, grad_energy, out;
};

// After check_grid_crf (and, on CUDA, under the device guard); the energy with `options` (the
// segmentations' dtype and device).
inline GridCrfCall grid_crf_call(const at::Tensor& segmentations, const at::Tensor& images, const at::Tensor& rois,
                                 const at::TensorOptions& options) {
  return {segmentations.contiguous(), images.contiguous(), rois.contiguous(), at::Tensor(),
          at::empty(rois.sizes(), options)};
}

// After check_grid_crf_backward (and, on CUDA, under the device guard); the gradient with `options`.
inline GridCrfCall grid_crf_backward_call(const at::Tensor& grad_energy, const at::Tensor& segmentations,
                                          const at::Tensor& images, const at::Tensor& rois,
                                          const at::TensorOptions& options) {
  GridCrfCall call{segmentations.contiguous(), images.contiguous(), rois.contiguous(), grad_energy.contiguous()};
  call.out = empty_output(call.segmentations.sizes(), options);
  return call;
}

// The contrast weights' exp(-|I_p - I_q|^2 * scale): scale = 1 / (2 sigma^2).
inline double grid_contrast_scale(double sigma) { return 1.0 / (2.0 * sigma * sigma); }

// The view of the call's first image or volume (images: depth 1); grid_batch_image gives the others.
template <typename T>
GridCrfImage<T> grid_crf_image(const GridCrfCall& call, double sigma, int64_t neighbourhood, bool bilinear,
                               GridSpacingArgument spacing) {
  const at::Tensor& s = call.segmentations;
  const bool volume = s.dim() == 5;
  GridCrfImage<T> g{};
  g.segmentation = s.data_ptr<T>();
  g.image = call.images.data_ptr<T>();
  g.roi = call.rois.data_ptr<T>();
  g.classes = s.size(1);
  g.channels = call.images.size(1);
  g.depth = volume ? s.size(2) : 1;
  g.height = s.size(-2);
  g.width = s.size(-1);
  g.contrast_scale = static_cast<T>(grid_contrast_scale(sigma));
  g.bilinear = bilinear;
  const GridSpacing d = grid_spacing(spacing);
  set_grid_inverse_lengths(g, grid_directions(neighbourhood), d.z, d.y, d.x);
  return g;
}

}  // namespace wsloss
