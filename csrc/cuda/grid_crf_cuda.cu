// Sparse grid CRF on CUDA (docs/DESIGN.md §3): the forward writes one energy per voxel, the backward
// one gradient per voxel and class; a thread per voxel (images: volumes of depth 1) computes its
// pairs' contrast weights, then reads its class planes in turn (coalesced across a warp), its
// neighbours' values coming from the same or adjacent lines and planes.
// Includes only CUDA and standard headers, launch.h and the shared arithmetic, so that CI compiles it
// alone.
#include <type_traits>

#include "grid_crf_cuda.h"
#include "launch.h"

namespace wsloss {
namespace cuda {
namespace {

constexpr int kGridThreads = 256;

// The blocks per multiprocessor that the kernels of E directions promise ptxas (the second
// argument of __launch_bounds__). 0, no promise, leaves the register budget to ptxas, as the
// image kernels always have; for 9 and 13 directions its occupancy heuristic settled on 80
// registers and spilled (sm_90), so those promise one block and may use up to 255 registers.
template <int E>
constexpr int kGridMinBlocks = E > 4 ? 1 : 0;

// Voxel i of the batch as (b, z, y, x), for the per-voxel functions of grid_crf_math.h.
struct GridVoxel {
  int64_t b, z, y, x;
};

template <typename T>
__device__ GridVoxel grid_voxel(const GridCrfImage<T>& g, int64_t i) {
  const int64_t plane = g.height * g.width, n = g.depth * plane;
  const int64_t b = i / n, p = i - b * n, z = p / plane, r = p - z * plane, y = r / g.width;
  return {b, z, y, r - y * g.width};
}

template <int E, typename T>
__global__ void __launch_bounds__(kGridThreads, kGridMinBlocks<E>) grid_energy_kernel(GridCrfBuffers<T> a) {
  WSLOSS_GRID_STRIDE(i, a.batch * a.first.depth * a.first.height * a.first.width) {
    const GridVoxel v = grid_voxel(a.first, i);
    a.out[i] = grid_voxel_energy<E>(grid_batch_image(a.first, v.b), v.z, v.y, v.x);
  }
}

template <int E, typename T>
__global__ void __launch_bounds__(kGridThreads, kGridMinBlocks<E>) grid_gradient_kernel(GridCrfBuffers<T> a) {
  const int64_t n = a.first.depth * a.first.height * a.first.width;
  WSLOSS_GRID_STRIDE(i, a.batch * n) {
    const GridVoxel v = grid_voxel(a.first, i);
    grid_voxel_gradient<E>(grid_batch_image(a.first, v.b), a.grad_energy + v.b * n, v.z, v.y, v.x,
                           a.out + v.b * a.first.classes * n);
  }
}

// The voxels of a launch: one thread each.
template <typename T>
int64_t grid_voxels(const GridCrfBuffers<T>& a) {
  return a.batch * a.first.depth * a.first.height * a.first.width;
}

// launch(directions), E = a.directions as a compile-time constant (std::integral_constant),
// then the launch's error.
template <typename T, class F>
cudaError_t with_directions(const GridCrfBuffers<T>& a, const F& launch) {
  switch (a.directions) {
    case 4: launch(std::integral_constant<int, 4>{}); break;
    case 3: launch(std::integral_constant<int, 3>{}); break;
    case 9: launch(std::integral_constant<int, 9>{}); break;
    case 13: launch(std::integral_constant<int, 13>{}); break;
    default: launch(std::integral_constant<int, 2>{}); break;
  }
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t grid_crf_energy(const GridCrfBuffers<T>& a, cudaStream_t stream) {
  const int64_t voxels = grid_voxels(a);
  if (voxels == 0) return cudaSuccess;
  return with_directions(a, [&](auto directions) {
    grid_energy_kernel<decltype(directions)::value, T><<<blocks_for(voxels, kGridThreads), kGridThreads, 0, stream>>>(a);
  });
}

template <typename T>
cudaError_t grid_crf_gradient(const GridCrfBuffers<T>& a, cudaStream_t stream) {
  const int64_t voxels = grid_voxels(a);
  if (voxels == 0) return cudaSuccess;
  return with_directions(a, [&](auto directions) {
    grid_gradient_kernel<decltype(directions)::value, T><<<blocks_for(voxels, kGridThreads), kGridThreads, 0, stream>>>(
        a);
  });
}

template cudaError_t grid_crf_energy<float>(const GridCrfBuffers<float>&, cudaStream_t);
template cudaError_t grid_crf_energy<double>(const GridCrfBuffers<double>&, cudaStream_t);
template cudaError_t grid_crf_gradient<float>(const GridCrfBuffers<float>&, cudaStream_t);
template cudaError_t grid_crf_gradient<double>(const GridCrfBuffers<double>&, cudaStream_t);

}  // namespace cuda
}  // namespace wsloss
