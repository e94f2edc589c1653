// CUDA kernels of the permutohedral lattice (build and filter), batched over images.
// Includes only CUDA headers and the shared lattice arithmetic, so that CI compiles it
// alone with nvcc. Compile with --fmad=false: SPEC 1 needs one rounding per operation,
// and the filter then rounds exactly like the CPU kernels (identical results).
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <algorithm>

#include "../lattice_math.h"
#include "lattice_cuda.h"

namespace wsloss {
namespace cuda {
namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t items) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((items + kThreads - 1) / kThreads, 1 << 20)));
}

#define WSLOSS_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < (n); i += int64_t{gridDim.x} * blockDim.x)

struct Scales {
  float s[kMaxFeatureDim];
};

// Coordinates 0..D-1 of corner k of pixel q's simplex (the last one is implied).
template <int D>
__device__ __forceinline__ void corner_key(const int32_t* remainder, const int8_t* rank, int64_t q, int k,
                                           int* key) {
#pragma unroll
  for (int i = 0; i < D; ++i)
    key[i] = vertex_coordinate(remainder[q * (D + 1) + i], rank[q * (D + 1) + i], D, k);
}

template <int D>
__device__ __forceinline__ uint32_t key_hash(const int* key) {
  uint32_t h = 2166136261u;
#pragma unroll
  for (int i = 0; i < D; ++i) h = (h ^ static_cast<uint32_t>(key[i])) * 16777619u;
  return h ^ (h >> 15);
}

// True when corner `owner` (q (D+1) + k) has the coordinates `key`.
template <int D>
__device__ __forceinline__ bool owner_has_key(const int32_t* remainder, const int8_t* rank, int32_t owner,
                                              const int* key) {
  int other[D];
  corner_key<D>(remainder, rank, owner / (D + 1), owner % (D + 1), other);
  bool same = true;
#pragma unroll
  for (int i = 0; i < D; ++i) same = same && other[i] == key[i];
  return same;
}

template <int D>
__global__ void embed_kernel(const float* features, int64_t batch, int64_t pixels, Scales scales,
                             int32_t* remainder, int8_t* rank, float* weights, int32_t* status) {
  WSLOSS_GRID_STRIDE(q, batch * pixels) {
    const float* f = features + (q / pixels) * D * pixels + q % pixels;
    bool ok = true;
#pragma unroll
    for (int i = 0; i < D; ++i) ok = ok && feature_in_range(f[i * pixels]);  // NaN fails too
    int z[D + 2], r[D + 2];
    float b[D + 1];
    if (ok) {
      lattice_embed(f, pixels, scales.s, D, z, r, b);
    } else {
      atomicExch(status + 1, 1);
      for (int i = 0; i <= D; ++i) z[i] = r[i] = 0, b[i] = 0.0f;
    }
#pragma unroll
    for (int i = 0; i <= D; ++i) {
      remainder[q * (D + 1) + i] = z[i];
      rank[q * (D + 1) + i] = static_cast<int8_t>(r[i]);
      weights[q * (D + 1) + i] = b[i];
    }
  }
}

// Inserts every corner's key in its image's segment of the table with one atomicCAS:
// no locks, no duplicates; at most half full, so every probe ends. The entry then
// keeps the smallest corner with that key (atomicMin among equal keys only), which
// makes the vertex numbering independent of thread timing.
template <int D>
__global__ void insert_kernel(const int32_t* remainder, const int8_t* rank, int64_t batch, int64_t pixels,
                              int64_t capacity, int32_t* table, int32_t* table_slot) {
  WSLOSS_GRID_STRIDE(s, batch * pixels * (D + 1)) {
    const int64_t q = s / (D + 1);
    const int32_t corner = static_cast<int32_t>(s);
    int key[D];
    corner_key<D>(remainder, rank, q, static_cast<int>(s % (D + 1)), key);
    int32_t* segment = table + (q / pixels) * capacity;
    const int64_t mask = capacity - 1;
    for (int64_t h = key_hash<D>(key) & mask;; h = (h + 1) & mask) {
      int32_t owner = static_cast<volatile int32_t*>(segment)[h];
      if (owner < 0) {
        owner = atomicCAS(segment + h, -1, corner);
        if (owner < 0) owner = corner;
      }
      // An entry's key never changes: any owner read here shows the same key.
      if (owner == corner || owner_has_key<D>(remainder, rank, owner, key)) {
        if (corner < owner) atomicMin(segment + h, corner);
        table_slot[s] = static_cast<int32_t>((q / pixels) * capacity + h);
        break;
      }
    }
  }
}

// Index of `key` in a segment, or -1.
template <int D>
__device__ int64_t find_key(const int32_t* remainder, const int8_t* rank, const int32_t* segment,
                            int64_t capacity, const int* key) {
  const int64_t mask = capacity - 1;
  for (int64_t h = key_hash<D>(key) & mask;; h = (h + 1) & mask) {
    const int32_t owner = segment[h];
    if (owner < 0) return -1;
    if (owner_has_key<D>(remainder, rank, owner, key)) return h;
  }
}

__global__ void first_kernel(const int32_t* table, const int32_t* table_slot, int64_t corners, int32_t* first) {
  WSLOSS_GRID_STRIDE(s, corners) first[s] = table[table_slot[s]] == s;
}

__global__ void offsets_kernel(const int32_t* vertex_id, const int32_t* first, int64_t batch,
                               int64_t corners_per_image, int64_t* offsets, int32_t* status) {
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    for (int64_t b = 0; b < batch; ++b) offsets[b] = vertex_id[b * corners_per_image];
    const int64_t last = batch * corners_per_image - 1;
    offsets[batch] = vertex_id[last] + first[last];
    status[0] = static_cast<int32_t>(offsets[batch]);
  }
}

__global__ void owner_kernel(const int32_t* first, const int32_t* vertex_id, int64_t corners, int32_t* owner) {
  WSLOSS_GRID_STRIDE(s, corners) {
    if (first[s]) owner[vertex_id[s]] = static_cast<int32_t>(s);
  }
}

// vertices holds each corner's table index on entry and its vertex id on exit.
__global__ void vertex_ids_kernel(const int32_t* table, const int32_t* vertex_id, int64_t corners,
                                  int32_t* vertices) {
  WSLOSS_GRID_STRIDE(s, corners) vertices[s] = vertex_id[table[vertices[s]]];
}

template <int D>
__global__ void neighbours_kernel(const int32_t* remainder, const int8_t* rank, const int32_t* table,
                                  const int32_t* vertex_id, const int32_t* owner, int64_t pixels,
                                  int64_t capacity, int64_t num_vertices, int32_t* neighbours) {
  WSLOSS_GRID_STRIDE(v, num_vertices) {
    const int32_t o = owner[v];
    const int64_t image = (o / (D + 1)) / pixels;
    int key[D], other[D];
    corner_key<D>(remainder, rank, o / (D + 1), o % (D + 1), key);
    for (int j = 0; j <= D; ++j) {
      // v - e_j and v + e_j, e_j = (-1, ..., D at j, ..., -1); coordinate D is implied.
      for (int sign = 0; sign < 2; ++sign) {
        const int step = sign == 0 ? 1 : -1;
#pragma unroll
        for (int i = 0; i < D; ++i) other[i] = key[i] + (i == j ? -D * step : step);
        const int64_t h = find_key<D>(remainder, rank, table + image * capacity, capacity, other);
        neighbours[(v * (D + 1) + j) * 2 + sign] =
            h < 0 ? static_cast<int32_t>(num_vertices) : vertex_id[table[image * capacity + h]];
      }
    }
  }
}

__global__ void iota_kernel(int64_t n, int32_t* out) {
  WSLOSS_GRID_STRIDE(i, n) out[i] = static_cast<int32_t>(i);
}

// Every vertex owns at least one corner, so each segment start is written.
__global__ void csr_ptr_kernel(const int32_t* sorted_vertices, int64_t n, int64_t num_vertices,
                               int32_t* splat_ptr) {
  WSLOSS_GRID_STRIDE(i, n) {
    if (i == 0 || sorted_vertices[i - 1] != sorted_vertices[i]) splat_ptr[sorted_vertices[i]] = static_cast<int32_t>(i);
    if (i == 0) splat_ptr[num_vertices] = static_cast<int32_t>(n);
  }
}

template <int D>
cudaError_t build_count(const BuildBuffers& a, cudaStream_t stream) {
  const int64_t points = a.batch * a.pixels, corners = points * (D + 1), slots = a.batch * a.capacity;
  Scales scales{};
  for (int i = 0; i < D; ++i) scales.s[i] = elevation_scale(i, D);
  cudaError_t err = cudaMemsetAsync(a.status, 0, 2 * sizeof(int32_t), stream);
  if (err == cudaSuccess) err = cudaMemsetAsync(a.table, 0xff, slots * sizeof(int32_t), stream);  // -1
  if (err != cudaSuccess) return err;
  embed_kernel<D><<<blocks_for(points), kThreads, 0, stream>>>(a.features, a.batch, a.pixels, scales, a.remainder,
                                                               a.rank, a.weights, a.status);
  insert_kernel<D><<<blocks_for(corners), kThreads, 0, stream>>>(a.remainder, a.rank, a.batch, a.pixels, a.capacity,
                                                                 a.table, a.vertices);
  first_kernel<<<blocks_for(corners), kThreads, 0, stream>>>(a.table, a.vertices, corners, a.first);
  size_t bytes = a.scan_bytes;
  err = cub::DeviceScan::ExclusiveSum(a.scan_workspace, bytes, a.first, a.vertex_id, static_cast<int>(corners),
                                      stream);
  if (err != cudaSuccess) return err;
  offsets_kernel<<<1, 1, 0, stream>>>(a.vertex_id, a.first, a.batch, a.pixels * (D + 1), a.offsets, a.status);
  return cudaGetLastError();
}

template <int D>
cudaError_t build_finish(const BuildBuffers& a, int64_t num_vertices, int32_t* neighbours, int32_t* splat_ptr,
                         int32_t* splat_index, int32_t* owner, int32_t* sort_keys, int32_t* slot_iota,
                         void* sort_workspace, size_t sort_bytes, cudaStream_t stream) {
  const int64_t corners = a.batch * a.pixels * (D + 1);
  owner_kernel<<<blocks_for(corners), kThreads, 0, stream>>>(a.first, a.vertex_id, corners, owner);
  vertex_ids_kernel<<<blocks_for(corners), kThreads, 0, stream>>>(a.table, a.vertex_id, corners, a.vertices);
  neighbours_kernel<D><<<blocks_for(num_vertices), kThreads, 0, stream>>>(
      a.remainder, a.rank, a.table, a.vertex_id, owner, a.pixels, a.capacity, num_vertices, neighbours);
  iota_kernel<<<blocks_for(corners), kThreads, 0, stream>>>(corners, slot_iota);
  int end_bit = 1;
  while ((int64_t{1} << end_bit) <= num_vertices) ++end_bit;
  // A stable radix sort keeps each vertex's corners in ascending (pixel, corner) order:
  // the splat then adds in the same order as the CPU kernel.
  size_t bytes = sort_bytes;
  cudaError_t err = cub::DeviceRadixSort::SortPairs(sort_workspace, bytes, a.vertices, sort_keys, slot_iota,
                                                    splat_index, static_cast<int>(corners), 0, end_bit, stream);
  if (err != cudaSuccess) return err;
  csr_ptr_kernel<<<blocks_for(corners), kThreads, 0, stream>>>(sort_keys, corners, num_vertices, splat_ptr);
  return cudaGetLastError();
}

template <typename T>
__global__ void splat_kernel(const int32_t* splat_ptr, const int32_t* splat_index, const float* weights,
                             const T* in, T* out, int64_t num_vertices, int64_t channels, int d1) {
  WSLOSS_GRID_STRIDE(i, num_vertices * channels) {
    const int64_t v = i / channels, ch = i % channels;
    T acc = T(0);
    for (int32_t s = splat_ptr[v]; s < splat_ptr[v + 1]; ++s) {
      const int32_t slot = splat_index[s];
      acc += static_cast<T>(weights[slot]) * in[static_cast<int64_t>(slot / d1) * channels + ch];
    }
    out[i] = acc;
  }
}

template <typename T>
__global__ void blur_kernel(const int32_t* neighbours, int j, const T* in, T* out, int64_t num_vertices,
                            int64_t channels, int d1) {
  WSLOSS_GRID_STRIDE(i, num_vertices * channels) {
    const int64_t v = i / channels, ch = i % channels;
    const int32_t* nb = neighbours + (v * d1 + j) * 2;
    out[i] = in[i] + T(0.5) * (in[nb[0] * channels + ch] + in[nb[1] * channels + ch]);
  }
}

template <typename T>
__global__ void slice_kernel(const int32_t* vertices, const float* weights, const T* lattice, T* out,
                             int64_t pixels_total, int64_t channels, int d1, T alpha) {
  WSLOSS_GRID_STRIDE(i, pixels_total * channels) {
    const int64_t q = i / channels, ch = i % channels;
    T acc = T(0);
    for (int k = 0; k < d1; ++k)
      acc += static_cast<T>(weights[q * d1 + k]) * lattice[static_cast<int64_t>(vertices[q * d1 + k]) * channels + ch];
    out[i] = alpha * acc;
  }
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
  static cudaError_t run(const BuildBuffers& a, cudaStream_t stream) { return build_count<D>(a, stream); }
};
template <int D>
struct BuildFinish {
  template <typename... Args>
  static cudaError_t run(Args... args) {
    return build_finish<D>(args...);
  }
};

}  // namespace

int64_t table_capacity(int64_t pixels, int d) {
  int64_t capacity = 64;
  while (capacity < 2 * pixels * (d + 1)) capacity *= 2;
  return capacity;
}

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

cudaError_t lattice_build_count(const BuildBuffers& buffers, cudaStream_t stream) {
  return dispatch_dim<BuildCount>(buffers.d, buffers, stream);
}

cudaError_t lattice_build_finish(const BuildBuffers& buffers, int64_t num_vertices, int32_t* neighbours,
                                 int32_t* splat_ptr, int32_t* splat_index, int32_t* owner, int32_t* sort_keys,
                                 int32_t* slot_iota, void* sort_workspace, size_t sort_bytes, cudaStream_t stream) {
  return dispatch_dim<BuildFinish>(buffers.d, buffers, num_vertices, neighbours, splat_ptr, splat_index, owner,
                                   sort_keys, slot_iota, sort_workspace, sort_bytes, stream);
}

template <typename scalar_t>
cudaError_t lattice_filter(const int32_t* vertices, const float* weights, const int32_t* neighbours,
                           const int32_t* splat_ptr, const int32_t* splat_index, int64_t pixels_total,
                           int64_t num_vertices, int d, const scalar_t* in, scalar_t* out, int64_t channels,
                           bool transpose, scalar_t* lattice_a, scalar_t* lattice_b, cudaStream_t stream) {
  if (channels == 0 || pixels_total == 0) return cudaSuccess;
  const int d1 = d + 1;
  cudaError_t err = cudaMemsetAsync(lattice_a + num_vertices * channels, 0, channels * sizeof(scalar_t), stream);
  if (err == cudaSuccess)
    err = cudaMemsetAsync(lattice_b + num_vertices * channels, 0, channels * sizeof(scalar_t), stream);
  if (err != cudaSuccess) return err;
  const int64_t lattice_items = num_vertices * channels;
  splat_kernel<scalar_t><<<blocks_for(lattice_items), kThreads, 0, stream>>>(
      splat_ptr, splat_index, weights, in, lattice_a, num_vertices, channels, d1);
  for (int step = 0; step <= d; ++step) {
    blur_kernel<scalar_t><<<blocks_for(lattice_items), kThreads, 0, stream>>>(
        neighbours, transpose ? d - step : step, lattice_a, lattice_b, num_vertices, channels, d1);
    std::swap(lattice_a, lattice_b);
  }
  slice_kernel<scalar_t><<<blocks_for(pixels_total * channels), kThreads, 0, stream>>>(
      vertices, weights, lattice_a, out, pixels_total, channels, d1, static_cast<scalar_t>(slice_scale(d)));
  return cudaGetLastError();
}

template cudaError_t lattice_filter<float>(const int32_t*, const float*, const int32_t*, const int32_t*,
                                           const int32_t*, int64_t, int64_t, int, const float*, float*, int64_t,
                                           bool, float*, float*, cudaStream_t);
template cudaError_t lattice_filter<double>(const int32_t*, const float*, const int32_t*, const int32_t*,
                                            const int32_t*, int64_t, int64_t, int, const double*, double*,
                                            int64_t, bool, double*, double*, cudaStream_t);

}  // namespace cuda
}  // namespace wsloss
