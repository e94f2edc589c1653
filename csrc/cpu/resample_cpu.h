// Linear downscaling of S and its adjoint on the CPU (docs/DESIGN.md §2), one row (b, c, z, y) at
// a time: the x taps are tabled once per call, the row's z and y taps per row. The forward reads
// S once and writes the masked downscaled S~; the adjoint writes each full-resolution gradient
// element once (no zero fill, no scatter: deterministic). Torch-free so that the C++ tests can
// run it; parallel_for(begin, end, grain, f) runs the rows.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../resample_math.h"

namespace wsloss {
namespace cpu {

// out [B][C][d][h][w] = the downscale of values [B][C][D][H][W], times rois [B][d][h][w] if given.
// The same bits as resample_down_element for finite values: the taps of weight 0 it skips add +0.
template <typename T, class ParallelFor>
void resample_down(const ResampleShape<T>& s, const T* values, const T* rois, T* out, const ParallelFor& parallel_for) {
  std::vector<LinearTaps<T>> x_taps(s.out[2]);
  for (int64_t x = 0; x < s.out[2]; ++x) x_taps[x] = linear_taps(x, s.ratio[2], s.in[2], s.out[2]);
  const bool x_unchanged = s.in[2] == s.out[2];  // taps (x, x, 1, 0)
  const int64_t rows = s.batch * s.channels * s.out[0] * s.out[1];
  const int64_t in_volume = s.in[0] * s.in[1] * s.in[2], out_plane = s.out[0] * s.out[1] * s.out[2];
  parallel_for(0, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, s.out[2])), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t y = r % s.out[1], z = (r / s.out[1]) % s.out[0], image_channel = r / (s.out[0] * s.out[1]);
      const LinearTaps<T> tz = linear_taps(z, s.ratio[0], s.in[0], s.out[0]);
      const LinearTaps<T> ty = linear_taps(y, s.ratio[1], s.in[1], s.out[1]);
      const T* volume = values + image_channel * in_volume;
      const int64_t zs[2] = {tz.low, tz.high}, ys[2] = {ty.low, ty.high};
      const T wz[2] = {tz.low_weight, tz.high_weight}, wy[2] = {ty.low_weight, ty.high_weight};
      const T* src[4];
      T weight[4];
      int taps = 0;
      for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b) {
          if (wz[a] * wy[b] == T(0)) continue;
          src[taps] = volume + (zs[a] * s.in[1] + ys[b]) * s.in[2];
          weight[taps++] = wz[a] * wy[b];
        }
      T* __restrict dst = out + r * s.out[2];
      const T* mask = rois == nullptr ? nullptr
                                      : rois + (image_channel / s.channels) * out_plane + (z * s.out[1] + y) * s.out[2];
      if (x_unchanged && taps == 1) {  // a plain (weighted) copy of one row: vectorized
        const T w = weight[0];
        const T* __restrict row = src[0];
        for (int64_t x = 0; x < s.out[2]; ++x) dst[x] = w * row[x];
      } else {
        for (int64_t x = 0; x < s.out[2]; ++x) {
          const LinearTaps<T>& tx = x_taps[x];
          T sum = T(0);
          for (int k = 0; k < taps; ++k)  // resample_down_element's order: the same bits
            sum += weight[k] * (tx.low_weight * src[k][tx.low] + tx.high_weight * src[k][tx.high]);
          dst[x] = sum;
        }
      }
      if (mask != nullptr)
        for (int64_t x = 0; x < s.out[2]; ++x) dst[x] *= mask[x];
    }
  });
}

// The x taps of every input column, tabled (adjoint_taps).
template <typename T>
struct AdjointColumns {
  std::vector<int> count;
  std::vector<int64_t> outputs;  // [W][kMaxAdjointTaps]
  std::vector<T> weights;        // [W][kMaxAdjointTaps]
};

// out [B][C][D][H][W] = the adjoint of the masked downscale applied to grad [B][C][d][h][w], times
// channel_weights [B][C] (resample_down_adjoint_element), rois and channel_weights optional.
template <typename T, class ParallelFor>
void resample_down_adjoint(const ResampleShape<T>& s, const T* grad, const T* rois, const T* channel_weights, T* out,
                           const ParallelFor& parallel_for) {
  AdjointColumns<T> columns{std::vector<int>(s.in[2]), std::vector<int64_t>(s.in[2] * kMaxAdjointTaps),
                            std::vector<T>(s.in[2] * kMaxAdjointTaps)};
  for (int64_t x = 0; x < s.in[2]; ++x)
    columns.count[x] = adjoint_taps(x, s.ratio[2], s.in[2], s.out[2], &columns.outputs[x * kMaxAdjointTaps],
                                    &columns.weights[x * kMaxAdjointTaps]);
  const bool x_unchanged = s.in[2] == s.out[2];  // one tap (x, 1) per column
  const int64_t rows = s.batch * s.channels * s.in[0] * s.in[1];
  const int64_t out_volume = s.out[0] * s.out[1] * s.out[2];
  parallel_for(0, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, s.in[2])), [&](int64_t begin, int64_t end) {
    std::vector<T> line(s.out[2]);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t y = r % s.in[1], z = (r / s.in[1]) % s.in[0], image_channel = r / (s.in[0] * s.in[1]);
      int64_t oz[kMaxAdjointTaps], oy[kMaxAdjointTaps];
      T wz[kMaxAdjointTaps], wy[kMaxAdjointTaps];
      const int nz = adjoint_taps(z, s.ratio[0], s.in[0], s.out[0], oz, wz);
      const int ny = adjoint_taps(y, s.ratio[1], s.in[1], s.out[1], oy, wy);
      const T* volume = grad + image_channel * out_volume;
      const T* mask = rois == nullptr ? nullptr : rois + (image_channel / s.channels) * out_volume;
      const T channel_weight = channel_weights == nullptr ? T(1) : channel_weights[image_channel];
      T* __restrict dst = out + r * s.in[2];
      // The row's z and y taps' gradient lines combined first (a line read in place when it is
      // the only one, unweighted and unmasked), then the x taps per input column.
      const T* lines = line.data();
      if (nz * ny == 1 && wz[0] * wy[0] == T(1) && mask == nullptr) {
        lines = volume + (oz[0] * s.out[1] + oy[0]) * s.out[2];
      } else {  // a row that feeds no output (a downscale by more than 2 skips rows) gets zeros
        for (int64_t x = 0; x < s.out[2]; ++x) line[x] = T(0);
        for (int a = 0; a < nz; ++a)
          for (int b = 0; b < ny; ++b) {
            const int64_t offset = (oz[a] * s.out[1] + oy[b]) * s.out[2];
            const T* src = volume + offset;
            const T w = wz[a] * wy[b];
            if (mask == nullptr) {
              for (int64_t x = 0; x < s.out[2]; ++x) line[x] += w * src[x];
            } else {
              for (int64_t x = 0; x < s.out[2]; ++x) line[x] += w * (src[x] * mask[offset + x]);
            }
          }
      }
      if (x_unchanged) {  // vectorized
        const T* __restrict src = lines;
        for (int64_t x = 0; x < s.in[2]; ++x) dst[x] = src[x] * channel_weight;
        continue;
      }
      for (int64_t x = 0; x < s.in[2]; ++x) {
        const int64_t* o = &columns.outputs[x * kMaxAdjointTaps];
        const T* w = &columns.weights[x * kMaxAdjointTaps];
        T sum = T(0);
        for (int c = 0; c < columns.count[x]; ++c) sum += w[c] * lines[o[c]];
        dst[x] = sum * channel_weight;
      }
    }
  });
}

}  // namespace cpu
}  // namespace wsloss
