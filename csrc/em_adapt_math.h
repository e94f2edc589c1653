// EM-Adapt bias estimation (docs/DESIGN.md §4), the arithmetic shared by the CPU and CUDA kernels.
//
// Papandreou, Chen, Murphy & Yuille, "Weakly- and Semi-Supervised Learning of a Deep
// Convolutional Network for Semantic Image Segmentation" (ICCV 2015), section 3.1:
// per image, each present class l in turn gets the bias b_l that makes it tie or beat
// the running maximum M on at least k_l + 1 pixels, b_l = the k_l-th smallest of
// M - F_l. Every kernel performs the same IEEE operations in the logits' dtype, so
// CPU and CUDA agree bit for bit. Includes no torch and no CUDA runtime headers.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "host_device.h"

namespace wsloss {

// One image's slice of the inputs: logits [K][N], present [K], order [K].
template <typename T>
struct EmAdaptImage {
  const T* logits;
  const bool* present;
  const int64_t* order;  // classes in visiting order; entries outside 0..K-1 are skipped
  int64_t classes;
  int64_t pixels;
};

// Unsigned integers whose order is the order of T's values: -0 and +0 are distinct
// keys but em_difference never yields -0; every NaN maps to the largest key.
template <typename T>
struct OrderedKey;
template <>
struct OrderedKey<float> {
  using type = uint32_t;
};
template <>
struct OrderedKey<double> {
  using type = uint64_t;
};

template <typename T>
WSLOSS_HD typename OrderedKey<T>::type ordered_key(T value) {
  using Key = typename OrderedKey<T>::type;
  constexpr Key kSign = Key{1} << (8 * sizeof(Key) - 1);
  if (value != value) return ~Key{0};
  Key bits;
  memcpy(&bits, &value, sizeof bits);
  return (bits & kSign) ? ~bits : (bits | kSign);
}

template <typename T>
WSLOSS_HD T key_value(typename OrderedKey<T>::type key) {
  using Key = typename OrderedKey<T>::type;
  constexpr Key kSign = Key{1} << (8 * sizeof(Key) - 1);
  const Key bits = (key & kSign) ? (key & ~kSign) : ~key;
  T value;
  memcpy(&value, &bits, sizeof value);
  return value;
}

WSLOSS_HD float next_up(float x) { return nextafterf(x, INFINITY); }
WSLOSS_HD double next_up(double x) { return nextafter(x, static_cast<double>(INFINITY)); }

// diff(p): the bias that lifts F_l(p) to M(p), M(p) - F_l(p) stepped up while F_l(p) + diff still
// rounds below M(p) (at most twice: the rounded difference is within an ulp of the exact one).
// Rounding is monotone, so a bias b >= diff(p) gives F_l(p) + b >= M(p): the class ties or beats
// M on every pixel whose diff is at most the selected one, in any dtype (DESIGN §4). A zero is
// always +0 so that equal values have one key.
template <typename T>
WSLOSS_HD T em_difference(T max_score, T score) {
  T diff = max_score - score;
  for (int step = 0; step < 4 && score + diff < max_score; ++step) diff = next_up(diff);
  return diff == T(0) ? T(0) : diff;
}

// The running maximum; a NaN score never replaces it (same rule on every device).
template <typename T>
WSLOSS_HD T em_max(T current, T score) {
  return score > current ? score : current;
}

// k_l = min(floor(rho_l N), N - 1), the 0-based rank of b_l among the N differences.
inline int64_t em_rank(double portion, int64_t pixels) {
  const int64_t k = static_cast<int64_t>(std::floor(portion * static_cast<double>(pixels)));
  return k < pixels - 1 ? k : pixels - 1;
}

// True when order entry j names a present class (entries outside 0..K-1 are skipped).
template <typename T>
WSLOSS_HD bool visits(const EmAdaptImage<T>& image, int64_t j) {
  const int64_t c = image.order[j];
  return c >= 0 && c < image.classes && image.present[c];
}

// The t-th present class in visiting order, or -1 when the image has fewer.
template <typename T>
WSLOSS_HD int64_t visited_class(const EmAdaptImage<T>& image, int t) {
  for (int64_t j = 0; j < image.classes; ++j) {
    if (visits(image, j) && t-- == 0) return image.order[j];
  }
  return -1;
}

template <typename T>
WSLOSS_HD int visit_count(const EmAdaptImage<T>& image) {
  int count = 0;
  for (int64_t j = 0; j < image.classes; ++j) count += visits(image, j);
  return count;
}

// M(p) before any bias: the maximum over present classes, in ascending class order.
template <typename T>
WSLOSS_HD T initial_max(const EmAdaptImage<T>& image, int64_t p) {
  T m = -INFINITY;
  bool first = true;
  for (int64_t c = 0; c < image.classes; ++c) {
    if (!image.present[c]) continue;
    const T score = image.logits[c * image.pixels + p];
    m = first ? score : em_max(m, score);
    first = false;
  }
  return m;
}

// The pseudo-label of pixel p: argmax over classes of the biased scores (bias[c] = 0
// for classes without one), absent classes clipped to (least present score - margin)
// when suppressing; ties go to the larger class index, except that a clipped class wins
// only when strictly greater: it never wins even where the margin is below the scores'
// rounding (large logits) or zero.
template <typename T>
WSLOSS_HD int64_t pixel_label(const EmAdaptImage<T>& image, int64_t p, const T* bias, bool suppress_absent,
                              T margin) {
  const T* score = image.logits + p;
  const int64_t n = image.pixels;
  bool any_present = false;
  T least = 0;
  if (suppress_absent) {
    for (int64_t c = 0; c < image.classes; ++c) {
      if (!image.present[c]) continue;
      const T s = score[c * n];
      least = (!any_present || s < least) ? s : least;
      any_present = true;
    }
  }
  const T cap = least - margin;
  int64_t label = 0;
  T best = 0;
  for (int64_t c = 0; c < image.classes; ++c) {
    T s = score[c * n];
    const bool clipped = !image.present[c] && any_present;
    if (image.present[c]) {
      s = s + bias[c];
    } else if (clipped) {
      s = s < cap ? s : cap;
    }
    if (c == 0 || (clipped ? s > best : s >= best)) {
      best = s;
      label = c;
    }
  }
  return label;
}

// Radix selection of the k-th smallest key, kDigitBits per pass from the top. The CUDA
// kernel histograms one digit per pass; the CPU kernel uses std::nth_element and must
// pick the same key.
constexpr int kDigitBits = 11;
constexpr int kDigitBins = 1 << kDigitBits;

template <typename Key>
constexpr int kSelectPasses = (8 * static_cast<int>(sizeof(Key)) + kDigitBits - 1) / kDigitBits;

// Bits below the digit of pass `pass`.
template <typename Key>
WSLOSS_HD int digit_shift(int pass) {
  const int shift = 8 * static_cast<int>(sizeof(Key)) - kDigitBits * (pass + 1);
  return shift > 0 ? shift : 0;
}

template <typename Key>
WSLOSS_HD int digit_width(int pass) {
  return (pass == 0 ? 8 * static_cast<int>(sizeof(Key)) : digit_shift<Key>(pass - 1)) - digit_shift<Key>(pass);
}

// True when the key's digits above pass `pass` equal the digits chosen so far.
template <typename Key>
WSLOSS_HD bool key_has_prefix(Key key, Key prefix, int pass) {
  return pass == 0 || (key >> digit_shift<Key>(pass - 1)) == prefix;
}

template <typename Key>
WSLOSS_HD int key_digit(Key key, int pass) {
  return static_cast<int>((key >> digit_shift<Key>(pass)) & ((Key{1} << digit_width<Key>(pass)) - 1));
}

// Looks for the element of rank `rank` (0-based, among keys with the chosen prefix) in
// the histogram bins [begin, end), given `below` keys in earlier bins. On success,
// sets the digit and the rank within that digit's bin; exactly one of the threads that
// split the bins among them succeeds.
WSLOSS_HD bool find_digit(const uint32_t* histogram, int begin, int end, uint32_t below, uint32_t rank, int* digit,
                          uint32_t* rank_in_digit) {
  if (rank < below) return false;  // an earlier thread's bins hold it
  for (int d = begin; d < end; ++d) {
    if (rank < below + histogram[d]) {
      *digit = d;
      *rank_in_digit = rank - below;
      return true;
    }
    below += histogram[d];
  }
  return false;
}

}  // namespace wsloss
