// EM-Adapt on the CPU (docs/DESIGN.md §4): std::nth_element per present class, pixel loops
// channel by channel (branch-free, vectorizable). Torch-free so that the C++ tests can
// compare it with the CUDA steps; parallel_for(begin, end, grain, f) runs the pixel loops.
#pragma once

#include <algorithm>
#include <vector>

#include "../em_adapt_math.h"

namespace wsloss {
namespace cpu {

// Pixels per block of the label pass: its running maxima stay in L1.
constexpr int64_t kLabelBlock = 1024;
constexpr int64_t kPixelGrain = 16384;

// Labels of pixels [begin, end): the argmax of pixel_label (em_adapt_math.h), computed
// class by class with the same operations in the same order.
template <typename T>
void label_pixels(const EmAdaptImage<T>& image, int64_t begin, int64_t end, const T* bias, bool suppress_absent,
                  T margin, int64_t* labels) {
  const int64_t n = image.pixels;
  T best[kLabelBlock], cap[kLabelBlock];
  int32_t label[kLabelBlock];
  bool any_present = false;
  for (int64_t c = 0; c < image.classes; ++c) any_present = any_present || image.present[c];
  const bool clip = suppress_absent && any_present;
  for (int64_t p0 = begin; p0 < end; p0 += kLabelBlock) {
    const int64_t count = std::min(kLabelBlock, end - p0);
    if (clip) {
      bool first = true;
      for (int64_t c = 0; c < image.classes; ++c) {
        if (!image.present[c]) continue;
        const T* s = image.logits + c * n + p0;
        for (int64_t i = 0; i < count; ++i) cap[i] = (first || s[i] < cap[i]) ? s[i] : cap[i];
        first = false;
      }
      for (int64_t i = 0; i < count; ++i) cap[i] = cap[i] - margin;
    }
    for (int64_t c = 0; c < image.classes; ++c) {
      const T* s = image.logits + c * n + p0;
      // One loop per kind of class, each free of branches so that it vectorizes.
      const auto update = [&](auto score, bool strictly_greater) {
        if (c == 0) {
          for (int64_t i = 0; i < count; ++i) best[i] = score(i), label[i] = 0;
          return;
        }
        const int32_t class_index = static_cast<int32_t>(c);
        for (int64_t i = 0; i < count; ++i) {
          const T v = score(i);
          const bool take = strictly_greater ? v > best[i] : v >= best[i];
          best[i] = take ? v : best[i];
          label[i] = take ? class_index : label[i];
        }
      };
      if (image.present[c]) {
        const T b = bias[c];
        update([&](int64_t i) { return s[i] + b; }, false);
      } else if (clip) {
        update([&](int64_t i) { return s[i] < cap[i] ? s[i] : cap[i]; }, true);
      } else {
        update([&](int64_t i) { return s[i]; }, false);
      }
    }
    std::copy(label, label + count, labels + p0);
  }
}

// Writes the image's labels [N] and biases [K] (0 for classes without one). rank_bg and
// rank_fg are k for the background (class 0) and for every other class.
template <typename T, class ParallelFor>
void em_adapt_image(const EmAdaptImage<T>& image, int64_t rank_bg, int64_t rank_fg, bool suppress_absent, T margin,
                    int64_t* labels, T* bias, const ParallelFor& parallel_for) {
  using Key = typename OrderedKey<T>::type;
  const int64_t n = image.pixels;
  std::fill(bias, bias + image.classes, T(0));
  std::vector<T> max_score(n, -INFINITY);
  std::vector<Key> keys(n);
  // M before any bias: the first present class, then em_max in ascending class order.
  bool first = true;
  for (int64_t c = 0; c < image.classes; ++c) {
    if (!image.present[c]) continue;
    const T* score = image.logits + c * n;
    parallel_for(0, n, kPixelGrain, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) max_score[p] = first ? score[p] : em_max(max_score[p], score[p]);
    });
    first = false;
  }
  for (int t = 0;; ++t) {
    const int64_t l = visited_class(image, t);
    if (l < 0) break;
    const T* score = image.logits + l * n;
    parallel_for(0, n, kPixelGrain, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) keys[p] = ordered_key(em_difference(max_score[p], score[p]));
    });
    const int64_t k = l == 0 ? rank_bg : rank_fg;
    std::nth_element(keys.begin(), keys.begin() + k, keys.end());
    const T b = key_value<T>(keys[k]);
    bias[l] = b;
    parallel_for(0, n, kPixelGrain, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) max_score[p] = em_max(max_score[p], score[p] + b);
    });
  }
  parallel_for(0, n, kPixelGrain, [&](int64_t begin, int64_t end) {
    label_pixels(image, begin, end, bias, suppress_absent, margin, labels);
  });
}

}  // namespace cpu
}  // namespace wsloss
