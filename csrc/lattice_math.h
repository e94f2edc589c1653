// Permutohedral lattice arithmetic shared by the CPU and CUDA kernels.
//
// Adams, Baek & Davis, "Fast High-Dimensional Filtering Using the Permutohedral
// Lattice" (Eurographics 2010), in the variant of Kraehenbuehl & Koltun (NIPS 2011)
// that the rloss reference uses. Every step follows docs/DESIGN.md §1 in
// float32 with one rounding per operation: a pixel whose remainders tie must land
// in the same simplex as in the reference, on every device.
//
// This header includes no torch and no CUDA runtime headers so that it compiles in
// a plain C++ test, in the torch CPU wrapper and in a torch-free .cu file.
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace wsloss {

// Largest feature dimension the kernels are instantiated for.
constexpr int kMaxFeatureDim = 16;
// Features beyond this magnitude would overflow the int32 lattice coordinates.
constexpr float kMaxFeatureMagnitude = 1.0e7f;

// Exactly rounded float32 operations that the compiler may not fuse into an FMA.
WSLOSS_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;  // host files are compiled with -ffp-contract=off
#endif
}
WSLOSS_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
WSLOSS_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
WSLOSS_HD int round_half_even(float v) {
#if defined(__CUDA_ARCH__)
  return __float2int_rn(v);
#else
  // Adding and subtracting 1.5 * 2^23 rounds to an integer in the default
  // round-to-nearest-even mode, without a libm call, for |v| < 2^22.
  constexpr float kMagic = 12582912.0f;
  if (fabsf(v) < 4194304.0f) return static_cast<int>((v + kMagic) - kMagic);
  return static_cast<int>(std::nearbyint(v));
#endif
}

// DESIGN §1 step 2: s_i = float32(double(1/sqrt((i+1)(i+2))) * double(float32(sqrt(2/3)(d+1)))).
WSLOSS_HD float elevation_scale(int i, int d) {
  const float inv_std_dev = static_cast<float>(sqrt(2.0 / 3.0) * (d + 1));
  return static_cast<float>(1.0 / sqrt(static_cast<double>((i + 1) * (i + 2))) *
                            static_cast<double>(inv_std_dev));
}

// alpha of DESIGN §1 step 10: the slice's scaling constant 1 / (1 + 2^-d).
WSLOSS_HD float slice_scale(int d) { return 1.0f / (1.0f + ldexpf(1.0f, -d)); }

// True when a feature value can be embedded without overflowing int32 coordinates.
WSLOSS_HD bool feature_in_range(float f) { return fabsf(f) <= kMaxFeatureMagnitude; }

// Embeds one pixel (DESIGN §1 steps 3-6): from its features f_i = feature[i * stride]
// and the scales s_i, computes the remainder-0 point z[0..d], the ranks rank[0..d]
// and the barycentric weights bary[0..d]. Arrays hold at least d + 2 entries.
WSLOSS_HD void lattice_embed(const float* feature, int64_t stride, const float* scale, int d,
                             int* z, int* rank, float* bary) {
  float elevated[kMaxFeatureDim + 1];
  float sum = 0.0f;
  for (int j = d; j > 0; --j) {
    const float cf = mul_rn(feature[(j - 1) * stride], scale[j - 1]);
    elevated[j] = sub_rn(sum, mul_rn(static_cast<float>(j), cf));
    sum = add_rn(sum, cf);
  }
  elevated[0] = sum;

  const float down_factor = 1.0f / static_cast<float>(d + 1);
  int remainder_sum = 0;
  for (int i = 0; i <= d; ++i) {
    const int r = round_half_even(mul_rn(elevated[i], down_factor));
    z[i] = r * (d + 1);
    remainder_sum += r;
    rank[i] = 0;
  }
  // Rank of each differential; a tie ranks the later coordinate as the smaller.
  float delta[kMaxFeatureDim + 1];
  for (int i = 0; i <= d; ++i) delta[i] = sub_rn(elevated[i], static_cast<float>(z[i]));
  for (int i = 0; i < d; ++i) {
    for (int j = i + 1; j <= d; ++j) {
      const int smaller = delta[i] < delta[j];  // branch-free: the outcome is data-random
      rank[i] += smaller;
      rank[j] += 1 - smaller;
    }
  }
  for (int i = 0; i <= d; ++i) {
    rank[i] += remainder_sum;
    if (rank[i] < 0) {
      rank[i] += d + 1;
      z[i] += d + 1;
    } else if (rank[i] > d) {
      rank[i] -= d + 1;
      z[i] -= d + 1;
    }
  }

  // Barycentric weights (DESIGN §1 step 6): b[j] = v(rank d - j) - v(rank d + 1 - j) for j = 1..d
  // and b[0] = v(rank d) + (1 - v(rank 0)), with v = (elevated - z) / (d + 1) per coordinate;
  // each a single rounding of the same operands as accumulating them in coordinate order.
  float by_rank[kMaxFeatureDim + 1] = {};  // every entry is set (ranks are a permutation); cleared for -Wall
  for (int i = 0; i <= d; ++i) by_rank[rank[i]] = mul_rn(sub_rn(elevated[i], static_cast<float>(z[i])), down_factor);
  bary[0] = add_rn(by_rank[d], add_rn(1.0f, -by_rank[0]));
  for (int j = 1; j <= d; ++j) bary[j] = sub_rn(by_rank[d - j], by_rank[d + 1 - j]);
}

// DESIGN §1 step 7: a coordinate of the k-th vertex of a pixel's simplex, from that
// coordinate's remainder-0 value z_i and rank_i.
WSLOSS_HD int vertex_coordinate(int z_i, int rank_i, int d, int k) {
  return rank_i <= d - k ? z_i + k : z_i + k - (d + 1);
}

// ---------------------------------------------------------------- a filtering's message parts
// out = softmax_groups(add + scale_out * A (scale_in * values)), each part optional: a whole
// mean-field update (Kraehenbuehl & Koltun 2011, Algorithm 1) in the filtering's own passes.

// A per-pixel factor broadcast over channels: data[b * batch_stride + p * pixel_stride]
// (strides 0 broadcast one image's, or one, factor); data null means 1.
template <typename T>
struct PixelScale {
  const T* data = nullptr;
  int64_t batch_stride = 0, pixel_stride = 0;
  WSLOSS_HD T at(int64_t b, int64_t p) const { return data[b * batch_stride + p * pixel_stride]; }
};

// In place, the softmax of the `group` values v[0], v[stride], ... (one pixel's classes):
// exp(v - max) / sum, torch.softmax's formula (max first, so no overflow; -inf gives 0).
template <typename T>
WSLOSS_HD void softmax_in_place(T* v, int64_t stride, int64_t group) {
  T top = v[0];
  for (int64_t g = 1; g < group; ++g) top = v[g * stride] > top ? v[g * stride] : top;
  T sum = T(0);
  for (int64_t g = 0; g < group; ++g) {
#if defined(__CUDA_ARCH__)
    const T e = exp(v[g * stride] - top);
#else
    const T e = std::exp(v[g * stride] - top);
#endif
    v[g * stride] = e;
    sum += e;
  }
  for (int64_t g = 0; g < group; ++g) v[g * stride] /= sum;
}

}  // namespace wsloss
