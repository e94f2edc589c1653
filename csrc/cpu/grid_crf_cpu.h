// Sparse grid CRF on the CPU (docs/DESIGN.md §3), one row of voxels (b, z, y) at a time. The row's
// interior voxels run class plane by class plane in loops over x that the compiler vectorizes;
// the two border voxels use the per-voxel functions of grid_crf_math.h. Images are volumes of
// depth 1. Torch-free so that the C++ tests can run it; parallel_for(begin, end, grain, f) runs
// the rows of all images and volumes.
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

// Whether the row (z, y) + step * (dz, dy) of direction e lies in the volume (step = +1: the
// pairs that start on row (z, y), -1: those that end there). The interior voxels' x + dx is
// always inside, so the row decides for all of them.
template <int E, typename T>
bool grid_row_inside(const GridCrfImage<T>& g, int64_t z, int64_t y, int step, int e) {
  int dz, dy, dx;
  grid_offset(E, e, dz, dy, dx);
  const int64_t z2 = z + step * dz, y2 = y + step * dy;
  return z2 >= 0 && z2 < g.depth && y2 >= 0 && y2 < g.height;
}

// The index offset of direction e.
template <int E, typename T>
int64_t grid_direction_step(const GridCrfImage<T>& g, int e) {
  int dz, dy, dx;
  grid_offset(E, e, dz, dy, dx);
  return grid_step(g, dz, dy, dx);
}

// energy[x] of row (z, y): sum_e w_e(p) sum_k term(S_pk, S_{p+o_e,k}).
template <int E, bool kBilinear, typename T>
void grid_row_energy(const GridCrfImage<T>& g, int64_t z, int64_t y, T* energy, std::vector<T>& scratch) {
  const int64_t width = g.width, n = g.depth * g.height * width, row = (z * g.height + y) * width;
  energy[0] = grid_voxel_energy<E>(g, z, y, 0);
  if (width == 1) return;
  energy[width - 1] = grid_voxel_energy<E>(g, z, y, width - 1);
  if (width == 2) return;
  scratch.assign(E * width, T(0));
  T* f = scratch.data();
  bool row_inside[E];
  int64_t step[E];
  for (int e = 0; e < E; ++e) {
    row_inside[e] = grid_row_inside<E>(g, z, y, 1, e);
    step[e] = grid_direction_step<E>(g, e);
  }
  for (int64_t k = 0; k < g.classes; ++k) {
    const T* s = g.segmentation + k * n + row;
    for (int e = 0; e < E; ++e) {
      if (row_inside[e]) add_pair_terms<kBilinear>(f + e * width, s, s + step[e], width - 1);
    }
  }
  for (int64_t x = 1; x < width - 1; ++x) {
    const int64_t p = row + x;
    T acc = T(0);
    for (int e = 0; e < E; ++e) {
      if (row_inside[e]) acc += grid_pair_weight(g, p, p + step[e], e) * f[e * width + x];
    }
    energy[x] = acc;
  }
}

// The gradient of row (z, y), every class: out[k][z][y][x] (out points at the volume's [K][D][H][W]).
template <int E, bool kBilinear, typename T>
void grid_row_gradient(const GridCrfImage<T>& g, const T* grad_energy, int64_t z, int64_t y, T* out,
                       std::vector<T>& scratch) {
  const int64_t width = g.width, n = g.depth * g.height * width, row = (z * g.height + y) * width;
  grid_voxel_gradient<E>(g, grad_energy, z, y, 0, out);
  if (width == 1) return;
  grid_voxel_gradient<E>(g, grad_energy, z, y, width - 1, out);
  if (width == 2) return;
  // c_j[x]: the coefficient of the pair j of voxel (z, y, x) (E starting there, E ending
  // there); o_j its neighbour's offset. A missing row gets 0 and the offset 0.
  scratch.assign(2 * E * width, T(0));
  T* c = scratch.data();
  int64_t o[2 * E];
  for (int e = 0; e < E; ++e) {
    const int64_t step = grid_direction_step<E>(g, e);
    const bool forward = grid_row_inside<E>(g, z, y, 1, e), backward = grid_row_inside<E>(g, z, y, -1, e);
    o[e] = forward ? step : 0;
    o[E + e] = backward ? -step : 0;
    for (int64_t x = 1; x < width - 1; ++x) {
      const int64_t q = row + x;
      if (forward) c[e * width + x] = grad_energy[q] * grid_pair_weight(g, q, q + step, e);
      if (backward) c[(E + e) * width + x] = grad_energy[q - step] * grid_pair_weight(g, q - step, q, e);
    }
  }
  for (int64_t k = 0; k < g.classes; ++k) {
    const T* s = g.segmentation + k * n + row;
    T* dst = out + k * n + row;
    // One pass over the row per pair j (the row stays in L1), so that each loop vectorizes.
    for (int64_t x = 1; x < width - 1; ++x) dst[x] = T(0);
    for (int j = 0; j < 2 * E; ++j) add_pair_derivatives<kBilinear>(dst, c + j * width, s, s + o[j], width - 1);
  }
}

// Rows per parallel_for chunk: about this many segmentation values (K * W per row).
constexpr int64_t kGridRowGrainValues = 32768;

// f(directions, bilinear) with both as compile-time constants (std::integral_constant): E of
// grid_directions(neighbourhood), 2 (4-neighbourhood) for an unknown one (the wrappers refuse it).
template <class F>
void with_grid_kind(int64_t neighbourhood, bool bilinear, const F& f) {
  const auto with_bilinear = [&](auto directions) {
    bilinear ? f(directions, std::true_type{}) : f(directions, std::false_type{});
  };
  switch (grid_directions(neighbourhood)) {
    case 4: with_bilinear(std::integral_constant<int, 4>{}); break;
    case 3: with_bilinear(std::integral_constant<int, 3>{}); break;
    case 9: with_bilinear(std::integral_constant<int, 9>{}); break;
    case 13: with_bilinear(std::integral_constant<int, 13>{}); break;
    default: with_bilinear(std::integral_constant<int, 2>{}); break;
  }
}

// f(row, scratch) for the rows (b * D + z) * H + y of all volumes, in parallel; one scratch per chunk.
template <typename T, class ParallelFor, class F>
void for_each_grid_row(int64_t rows, int64_t row_values, const ParallelFor& parallel_for, const F& f) {
  const int64_t grain = std::max<int64_t>(1, kGridRowGrainValues / std::max<int64_t>(1, row_values));
  parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch;
    for (int64_t row = begin; row < end; ++row) f(row, scratch);
  });
}

// The energy [B][D][H][W] of `batch` volumes (images: D = 1), volume 0 viewed by `first`
// (first.bilinear picks the term, first.inverse_length holds the directions' 1 / dist);
// neighbourhood 4 or 8 (images), 6, 18 or 26 (volumes). energy[b][z][y][x] holds the pairs that
// start at (z, y, x).
template <typename T, class ParallelFor>
void grid_crf_energy(const GridCrfImage<T>& first, int64_t batch, int64_t neighbourhood, T* energy,
                     const ParallelFor& parallel_for) {
  const int64_t depth = first.depth, height = first.height, width = first.width;
  if (width == 0) return;
  with_grid_kind(neighbourhood, first.bilinear, [&](auto directions, auto bilinear) {
    for_each_grid_row<T>(batch * depth * height, width * first.classes, parallel_for,
                         [&](int64_t row, std::vector<T>& scratch) {
                           const int64_t plane = row % (depth * height);
                           grid_row_energy<decltype(directions)::value, decltype(bilinear)::value>(
                               grid_batch_image(first, row / (depth * height)), plane / height, plane % height,
                               energy + row * width, scratch);
                         });
  });
}

// The gradient [B][K][D][H][W] of sum grad_energy * energy (grad_energy [B][D][H][W]) with
// respect to the segmentations, for the volumes of grid_crf_energy.
template <typename T, class ParallelFor>
void grid_crf_gradient(const GridCrfImage<T>& first, int64_t batch, int64_t neighbourhood, const T* grad_energy,
                       T* grad, const ParallelFor& parallel_for) {
  const int64_t depth = first.depth, height = first.height, width = first.width, classes = first.classes;
  const int64_t n = depth * height * width;
  if (width == 0) return;
  with_grid_kind(neighbourhood, first.bilinear, [&](auto directions, auto bilinear) {
    for_each_grid_row<T>(batch * depth * height, width * classes, parallel_for,
                         [&](int64_t row, std::vector<T>& scratch) {
                           const int64_t b = row / (depth * height), plane = row % (depth * height);
                           grid_row_gradient<decltype(directions)::value, decltype(bilinear)::value>(
                               grid_batch_image(first, b), grad_energy + b * n, plane / height, plane % height,
                               grad + b * classes * n, scratch);
                         });
  });
}

}  // namespace cpu
}  // namespace wsloss
