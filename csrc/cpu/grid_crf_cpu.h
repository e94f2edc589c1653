// Sparse grid CRF on the CPU (docs/DESIGN.md §3), one image row at a time. The row's interior
// pixels run class plane by class plane in loops over x that the compiler vectorizes;
// the two border pixels use the per-pixel functions of grid_crf_math.h. Torch-free so that
// the C++ tests can run it; parallel_for(begin, end, grain, f) runs the rows of all images.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../grid_crf_math.h"

namespace wsloss {
namespace cpu {

// dst[x] += c[x] * d(term)/d(own)(s[x], t[x]) for x in [1, count). Kept out of line: inlined
// into the row loop, GCC loses the restrict qualifiers and leaves the loop scalar.
template <bool kBilinear, typename T>
[[gnu::noinline]] void add_pair_derivatives(T* __restrict dst, const T* __restrict c, const T* __restrict s,
                                            const T* __restrict t, int64_t count) {
  for (int64_t x = 1; x < count; ++x) dst[x] += c[x] * grid_pair_derivative<kBilinear>(s[x], t[x]);
}

// f[x] += term(s[x], t[x]) for x in [1, count).
template <bool kBilinear, typename T>
[[gnu::noinline]] void add_pair_terms(T* __restrict f, const T* __restrict s, const T* __restrict t, int64_t count) {
  for (int64_t x = 1; x < count; ++x) f[x] += grid_pair_term<kBilinear>(s[x], t[x]);
}

// energy[x] of row y: sum_e w_e(p) sum_k term(S_pk, S_{p+o_e,k}).
template <int E, bool kBilinear, typename T>
void grid_row_energy(const GridCrfImage<T>& g, int64_t y, T* energy, std::vector<T>& scratch) {
  const int64_t width = g.width, n = g.height * width;
  energy[0] = grid_pixel_energy<E>(g, y, 0);
  if (width == 1) return;
  energy[width - 1] = grid_pixel_energy<E>(g, y, width - 1);
  if (width == 2) return;
  scratch.assign(E * width, T(0));
  T* f = scratch.data();
  bool row_inside[E];
  for (int e = 0; e < E; ++e) {
    int dy, dx;
    grid_offset(e, dy, dx);
    row_inside[e] = y + dy < g.height;
  }
  for (int64_t k = 0; k < g.classes; ++k) {
    const T* s = g.segmentation + k * n + y * width;
    for (int e = 0; e < E; ++e) {
      if (!row_inside[e]) continue;
      int dy, dx;
      grid_offset(e, dy, dx);
      add_pair_terms<kBilinear>(f + e * width, s, s + dy * width + dx, width - 1);
    }
  }
  for (int64_t x = 1; x < width - 1; ++x) {
    const int64_t p = y * width + x;
    T acc = T(0);
    for (int e = 0; e < E; ++e) {
      if (!row_inside[e]) continue;
      int dy, dx;
      grid_offset(e, dy, dx);
      acc += grid_pair_weight(g, p, p + dy * width + dx, e) * f[e * width + x];
    }
    energy[x] = acc;
  }
}

// The gradient of row y, every class: out[k][y][x] (out points at the image's [K][H][W]).
template <int E, bool kBilinear, typename T>
void grid_row_gradient(const GridCrfImage<T>& g, const T* grad_energy, int64_t y, T* out, std::vector<T>& scratch) {
  const int64_t width = g.width, n = g.height * width;
  grid_pixel_gradient<E>(g, grad_energy, y, 0, out);
  if (width == 1) return;
  grid_pixel_gradient<E>(g, grad_energy, y, width - 1, out);
  if (width == 2) return;
  // c_j[x]: the coefficient of the pair j of pixel (y, x) (E starting there, E ending
  // there); o_j its neighbour's offset. A missing row gets 0 and the offset 0.
  scratch.assign(2 * E * width, T(0));
  T* c = scratch.data();
  int64_t o[2 * E];
  for (int e = 0; e < E; ++e) {
    int dy, dx;
    grid_offset(e, dy, dx);
    const int64_t step = dy * width + dx;
    const bool forward = y + dy < g.height, backward = y - dy >= 0;
    o[e] = forward ? step : 0;
    o[E + e] = backward ? -step : 0;
    const int64_t p = y * width;
    for (int64_t x = 1; x < width - 1; ++x) {
      const int64_t q = p + x;
      if (forward) c[e * width + x] = grad_energy[q] * grid_pair_weight(g, q, q + step, e);
      if (backward) c[(E + e) * width + x] = grad_energy[q - step] * grid_pair_weight(g, q - step, q, e);
    }
  }
  for (int64_t k = 0; k < g.classes; ++k) {
    const T* s = g.segmentation + k * n + y * width;
    T* dst = out + k * n + y * width;
    // One pass over the row per pair j (the row stays in L1), so that each loop vectorizes.
    for (int64_t x = 1; x < width - 1; ++x) dst[x] = T(0);
    for (int j = 0; j < 2 * E; ++j) add_pair_derivatives<kBilinear>(dst, c + j * width, s, s + o[j], width - 1);
  }
}

// Rows per parallel_for chunk: about this many segmentation values (K * W per row).
constexpr int64_t kGridRowGrainValues = 32768;

// Image b of a batch stored image after image ([B][K][H][W], [B][C][H][W], [B][H][W]),
// given the view of image 0.
template <typename T>
GridCrfImage<T> grid_batch_image(const GridCrfImage<T>& first, int64_t b) {
  const int64_t n = first.height * first.width;
  GridCrfImage<T> g = first;
  g.segmentation += b * first.classes * n;
  g.image += b * first.channels * n;
  g.roi += b * n;
  return g;
}

// f(directions, bilinear) with both as compile-time constants (std::integral_constant):
// E = 4 for the 8-neighbourhood, else E = 2 (4-neighbourhood).
template <class F>
void with_grid_kind(int64_t neighbourhood, bool bilinear, const F& f) {
  using Four = std::integral_constant<int, 4>;
  using Two = std::integral_constant<int, 2>;
  if (neighbourhood == 8) bilinear ? f(Four{}, std::true_type{}) : f(Four{}, std::false_type{});
  else bilinear ? f(Two{}, std::true_type{}) : f(Two{}, std::false_type{});
}

// f(row, scratch) for the rows b * H + y of all images, in parallel; one scratch per chunk.
template <typename T, class ParallelFor, class F>
void for_each_grid_row(int64_t rows, int64_t row_values, const ParallelFor& parallel_for, const F& f) {
  const int64_t grain = std::max<int64_t>(1, kGridRowGrainValues / std::max<int64_t>(1, row_values));
  parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch;
    for (int64_t row = begin; row < end; ++row) f(row, scratch);
  });
}

// The energy [B][H][W] of `batch` images, image 0 viewed by `first` (first.bilinear picks the
// term); neighbourhood 4 or 8. energy[b][y][x] holds the pairs that start at (y, x).
template <typename T, class ParallelFor>
void grid_crf_energy(const GridCrfImage<T>& first, int64_t batch, int64_t neighbourhood, T* energy,
                     const ParallelFor& parallel_for) {
  const int64_t height = first.height, width = first.width;
  if (width == 0) return;
  with_grid_kind(neighbourhood, first.bilinear, [&](auto directions, auto bilinear) {
    for_each_grid_row<T>(batch * height, width * first.classes, parallel_for,
                         [&](int64_t row, std::vector<T>& scratch) {
                           grid_row_energy<decltype(directions)::value, decltype(bilinear)::value>(
                               grid_batch_image(first, row / height), row % height, energy + row * width, scratch);
                         });
  });
}

// The gradient [B][K][H][W] of sum grad_energy * energy (grad_energy [B][H][W]) with respect to
// the segmentations, for the images of grid_crf_energy.
template <typename T, class ParallelFor>
void grid_crf_gradient(const GridCrfImage<T>& first, int64_t batch, int64_t neighbourhood, const T* grad_energy,
                       T* grad, const ParallelFor& parallel_for) {
  const int64_t height = first.height, width = first.width, classes = first.classes;
  if (width == 0) return;
  with_grid_kind(neighbourhood, first.bilinear, [&](auto directions, auto bilinear) {
    for_each_grid_row<T>(batch * height, width * classes, parallel_for, [&](int64_t row, std::vector<T>& scratch) {
      const int64_t b = row / height;
      grid_row_gradient<decltype(directions)::value, decltype(bilinear)::value>(
          grid_batch_image(first, b), grad_energy + b * height * width, row % height,
          grad + b * classes * height * width, scratch);
    });
  });
}

}  // namespace cpu
}  // namespace wsloss
