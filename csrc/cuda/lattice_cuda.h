// Permutohedral lattice on CUDA: raw-pointer launchers, no torch. The torch wrapper
// (lattice_cuda_ops.cpp) allocates every buffer from the caching allocator and passes
// the current stream; nothing here allocates, synchronizes or keeps state.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace wsloss {
namespace cuda {

// Buffers of one batched build, B images of N pixels, P = B N, d1 = d + 1.
struct BuildBuffers {
  const float* features;  // [B][d][N]
  int64_t batch, pixels;
  int d;
  int64_t capacity;       // hash slots per image: a power of two >= 2 N (d+1), so never full
  int32_t* remainder;     // [P][d1] scratch: remainder-0 point z
  int8_t* rank;           // [P][d1] scratch
  float* weights;         // [P][d1] out
  int32_t* vertices;      // [P][d1] out: table slot of each corner, then its vertex id
  int32_t* table;         // [B capacity] scratch: first corner (q (d+1) + k) with each key, or -1
  int32_t* first;         // [P][d1] scratch: 1 where a corner is its key's first corner
  int32_t* vertex_id;     // [P][d1] scratch: exclusive scan of first (the vertex a first corner opens)
  void* scan_workspace;
  size_t scan_bytes;
  int64_t* offsets;       // [B+1] out: first vertex of each image
  int32_t* status;        // [2] out: vertex count M, and 1 if a feature was not finite or too large
};

// Hash slots per image for a build.
int64_t table_capacity(int64_t pixels, int d);
// Workspace bytes of the vertex-id scan and of the CSR sort.
size_t scan_workspace_bytes(int64_t items);
size_t sort_workspace_bytes(int64_t items);

// Phase 1: embed every pixel, insert every corner, number the vertices in order of
// their first corner (as the CPU build does, so both give identical lattices); writes
// the vertex count to status[0] for the caller to read (the build's one host sync).
cudaError_t lattice_build_count(const BuildBuffers& buffers, cudaStream_t stream);

// Phase 2, once the vertex count M is known: vertex ids, blur neighbours [M][d1][2]
// (missing = M) and the splat CSR (pixels of a vertex in ascending order).
cudaError_t lattice_build_finish(const BuildBuffers& buffers, int64_t num_vertices,
                                 int32_t* neighbours, int32_t* splat_ptr, int32_t* splat_index,
                                 int32_t* owner, int32_t* sort_keys, int32_t* slot_iota,
                                 void* sort_workspace, size_t sort_bytes, cudaStream_t stream);

// out = alpha W B_d ... B_0 W^T in (transpose: blur order reversed) on pixel-major
// values [P][C]; lattice_a, lattice_b hold (M + 1) C scratch values.
template <typename scalar_t>
cudaError_t lattice_filter(const int32_t* vertices, const float* weights, const int32_t* neighbours,
                           const int32_t* splat_ptr, const int32_t* splat_index, int64_t pixels_total,
                           int64_t num_vertices, int d, const scalar_t* in, scalar_t* out,
                           int64_t channels, bool transpose, scalar_t* lattice_a, scalar_t* lattice_b,
                           cudaStream_t stream);

}  // namespace cuda
}  // namespace wsloss
