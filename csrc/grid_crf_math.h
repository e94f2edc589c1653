// Sparse grid CRF (docs/DESIGN.md §3; Tang et al., ECCV 2018, with the contrast weights of Boykov &
// Jolly, ICCV 2001): the arithmetic shared by the CPU and CUDA kernels, one pixel at a time.
// The pairs are (p, p + o_e) for the E = 2 (4-connected) or E = 4 (8-connected) directions
// o_e, so every unordered pair of neighbours appears once, with the weight
// w_pq = roi_p roi_q exp(-|I_p - I_q|^2 / (2 sigma^2)) / |o_e|, computed where it is used.
// A missing neighbour reads the pixel itself, with weight 0 (S must be finite).
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace wsloss {

// Direction e as (dy, dx): right, down, then down-right and down-left.
WSLOSS_HD void grid_offset(int e, int& dy, int& dx) {
  dy = e == 0 ? 0 : 1;
  dx = e == 1 ? 0 : (e == 3 ? -1 : 1);
}

template <typename T>
struct GridCrfImage {
  const T* segmentation;  // [K][H][W]
  const T* image;         // [C][H][W]
  const T* roi;           // [H][W]
  int64_t classes, channels, height, width;
  T contrast_scale;  // 1 / (2 sigma^2)
  bool bilinear;     // relaxation sum_k (S_pk + S_qk) / 2 - S_pk S_qk; else sum_k (S_pk - S_qk)^2
};

template <typename T>
WSLOSS_HD T grid_exp(T x) {
#if defined(__CUDA_ARCH__)
  return exp(x);
#else
  return std::exp(x);
#endif
}

// w_pq of the pair (p, q = p + o_e).
template <typename T>
WSLOSS_HD T grid_pair_weight(const GridCrfImage<T>& g, int64_t p, int64_t q, int e) {
  const int64_t n = g.height * g.width;
  T distance = T(0);
  for (int64_t c = 0; c < g.channels; ++c) {
    const T d = g.image[c * n + q] - g.image[c * n + p];
    distance += d * d;
  }
  const T inverse_length = e < 2 ? T(1) : T(0.70710678118654752440);
  return g.roi[p] * g.roi[q] * grid_exp(-distance * g.contrast_scale) * inverse_length;
}

// The pair term of one class: (a - b)^2, or (a + b) / 2 - a b (for probabilities,
// sum_k of it is 1 - S_p . S_q, the Potts relaxation sum_k S_pk (1 - S_qk) made symmetric).
template <bool kBilinear, typename T>
WSLOSS_HD T grid_pair_term(T a, T b) {
  return kBilinear ? T(0.5) * (a + b) - a * b : (a - b) * (a - b);
}

// d(pair term) / d(own value), given the other pixel's value: the term is symmetric.
template <bool kBilinear, typename T>
WSLOSS_HD T grid_pair_derivative(T own, T other) {
  return kBilinear ? T(0.5) - other : T(2) * (own - other);
}

template <typename T>
WSLOSS_HD T grid_pair_term(T a, T b, bool bilinear) {
  return bilinear ? grid_pair_term<true>(a, b) : grid_pair_term<false>(a, b);
}
template <typename T>
WSLOSS_HD T grid_pair_derivative(T own, T other, bool bilinear) {
  return bilinear ? grid_pair_derivative<true>(own, other) : grid_pair_derivative<false>(own, other);
}

// sum_e w_e(p) sum_k term(S_pk, S_{p+o_e,k}): the energy of the pairs that start at p.
template <int E, typename T>
WSLOSS_HD T grid_pixel_energy(const GridCrfImage<T>& g, int64_t y, int64_t x) {
  const int64_t n = g.height * g.width, p = y * g.width + x;
  T w[E];
  int64_t q[E];
  WSLOSS_UNROLL for (int e = 0; e < E; ++e) {
    int dy, dx;
    grid_offset(e, dy, dx);
    const bool inside = y + dy < g.height && x + dx >= 0 && x + dx < g.width;
    q[e] = inside ? p + dy * g.width + dx : p;
    w[e] = inside ? grid_pair_weight(g, p, q[e], e) : T(0);
  }
  T f[E] = {};
  for (int64_t k = 0; k < g.classes; ++k) {
    const T* s = g.segmentation + k * n;
    const T a = s[p];
    WSLOSS_UNROLL for (int e = 0; e < E; ++e) f[e] += grid_pair_term(a, s[q[e]], g.bilinear);
  }
  T energy = T(0);
  WSLOSS_UNROLL for (int e = 0; e < E; ++e) energy += w[e] * f[e];
  return energy;
}

// d/dS_pk of sum_p' grad_energy[p'] energy(p'), for every class k of pixel p (written to
// out [K][H][W]): the E pairs that start at p and the E that end at p.
template <int E, typename T>
WSLOSS_HD void grid_pixel_gradient(const GridCrfImage<T>& g, const T* grad_energy, int64_t y, int64_t x, T* out) {
  const int64_t n = g.height * g.width, p = y * g.width + x;
  T c[2 * E];
  int64_t o[2 * E];
  WSLOSS_UNROLL for (int e = 0; e < E; ++e) {
    int dy, dx;
    grid_offset(e, dy, dx);
    const bool forward = y + dy < g.height && x + dx >= 0 && x + dx < g.width;
    const bool backward = y - dy >= 0 && x - dx >= 0 && x - dx < g.width;
    const int64_t step = dy * g.width + dx;
    o[e] = forward ? p + step : p;
    c[e] = forward ? grad_energy[p] * grid_pair_weight(g, p, p + step, e) : T(0);
    o[E + e] = backward ? p - step : p;
    c[E + e] = backward ? grad_energy[p - step] * grid_pair_weight(g, p - step, p, e) : T(0);
  }
  for (int64_t k = 0; k < g.classes; ++k) {
    const T* s = g.segmentation + k * n;
    const T own = s[p];
    T acc = T(0);
    WSLOSS_UNROLL for (int j = 0; j < 2 * E; ++j) acc += c[j] * grid_pair_derivative(own, s[o[j]], g.bilinear);
    out[k * n + p] = acc;
  }
}

}  // namespace wsloss
