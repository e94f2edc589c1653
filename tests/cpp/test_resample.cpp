// The dense losses' resampling (docs/DESIGN.md §2): the CUDA kernels' per-element functions
// (resample_down_element, resample_down_adjoint_element), run serially on the CPU, against the CPU
// rows of resample_cpu.h, bit for bit; the adjoint against the downscale (<R x, y> = <x, R^T y>,
// in double); and the taps against F.interpolate's definition written out.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/parallel_for.h"
#include "cpu/resample_cpu.h"
#include "test_check.h"

namespace {

using wsloss::ResampleShape;

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <typename T>
ResampleShape<T> shape_of(int64_t batch, int64_t channels, const int64_t (&in)[3], const double (&scale)[3]) {
  ResampleShape<T> s{batch, channels, {in[0], in[1], in[2]}, {1, 1, 1}, {1, 1, 1}};
  for (int axis = 0; axis < 3; ++axis) {
    s.out[axis] = static_cast<int64_t>(std::floor(static_cast<double>(in[axis]) * scale[axis]));
    s.ratio[axis] = static_cast<T>(1.0 / scale[axis]);
  }
  return s;
}

template <typename T>
void check_case(const int64_t (&in)[3], const double (&scale)[3], std::mt19937& rng) {
  const ResampleShape<T> s = shape_of<T>(2, 3, in, scale);
  const int64_t in_count = s.batch * s.channels * s.in[0] * s.in[1] * s.in[2];
  const int64_t out_plane = s.out[0] * s.out[1] * s.out[2], out_count = s.batch * s.channels * out_plane;
  std::uniform_real_distribution<double> uniform(0, 1);
  std::vector<T> values(in_count), grad(out_count), rois(s.batch * out_plane), weights(s.batch * s.channels);
  for (T& v : values) v = static_cast<T>(uniform(rng));
  for (T& v : grad) v = static_cast<T>(uniform(rng) - 0.5);
  for (T& v : rois) v = uniform(rng) < 0.3 ? T(0) : T(1);
  for (T& v : weights) v = static_cast<T>(uniform(rng) * 4 - 2);
  for (const T* mask : {static_cast<const T*>(nullptr), static_cast<const T*>(rois.data())}) {
    std::vector<T> down(out_count), down_elements(out_count);
    wsloss::cpu::resample_down(s, values.data(), mask, down.data(), wsloss::cpu::SerialFor{});
    for (int64_t o = 0; o < out_count; ++o) down_elements[o] = wsloss::resample_down_element(s, values.data(), mask, o);
    CHECK(same_bits(down, down_elements));
    for (const T* channel_weights : {static_cast<const T*>(nullptr), static_cast<const T*>(weights.data())}) {
      std::vector<T> up(in_count), up_elements(in_count);
      wsloss::cpu::resample_down_adjoint(s, grad.data(), mask, channel_weights, up.data(), wsloss::cpu::SerialFor{});
      for (int64_t i = 0; i < in_count; ++i)
        up_elements[i] = wsloss::resample_down_adjoint_element(s, grad.data(), mask, channel_weights, i);
      CHECK(same_bits(up, up_elements));
      if (channel_weights != nullptr) continue;
      // <M R x, y> = <x, R^T M y>, summed in double.
      double forward = 0, adjoint = 0;
      for (int64_t o = 0; o < out_count; ++o) forward += static_cast<double>(down[o]) * grad[o];
      for (int64_t i = 0; i < in_count; ++i) adjoint += static_cast<double>(values[i]) * up[i];
      CHECK(std::fabs(forward - adjoint) <= 1e-5 * (std::fabs(forward) + 1));
    }
  }
}

// F.interpolate's taps at scale 0.5 (align_corners=False): output i averages inputs 2i and 2i+1;
// each input feeds exactly one output with weight 1/2.
void check_half_scale_taps() {
  for (int64_t i = 0; i < 8; ++i) {
    const wsloss::LinearTaps<float> taps = wsloss::linear_taps(i, 2.0f, 16, 8);
    CHECK(taps.low == 2 * i && taps.high == 2 * i + 1 && taps.low_weight == 0.5f && taps.high_weight == 0.5f);
  }
  for (int64_t x = 0; x < 16; ++x) {
    int64_t outputs[wsloss::kMaxAdjointTaps];
    float weights[wsloss::kMaxAdjointTaps];
    CHECK(wsloss::adjoint_taps(x, 2.0f, 16, 8, outputs, weights) == 1);
    CHECK(outputs[0] == x / 2 && weights[0] == 0.5f);
  }
  // A downscale by 4 reads inputs 4i+1 and 4i+2 only: the others feed nothing.
  int64_t outputs[wsloss::kMaxAdjointTaps];
  float weights[wsloss::kMaxAdjointTaps];
  CHECK(wsloss::adjoint_taps(int64_t{0}, 4.0f, 16, 4, outputs, weights) == 0);
  CHECK(wsloss::adjoint_taps(int64_t{5}, 4.0f, 16, 4, outputs, weights) == 1 && outputs[0] == 1);
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  check_half_scale_taps();
  const double half[3] = {1.0, 0.5, 0.5}, odd[3] = {1.0, 0.37, 0.8}, volume[3] = {0.5, 1.0, 0.3},
               quarter[3] = {1.0, 0.25, 0.25}, unchanged[3] = {1.0, 1.0, 1.0}, near_one[3] = {0.999, 0.999, 0.999};
  const int64_t image[3] = {1, 13, 18}, big_volume[3] = {7, 11, 14};
  for (const double* scale : {half, odd, quarter, unchanged})
    check_case<float>(image, *reinterpret_cast<const double(*)[3]>(scale), rng);
  for (const double* scale : {half, volume, near_one})
    check_case<double>(big_volume, *reinterpret_cast<const double(*)[3]>(scale), rng);
  check_case<float>(big_volume, volume, rng);
  if (failures) std::fprintf(stderr, "%d failures\n", failures);
  return failures == 0 ? 0 : 1;
}
