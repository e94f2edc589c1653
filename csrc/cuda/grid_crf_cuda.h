// Sparse grid CRF on CUDA: raw-pointer launchers, no torch (grid_crf_cuda_ops.cpp wraps them).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../grid_crf_math.h"

namespace wsloss {
namespace cuda {

template <typename T>
struct GridCrfBuffers {
  // Image (volume) 0 of the batch: segmentations [B][K][D][H][W], images [B][C][D][H][W], rois
  // [B][D][H][W] (D = 1 for images), with the contrast scale, the relaxation and the directions'
  // 1 / dist; grid_batch_image gives the others.
  GridCrfImage<T> first;
  const T* grad_energy;  // [B][D][H][W] (backward only)
  T* out;                // energy [B][D][H][W], or the gradient [B][K][D][H][W]
  int64_t batch;
  int directions;  // E: 2 or 4 (images), 3, 9 or 13 (volumes)
};

// Thread per voxel, consecutive threads on consecutive columns.
template <typename T>
cudaError_t grid_crf_energy(const GridCrfBuffers<T>& buffers, cudaStream_t stream);
template <typename T>
cudaError_t grid_crf_gradient(const GridCrfBuffers<T>& buffers, cudaStream_t stream);

}  // namespace cuda
}  // namespace wsloss
