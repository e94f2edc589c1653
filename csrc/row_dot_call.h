// wsloss::row_dot, the dense losses' reductions (docs/DESIGN.md §2): per image and channel the dot
// product of two rows, each product exact in float64 and summed in float64, so that the loss of
// a 512 x 512 batch is within 1e-12 (relative) of the float64 sum of the same products, where a
// float32 matrix product is 1e-5 to 3e-4 away. The checks and output shared by the CPU and CUDA
// wrappers.
#pragma once

#include <ATen/ATen.h>

namespace wsloss {

// a [B, K, N], b [B, K or 1, N] of one dtype (float32 or float64), one device.
inline void check_row_dot(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK_VALUE(a.dim() == 3 && b.dim() == 3 && b.size(0) == a.size(0) && b.size(2) == a.size(2) &&
                        (b.size(1) == a.size(1) || b.size(1) == 1),
                    "row_dot: a must be [B, K, N] and b [B, K or 1, N] like it, got ", a.sizes(), " and ", b.sizes());
  TORCH_CHECK_TYPE((a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble) &&
                       b.scalar_type() == a.scalar_type(),
                   "row_dot: a and b must both be float32 or both float64, got ", a.scalar_type(), " and ",
                   b.scalar_type());
  TORCH_CHECK_VALUE(a.device() == b.device(), "row_dot: a and b must be on one device, got ", a.device(), " and ",
                    b.device());
}

// The row of b that row (image, channel) of a meets: b has K rows per image or one.
inline int64_t row_dot_b_row(int64_t row, int64_t a_channels, int64_t b_channels) {
  return b_channels == 1 ? row / a_channels : row;
}

}  // namespace wsloss
