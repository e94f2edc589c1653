// CUDA kernels of the permutohedral lattice (build and filter), batched over images.
// Each kernel is a grid-stride loop (launch.h) over one step of lattice_steps.h. Includes
// only CUDA headers (CUB), launch.h and the shared lattice arithmetic, so that CI compiles
// it alone with nvcc. Compile with --fmad=false: docs/DESIGN.md §1 needs one rounding per operation.
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <algorithm>
#include <climits>

#include "launch.h"
#include "lattice_cuda.h"
#include "lattice_steps.h"

namespace wsloss {
namespace cuda {
namespace {

constexpr int kThreads = 256;

struct Scales {
  float s[kMaxFeatureDim];
};

__global__ void range_init_kernel(BuildBuffers a) {
  WSLOSS_GRID_STRIDE(i, a.batch * a.d) {
    a.coordinate_min[i] = INT_MAX;
    a.coordinate_max[i] = INT_MIN;
    if (i == 0) a.status[0] = a.status[1] = 0;
  }
}

// Grid (blocks per image, images): every warp embeds pixels of one image, then
// reduces their coordinate ranges with shuffles (one atomic per warp and coordinate).
template <int D>
__global__ void embed_kernel(BuildBuffers a, Scales scales) {
  for (int64_t image = blockIdx.y; image < a.batch; image += gridDim.y) {
    int lo[D], hi[D];
#pragma unroll
    for (int i = 0; i < D; ++i) lo[i] = INT_MAX, hi[i] = INT_MIN;
    bool ok = true;
    WSLOSS_GRID_STRIDE(p, a.pixels) {
      int z[D + 2];
      ok = embed_step<D>(image * a.pixels + p, a, scales.s, z) && ok;
#pragma unroll
      for (int i = 0; i < D; ++i) lo[i] = min(lo[i], z[i]), hi[i] = max(hi[i], z[i]);
    }
    if (!ok) atomicExch(a.status + 1, 1);
#pragma unroll
    for (int i = 0; i < D; ++i) {
      for (int offset = 16; offset > 0; offset /= 2) {
        lo[i] = min(lo[i], __shfl_xor_sync(0xffffffffu, lo[i], offset));
        hi[i] = max(hi[i], __shfl_xor_sync(0xffffffffu, hi[i], offset));
      }
    }
    if (threadIdx.x % 32 == 0) {
#pragma unroll
      for (int i = 0; i < D; ++i) {
        atomicMin(a.coordinate_min + image * D + i, lo[i]);
        atomicMax(a.coordinate_max + image * D + i, hi[i]);
      }
    }
  }
}

__global__ void key_layout_kernel(BuildBuffers a) {
  if (blockIdx.x == 0 && threadIdx.x == 0) key_layout_step(a.coordinate_min, a.coordinate_max, a.batch, a.d, a.layout);
}

template <int D>
__global__ void insert_kernel(BuildBuffers a) {
  WSLOSS_GRID_STRIDE(s, a.batch * a.pixels * (D + 1)) insert_step<D>(s, a);
}

__global__ void first_kernel(BuildBuffers a, int64_t corners) {
  WSLOSS_GRID_STRIDE(s, corners) first_step(s, a);
}

__global__ void offsets_kernel(BuildBuffers a) {
  if (blockIdx.x == 0 && threadIdx.x == 0) offsets_step(a);
}

__global__ void owner_kernel(BuildBuffers a, int64_t corners, int32_t* owner) {
  WSLOSS_GRID_STRIDE(s, corners) owner_step(s, a, owner);
}

__global__ void vertex_id_kernel(BuildBuffers a, int64_t corners) {
  WSLOSS_GRID_STRIDE(s, corners) vertex_id_step(s, a);
}

template <int D>
__global__ void neighbours_kernel(BuildBuffers a, const int32_t* owner, int64_t num_vertices, int32_t* neighbours) {
  WSLOSS_GRID_STRIDE(v, num_vertices) neighbours_step<D>(v, a, owner, num_vertices, neighbours);
}

__global__ void iota_kernel(int64_t n, int32_t* out) {
  WSLOSS_GRID_STRIDE(i, n) out[i] = static_cast<int32_t>(i);
}

__global__ void splat_ptr_kernel(const int32_t* sorted_vertices, int64_t entries, int64_t num_vertices,
                                 int32_t* splat_ptr) {
  WSLOSS_GRID_STRIDE(i, entries) splat_ptr_step(i, sorted_vertices, entries, num_vertices, splat_ptr);
}

template <typename T>
__global__ void splat_chunk_kernel(FilterBuffers<T> a, int64_t chunks) {
  WSLOSS_GRID_STRIDE(i, chunks * a.channels) splat_chunk_step(i / a.channels, i % a.channels, a);
}

template <typename T>
__global__ void splat_carry_kernel(FilterBuffers<T> a) {
  WSLOSS_GRID_STRIDE(i, a.num_vertices * a.channels) splat_carry_step(i / a.channels, i % a.channels, a);
}

template <typename T>
__global__ void blur_kernel(FilterBuffers<T> a, int j, const T* in, T* out) {
  WSLOSS_GRID_STRIDE(i, a.num_vertices * a.channels) blur_step(i / a.channels, i % a.channels, j, a, in, out);
}

template <int D, typename T>
__global__ void slice_kernel(FilterBuffers<T> a, const T* lattice, T alpha) {
  WSLOSS_GRID_STRIDE(q, a.batch * a.pixels) slice_step<D>(q, a, lattice, alpha);
}

template <template <int> class Fn, typename... Args>
cudaError_t dispatch_dim(int d, Args&&... args) {
  switch (d) {
#define WSLOSS_DIM_CASE(D) \
  case D:                  \
    return Fn<D>::run(args...);
    WSLOSS_DIM_CASE(1) WSLOSS_DIM_CASE(2) WSLOSS_DIM_CASE(3) WSLOSS_DIM_CASE(4)
    WSLOSS_DIM_CASE(5) WSLOSS_DIM_CASE(6) WSLOSS_DIM_CASE(7) WSLOSS_DIM_CASE(8)
    WSLOSS_DIM_CASE(9) WSLOSS_DIM_CASE(10) WSLOSS_DIM_CASE(11) WSLOSS_DIM_CASE(12)
    WSLOSS_DIM_CASE(13) WSLOSS_DIM_CASE(14) WSLOSS_DIM_CASE(15) WSLOSS_DIM_CASE(16)
#undef WSLOSS_DIM_CASE
    default:
      return cudaErrorInvalidValue;
  }
}

template <int D>
struct BuildCount {
  static cudaError_t run(const BuildBuffers& a, void* scan_workspace, size_t scan_bytes, cudaStream_t stream) {
    const int64_t corners = a.batch * a.pixels * (D + 1), slots = a.batch * a.capacity;
    Scales scales{};
    for (int i = 0; i < D; ++i) scales.s[i] = elevation_scale(i, D);
    cudaError_t err = cudaMemsetAsync(a.table_key, 0xff, slots * sizeof(PackedKey), stream);  // kEmptyKey
    if (err == cudaSuccess) err = cudaMemsetAsync(a.table_corner, 0x7f, slots * sizeof(int32_t), stream);
    if (err != cudaSuccess) return err;
    range_init_kernel<<<blocks_for(a.batch * D, kThreads), kThreads, 0, stream>>>(a);
    const dim3 embed_grid(static_cast<unsigned>(std::min<int64_t>((a.pixels + kThreads - 1) / kThreads, 1024)),
                          static_cast<unsigned>(std::min<int64_t>(a.batch, 65535)));
    embed_kernel<D><<<embed_grid, kThreads, 0, stream>>>(a, scales);
    key_layout_kernel<<<1, 32, 0, stream>>>(a);
    insert_kernel<D><<<blocks_for(corners, kThreads), kThreads, 0, stream>>>(a);
    first_kernel<<<blocks_for(corners, kThreads), kThreads, 0, stream>>>(a, corners);
    size_t bytes = scan_bytes;
    err = cub::DeviceScan::ExclusiveSum(scan_workspace, bytes, a.first, a.vertex_id, static_cast<int>(corners),
                                        stream);
    if (err != cudaSuccess) return err;
    offsets_kernel<<<1, 32, 0, stream>>>(a);
    return cudaGetLastError();
  }
};

template <int D>
struct BuildFinish {
  static cudaError_t run(const BuildBuffers& a, const FinishBuffers& f, cudaStream_t stream) {
    const int64_t corners = a.batch * a.pixels * (D + 1);
    owner_kernel<<<blocks_for(corners, kThreads), kThreads, 0, stream>>>(a, corners, f.owner);
    vertex_id_kernel<<<blocks_for(corners, kThreads), kThreads, 0, stream>>>(a, corners);
    neighbours_kernel<D><<<blocks_for(f.num_vertices, kThreads), kThreads, 0, stream>>>(a, f.owner, f.num_vertices,
                                                                                        f.neighbours);
    iota_kernel<<<blocks_for(corners, kThreads), kThreads, 0, stream>>>(corners, f.sort_values);
    int end_bit = 1;
    while ((int64_t{1} << end_bit) <= f.num_vertices) ++end_bit;
    // A stable radix sort keeps each vertex's corners in ascending (pixel, corner)
    // order, the CPU build's splat order.
    size_t bytes = f.sort_bytes;
    cudaError_t err = cub::DeviceRadixSort::SortPairs(f.sort_workspace, bytes, a.vertices, f.sort_keys, f.sort_values,
                                                      f.splat_index, static_cast<int>(corners), 0, end_bit, stream);
    if (err != cudaSuccess) return err;
    splat_ptr_kernel<<<blocks_for(corners, kThreads), kThreads, 0, stream>>>(f.sort_keys, corners, f.num_vertices,
                                                                             f.splat_ptr);
    return cudaGetLastError();
  }
};

template <int D>
struct Filter {
  template <typename T>
  static cudaError_t run(FilterBuffers<T> a, bool transpose, cudaStream_t stream) {
    const int64_t items = a.num_vertices * a.channels, chunks = splat_chunks(a.batch, a.pixels * (D + 1));
    cudaError_t err = cudaMemsetAsync(a.lattice_a + items, 0, a.channels * sizeof(T), stream);
    if (err == cudaSuccess) err = cudaMemsetAsync(a.lattice_b + items, 0, a.channels * sizeof(T), stream);
    if (err != cudaSuccess) return err;
    splat_chunk_kernel<T><<<blocks_for(chunks * a.channels, kThreads), kThreads, 0, stream>>>(a, chunks);
    splat_carry_kernel<T><<<blocks_for(items, kThreads), kThreads, 0, stream>>>(a);
    T* lattice = a.lattice_a;
    T* other = a.lattice_b;
    for (int step = 0; step <= D; ++step) {
      blur_kernel<T><<<blocks_for(items, kThreads), kThreads, 0, stream>>>(a, transpose ? D - step : step, lattice,
                                                                           other);
      std::swap(lattice, other);
    }
    slice_kernel<D, T><<<blocks_for(a.batch * a.pixels, kThreads), kThreads, 0, stream>>>(
        a, lattice, static_cast<T>(slice_scale(D)));
    return cudaGetLastError();
  }
};

}  // namespace

size_t scan_workspace_bytes(int64_t items) {
  size_t bytes = 0;
  cub::DeviceScan::ExclusiveSum(nullptr, bytes, static_cast<const int32_t*>(nullptr),
                                static_cast<int32_t*>(nullptr), static_cast<int>(items));
  return bytes;
}

size_t sort_workspace_bytes(int64_t items) {
  size_t bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const int32_t*>(nullptr),
                                  static_cast<int32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                  static_cast<int32_t*>(nullptr), static_cast<int>(items));
  return bytes;
}

cudaError_t lattice_build_count(const BuildBuffers& buffers, void* scan_workspace, size_t scan_bytes,
                                cudaStream_t stream) {
  return dispatch_dim<BuildCount>(buffers.d, buffers, scan_workspace, scan_bytes, stream);
}

cudaError_t lattice_build_finish(const BuildBuffers& buffers, const FinishBuffers& finish, cudaStream_t stream) {
  return dispatch_dim<BuildFinish>(buffers.d, buffers, finish, stream);
}

template <typename T>
cudaError_t lattice_filter(const FilterBuffers<T>& buffers, bool transpose, cudaStream_t stream) {
  if (buffers.channels == 0 || buffers.batch * buffers.pixels == 0) return cudaSuccess;
  return dispatch_dim<Filter>(buffers.d, buffers, transpose, stream);
}

template cudaError_t lattice_filter<float>(const FilterBuffers<float>&, bool, cudaStream_t);
template cudaError_t lattice_filter<double>(const FilterBuffers<double>&, bool, cudaStream_t);

}  // namespace cuda
}  // namespace wsloss
