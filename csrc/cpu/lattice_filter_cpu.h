// The permutohedral filter's CPU kernels (splat, blur, slice; DESIGN §1 steps 8-10), torch-free.
// A translation unit compiles them for one instruction set, in the inline namespace
// WSLOSS_CPU_ISA with vectors of up to WSLOSS_CPU_VECTOR_BYTES: baseline (16, SSE) by
// default; lattice_filter_avx2.cpp compiles them again for AVX2 (32), under its own names.
// Only elementwise IEEE operations (no fused multiply-add), so every build gives the same bits.
// Every header these kernels need comes in through lattice_cpu.h, so that a translation unit
// can include it before switching the instruction set and this header after.
#pragma once

#include "lattice_cpu.h"

#ifndef WSLOSS_CPU_ISA
#define WSLOSS_CPU_ISA baseline
#define WSLOSS_CPU_VECTOR_BYTES 16
#endif

namespace wsloss {
namespace cpu {
inline namespace WSLOSS_CPU_ISA {

// Vectors of channels: GCC/Clang vector extension, elementwise IEEE arithmetic, so the same
// numbers as scalar code at any width. kVectorBytes, the widest: 16 (SSE, the baseline x86-64
// build's width) or 32 (AVX2, lattice_filter_avx2.cpp).
constexpr int64_t kVectorBytes = WSLOSS_CPU_VECTOR_BYTES;
template <typename scalar_t, int64_t kBytes>
struct ChannelVector {
  typedef scalar_t type __attribute__((vector_size(kBytes)));
};
template <typename scalar_t, int64_t kBytes = 16>
using ChannelLanes = typename ChannelVector<scalar_t, kBytes>::type;
template <class Vec, typename scalar_t>
inline Vec load_lanes(const scalar_t* src) {
  Vec v;
  std::memcpy(&v, src, sizeof(v));
  return v;
}
template <class Vec, typename scalar_t>
inline void store_lanes(scalar_t* dst, const Vec& v) {
  std::memcpy(dst, &v, sizeof(v));
}

// dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols: the copies
// between the channel-planar tensors and a tile's pixel-major rows. Elementwise they are
// one scalar load and store per value, as long as the whole splat; float goes through 4 x 4
// blocks of SSE registers.
template <typename scalar_t>
inline void transpose_block(const scalar_t* src, int64_t src_stride, scalar_t* dst, int64_t dst_stride,
                            int64_t rows, int64_t cols) {
  int64_t done_rows = 0;
#ifdef __SSE__
  if constexpr (std::is_same_v<scalar_t, float>) {
    const int64_t block_cols = cols / 4 * 4;
    done_rows = rows / 4 * 4;
    for (int64_t i = 0; i < done_rows; i += 4) {
      const float* s = src + i * src_stride;
      for (int64_t j = 0; j < block_cols; j += 4) {
        __m128 r0 = _mm_loadu_ps(s + j), r1 = _mm_loadu_ps(s + src_stride + j),
               r2 = _mm_loadu_ps(s + 2 * src_stride + j), r3 = _mm_loadu_ps(s + 3 * src_stride + j);
        _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
        _mm_storeu_ps(dst + j * dst_stride + i, r0);
        _mm_storeu_ps(dst + (j + 1) * dst_stride + i, r1);
        _mm_storeu_ps(dst + (j + 2) * dst_stride + i, r2);
        _mm_storeu_ps(dst + (j + 3) * dst_stride + i, r3);
      }
      for (int64_t j = block_cols; j < cols; ++j) {
        for (int64_t k = 0; k < 4; ++k) dst[j * dst_stride + i + k] = s[k * src_stride + j];
      }
    }
  }
#endif
  for (int64_t i = done_rows; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * dst_stride + i] = src[i * src_stride + j];
}

// Blur neighbours are scattered over the lattice, so their rows miss the caches: fetching
// the rows of the vertex this far ahead hides most of that latency.
constexpr int64_t kPrefetchDistance = 16;

template <typename scalar_t>
inline void prefetch_row(const scalar_t* row, int64_t c) {
  for (int64_t i = 0; i < c; i += 64 / static_cast<int64_t>(sizeof(scalar_t))) __builtin_prefetch(row + i);
  __builtin_prefetch(row + c - 1);
}

// One filtering of channels [c0, c0 + c) (c <= kMaxChunkChannels) of the images in `part` of
// channel-planar values in/out [B][C][N]: out = alpha W B_d ... B_0 W^T in (transpose: blur
// order reversed), docs/DESIGN.md §1 steps 8-10. `lattice_a`, `lattice_b` hold M + 1 rows of
// `stride` >= padded_channels(c) scratch values; row M is zero (the caller's) and stands for
// every missing neighbour. The splat is a scatter with one image per thread when there are
// at least `threads` images, else a gather over the CSR, which needs `pixel_major` scratch of
// B N padded_channels(c) values; both add each vertex's contributions in the same (pixel,
// corner) order, so they give identical results. kChannels > 0 fixes c at compile time, so
// that the channel loops unroll into vector operations (same arithmetic per channel, so the
// same results; the padding lanes carry zeros through).
template <int kChannels, typename scalar_t, class ParallelFor>
void lattice_filter_chunk(const LatticeView& lat, const LatticeRange& part, const scalar_t* in, scalar_t* out,
                          int64_t channels, int64_t c0, int64_t chunk, int64_t stride, bool transpose,
                          scalar_t* lattice_a, scalar_t* lattice_b, scalar_t* pixel_major,
                          const FilterAffine<scalar_t>& affine, ParallelFor&& parallel_for) {
  const int64_t c = kChannels > 0 ? kChannels : chunk;
  // The widest vectors that tile a row of the fixed channel count, else 16 bytes.
  constexpr int64_t kRowBytes = padded_channels(kChannels > 0 ? kChannels : 1) * int64_t{sizeof(scalar_t)};
  using Vec = ChannelLanes<scalar_t, (kChannels > 0 && kRowBytes % kVectorBytes == 0 ? kVectorBytes : 16)>;
  constexpr int64_t kVectorLanes = sizeof(Vec) / sizeof(scalar_t);
  constexpr int64_t kMaxVectors = padded_channels(kChannels > 0 ? kChannels : kMaxChunkChannels) / kVectorLanes;
  const int64_t lanes = padded_channels(c), vectors = lanes / kVectorLanes;
  const int d1 = lat.d + 1;
  const int64_t pixels = lat.pixels;
  const int64_t tiles_per_image = (pixels + kTilePixels - 1) / kTilePixels;
  const int64_t tile_begin = part.image_begin * tiles_per_image, tile_end = part.image_end * tiles_per_image;
  const int64_t vertex_grain = std::max<int64_t>(64, 8192 / lanes);
  // Calls f(q0, count, tile) per tile of one image's pixels, tile[t * lanes + ch] holding
  // channel c0 + ch of pixel q0 + t (q = b N + p), zero for ch >= c.
  auto for_each_input_tile = [&](int64_t tile_begin, int64_t tile_end, auto&& f) {
    scalar_t tile[kTilePixels * padded_channels(kMaxChunkChannels)], factors[kTilePixels];
    std::fill(tile, tile + kTilePixels * lanes, scalar_t(0));
    for (int64_t i = tile_begin; i < tile_end; ++i) {
      const int64_t b = i / tiles_per_image, p0 = (i % tiles_per_image) * kTilePixels;
      const int64_t count = std::min(kTilePixels, pixels - p0);
      transpose_block(in + ((b * channels + c0) * pixels + p0), pixels, tile, lanes, c, count);
      if (affine.scale_in.data != nullptr) {
        load_factors(affine.scale_in, b, p0, count, factors);
        for (int64_t t = 0; t < count; ++t)
          for (int64_t ch = 0; ch < lanes; ++ch) tile[t * lanes + ch] *= factors[t];
      }
      f(b * pixels + p0, count, tile);
    }
  };

  if (pixel_major == nullptr) {
    std::fill(lattice_a + part.vertex_begin * stride, lattice_a + part.vertex_end * stride, scalar_t(0));
    parallel_for(part.image_begin, part.image_end, 1, [&](int64_t image_begin, int64_t image_end) {
      for_each_input_tile(image_begin * tiles_per_image, image_end * tiles_per_image,
                          [&](int64_t q0, int64_t count, const scalar_t* tile) {
                            for (int64_t t = 0; t < count; ++t) {
                              const int64_t q = q0 + t;
                              for (int k = 0; k < d1; ++k) {
                                const scalar_t w = static_cast<scalar_t>(lat.weights[q * d1 + k]);
                                scalar_t* row = lattice_a + static_cast<int64_t>(lat.vertices[q * d1 + k]) * stride;
                                for (int64_t ch = 0; ch < lanes; ++ch) row[ch] += w * tile[t * lanes + ch];
                              }
                            }
                          });
    });
  } else {
    parallel_for(tile_begin, tile_end, 16, [&](int64_t begin, int64_t end) {
      for_each_input_tile(begin, end, [&](int64_t q0, int64_t count, const scalar_t* tile) {
        std::copy(tile, tile + count * lanes, pixel_major + q0 * lanes);
      });
    });
    parallel_for(part.vertex_begin, part.vertex_end, vertex_grain, [&](int64_t begin, int64_t end) {
      for (int64_t v = begin; v < end; ++v) {
        scalar_t* acc = lattice_a + v * stride;
        for (int64_t ch = 0; ch < lanes; ++ch) acc[ch] = scalar_t(0);
        for (int32_t s = lat.splat_ptr[v]; s < lat.splat_ptr[v + 1]; ++s) {
          const int32_t slot = lat.splat_index[s];
          const scalar_t w = static_cast<scalar_t>(lat.weights[slot]);
          const scalar_t* row = pixel_major + static_cast<int64_t>(slot / d1) * lanes;
          for (int64_t ch = 0; ch < lanes; ++ch) acc[ch] += w * row[ch];
        }
      }
    });
  }

  for (int step = 0; step <= lat.d; ++step) {
    const int j = transpose ? lat.d - step : step;
    parallel_for(part.vertex_begin, part.vertex_end, vertex_grain, [&](int64_t begin, int64_t end) {
      for (int64_t v = begin; v < end; ++v) {
        const int32_t* nb = lat.neighbours + (v * d1 + j) * 2;
        if (v + kPrefetchDistance < end) {
          const int32_t* ahead = nb + kPrefetchDistance * d1 * 2;
          prefetch_row(lattice_a + static_cast<int64_t>(ahead[0]) * stride, lanes);
          prefetch_row(lattice_a + static_cast<int64_t>(ahead[1]) * stride, lanes);
        }
        const scalar_t* own = lattice_a + v * stride;
        const scalar_t* n1 = lattice_a + static_cast<int64_t>(nb[0]) * stride;
        const scalar_t* n2 = lattice_a + static_cast<int64_t>(nb[1]) * stride;
        scalar_t* res = lattice_b + v * stride;
        for (int64_t ch = 0; ch < lanes; ++ch) res[ch] = own[ch] + scalar_t(0.5) * (n1[ch] + n2[ch]);
      }
    });
    std::swap(lattice_a, lattice_b);
  }

  const scalar_t alpha = static_cast<scalar_t>(slice_scale(lat.d));
  parallel_for(tile_begin, tile_end, 16, [&](int64_t begin, int64_t end) {
    // tile[t * lanes + ch]: pixel-major sums; planar[ch * kTilePixels + t]: their transpose.
    scalar_t tile[kTilePixels * padded_channels(kMaxChunkChannels)], planar[kMaxChunkChannels * kTilePixels];
    scalar_t factors[kTilePixels];
    const bool scaled = affine.scale_out.data != nullptr;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / tiles_per_image, p0 = (i % tiles_per_image) * kTilePixels;
      const int64_t count = std::min(kTilePixels, pixels - p0);
      if (scaled) load_factors(affine.scale_out, b, p0, count, factors);
      for (int64_t t = 0; t < count; ++t) {
        const int64_t q = b * pixels + p0 + t;
        scalar_t* row = tile + t * lanes;
        if (lanes < kChannelLanes) {  // unpadded
          scalar_t acc[kChannelLanes] = {};
          for (int k = 0; k < d1; ++k) {
            const scalar_t w = static_cast<scalar_t>(lat.weights[q * d1 + k]);
            const scalar_t* val = lattice_a + static_cast<int64_t>(lat.vertices[q * d1 + k]) * stride;
            for (int64_t ch = 0; ch < c; ++ch) acc[ch] += w * val[ch];
          }
          for (int64_t ch = 0; ch < c; ++ch) row[ch] = scaled ? (alpha * acc[ch]) * factors[t] : alpha * acc[ch];
          continue;
        }
        // Explicit vectors held in registers: as a loop over channels the compiler left the
        // sums in memory, one scalar operation a channel.
        Vec acc[kMaxVectors];
        for (int64_t j = 0; j < vectors; ++j) acc[j] = Vec{};
        for (int k = 0; k < d1; ++k) {
          const Vec w = Vec{} + static_cast<scalar_t>(lat.weights[q * d1 + k]);
          const scalar_t* val = lattice_a + static_cast<int64_t>(lat.vertices[q * d1 + k]) * stride;
          for (int64_t j = 0; j < vectors; ++j) acc[j] += w * load_lanes<Vec>(val + j * kVectorLanes);
        }
        if (scaled) {
          for (int64_t j = 0; j < vectors; ++j) store_lanes(row + j * kVectorLanes, (alpha * acc[j]) * factors[t]);
        } else {
          for (int64_t j = 0; j < vectors; ++j) store_lanes(row + j * kVectorLanes, alpha * acc[j]);
        }
      }
      scalar_t* dst = out + (b * channels + c0) * pixels + p0;
      if (affine.add == nullptr) {
        transpose_block(tile, lanes, dst, pixels, count, c);
        continue;
      }
      transpose_block(tile, lanes, planar, kTilePixels, count, c);
      const scalar_t* add = affine.add + (b * channels + c0) * pixels + p0;
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t t = 0; t < count; ++t)
          dst[ch * pixels + t] = add[ch * pixels + t] + planar[ch * kTilePixels + t];
    }
  });
}

// Calls f(std::integral_constant<int, n>) with n = c for the common channel counts, else n = 0.
template <class F>
void with_fixed_channels(int64_t c, F&& f) {
  switch (c) {
#define WSLOSS_FILTER_FIXED(n) \
  case n:                      \
    return f(std::integral_constant<int, n>{});
    WSLOSS_FILTER_FIXED(1)
    WSLOSS_FILTER_FIXED(2)
    WSLOSS_FILTER_FIXED(3)
    WSLOSS_FILTER_FIXED(4)
    WSLOSS_FILTER_FIXED(5)
    WSLOSS_FILTER_FIXED(6)
    WSLOSS_FILTER_FIXED(8)
    WSLOSS_FILTER_FIXED(16)
    WSLOSS_FILTER_FIXED(21)
    WSLOSS_FILTER_FIXED(32)
#undef WSLOSS_FILTER_FIXED
    default:
      return f(std::integral_constant<int, 0>{});
  }
}

// The filtering of channels [c0, c0 + c) of every image, on the threads of parallel_for, with
// scratch lattices of (M + 1) padded_channels(c) values and, when not null, B N
// padded_channels(c) of pixel_major (lattice_filter_chunk).
template <typename scalar_t, class ParallelFor>
void lattice_filter(const LatticeView& lat, const scalar_t* in, scalar_t* out, int64_t channels,
                    int64_t c0, int64_t c, bool transpose, scalar_t* lattice_a, scalar_t* lattice_b,
                    scalar_t* pixel_major, ParallelFor&& parallel_for, const FilterAffine<scalar_t>& affine = {}) {
  const int64_t m = lat.num_vertices, stride = padded_channels(c);
  clear_missing_rows(lattice_a, lattice_b, m, stride);
  with_fixed_channels(c, [&](auto fixed) {
    lattice_filter_chunk<decltype(fixed)::value>(lat, LatticeRange{0, lat.batch, 0, m}, in, out, channels, c0, c,
                                                 stride, transpose, lattice_a, lattice_b, pixel_major, affine,
                                                 parallel_for);
  });
}

// The filtering of channels [c0, c0 + c) of the images in `part` alone, on the calling thread,
// in scratch lattices of M + 1 rows of `stride` >= padded_channels(c) values whose row M the
// caller zeroed (clear_missing_rows): the rows of one image, a few channels wide, stay in
// cache through the blur, where the rows of all images would stream from memory (d + 1
// times). Same results as lattice_filter.
template <typename scalar_t>
void lattice_filter_images(const LatticeView& lat, const LatticeRange& part, const scalar_t* in, scalar_t* out,
                           int64_t channels, int64_t c0, int64_t c, int64_t stride, bool transpose,
                           scalar_t* lattice_a, scalar_t* lattice_b, const FilterAffine<scalar_t>& affine = {}) {
  with_fixed_channels(c, [&](auto fixed) {
    lattice_filter_chunk<decltype(fixed)::value>(lat, part, in, out, channels, c0, c, stride, transpose, lattice_a,
                                                 lattice_b, static_cast<scalar_t*>(nullptr), affine, SerialFor{});
  });
}

// This instruction set's kernels as a table (lattice_cpu_ops.cpp picks the one to run); a
// constant, so naming it runs none of the set's instructions.
template <typename scalar_t>
inline constexpr FilterKernels<scalar_t> kFilterKernels{&lattice_filter<scalar_t, const ParallelForFunction&>,
                                                        &lattice_filter_images<scalar_t>};

}  // namespace WSLOSS_CPU_ISA
}  // namespace cpu
}  // namespace wsloss
