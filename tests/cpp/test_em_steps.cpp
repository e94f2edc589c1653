// The CUDA EM-Adapt kernel's radix selection, emulated serially on the CPU with the
// same shared functions (em_adapt_math.h) and the kernel's pixel-to-thread mapping,
// against the CPU kernel (std::nth_element): identical labels and biases, bit for bit.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "cpu/em_adapt_cpu.h"
#include "cpu/parallel_for.h"
#include "em_adapt_math.h"
#include "test_check.h"

using namespace wsloss;

namespace {

// The k-th smallest key by histogram passes: blocks of `threads` threads each add their
// pixels' digits to a block histogram, the block histograms are summed (the global
// histogram of the multi-block path) and each thread scans its kDigitBins / threads
// bins after an exclusive scan of the per-thread counts, as the kernel does.
template <typename Key>
Key radix_select(const std::vector<Key>& keys, uint32_t rank, int blocks, int threads) {
  const int64_t n = static_cast<int64_t>(keys.size());
  const int bins_per_thread = kDigitBins / threads;
  const int64_t stride = int64_t{blocks} * threads;
  Key prefix = 0;
  for (int pass = 0; pass < kSelectPasses<Key>; ++pass) {
    std::vector<uint32_t> global(kDigitBins, 0);
    for (int sub = 0; sub < blocks; ++sub) {
      std::vector<uint32_t> shared(kDigitBins, 0);
      for (int tid = 0; tid < threads; ++tid) {
        for (int64_t p = int64_t{sub} * threads + tid; p < n; p += stride) {
          if (key_has_prefix(keys[p], prefix, pass)) ++shared[key_digit(keys[p], pass)];
        }
      }
      for (int i = 0; i < kDigitBins; ++i) global[i] += shared[i];
    }
    uint32_t below = 0, chosen_rank = 0;
    int found = 0, chosen_digit = 0;
    for (int tid = 0; tid < threads; ++tid) {
      const int begin = tid * bins_per_thread;
      uint32_t count = 0;
      for (int i = begin; i < begin + bins_per_thread; ++i) count += global[i];
      int digit;
      uint32_t rank_in_digit;
      if (find_digit(global.data(), begin, begin + bins_per_thread, below, rank, &digit, &rank_in_digit)) {
        ++found;
        chosen_digit = digit;
        chosen_rank = rank_in_digit;
      }
      below += count;
    }
    CHECK(found == 1);
    prefix = (pass == 0 ? Key{0} : prefix << digit_width<Key>(pass)) | Key(chosen_digit);
    rank = chosen_rank;
  }
  return prefix;
}

// The kernel's image loop (max, steps, labels) around radix_select.
template <typename T>
void emulate_cuda_image(const EmAdaptImage<T>& image, int64_t rank_bg, int64_t rank_fg, bool suppress_absent,
                        T margin, int blocks, int threads, int64_t* labels, T* bias) {
  using Key = typename OrderedKey<T>::type;
  const int64_t n = image.pixels;
  std::vector<T> max_score(n);
  for (int64_t p = 0; p < n; ++p) max_score[p] = initial_max(image, p);
  std::fill(bias, bias + image.classes, T(0));
  std::vector<Key> keys(n);
  for (int t = 0; t < visit_count(image); ++t) {
    const int64_t l = visited_class(image, t);
    const T* score = image.logits + l * n;
    for (int64_t p = 0; p < n; ++p) keys[p] = ordered_key(em_difference(max_score[p], score[p]));
    const T b = key_value<T>(radix_select(keys, static_cast<uint32_t>(l == 0 ? rank_bg : rank_fg), blocks, threads));
    bias[l] = b;
    for (int64_t p = 0; p < n; ++p) max_score[p] = em_max(max_score[p], score[p] + b);
  }
  for (int64_t p = 0; p < n; ++p) labels[p] = pixel_label(image, p, bias, suppress_absent, margin);
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <typename T>
void check_keys_order() {
  const T inf = std::numeric_limits<T>::infinity();
  const std::vector<T> ordered{-inf, std::numeric_limits<T>::lowest(), T(-1), -std::numeric_limits<T>::denorm_min(),
                               T(0), std::numeric_limits<T>::denorm_min(), T(1), std::numeric_limits<T>::max(), inf};
  for (size_t i = 0; i < ordered.size(); ++i) {
    CHECK(key_value<T>(ordered_key(ordered[i])) == ordered[i]);
    if (i > 0) CHECK(ordered_key(ordered[i - 1]) < ordered_key(ordered[i]));
  }
  CHECK(ordered_key(std::numeric_limits<T>::quiet_NaN()) > ordered_key(inf));
  CHECK(ordered_key(-std::numeric_limits<T>::quiet_NaN()) == ordered_key(std::numeric_limits<T>::quiet_NaN()));
  CHECK(std::isnan(key_value<T>(ordered_key(std::numeric_limits<T>::quiet_NaN()))));
  CHECK(ordered_key(em_difference(T(-0.0), T(0.0))) == ordered_key(T(0)));
}

// Every rank of small key sets with ties and special values, several block shapes.
template <typename T>
void check_select_every_rank(std::mt19937& gen) {
  using Key = typename OrderedKey<T>::type;
  const T specials[] = {T(0), T(1), T(-2.5), std::numeric_limits<T>::infinity(), std::numeric_limits<T>::quiet_NaN(),
                        std::numeric_limits<T>::denorm_min()};
  for (int n : {1, 2, 7, 300, 2500}) {
    std::vector<Key> keys(n);
    std::uniform_real_distribution<double> uniform(-3, 3);
    for (int i = 0; i < n; ++i) {
      const T v = (i % 5 == 0) ? specials[i % 6] : static_cast<T>(std::round(uniform(gen) * 4) / 4);
      keys[i] = ordered_key(em_difference(v, T(0)));
    }
    std::vector<Key> sorted = keys;
    std::sort(sorted.begin(), sorted.end());
    for (int rank = 0; rank < n; rank += std::max(1, n / 97)) {
      for (int blocks : {1, 3}) {
        for (int threads : {512, 64}) CHECK(radix_select(keys, rank, blocks, threads) == sorted[rank]);
      }
    }
  }
}

template <typename T>
void check_images(std::mt19937& gen) {
  struct Shape {
    int64_t batch, classes, pixels;
  };
  for (const Shape& shape : {Shape{3, 2, 1}, Shape{4, 5, 117}, Shape{2, 21, 4225}, Shape{2, 60, 901}}) {
    for (const bool ties : {false, true}) {
      const int64_t k = shape.classes, n = shape.pixels;
      std::vector<T> logits(shape.batch * k * n);
      std::normal_distribution<double> normal(0, 3);
      for (T& v : logits) v = static_cast<T>(ties ? std::round(normal(gen)) : normal(gen));
      if (n > 100) {  // no crash, the same result
        logits[5] = std::numeric_limits<T>::infinity();
        logits[n + 7] = std::numeric_limits<T>::quiet_NaN();
      }
      std::vector<char> present_bytes(shape.batch * k);
      std::bernoulli_distribution coin(0.3);
      for (int64_t i = 0; i < shape.batch * k; ++i) present_bytes[i] = (i % k == 0) || coin(gen);
      std::fill(present_bytes.begin() + (shape.batch - 1) * k, present_bytes.end(), 1);  // all present
      const bool* present = reinterpret_cast<const bool*>(present_bytes.data());
      std::vector<int64_t> order(shape.batch * k);
      for (int64_t b = 0; b < shape.batch; ++b) {
        for (int64_t c = 0; c < k; ++c) order[b * k + c] = c;
        std::shuffle(order.begin() + b * k + 1, order.begin() + (b + 1) * k, gen);  // background first
      }
      const int64_t rank_bg = em_rank(0.4, n), rank_fg = em_rank(0.2, n);
      for (const bool suppress : {false, true}) {
        for (int64_t b = 0; b < shape.batch; ++b) {
          const EmAdaptImage<T> image{logits.data() + b * k * n, present + b * k, order.data() + b * k, k, n};
          std::vector<int64_t> labels_cpu(n), labels_gpu(n);
          std::vector<T> bias_cpu(k), bias_gpu(k);
          cpu::em_adapt_image(image, rank_bg, rank_fg, suppress, T(1e-5), labels_cpu.data(), bias_cpu.data(),
                              cpu::SerialFor{});
          for (int blocks : {1, 4}) {
            emulate_cuda_image(image, rank_bg, rank_fg, suppress, T(1e-5), blocks, 512, labels_gpu.data(),
                               bias_gpu.data());
            CHECK(labels_cpu == labels_gpu);
            CHECK(same_bits(bias_cpu, bias_gpu));
          }
        }
      }
    }
  }
}

}  // namespace

int main() {
  std::mt19937 gen(12345);
  check_keys_order<float>();
  check_keys_order<double>();
  CHECK(kSelectPasses<uint32_t> == 3 && kSelectPasses<uint64_t> == 6);
  CHECK(em_rank(0.2, 4225) == 845 && em_rank(1.0, 10) == 9 && em_rank(0.4, 1) == 0);
  check_select_every_rank<float>(gen);
  check_select_every_rank<double>(gen);
  check_images<float>(gen);
  check_images<double>(gen);
  if (failures) std::fprintf(stderr, "%d checks failed\n", failures);
  return failures ? 1 : 0;
}
