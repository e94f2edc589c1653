// The dense losses' resampling on CUDA (docs/DESIGN.md §2): the masked downscale of S, a thread
// per output element, and its adjoint as a gather, a thread per full-resolution element that
// writes it once (no zero fill, no atomics: deterministic). Consecutive threads take consecutive
// columns, so that reads and writes coalesce. Includes only CUDA and standard headers, launch.h
// and the shared arithmetic, so that CI compiles it alone.
#include "launch.h"
#include "resample_cuda.h"

namespace wsloss {
namespace cuda {
namespace {

constexpr int kResampleThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kResampleThreads) resample_down_kernel(ResampleShape<T> s, const T* values,
                                                                          const T* rois, T* out) {
  WSLOSS_GRID_STRIDE(o, s.batch * s.channels * s.out[0] * s.out[1] * s.out[2]) {
    out[o] = resample_down_element(s, values, rois, o);
  }
}

template <typename T>
__global__ void __launch_bounds__(kResampleThreads) resample_down_adjoint_kernel(ResampleShape<T> s, const T* grad,
                                                                                  const T* rois,
                                                                                  const T* channel_weights, T* out) {
  WSLOSS_GRID_STRIDE(i, s.batch * s.channels * s.in[0] * s.in[1] * s.in[2]) {
    out[i] = resample_down_adjoint_element(s, grad, rois, channel_weights, i);
  }
}

}  // namespace

template <typename T>
cudaError_t resample_down(const ResampleShape<T>& s, const T* values, const T* rois, T* out, cudaStream_t stream) {
  const int64_t items = s.batch * s.channels * s.out[0] * s.out[1] * s.out[2];
  if (items == 0) return cudaSuccess;
  resample_down_kernel<T><<<blocks_for(items, kResampleThreads), kResampleThreads, 0, stream>>>(s, values, rois, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t resample_down_adjoint(const ResampleShape<T>& s, const T* grad, const T* rois, const T* channel_weights,
                                  T* out, cudaStream_t stream) {
  const int64_t items = s.batch * s.channels * s.in[0] * s.in[1] * s.in[2];
  if (items == 0) return cudaSuccess;
  resample_down_adjoint_kernel<T><<<blocks_for(items, kResampleThreads), kResampleThreads, 0, stream>>>(
      s, grad, rois, channel_weights, out);
  return cudaGetLastError();
}

template cudaError_t resample_down<float>(const ResampleShape<float>&, const float*, const float*, float*,
                                          cudaStream_t);
template cudaError_t resample_down<double>(const ResampleShape<double>&, const double*, const double*, double*,
                                           cudaStream_t);
template cudaError_t resample_down_adjoint<float>(const ResampleShape<float>&, const float*, const float*,
                                                  const float*, float*, cudaStream_t);
template cudaError_t resample_down_adjoint<double>(const ResampleShape<double>&, const double*, const double*,
                                                   const double*, double*, cudaStream_t);

}  // namespace cuda
}  // namespace wsloss
