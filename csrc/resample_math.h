// Linear downscaling as F.interpolate computes it (mode "bilinear" / "trilinear",
// align_corners=False, one scale factor per axis in (0, 1]), and its adjoint as a gather: the
// dense losses' resampling of S (docs/DESIGN.md §2), shared by the CPU and CUDA kernels.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace wsloss {

// The most outputs of a downscale that one input index feeds along an axis: one as the low tap
// and one as the high tap of its neighbours (ratio >= 1 spaces the sources at least 1 apart),
// and room for the float rounding of those sources.
constexpr int kMaxAdjointTaps = 4;

// Output i's two inputs along an axis and their weights.
template <typename T>
struct LinearTaps {
  int64_t low, high;
  T low_weight, high_weight;
};

// Output index i along an axis of in_size inputs resampled to out_size with ratio = 1 / scale
// (in T, as torch rounds it): torch's area_pixel_compute_source_index and
// compute_source_index_and_lambda, whose arithmetic this follows (an axis of unchanged size is
// copied; sources below 0 clamp to 0; the high tap is the low one at the last input).
template <typename T>
WSLOSS_HD LinearTaps<T> linear_taps(int64_t i, T ratio, int64_t in_size, int64_t out_size) {
  if (in_size == out_size) return {i, i, T(1), T(0)};
  T source = ratio * (static_cast<T>(i) + T(0.5)) - T(0.5);
  if (source < T(0)) source = T(0);
  int64_t low = static_cast<int64_t>(source);  // source >= 0: truncation is the floor
  if (low > in_size - 1) low = in_size - 1;
  const int64_t high = low + (low < in_size - 1 ? 1 : 0);
  T lambda = source - static_cast<T>(low);
  lambda = lambda < T(0) ? T(0) : (lambda > T(1) ? T(1) : lambda);
  return {low, high, T(1) - lambda, lambda};
}

// The outputs that input index x feeds along an axis, and with what weight (the column x of the
// axis's resampling matrix): writes up to kMaxAdjointTaps (output, weight) pairs and returns how
// many. The candidates are the outputs whose source lies within 1 of x, widened by one on each
// side for rounding; a downscale (out_size <= in_size) has at most five.
template <typename T>
WSLOSS_HD int adjoint_taps(int64_t x, T ratio, int64_t in_size, int64_t out_size, int64_t* outputs, T* weights) {
  if (in_size == out_size) {
    outputs[0] = x;
    weights[0] = T(1);
    return 1;
  }
  // source(i) = ratio (i + 0.5) - 0.5 in (x - 1, x + 1]  <=>  i in ((x - 0.5) / ratio - 0.5, (x + 1.5) / ratio - 0.5]
  int64_t first = static_cast<int64_t>((static_cast<T>(x) - T(0.5)) / ratio - T(0.5)) - 1;
  int64_t last = static_cast<int64_t>((static_cast<T>(x) + T(1.5)) / ratio - T(0.5)) + 1;
  if (first < 0) first = 0;
  if (last > out_size - 1) last = out_size - 1;
  int count = 0;
  for (int64_t i = first; i <= last && count < kMaxAdjointTaps; ++i) {
    const LinearTaps<T> taps = linear_taps(i, ratio, in_size, out_size);
    if (taps.low != x && taps.high != x) continue;
    outputs[count] = i;
    weights[count] = (taps.low == x ? taps.low_weight : T(0)) + (taps.high == x ? taps.high_weight : T(0));
    ++count;
  }
  return count;
}

// A resampling call: values [B][C][D][H][W] -> out [B][C][d][h][w] (images: D = d = 1), times an
// optional per-output mask rois [B][d][h][w]; ratio per axis (z, y, x) is 1 / scale in T.
template <typename T>
struct ResampleShape {
  int64_t batch, channels;
  int64_t in[3], out[3];
  T ratio[3];
};

// Output element o ([B][C][d][h][w] order) of the downscale of `values`, times its mask value
// when rois is given: the sum over the 2 x 2 x 2 taps, x innermost.
template <typename T>
WSLOSS_HD T resample_down_element(const ResampleShape<T>& s, const T* values, const T* rois, int64_t o) {
  const int64_t x = o % s.out[2], y = (o / s.out[2]) % s.out[1], z = (o / (s.out[2] * s.out[1])) % s.out[0];
  const int64_t plane = s.out[0] * s.out[1] * s.out[2];
  const int64_t image_channel = o / plane;
  const LinearTaps<T> tz = linear_taps(z, s.ratio[0], s.in[0], s.out[0]);
  const LinearTaps<T> ty = linear_taps(y, s.ratio[1], s.in[1], s.out[1]);
  const LinearTaps<T> tx = linear_taps(x, s.ratio[2], s.in[2], s.out[2]);
  const T* volume = values + image_channel * s.in[0] * s.in[1] * s.in[2];
  const int64_t zs[2] = {tz.low, tz.high}, ys[2] = {ty.low, ty.high};
  const T wz[2] = {tz.low_weight, tz.high_weight}, wy[2] = {ty.low_weight, ty.high_weight};
  T sum = T(0);
  for (int a = 0; a < 2; ++a) {
    for (int b = 0; b < 2; ++b) {
      const T* row = volume + (zs[a] * s.in[1] + ys[b]) * s.in[2];
      sum += wz[a] * wy[b] * (tx.low_weight * row[tx.low] + tx.high_weight * row[tx.high]);
    }
  }
  if (rois != nullptr) sum *= rois[(image_channel / s.channels) * plane + (o - image_channel * plane)];
  return sum;
}

// Input element i ([B][C][D][H][W] order) of the adjoint of the masked downscale applied to grad
// ([B][C][d][h][w]): sum over the outputs o that input feeds of weight * grad_o * rois_o (rois
// optional), times channel_weights[b][c] (optional). Each input element is written once, by its
// own thread (no zero fill, no atomics: deterministic).
template <typename T>
WSLOSS_HD T resample_down_adjoint_element(const ResampleShape<T>& s, const T* grad, const T* rois,
                                          const T* channel_weights, int64_t i) {
  const int64_t x = i % s.in[2], y = (i / s.in[2]) % s.in[1], z = (i / (s.in[2] * s.in[1])) % s.in[0];
  const int64_t image_channel = i / (s.in[0] * s.in[1] * s.in[2]);
  int64_t oz[kMaxAdjointTaps], oy[kMaxAdjointTaps], ox[kMaxAdjointTaps];
  T wz[kMaxAdjointTaps], wy[kMaxAdjointTaps], wx[kMaxAdjointTaps];
  const int nz = adjoint_taps(z, s.ratio[0], s.in[0], s.out[0], oz, wz);
  const int ny = adjoint_taps(y, s.ratio[1], s.in[1], s.out[1], oy, wy);
  const int nx = adjoint_taps(x, s.ratio[2], s.in[2], s.out[2], ox, wx);
  const int64_t out_volume = s.out[0] * s.out[1] * s.out[2];
  const T* volume = grad + image_channel * out_volume;
  const T* mask = rois == nullptr ? nullptr : rois + (image_channel / s.channels) * out_volume;
  // The z and y taps' lines combined first, then the x taps (resample_down_adjoint's order).
  T sum = T(0);
  for (int c = 0; c < nx; ++c) {
    T line = T(0);
    for (int a = 0; a < nz; ++a)
      for (int b = 0; b < ny; ++b) {
        const int64_t o = (oz[a] * s.out[1] + oy[b]) * s.out[2] + ox[c];
        line += wz[a] * wy[b] * (mask == nullptr ? volume[o] : volume[o] * mask[o]);
      }
    sum += wx[c] * line;
  }
  return channel_weights == nullptr ? sum : sum * channel_weights[image_channel];
}

}  // namespace wsloss
