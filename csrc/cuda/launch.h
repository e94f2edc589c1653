// CUDA launch helpers shared by the .cu files: the grid size of a thread-per-item launch and
// the grid-stride loop its kernel runs. Includes only CUDA headers and <cstdint>, no torch.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace wsloss {
namespace cuda {

// The most blocks a one-dimensional launch gets; grid-stride loops cover the rest.
constexpr int64_t kMaxGridBlocks = int64_t{1} << 20;

// Blocks of `threads` threads for `items` items, one per thread: ceil(items / threads),
// clamped to [1, kMaxGridBlocks] (an empty launch still gets one block).
inline unsigned blocks_for(int64_t items, int threads) {
  const int64_t blocks = (items + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks < kMaxGridBlocks ? blocks : kMaxGridBlocks));
}

}  // namespace cuda
}  // namespace wsloss

// for (i = this thread's first item; i < n; i += threads in the grid), with int64_t i; n is
// evaluated on every iteration.
#define WSLOSS_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < (n); i += int64_t{gridDim.x} * blockDim.x)
