// wsloss::row_dot on CUDA (docs/DESIGN.md §2): a block per row, each thread summing a strided part
// of it in float64, then the warps' sums by shuffles and the block's through shared memory. No
// atomics: the same bits on every run. Includes only CUDA and standard headers, so that CI
// compiles it alone.
#include "launch.h"
#include "row_dot_cuda.h"

namespace wsloss {
namespace cuda {
namespace {

constexpr int kRowDotThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kRowDotThreads) row_dot_kernel(const T* a, const T* b, int64_t a_channels,
                                                                  int64_t b_channels, int64_t n, double* out) {
  const int64_t row = blockIdx.x;
  const T* ra = a + row * n;
  const T* rb = b + (b_channels == 1 ? row / a_channels : row) * n;
  double sum = 0;
  for (int64_t i = threadIdx.x; i < n; i += kRowDotThreads) sum += static_cast<double>(ra[i]) * rb[i];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  __shared__ double warp_sums[kRowDotThreads / 32];
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0;
    for (int w = 0; w < kRowDotThreads / 32; ++w) total += warp_sums[w];
    out[row] = total;
  }
}

}  // namespace

template <typename T>
cudaError_t row_dot(const T* a, const T* b, int64_t rows, int64_t a_channels, int64_t b_channels, int64_t n,
                    double* out, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  row_dot_kernel<T><<<static_cast<unsigned>(rows), kRowDotThreads, 0, stream>>>(a, b, a_channels, b_channels, n, out);
  return cudaGetLastError();
}

template cudaError_t row_dot<float>(const float*, const float*, int64_t, int64_t, int64_t, int64_t, double*,
                                    cudaStream_t);
template cudaError_t row_dot<double>(const double*, const double*, int64_t, int64_t, int64_t, int64_t, double*,
                                     cudaStream_t);

}  // namespace cuda
}  // namespace wsloss
