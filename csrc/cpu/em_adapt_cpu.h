// EM-Adapt on the CPU (SPEC 4): one image at a time, std::nth_element per present
// class. Torch-free so that the C++ tests can compare it with the CUDA steps.
#pragma once

#include <algorithm>
#include <vector>

#include "../em_adapt_math.h"

namespace wsloss {
namespace cpu {

// Writes the image's labels [N] and biases [K] (0 for classes without one). rank_bg and
// rank_fg are k for the background (class 0) and for every other class.
template <typename T>
void em_adapt_image(const EmAdaptImage<T>& image, int64_t rank_bg, int64_t rank_fg, bool suppress_absent, T margin,
                    int64_t* labels, T* bias) {
  using Key = typename OrderedKey<T>::type;
  const int64_t n = image.pixels;
  std::fill(bias, bias + image.classes, T(0));
  std::vector<T> max_score(n);
  for (int64_t p = 0; p < n; ++p) max_score[p] = initial_max(image, p);
  std::vector<Key> keys(n);
  for (int t = 0;; ++t) {
    const int64_t l = visited_class(image, t);
    if (l < 0) break;
    const T* score = image.logits + l * n;
    for (int64_t p = 0; p < n; ++p) keys[p] = ordered_key(em_difference(max_score[p], score[p]));
    const int64_t k = l == 0 ? rank_bg : rank_fg;
    std::nth_element(keys.begin(), keys.begin() + k, keys.end());
    const T b = key_value<T>(keys[k]);
    bias[l] = b;
    for (int64_t p = 0; p < n; ++p) max_score[p] = em_max(max_score[p], score[p] + b);
  }
  for (int64_t p = 0; p < n; ++p) labels[p] = pixel_label(image, p, bias, suppress_absent, margin);
}

}  // namespace cpu
}  // namespace wsloss
