// wsloss::row_dot on CUDA: a raw-pointer launcher, no torch (row_dot_cuda_ops.cpp wraps it).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace wsloss {
namespace cuda {

// out[r] = sum_n a[r][n] * b[r'][n] in float64 for the rows r of a [rows][n], r' = r / a_channels
// when b has one row per image (b_channels 1), else r; a block per row.
template <typename T>
cudaError_t row_dot(const T* a, const T* b, int64_t rows, int64_t a_channels, int64_t b_channels, int64_t n,
                    double* out, cudaStream_t stream);

}  // namespace cuda
}  // namespace wsloss
