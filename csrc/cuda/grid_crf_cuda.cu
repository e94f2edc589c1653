// Sparse grid CRF on CUDA (docs/DESIGN.md §3): the forward writes one energy per pixel, the backward
// one gradient per pixel and class; a thread per pixel computes its pairs' contrast weights,
// then reads its class planes in turn (coalesced across a warp), its neighbours' values
// coming from the same or adjacent lines.
// Includes only CUDA headers, launch.h and the shared arithmetic, so that CI compiles it alone.
#include "grid_crf_cuda.h"
#include "launch.h"

namespace wsloss {
namespace cuda {
namespace {

constexpr int kGridThreads = 256;

template <typename T>
__device__ GridCrfImage<T> image_view(const GridCrfBuffers<T>& a, int64_t b) {
  const int64_t n = a.height * a.width;
  return {a.segmentations + b * a.classes * n, a.images + b * a.channels * n, a.rois + b * n, a.classes,
          a.channels, a.height, a.width, a.contrast_scale, a.bilinear};
}

template <int E, typename T>
__global__ void __launch_bounds__(kGridThreads) grid_energy_kernel(GridCrfBuffers<T> a) {
  const int64_t n = a.height * a.width;
  WSLOSS_GRID_STRIDE(i, a.batch * n) {
    const int64_t b = i / n, p = i - b * n;
    a.out[i] = grid_pixel_energy<E>(image_view(a, b), p / a.width, p % a.width);
  }
}

template <int E, typename T>
__global__ void __launch_bounds__(kGridThreads) grid_gradient_kernel(GridCrfBuffers<T> a) {
  const int64_t n = a.height * a.width;
  WSLOSS_GRID_STRIDE(i, a.batch * n) {
    const int64_t b = i / n, p = i - b * n;
    grid_pixel_gradient<E>(image_view(a, b), a.grad_energy + b * n, p / a.width, p % a.width,
                           a.out + b * a.classes * n);
  }
}

}  // namespace

template <typename T>
cudaError_t grid_crf_energy(const GridCrfBuffers<T>& a, cudaStream_t stream) {
  const int64_t pixels = a.batch * a.height * a.width;
  if (pixels == 0) return cudaSuccess;
  if (a.directions == 4) grid_energy_kernel<4, T><<<blocks_for(pixels, kGridThreads), kGridThreads, 0, stream>>>(a);
  else grid_energy_kernel<2, T><<<blocks_for(pixels, kGridThreads), kGridThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename T>
cudaError_t grid_crf_gradient(const GridCrfBuffers<T>& a, cudaStream_t stream) {
  const int64_t pixels = a.batch * a.height * a.width;
  if (pixels == 0) return cudaSuccess;
  if (a.directions == 4) grid_gradient_kernel<4, T><<<blocks_for(pixels, kGridThreads), kGridThreads, 0, stream>>>(a);
  else grid_gradient_kernel<2, T><<<blocks_for(pixels, kGridThreads), kGridThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

template cudaError_t grid_crf_energy<float>(const GridCrfBuffers<float>&, cudaStream_t);
template cudaError_t grid_crf_energy<double>(const GridCrfBuffers<double>&, cudaStream_t);
template cudaError_t grid_crf_gradient<float>(const GridCrfBuffers<float>&, cudaStream_t);
template cudaError_t grid_crf_gradient<double>(const GridCrfBuffers<double>&, cudaStream_t);

}  // namespace cuda
}  // namespace wsloss
