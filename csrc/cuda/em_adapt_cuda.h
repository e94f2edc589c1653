// EM-Adapt on CUDA: a raw-pointer launcher, no torch. The torch wrapper
// (em_adapt_cuda_ops.cpp) allocates every buffer and passes the current stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../em_adapt_math.h"

namespace wsloss {
namespace cuda {

template <typename T>
struct EmAdaptBuffers {
  const T* logits;        // [B][K][N]
  const bool* present;    // [B][K]
  const int64_t* order;   // [B][K] visiting order
  int64_t batch, classes, pixels;
  uint32_t rank_bg, rank_fg;  // k of docs/DESIGN.md §4 for class 0 and for the others
  bool suppress_absent;
  T margin;
  T* max_score;           // [B][N] scratch: the running maximum M
  uint32_t* histograms;   // [kHistogramBuffers][B][kDigitBins] scratch
  int64_t* labels;        // [B][N] out
  T* biases;              // [B][K] out
};

// The multi-block path rotates three per-image histograms, so that one is cleared
// while one is filled and one is read, with one grid barrier per pass.
constexpr int kHistogramBuffers = 3;

// Two launches for the whole batch: the bias selection (one block per image when images
// are small, else a cooperative grid of several blocks per image), then the labels.
template <typename T>
cudaError_t em_adapt(const EmAdaptBuffers<T>& buffers, cudaStream_t stream);

}  // namespace cuda
}  // namespace wsloss
