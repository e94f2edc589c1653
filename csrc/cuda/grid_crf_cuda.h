// Sparse grid CRF on CUDA: raw-pointer launchers, no torch (grid_crf_cuda_ops.cpp wraps them).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../grid_crf_math.h"

namespace wsloss {
namespace cuda {

template <typename T>
struct GridCrfBuffers {
  const T* segmentations;  // [B][K][H][W]
  const T* images;         // [B][C][H][W]
  const T* rois;           // [B][H][W]
  const T* grad_energy;    // [B][H][W] (backward only)
  T* out;                  // energy [B][H][W], or the gradient [B][K][H][W]
  int64_t batch, classes, channels, height, width;
  int directions;  // E: 2 or 4
  T contrast_scale;  // 1 / (2 sigma^2)
  bool bilinear;
};

// Thread per pixel, consecutive threads on consecutive columns.
template <typename T>
cudaError_t grid_crf_energy(const GridCrfBuffers<T>& buffers, cudaStream_t stream);
template <typename T>
cudaError_t grid_crf_gradient(const GridCrfBuffers<T>& buffers, cudaStream_t stream);

}  // namespace cuda
}  // namespace wsloss
