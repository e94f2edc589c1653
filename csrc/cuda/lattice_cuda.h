// Permutohedral lattice on CUDA: raw-pointer launchers, no torch. The torch wrapper
// (lattice_cuda_ops.cpp) allocates every buffer from the caching allocator and passes
// the current stream; nothing here allocates, synchronizes or keeps state.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "lattice_steps.h"

namespace wsloss {
namespace cuda {

// Outputs and scratch of the build's second phase, once the vertex count M is known.
struct FinishBuffers {
  int64_t num_vertices;
  int32_t* neighbours;   // [M][d+1][2] out
  int32_t* splat_ptr;    // [M+1] out
  int32_t* splat_index;  // [P (d+1)] out
  int32_t* owner;        // [M] scratch: the corner that opened each vertex
  int32_t* sort_keys;    // [P (d+1)] scratch
  int32_t* sort_values;  // [P (d+1)] scratch
  void* sort_workspace;
  size_t sort_bytes;
};

// Workspace bytes of the vertex-id scan and of the CSR sort.
size_t scan_workspace_bytes(int64_t items);
size_t sort_workspace_bytes(int64_t items);

// Phase 1: embed every pixel, choose the key layout, insert every corner, number the
// vertices in order of their first corner (as the CPU build does, so both give
// identical lattices); writes M to status[0] and the feature check to status[1] for
// the caller to read (the build's one host sync).
cudaError_t lattice_build_count(const BuildBuffers& buffers, void* scan_workspace, size_t scan_bytes,
                                cudaStream_t stream);

// Phase 2: vertex ids, blur neighbours (missing = M) and the splat CSR (corners of a
// vertex in ascending order).
cudaError_t lattice_build_finish(const BuildBuffers& buffers, const FinishBuffers& finish, cudaStream_t stream);

// out = alpha W B_d ... B_0 W^T in (transpose: blur order reversed), docs/DESIGN.md §1 steps 8-10.
template <typename T>
cudaError_t lattice_filter(const FilterBuffers<T>& buffers, bool transpose, cudaStream_t stream);

}  // namespace cuda
}  // namespace wsloss
