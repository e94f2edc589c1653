// EM-Adapt on CUDA (docs/DESIGN.md §4): one launch selects the biases of all images and classes,
// a second writes the labels.
//
// Each bias is the k-th smallest of N differences M - F_l, found by radix selection:
// per pass, a histogram of one 11-bit digit of the keys that match the digits chosen
// so far, in shared memory; a block scan then finds the digit holding rank k. Images
// up to kBlockPathPixels take one block each (block barriers only). Larger images take
// several blocks each in a cooperative grid: block histograms are added into a
// per-image histogram in global memory, one grid barrier per pass. Includes only CUDA
// headers, launch.h and the shared arithmetic, so that CI compiles it alone with nvcc.
#include <cooperative_groups.h>

#include <algorithm>
#include <cub/block/block_scan.cuh>

#include "em_adapt_cuda.h"
#include "launch.h"

namespace wsloss {
namespace cuda {
namespace {

constexpr int kEmThreads = 512;
constexpr int kBinsPerThread = kDigitBins / kEmThreads;
static_assert(kDigitBins % kEmThreads == 0, "every thread scans whole bins");
// Images up to this many pixels take one block each.
constexpr int64_t kBlockPathPixels = 16384;
// Fewest pixels per thread that justify another block for an image.
constexpr int64_t kMinPixelsPerThread = 8;
// Pixels whose loads one thread issues together in a histogram pass.
constexpr int kPixelsInFlight = 4;
constexpr int kLabelThreads = 256;

template <typename T>
__device__ EmAdaptImage<T> image_view(const EmAdaptBuffers<T>& a, int64_t b) {
  return {a.logits + b * a.classes * a.pixels, a.present + b * a.classes, a.order + b * a.classes, a.classes,
          a.pixels};
}

// kGrid: a cooperative grid of exactly B * blocks_per_image blocks, block i working on
// image i / blocks_per_image. Otherwise blocks_per_image is 1 and blocks loop over images.
template <typename T, bool kGrid>
__global__ void __launch_bounds__(kEmThreads, 1) em_adapt_kernel(EmAdaptBuffers<T> a, int blocks_per_image) {
  using Key = typename OrderedKey<T>::type;
  constexpr int kPasses = kSelectPasses<Key>;
  using BlockScan = cub::BlockScan<uint32_t, kEmThreads>;
  __shared__ uint32_t histogram[kDigitBins];
  __shared__ typename BlockScan::TempStorage scan_storage;
  __shared__ uint32_t choice[2];  // the chosen digit and the rank within its bin

  const int sub = kGrid ? blockIdx.x % blocks_per_image : 0;
  const int64_t first_image = kGrid ? blockIdx.x / blocks_per_image : blockIdx.x;
  const int64_t image_stride = kGrid ? a.batch : gridDim.x;
  const int64_t pixel_begin = int64_t{sub} * kEmThreads + threadIdx.x;
  const int64_t pixel_stride = int64_t{blocks_per_image} * kEmThreads;

  // Every block of a grid must reach every grid barrier: all run as many steps as the
  // image with the most present classes.
  int grid_steps = 0;
  if (kGrid) {
    for (int64_t b = 0; b < a.batch; ++b) grid_steps = max(grid_steps, visit_count(image_view(a, b)));
  }
  if (threadIdx.x == 0) choice[0] = choice[1] = 0;
  unsigned pass_counter = 0;

  for (int64_t b = first_image; b < a.batch; b += image_stride) {
    const EmAdaptImage<T> image = image_view(a, b);
    T* max_score = a.max_score + b * a.pixels;
    T* bias = a.biases + b * a.classes;
    if (sub == 0) {  // before thread 0 writes a bias: at least one barrier lies between
      for (int64_t c = threadIdx.x; c < a.classes; c += kEmThreads) bias[c] = T(0);
    }
    // Each thread keeps its own pixels in every phase, so M needs no barrier.
    for (int64_t p = pixel_begin; p < a.pixels; p += pixel_stride) max_score[p] = initial_max(image, p);
    const int steps = kGrid ? grid_steps : visit_count(image);
    for (int t = 0; t < steps; ++t) {
      const int64_t l = visited_class(image, t);  // -1: this image has no t-th class
      const T* score = image.logits + (l < 0 ? 0 : l) * a.pixels;
      Key prefix = 0;
      uint32_t rank = l == 0 ? a.rank_bg : a.rank_fg;
      for (int pass = 0; pass < kPasses; ++pass, ++pass_counter) {
        for (int i = threadIdx.x; i < kDigitBins; i += kEmThreads) histogram[i] = 0;
        __syncthreads();
        if (l >= 0) {
          for (int64_t p0 = pixel_begin; p0 < a.pixels; p0 += kPixelsInFlight * pixel_stride) {
            // Loads first, so that each thread has several in flight.
            T m[kPixelsInFlight], f[kPixelsInFlight];
#pragma unroll
            for (int j = 0; j < kPixelsInFlight; ++j) {
              const int64_t p = p0 + j * pixel_stride;
              m[j] = p < a.pixels ? max_score[p] : T(0);
              f[j] = p < a.pixels ? score[p] : T(0);
            }
#pragma unroll
            for (int j = 0; j < kPixelsInFlight; ++j) {
              const Key key = ordered_key(em_difference(m[j], f[j]));
              if (p0 + j * pixel_stride < a.pixels && key_has_prefix(key, prefix, pass)) {
                // Differences repeat (0 wherever class l is the maximum): one atomic per digit and warp.
                const int digit = key_digit(key, pass);
                namespace cg = cooperative_groups;
                const cg::coalesced_group same = cg::labeled_partition(cg::coalesced_threads(), digit);
                if (same.thread_rank() == 0) atomicAdd(histogram + digit, same.size());
              }
            }
          }
        }
        __syncthreads();
        if (kGrid) {
          uint32_t* filled = a.histograms + ((pass_counter % kHistogramBuffers) * a.batch + b) * kDigitBins;
          uint32_t* cleared =
              a.histograms + (((pass_counter + 1) % kHistogramBuffers) * a.batch + b) * kDigitBins;
          for (int i = threadIdx.x; i < kDigitBins; i += kEmThreads) {
            if (histogram[i] != 0) atomicAdd(filled + i, histogram[i]);
            if (sub == 0) cleared[i] = 0;  // last read two passes ago, next filled after the barrier
          }
          cooperative_groups::this_grid().sync();
          // L2, not a possibly stale L1 line from three passes ago.
          for (int i = threadIdx.x; i < kDigitBins; i += kEmThreads) histogram[i] = __ldcg(filled + i);
          __syncthreads();
        }
        const int begin = threadIdx.x * kBinsPerThread;
        uint32_t count = 0;
        for (int i = begin; i < begin + kBinsPerThread; ++i) count += histogram[i];
        uint32_t below;
        BlockScan(scan_storage).ExclusiveSum(count, below);
        int digit;
        uint32_t rank_in_digit;
        if (find_digit(histogram, begin, begin + kBinsPerThread, below, rank, &digit, &rank_in_digit)) {
          choice[0] = static_cast<uint32_t>(digit);
          choice[1] = rank_in_digit;
        }
        __syncthreads();
        prefix = (pass == 0 ? Key{0} : prefix << digit_width<Key>(pass)) | Key{choice[0]};
        rank = choice[1];
      }
      if (l >= 0) {
        const T b_l = key_value<T>(prefix);
        if (sub == 0 && threadIdx.x == 0) bias[l] = b_l;
        for (int64_t p = pixel_begin; p < a.pixels; p += pixel_stride) {
          max_score[p] = em_max(max_score[p], score[p] + b_l);
        }
      }
    }
  }
}

// Thread per pixel, after the biases are known.
template <typename T>
__global__ void __launch_bounds__(kLabelThreads) em_labels_kernel(EmAdaptBuffers<T> a) {
  WSLOSS_GRID_STRIDE(q, a.batch * a.pixels) {
    const int64_t b = q / a.pixels;
    a.labels[q] = pixel_label(image_view(a, b), q - b * a.pixels, a.biases + b * a.classes, a.suppress_absent,
                              a.margin);
  }
}

// Blocks per image for the cooperative path, or 1 where one block per image is used.
template <typename T>
cudaError_t blocks_per_image(const EmAdaptBuffers<T>& a, int* blocks) {
  *blocks = 1;
  if (a.pixels <= kBlockPathPixels) return cudaSuccess;
  int device, multiprocessors, cooperative, per_multiprocessor;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess) {
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_multiprocessor, em_adapt_kernel<T, true>, kEmThreads, 0);
  }
  if (err != cudaSuccess || !cooperative) return err;
  // A cooperative grid must be resident at once.
  const int64_t resident = int64_t{multiprocessors} * per_multiprocessor;
  const int64_t useful = (a.pixels + kEmThreads * kMinPixelsPerThread - 1) / (kEmThreads * kMinPixelsPerThread);
  *blocks = static_cast<int>(std::max<int64_t>(1, std::min(useful, resident / a.batch)));
  return cudaSuccess;
}

}  // namespace

template <typename T>
cudaError_t em_adapt(const EmAdaptBuffers<T>& buffers, cudaStream_t stream) {
  if (buffers.batch == 0) return cudaSuccess;
  int blocks = 1;
  cudaError_t err = blocks_per_image(buffers, &blocks);
  if (err != cudaSuccess) return err;
  if (blocks > 1) {
    err = cudaMemsetAsync(buffers.histograms, 0,
                          sizeof(uint32_t) * kHistogramBuffers * buffers.batch * kDigitBins, stream);
    if (err != cudaSuccess) return err;
    void* args[] = {const_cast<EmAdaptBuffers<T>*>(&buffers), &blocks};
    err = cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(em_adapt_kernel<T, true>),
                                      dim3(static_cast<unsigned>(buffers.batch * blocks)), dim3(kEmThreads), args, 0,
                                      stream);
  } else {
    const unsigned grid = static_cast<unsigned>(std::min(buffers.batch, kMaxGridBlocks));
    em_adapt_kernel<T, false><<<grid, kEmThreads, 0, stream>>>(buffers, 1);
    err = cudaGetLastError();
  }
  if (err != cudaSuccess) return err;
  // B >= 1 (returned above) and N >= 1 (check_em_adapt), so blocks_for's lower clamp never applies.
  em_labels_kernel<T><<<blocks_for(buffers.batch * buffers.pixels, kLabelThreads), kLabelThreads, 0, stream>>>(buffers);
  return cudaGetLastError();
}

template cudaError_t em_adapt<float>(const EmAdaptBuffers<float>&, cudaStream_t);
template cudaError_t em_adapt<double>(const EmAdaptBuffers<double>&, cudaStream_t);

}  // namespace cuda
}  // namespace wsloss
