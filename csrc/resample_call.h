// The call recipe shared by the CPU and CUDA wrappers of wsloss::resample_down(_backward): the
// checks (ValueError / TypeError in Python), the contiguous inputs, the output and the shape.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <optional>
#include <vector>

#include "output_memory.h"
#include "resample_math.h"

namespace wsloss {

// floor(size * scale) per spatial axis, as F.interpolate sizes its output, after checking the
// factors: one per axis, each in (0, 1], none shrinking an axis to nothing.
inline std::vector<int64_t> resample_output_size(const char* op, at::IntArrayRef input_size,
                                                 at::ArrayRef<double> scale_factor) {
  TORCH_CHECK_VALUE(scale_factor.size() == input_size.size(), op, ": scale_factor must have one factor per spatial "
                    "axis (", input_size.size(), "), got ", scale_factor.size());
  std::vector<int64_t> out;
  for (size_t axis = 0; axis < input_size.size(); ++axis) {
    const double factor = scale_factor[axis];
    TORCH_CHECK_VALUE(std::isfinite(factor) && factor > 0 && factor <= 1, op,
                      ": scale_factor must be in (0, 1] (a downscale), got ", scale_factor);
    const auto size = static_cast<int64_t>(std::floor(static_cast<double>(input_size[axis]) * factor));
    TORCH_CHECK_VALUE(size >= 1, op, ": scale_factor ", scale_factor, " shrinks ", input_size, " to nothing");
    out.push_back(size);
  }
  return out;
}

// The masks [B, <output spatial>] of a call, if given: the values' dtype and device.
inline void check_resample_rois(const char* op, const std::optional<at::Tensor>& rois, const at::Tensor& like,
                                at::IntArrayRef output_size) {
  if (!rois.has_value()) return;
  std::vector<int64_t> expected{like.size(0)};
  expected.insert(expected.end(), output_size.begin(), output_size.end());
  TORCH_CHECK_VALUE(rois->sizes() == at::IntArrayRef(expected), op, ": rois must be [B, <downscaled size>] = ",
                    at::IntArrayRef(expected), ", got ", rois->sizes());
  TORCH_CHECK_TYPE(rois->scalar_type() == like.scalar_type() && rois->device() == like.device(), op,
                   ": rois must be ", like.scalar_type(), " on ", like.device(), ", got ", rois->scalar_type(),
                   " on ", rois->device());
}

inline void check_resample_tensor(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.dim() == 4 || t.dim() == 5, op, ": ", name,
                    " must be [B, C, H, W] (images) or [B, C, D, H, W] (volumes), got shape ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
                   " must be float32 or float64, got ", t.scalar_type());
}

// A checked call's contiguous tensors, its output (allocated, not filled) and its shape in the
// kernels' terms (images as volumes of depth 1).
struct ResampleCall {
  at::Tensor input, rois, channel_weights, out;
  std::vector<int64_t> in, down;  // spatial sizes: full resolution, downscaled
};

template <typename T>
ResampleShape<T> resample_shape(const ResampleCall& call, at::ArrayRef<double> scale_factor) {
  ResampleShape<T> s{call.input.size(0), call.input.size(1), {1, 1, 1}, {1, 1, 1}, {T(1), T(1), T(1)}};
  const size_t first = 3 - call.in.size();  // images: axis z stays 1 x 1
  for (size_t axis = 0; axis < call.in.size(); ++axis) {
    s.in[first + axis] = call.in[axis];
    s.out[first + axis] = call.down[axis];
    s.ratio[first + axis] = static_cast<T>(1.0 / scale_factor[axis]);  // torch's compute_scales_value
  }
  return s;
}

// resample_down(values [B, C, <in>], rois [B, <down>]?, scale_factor) -> [B, C, <down>].
inline ResampleCall resample_down_call(const at::Tensor& values, const std::optional<at::Tensor>& rois,
                                       at::ArrayRef<double> scale_factor) {
  const char* op = "resample_down";
  check_resample_tensor(op, "values", values);
  const at::IntArrayRef spatial = values.sizes().slice(2);
  std::vector<int64_t> down = resample_output_size(op, spatial, scale_factor);
  check_resample_rois(op, rois, values, down);
  std::vector<int64_t> shape{values.size(0), values.size(1)};
  shape.insert(shape.end(), down.begin(), down.end());
  return {values.contiguous(), rois.has_value() ? rois->contiguous() : at::Tensor(), at::Tensor(),
          empty_output(shape, values.options()), spatial.vec(), down};
}

// resample_down_backward(grad [B, C, <down>], rois [B, <down>]?, channel_weights [B, C]?, input_size,
// scale_factor) -> [B, C, <in>].
inline ResampleCall resample_down_backward_call(const at::Tensor& grad, const std::optional<at::Tensor>& rois,
                                                const std::optional<at::Tensor>& channel_weights,
                                                at::IntArrayRef input_size, at::ArrayRef<double> scale_factor) {
  const char* op = "resample_down_backward";
  check_resample_tensor(op, "grad", grad);
  TORCH_CHECK_VALUE(static_cast<int64_t>(input_size.size()) == grad.dim() - 2, op,
                    ": input_size must have one size per spatial axis of grad (", grad.dim() - 2, "), got ",
                    input_size);
  std::vector<int64_t> down = resample_output_size(op, input_size, scale_factor);
  TORCH_CHECK_VALUE(grad.sizes().slice(2) == at::IntArrayRef(down), op, ": grad must be [B, C, ", at::IntArrayRef(down),
                    "] (input_size ", input_size, " downscaled), got ", grad.sizes());
  check_resample_rois(op, rois, grad, down);
  if (channel_weights.has_value()) {
    TORCH_CHECK_VALUE(channel_weights->sizes() == grad.sizes().slice(0, 2), op, ": channel_weights must be [B, C] = ",
                      grad.sizes().slice(0, 2), ", got ", channel_weights->sizes());
    TORCH_CHECK_TYPE(channel_weights->scalar_type() == grad.scalar_type() && channel_weights->device() == grad.device(),
                     op, ": channel_weights must be ", grad.scalar_type(), " on ", grad.device(), ", got ",
                     channel_weights->scalar_type(), " on ", channel_weights->device());
  }
  std::vector<int64_t> shape{grad.size(0), grad.size(1)};
  shape.insert(shape.end(), input_size.begin(), input_size.end());
  return {grad.contiguous(), rois.has_value() ? rois->contiguous() : at::Tensor(),
          channel_weights.has_value() ? channel_weights->contiguous() : at::Tensor(), empty_output(shape, grad.options()),
          input_size.vec(), down};
}

// A call's optional tensor's data, or null.
template <typename T>
const T* optional_data(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

}  // namespace wsloss
