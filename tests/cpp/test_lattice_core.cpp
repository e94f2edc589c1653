// C++ unit tests of the torch-free lattice core (run by ctest).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <set>

#include "lattice_test_util.h"

namespace {

// Splits the range in chunks of `grain`, in reverse order, to catch order dependence.
struct Chunked {
  template <class F>
  void operator()(int64_t begin, int64_t end, int64_t grain, const F& f) const {
    for (int64_t hi = end; hi > begin; hi -= grain) f(std::max(begin, hi - grain), hi);
  }
};

void test_scales_and_rounding() {
  const float expected[] = {3.4641018f, 2.0f, 1.4142137f, 1.0954452f, 0.89442724f};
  for (int i = 0; i < 5; ++i) CHECK(wsloss::elevation_scale(i, 5) == expected[i]);
  CHECK(wsloss::round_half_even(0.5f) == 0 && wsloss::round_half_even(1.5f) == 2);
  CHECK(wsloss::round_half_even(-0.5f) == 0 && wsloss::round_half_even(-2.5f) == -2);
  CHECK(wsloss::round_half_even(2.4999998f) == 2 && wsloss::round_half_even(-7.5f) == -8);
  CHECK(wsloss::round_half_even(8388609.0f) == 8388609 && wsloss::round_half_even(5000000.5f) == 5000000);
}

void test_embedding_properties() {
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> uniform(-20.0f, 20.0f);
  for (int d = 1; d <= wsloss::kMaxFeatureDim; ++d) {
    float scale[wsloss::kMaxFeatureDim];
    for (int i = 0; i < d; ++i) scale[i] = wsloss::elevation_scale(i, d);
    for (int trial = 0; trial < 200; ++trial) {
      float f[wsloss::kMaxFeatureDim], bary[wsloss::kMaxFeatureDim + 1];
      int z[wsloss::kMaxFeatureDim + 2], rank[wsloss::kMaxFeatureDim + 2];
      for (int i = 0; i < d; ++i) f[i] = trial % 3 == 0 ? std::round(uniform(gen)) : uniform(gen);
      wsloss::lattice_embed(f, 1, scale, d, z, rank, bary);
      std::set<int> ranks(rank, rank + d + 1);
      CHECK(static_cast<int>(ranks.size()) == d + 1 && *ranks.begin() == 0 && *ranks.rbegin() == d);
      const double total = std::accumulate(bary, bary + d + 1, 0.0);
      CHECK(std::fabs(total - 1.0) < 1e-5);
      for (int k = 0; k <= d; ++k) {
        CHECK(bary[k] >= -1e-6f);
        // every vertex is a remainder-k lattice point: all d+1 coordinates = k mod (d+1), sum 0
        long sum = 0;
        for (int i = 0; i < d; ++i) {
          const int c = wsloss::vertex_coordinate(z[i], rank[i], d, k);
          CHECK(((c - k) % (d + 1) + (d + 1)) % (d + 1) == 0);
          sum += c;
        }
        const long last = -sum;  // implied coordinate d
        CHECK(((last - k) % (d + 1) + (d + 1)) % (d + 1) == 0);
      }
    }
  }
}

// lattice_embed computes the weights from the inverse rank permutation; they must equal DESIGN §1
// step 6's accumulation in coordinate order bit for bit, ties (integer and eighth features) included.
void test_weights_equal_the_step_6_accumulation() {
  std::mt19937 gen(4);
  for (int d = 1; d <= wsloss::kMaxFeatureDim; ++d) {
    float scale[wsloss::kMaxFeatureDim];
    for (int i = 0; i < d; ++i) scale[i] = wsloss::elevation_scale(i, d);
    const float down_factor = 1.0f / static_cast<float>(d + 1);
    for (int trial = 0; trial < 20000; ++trial) {
      float f[wsloss::kMaxFeatureDim], bary[wsloss::kMaxFeatureDim + 1];
      int z[wsloss::kMaxFeatureDim + 2], rank[wsloss::kMaxFeatureDim + 2];
      for (int i = 0; i < d; ++i) {
        const int u = static_cast<int>(gen() % 512) - 256;
        f[i] = trial % 3 == 0 ? static_cast<float>(u % 64) : trial % 3 == 1 ? u / 8.0f : u / 3.0f;
      }
      wsloss::lattice_embed(f, 1, scale, d, z, rank, bary);
      // Step 2's elevation again (as lattice_embed does it), then step 6 as written.
      float elevated[wsloss::kMaxFeatureDim + 1], sum = 0.0f;
      for (int j = d; j > 0; --j) {
        const float cf = f[j - 1] * scale[j - 1];
        elevated[j] = sum - static_cast<float>(j) * cf;
        sum += cf;
      }
      elevated[0] = sum;
      float b[wsloss::kMaxFeatureDim + 2] = {};
      for (int i = 0; i <= d; ++i) {
        const float v = (elevated[i] - static_cast<float>(z[i])) * down_factor;
        b[d - rank[i]] += v;
        b[d + 1 - rank[i]] -= v;
      }
      b[0] += 1.0f + b[d + 1];
      for (int k = 0; k <= d; ++k) CHECK(std::memcmp(&b[k], &bary[k], sizeof(float)) == 0);
    }
  }
}

void test_hash_table_growth() {
  const int d = 7;
  wsloss::cpu::VertexHashTable table(d);
  std::mt19937 gen(2);
  std::uniform_int_distribution<int32_t> coordinate(-100000, 100000);
  std::vector<int32_t> keys(50000 * d);
  for (auto& c : keys) c = coordinate(gen);
  for (int i = 0; i < 50000; ++i) CHECK(table.insert(&keys[i * d]) == i);
  CHECK(table.size() == 50000);
  for (int i = 0; i < 50000; i += 7) CHECK(table.insert(&keys[i * d]) == i && table.find(&keys[i * d]) == i);
  std::vector<int32_t> absent(d, 200001);
  CHECK(table.find(absent.data()) == -1);
}

void test_filter_adjoint_and_paths() {
  const int64_t batch = 3, pixels = 257, channels = 5;
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> uniform(0.0f, 4.0f);
  std::normal_distribution<double> normal;
  for (int d : {2, 5, 11}) {
    std::vector<float> features(batch * d * pixels);
    for (auto& f : features) f = uniform(gen);
    const Built lat = build(features, batch, d, pixels, Serial{});
    const Built chunked = build(features, batch, d, pixels, Chunked{});
    CHECK(lat.vertices == chunked.vertices && lat.neighbours == chunked.neighbours &&
          lat.splat_index == chunked.splat_index);
    std::vector<double> x(batch * channels * pixels), y(x.size());
    for (auto& v : x) v = normal(gen);
    for (auto& v : y) v = normal(gen);
    const auto ax = filter(lat, batch, pixels, d, x, channels, false, true);
    const auto aty = filter(lat, batch, pixels, d, y, channels, true, true);
    const double lhs = std::inner_product(ax.begin(), ax.end(), y.begin(), 0.0);
    const double rhs = std::inner_product(x.begin(), x.end(), aty.begin(), 0.0);
    CHECK(std::fabs(lhs - rhs) <= 1e-10 * std::fabs(lhs));
    CHECK(ax == filter(lat, batch, pixels, d, x, channels, false, false));  // scatter == gather, bitwise
  }
}

// The AVX2 build of the filter (lattice_filter_avx2.cpp) gives the baseline build's bits: fixed and
// runtime channel counts, both splats, both directions, with and without the message parts, the
// batch at once and one image at a time. Where this compiler or CPU has no AVX2 build there is
// nothing to compare, and the test says so.
template <typename scalar_t>
void check_filter_builds_agree(const Built& lat, int64_t batch, int64_t pixels, int d, std::mt19937& gen) {
  const wsloss::cpu::FilterKernels<scalar_t>& baseline = wsloss::cpu::kFilterKernels<scalar_t>;
  const wsloss::cpu::FilterKernels<scalar_t>& avx2 = *wsloss::cpu::avx2_filter_kernels<scalar_t>();
  const wsloss::cpu::ParallelForFunction serial = Serial{};
  std::normal_distribution<double> normal;
  const int64_t m = lat.offsets.back();
  const LatticeView view = lat.view(batch, pixels, d);
  for (int64_t channels : {1, 3, 4, 5, 7, 8, 9, 12, 16, 21, 24, 32}) {
    std::vector<scalar_t> in(batch * channels * pixels), add(in.size()), scale(batch * pixels);
    for (auto& v : in) v = static_cast<scalar_t>(normal(gen));
    for (auto& v : add) v = static_cast<scalar_t>(normal(gen));
    for (auto& v : scale) v = static_cast<scalar_t>(std::fabs(normal(gen)));
    const int64_t lanes = wsloss::cpu::padded_channels(channels);
    std::vector<scalar_t> a((m + 1) * lanes), b((m + 1) * lanes), pixel_major(batch * pixels * lanes);
    for (int mode = 0; mode < 8; ++mode) {
      const bool transpose = mode & 1, scatter = mode & 2, parts = mode & 4;
      wsloss::cpu::FilterAffine<scalar_t> affine;
      if (parts) affine = {{scale.data(), pixels, 1}, {scale.data(), pixels, 1}, add.data()};
      std::vector<scalar_t> expected(in.size()), got(in.size()), images(in.size());
      for (const auto* kernels : {&baseline, &avx2}) {
        std::vector<scalar_t>& out = kernels == &baseline ? expected : got;
        kernels->filter(view, in.data(), out.data(), channels, 0, channels, transpose, a.data(), b.data(),
                        scatter ? nullptr : pixel_major.data(), serial, affine);
      }
      std::fill(a.begin(), a.end(), scalar_t(0));
      std::fill(b.begin(), b.end(), scalar_t(0));
      for (int64_t image = 0; image < batch; ++image) {
        const wsloss::cpu::LatticeRange part{image, image + 1, lat.offsets[image], lat.offsets[image + 1]};
        avx2.filter_images(view, part, in.data(), images.data(), channels, 0, channels, lanes, transpose, a.data(),
                           b.data(), affine);
      }
      CHECK(std::memcmp(expected.data(), got.data(), got.size() * sizeof(scalar_t)) == 0);
      CHECK(std::memcmp(expected.data(), images.data(), images.size() * sizeof(scalar_t)) == 0);
    }
  }
}

void test_filter_builds_agree() {
  if (wsloss::cpu::avx2_filter_kernels<float>() == nullptr || !__builtin_cpu_supports("avx2")) {
    std::printf("filter builds: no AVX2 build or CPU here, nothing to compare\n");
    return;
  }
  const int64_t batch = 2, pixels = 301;
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> uniform(0.0f, 5.0f);
  for (int d : {2, 5, 9}) {
    std::vector<float> features(batch * d * pixels);
    for (auto& f : features) f = uniform(gen);
    const Built lat = build(features, batch, d, pixels, Serial{});
    check_filter_builds_agree<float>(lat, batch, pixels, d, gen);
    check_filter_builds_agree<double>(lat, batch, pixels, d, gen);
  }
}

// Hashing an image in ranges (as with more threads than images) and merging numbers the
// vertices exactly as one pass does.
void test_ranged_hashing_numbers_like_one_pass() {
  const int d = 3;
  const int64_t pixels = 3 * LatticeBuilder::kPixelsPerPart + 123;
  std::mt19937 gen(5);
  std::uniform_real_distribution<float> uniform(0.0f, 30.0f);
  for (int64_t batch : {1, 2}) {
    std::vector<float> features(batch * d * pixels);
    for (auto& f : features) f = uniform(gen);
    const Built one = build(features, batch, d, pixels, Serial{});
    for (int64_t threads : {2, 4, 9}) {
      const Built ranged = build(features, batch, d, pixels, Serial{}, threads);
      CHECK(one.offsets == ranged.offsets && one.vertices == ranged.vertices && one.weights == ranged.weights &&
            one.neighbours == ranged.neighbours && one.splat_ptr == ranged.splat_ptr &&
            one.splat_index == ranged.splat_index);
    }
  }
}

void test_constant_features_average() {
  const int64_t pixels = 50;
  const int d = 4;
  std::vector<float> features(d * pixels, 1.25f);
  const Built lat = build(features, 1, d, pixels, Serial{});
  CHECK(lat.offsets.back() == d + 1);
  std::vector<double> values(pixels), ones(pixels, 1.0);
  for (int64_t p = 0; p < pixels; ++p) values[p] = static_cast<double>(p);
  const auto num = filter(lat, 1, pixels, d, values, 1, false, true);
  const auto den = filter(lat, 1, pixels, d, ones, 1, false, true);
  for (int64_t p = 0; p < pixels; ++p) CHECK(std::fabs(num[p] / den[p] - 24.5) < 1e-9);
}

void test_non_finite_features_rejected() {
  std::vector<float> features(3 * 10, 0.5f);
  features[7] = NAN;
  std::vector<int32_t> vertices(10 * 4);
  std::vector<float> weights(10 * 4);
  LatticeBuilder builder(features.data(), 1, 3, 10, vertices.data(), weights.data());
  CHECK(!builder.embed_and_hash(Serial{}));
  features[7] = 2e7f;
  LatticeBuilder too_large(features.data(), 1, 3, 10, vertices.data(), weights.data());
  CHECK(!too_large.embed_and_hash(Serial{}));
}

}  // namespace

int main() {
  test_scales_and_rounding();
  test_embedding_properties();
  test_weights_equal_the_step_6_accumulation();
  test_hash_table_growth();
  test_filter_adjoint_and_paths();
  test_filter_builds_agree();
  test_ranged_hashing_numbers_like_one_pass();
  test_constant_features_average();
  test_non_finite_features_rejected();
  if (failures == 0) std::printf("all lattice core tests passed\n");
  return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
