// The CUDA engine's logic on the CPU: runs the steps of every CUDA kernel
// (csrc/cuda/lattice_steps.h) serially, each kernel's threads in a shuffled order,
// and checks that they build the CPU lattice bit for bit and filter as the CPU filter
// does. The launch sequence mirrors lattice_cuda.cu; CUB's scan and stable radix sort
// and the embed kernel's warp reduction are replaced by their plain-loop equivalents.
// What only a GPU can show (true concurrency, the CUB calls, speed) is not tested here.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <utility>

#include "cuda/lattice_steps.h"
#include "lattice_test_util.h"

namespace {
namespace wc = wsloss::cuda;

std::vector<int64_t> shuffled(int64_t n, std::mt19937& gen) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::shuffle(order.begin(), order.end(), gen);
  return order;
}

enum class Keys { kAuto, kWide };

struct Emulated {
  Built lattice;
  bool packed;
};

template <int D>
Emulated build_emulated(const std::vector<float>& features, int64_t batch, int64_t pixels, Keys keys,
                        std::mt19937& gen) {
  const int64_t corners = batch * pixels * (D + 1), capacity = wc::table_capacity(pixels, D);
  std::vector<int32_t> remainder(corners), first(corners), vertex_id(corners), table_corner(batch * capacity);
  std::vector<int32_t> coordinate_min(batch * D), coordinate_max(batch * D);
  std::vector<int8_t> rank(corners);
  std::vector<wc::PackedKey> table_key(batch * capacity);
  wc::KeyLayout layout{};
  int32_t status[2] = {0, 0};
  Emulated out;
  Built& lat = out.lattice;
  lat.vertices.resize(corners);
  lat.weights.resize(corners);
  lat.offsets.resize(batch + 1);
  const wc::BuildBuffers a{features.data(), batch, pixels, D, capacity, remainder.data(), rank.data(),
                           lat.weights.data(), lat.vertices.data(), coordinate_min.data(), coordinate_max.data(),
                           &layout, table_key.data(), table_corner.data(), first.data(), vertex_id.data(),
                           lat.offsets.data(), status};
  // The memsets and kernels of BuildCount, in order.
  std::memset(table_key.data(), 0xff, table_key.size() * sizeof(wc::PackedKey));
  std::memset(table_corner.data(), 0x7f, table_corner.size() * sizeof(int32_t));
  CHECK(table_key[0] == wc::kEmptyKey && table_corner[0] == wc::kEmptyCorner);
  std::fill(coordinate_min.begin(), coordinate_min.end(), INT_MAX);
  std::fill(coordinate_max.begin(), coordinate_max.end(), INT_MIN);
  float scales[wsloss::kMaxFeatureDim];
  for (int i = 0; i < D; ++i) scales[i] = wsloss::elevation_scale(i, D);
  for (int64_t q : shuffled(batch * pixels, gen)) {
    int z[D + 2];
    CHECK(wc::embed_step<D>(q, a, scales, z));
    for (int i = 0; i < D; ++i) {
      int32_t& lo = coordinate_min[(q / pixels) * D + i];
      int32_t& hi = coordinate_max[(q / pixels) * D + i];
      lo = std::min(lo, z[i]);
      hi = std::max(hi, z[i]);
    }
  }
  wc::key_layout_step(coordinate_min.data(), coordinate_max.data(), batch, D, &layout);
  if (keys == Keys::kWide) layout.packed = 0;
  out.packed = layout.packed != 0;
  for (int64_t s : shuffled(corners, gen)) wc::insert_step<D>(s, a);
  for (int64_t s : shuffled(corners, gen)) wc::first_step(s, a);
  std::exclusive_scan(first.begin(), first.end(), vertex_id.begin(), 0);
  wc::offsets_step(a);
  const int64_t m = status[0];
  // BuildFinish.
  std::vector<int32_t> owner(m, -1);
  for (int64_t s : shuffled(corners, gen)) wc::owner_step(s, a, owner.data());
  for (int64_t s : shuffled(corners, gen)) wc::vertex_id_step(s, a);
  lat.neighbours.assign(m * (D + 1) * 2, -1);
  for (int64_t v : shuffled(m, gen)) wc::neighbours_step<D>(v, a, owner.data(), m, lat.neighbours.data());
  lat.splat_index.resize(corners);
  std::iota(lat.splat_index.begin(), lat.splat_index.end(), 0);
  std::stable_sort(lat.splat_index.begin(), lat.splat_index.end(),
                   [&](int32_t x, int32_t y) { return lat.vertices[x] < lat.vertices[y]; });
  std::vector<int32_t> sorted_vertices(corners);
  for (int64_t i = 0; i < corners; ++i) sorted_vertices[i] = lat.vertices[lat.splat_index[i]];
  lat.splat_ptr.assign(m + 1, -1);
  for (int64_t i : shuffled(corners, gen)) wc::splat_ptr_step(i, sorted_vertices.data(), corners, m, lat.splat_ptr.data());
  return out;
}

// The Filter launch sequence on channel-planar `values` [B][C][N]; scratch starts as
// NaN, so a value read before it is written shows in the result.
template <int D>
std::vector<double> filter_emulated(const Built& lat, int64_t batch, int64_t pixels, const std::vector<double>& values,
                                    int64_t channels, bool transpose, std::mt19937& gen,
                                    const wsloss::cpu::FilterAffine<double>& parts = {}, int64_t softmax_group = 0) {
  const int64_t m = lat.offsets.back(), points = batch * pixels;
  const int64_t chunks = wc::splat_chunks(batch, pixels * (D + 1));
  std::vector<double> in(points * channels);  // the wrapper's pixel-major copy
  for (int64_t q = 0; q < points; ++q)
    for (int64_t c = 0; c < channels; ++c) in[q * channels + c] = values[((q / pixels) * channels + c) * pixels + q % pixels];
  std::vector<double> out(points * channels, NAN), lattice_a((m + 1) * channels, NAN), lattice_b(lattice_a),
      carry(chunks * channels, NAN);
  std::fill(lattice_a.begin() + m * channels, lattice_a.end(), 0.0);
  std::fill(lattice_b.begin() + m * channels, lattice_b.end(), 0.0);
  const wc::FilterBuffers<double> f{lat.vertices.data(), lat.weights.data(), lat.neighbours.data(),
                                    lat.splat_ptr.data(), lat.splat_index.data(), batch, pixels, m, channels, D,
                                    in.data(), out.data(), lattice_a.data(), lattice_b.data(), carry.data(),
                                    parts.scale_in, parts.scale_out, parts.add, softmax_group};
  for (int64_t i : shuffled(chunks * channels, gen)) wc::splat_chunk_step(i / channels, i % channels, f);
  for (int64_t i : shuffled(m * channels, gen)) wc::splat_carry_step(i / channels, i % channels, f);
  double* lattice = lattice_a.data();
  double* other = lattice_b.data();
  for (int step = 0; step <= D; ++step) {
    for (int64_t i : shuffled(m * channels, gen))
      wc::blur_step(i / channels, i % channels, transpose ? D - step : step, f, lattice, other);
    std::swap(lattice, other);
  }
  for (int64_t q : shuffled(points, gen)) wc::slice_step<D>(q, f, lattice, double{wsloss::slice_scale(D)});
  return out;
}

bool same_lattice(const Built& x, const Built& y) {
  return x.offsets == y.offsets && x.vertices == y.vertices && x.weights == y.weights &&
         x.neighbours == y.neighbours && x.splat_ptr == y.splat_ptr && x.splat_index == y.splat_index;
}

double max_relative_error(const std::vector<double>& got, const std::vector<double>& expected) {
  double scale = 0.0, error = 0.0;
  for (size_t i = 0; i < expected.size(); ++i) {
    scale = std::max(scale, std::fabs(expected[i]));
    error = std::isnan(got[i]) ? INFINITY : std::max(error, std::fabs(got[i] - expected[i]));
    if (std::isinf(error)) break;
  }
  return error / scale;
}

// Emulated CUDA build == CPU build (packed and wide keys), emulated filter == CPU filter.
template <int D>
void check_against_cpu(const std::vector<float>& features, int64_t batch, int64_t pixels, int expect_packed,
                       std::mt19937& gen) {
  const Built cpu = build(features, batch, D, pixels, Serial{});
  Built emulated;  // the automatic layout's, filtered below
  for (Keys keys : {Keys::kAuto, Keys::kWide}) {
    Emulated gpu = build_emulated<D>(features, batch, pixels, keys, gen);
    if (keys == Keys::kAuto && expect_packed >= 0) CHECK(gpu.packed == (expect_packed == 1));
    const bool same = same_lattice(gpu.lattice, cpu);
    CHECK(same);
    if (!same) std::fprintf(stderr, "  D = %d, packed = %d\n", D, int{gpu.packed});
    if (keys == Keys::kAuto) emulated = std::move(gpu.lattice);
  }
  std::normal_distribution<double> normal;
  for (int64_t channels : {int64_t{1}, int64_t{3}, int64_t{21}}) {
    std::vector<double> values(batch * channels * pixels);
    for (auto& v : values) v = normal(gen);
    for (bool transpose : {false, true}) {
      const double error = max_relative_error(filter_emulated<D>(emulated, batch, pixels, values, channels, transpose, gen),
                                              filter(cpu, batch, pixels, D, values, channels, transpose, true));
      CHECK(error < 1e-12);
      if (!(error < 1e-12)) std::fprintf(stderr, "  D = %d, C = %ld: error %g\n", D, long(channels), error);
    }
    // With the message parts (a mean-field update): scale_in per pixel of each image, scale_out
    // one per pixel for every image, add, and the softmax of groups of 1, 3 or 21 channels.
    std::vector<double> in_scale(batch * pixels), out_scale(pixels), add(values.size());
    for (auto* part : {&in_scale, &out_scale, &add})
      for (auto& v : *part) v = normal(gen);
    const wsloss::cpu::FilterAffine<double> parts{{in_scale.data(), pixels, 1}, {out_scale.data(), 0, 1}, add.data()};
    const int64_t group = channels == 21 ? 3 : channels;
    std::vector<double> expected = filter(cpu, batch, pixels, D, values, channels, false, true, parts);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t g = 0; g < channels; g += group)
        for (int64_t p = 0; p < pixels; ++p)
          wsloss::softmax_in_place(expected.data() + (b * channels + g) * pixels + p, pixels, group);
    const double error = max_relative_error(
        filter_emulated<D>(emulated, batch, pixels, values, channels, false, gen, parts, group), expected);
    CHECK(error < 1e-12);
    if (!(error < 1e-12)) std::fprintf(stderr, "  D = %d, C = %ld, with parts: error %g\n", D, long(channels), error);
  }
}

template <int D>
void test_random_features(float spread, int expect_packed) {
  std::mt19937 gen(10 + D);
  const int64_t batch = 3, pixels = 257;
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> features(batch * D * pixels);
  for (int64_t i = 0; i < static_cast<int64_t>(features.size()); ++i)  // images of different spreads
    features[i] = uniform(gen) * spread * static_cast<float>(1 + i / (D * pixels));
  check_against_cpu<D>(features, batch, pixels, expect_packed, gen);
}

// A smooth, photograph-like image (two regions, a ramp, a little noise) as RGBXY
// features: few vertices, most with long splat segments that span several chunks.
void test_photograph_like() {
  std::mt19937 gen(7);
  std::normal_distribution<float> noise(0.0f, 2.0f);
  const int64_t batch = 2, height = 33, width = 47, pixels = height * width;
  std::vector<float> features(batch * 5 * pixels);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t y = 0; y < height; ++y) {
      for (int64_t x = 0; x < width; ++x) {
        const int64_t p = y * width + x;
        const bool object = (x - 20) * (x - 20) + (y - 15) * (y - 15) < 100 + 50 * b;
        const float rgb[3] = {object ? 200.0f : 40.0f + x, object ? 30.0f : 90.0f, 120.0f + 2.0f * y};
        float* f = features.data() + b * 5 * pixels + p;
        f[0] = static_cast<float>(x) / 30.0f;
        f[pixels] = static_cast<float>(y) / 30.0f;
        for (int c = 0; c < 3; ++c) f[(2 + c) * pixels] = (rgb[c] + noise(gen)) / 15.0f;
      }
    }
  }
  check_against_cpu<5>(features, batch, pixels, 1, gen);
  std::vector<float> constant(5 * 1000, 0.75f);  // one simplex: d + 1 vertices of 1000 entries each
  check_against_cpu<5>(constant, 1, 1000, 1, gen);
}

void test_key_layout_and_packing() {
  // Image 0: z_0 in [-3, 4], z_1 in [0, 0]; image 1: z_0 in [10, 12], z_1 in [-100, 100].
  const int32_t lo[] = {-3, 0, 10, -100}, hi[] = {4, 0, 12, 100};
  wc::KeyLayout layout{};
  wc::key_layout_step(lo, hi, 2, 2, &layout);
  // widest ranges + 2d: 7 + 4 = 11 -> 4 bits, 200 + 4 = 204 -> 8 bits
  CHECK(layout.packed == 1 && layout.width[0] == 4 && layout.width[1] == 8 && layout.shift[1] == 4);
  const int inside[] = {-5, 2}, corner_case[] = {6, 2}, below[] = {-6, 2};
  CHECK(wc::pack_key<2>(inside, lo, layout) == 0 + (4 << 4));  // fields key_i - (lo_i - d)
  CHECK(wc::pack_key<2>(corner_case, lo, layout) == 11 + (4 << 4));
  CHECK(wc::pack_key<2>(below, lo, layout) == wc::kEmptyKey);
  const int beyond_width[] = {-5 + 16, 0};
  CHECK(wc::pack_key<2>(beyond_width, lo, layout) == wc::kEmptyKey);
  // 16 coordinates of 2^20: no packing.
  std::vector<int32_t> wide_lo(16, 0), wide_hi(16, 1 << 20);
  wc::key_layout_step(wide_lo.data(), wide_hi.data(), 1, 16, &layout);
  CHECK(layout.packed == 0);
}

}  // namespace

int main() {
  test_key_layout_and_packing();
  test_random_features<1>(4.0f, 1);
  test_random_features<2>(4.0f, 1);
  test_random_features<3>(4.0f, 1);
  test_random_features<5>(4.0f, 1);
  test_random_features<8>(2.0f, -1);
  test_random_features<16>(0.5f, -1);
  test_random_features<16>(100.0f, 0);  // nearly every corner a vertex; keys too wide to pack
  test_photograph_like();
  if (failures == 0) std::printf("all CUDA step tests passed\n");
  return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
