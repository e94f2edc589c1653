// The call recipe shared by the CPU and CUDA wrappers of wsloss::em_adapt: the checks, the
// contiguous inputs, the outputs and the per-image views.
#pragma once

#include <ATen/ATen.h>

#include <cmath>

#include "em_adapt_math.h"
#include "output_memory.h"

namespace wsloss {

inline void check_em_adapt(const at::Tensor& logits, const at::Tensor& present, const at::Tensor& order,
                           double bg_portion, double fg_portion, double margin) {
  TORCH_CHECK_VALUE(logits.dim() == 3, "em_adapt: logits must be [B, K, N], got shape ", logits.sizes());
  TORCH_CHECK_TYPE(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble,
                   "em_adapt: logits must be float32 or float64, got ", logits.scalar_type());
  const int64_t batch = logits.size(0), classes = logits.size(1), pixels = logits.size(2);
  TORCH_CHECK_VALUE(classes >= 1, "em_adapt: the class count K must be >= 1, got ", classes);
  TORCH_CHECK_VALUE(pixels >= 1 && pixels < (int64_t{1} << 31), "em_adapt: N must be in 1..2^31-1, got ", pixels);
  TORCH_CHECK_VALUE(present.dim() == 2 && present.size(0) == batch && present.size(1) == classes,
                    "em_adapt: present must be [B, K] = [", batch, ", ", classes, "], got ", present.sizes());
  TORCH_CHECK_TYPE(present.scalar_type() == at::kBool, "em_adapt: present must be bool, got ",
                   present.scalar_type());
  TORCH_CHECK_VALUE(order.sizes() == present.sizes(), "em_adapt: order must be [B, K] = [", batch, ", ", classes,
                    "], got ", order.sizes());
  TORCH_CHECK_TYPE(order.scalar_type() == at::kLong, "em_adapt: order must be int64, got ", order.scalar_type());
  TORCH_CHECK_VALUE(present.device() == logits.device() && order.device() == logits.device(),
                    "em_adapt: logits, present and order must be on one device, got ", logits.device(), ", ",
                    present.device(), " and ", order.device());
  TORCH_CHECK_VALUE(bg_portion >= 0 && bg_portion <= 1 && fg_portion >= 0 && fg_portion <= 1,
                    "em_adapt: bg_portion and fg_portion must be in [0, 1], got ", bg_portion, " and ", fg_portion);
  TORCH_CHECK_VALUE(std::isfinite(margin) && margin >= 0, "em_adapt: margin must be finite and >= 0, got ", margin);
}

// The checked inputs, contiguous, and the outputs to fill: labels [B, N] int64, biases [B, K].
struct EmAdaptCall {
  at::Tensor logits, present, order, labels, biases;
  int64_t batch, classes, pixels;

  // Image b's inputs, and its outputs: labels [N] and biases [K].
  template <typename T>
  EmAdaptImage<T> image(int64_t b) const {
    return {logits.data_ptr<T>() + b * classes * pixels, present.data_ptr<bool>() + b * classes,
            order.data_ptr<int64_t>() + b * classes, classes, pixels};
  }
  int64_t* labels_of(int64_t b) const { return labels.data_ptr<int64_t>() + b * pixels; }
  template <typename T>
  T* biases_of(int64_t b) const {
    return biases.data_ptr<T>() + b * classes;
  }
};

// After check_em_adapt (and, on CUDA, under the device guard): the inputs made contiguous and
// the outputs allocated with `options` (the logits' dtype and device).
inline EmAdaptCall em_adapt_call(const at::Tensor& logits, const at::Tensor& present, const at::Tensor& order,
                                 const at::TensorOptions& options) {
  const int64_t batch = logits.size(0), classes = logits.size(1), pixels = logits.size(2);
  return {logits.contiguous(),
          present.contiguous(),
          order.contiguous(),
          empty_output({batch, pixels}, options.dtype(at::kLong)),
          at::empty({batch, classes}, options),
          batch,
          classes,
          pixels};
}

}  // namespace wsloss
