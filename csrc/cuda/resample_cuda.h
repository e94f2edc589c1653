// The dense losses' resampling on CUDA: raw-pointer launchers, no torch (resample_cuda_ops.cpp wraps them).
#pragma once

#include <cuda_runtime_api.h>

#include "../resample_math.h"

namespace wsloss {
namespace cuda {

// out [B][C][d][h][w] = the downscale of values [B][C][D][H][W], times rois [B][d][h][w] if not
// null; a thread per output element.
template <typename T>
cudaError_t resample_down(const ResampleShape<T>& shape, const T* values, const T* rois, T* out, cudaStream_t stream);

// out [B][C][D][H][W] = its adjoint applied to grad [B][C][d][h][w], times channel_weights [B][C] if
// not null; a thread per input element.
template <typename T>
cudaError_t resample_down_adjoint(const ResampleShape<T>& shape, const T* grad, const T* rois,
                                  const T* channel_weights, T* out, cudaStream_t stream);

}  // namespace cuda
}  // namespace wsloss
