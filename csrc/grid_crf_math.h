// Sparse grid CRF (docs/DESIGN.md §3; Tang et al., ECCV 2018, with the contrast weights of Boykov &
// Jolly, ICCV 2001): the arithmetic shared by the CPU and CUDA kernels, one voxel at a time.
// Images are volumes of depth 1, so one code serves both. The pairs are (p, p + o_e) for the E
// directions o_e of a half neighbourhood (grid_offset), so every unordered pair of neighbours
// appears once, with the weight w_pq = roi_p roi_q exp(-|I_p - I_q|^2 / (2 sigma^2)) / dist(o_e),
// computed where it is used; 1 / dist(o_e) comes from the voxel spacing, once per call, on the host.
// A missing neighbour reads the voxel itself, with weight 0 (S must be finite).
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace wsloss {

// The most directions of a half neighbourhood: 13 (26-neighbourhood of volumes).
constexpr int kGridMaxDirections = 13;

// E, the directions of a half neighbourhood, of a full neighbourhood of n voxels: n / 2
// (images 4 -> 2, 8 -> 4; volumes 6 -> 3, 18 -> 9, 26 -> 13); 0 for any other n.
WSLOSS_HD int grid_directions(int64_t neighbourhood) {
  switch (neighbourhood) {
    case 4: case 8: case 6: case 18: case 26: return static_cast<int>(neighbourhood / 2);
    default: return 0;
  }
}

// Direction e of the E-direction half neighbourhood as (dz, dy, dx): every offset of the full
// neighbourhood whose first non-zero component is positive, except that within a plane the
// first non-zero of (dy, dx) is positive, so each unordered pair appears once (DESIGN §3).
// E = 2, 4 (images): right, down, then down-right, down-left. E = 3, 9, 13 (volumes): the 6
// faces' right, down, back; the 12 edges add the in-plane diagonals and the four diagonals
// with dz = 1 in one of the two other axes; the 8 corners add the four with dz = dy = |dx| = 1.
// E distinguishes images from volumes, so that the 2D order (and with it every rounding of the
// sums) stays what it has always been.
WSLOSS_HD void grid_offset(int directions, int e, int& dz, int& dy, int& dx) {
  if (directions == 2 || directions == 4 || e < 2) {  // images; volumes share right and down
    dz = 0;
    dy = e == 0 ? 0 : 1;
    dx = e == 1 ? 0 : (e == 3 ? -1 : 1);
    return;
  }
  switch (e) {
    case 2: dz = 1, dy = 0, dx = 0; return;     // back
    case 3: dz = 0, dy = 1, dx = 1; return;     // the in-plane diagonals
    case 4: dz = 0, dy = 1, dx = -1; return;
    case 5: dz = 1, dy = 1, dx = 0; return;     // the diagonals of the (z, y) planes
    case 6: dz = 1, dy = -1, dx = 0; return;
    case 7: dz = 1, dy = 0, dx = 1; return;     // the diagonals of the (z, x) planes
    case 8: dz = 1, dy = 0, dx = -1; return;
    case 9: dz = 1, dy = 1, dx = 1; return;     // the space diagonals
    case 10: dz = 1, dy = 1, dx = -1; return;
    case 11: dz = 1, dy = -1, dx = 1; return;
    default: dz = 1, dy = -1, dx = -1; return;  // e = 12
  }
}

template <typename T>
struct GridCrfImage {
  const T* segmentation;  // [K][D][H][W]
  const T* image;         // [C][D][H][W]
  const T* roi;           // [D][H][W]
  int64_t classes, channels, depth, height, width;  // depth 1 for images
  T contrast_scale;  // 1 / (2 sigma^2)
  bool bilinear;     // relaxation sum_k (S_pk + S_qk) / 2 - S_pk S_qk; else sum_k (S_pk - S_qk)^2
  // 1 / dist(o_e) for e < E: the spacing enters only here (grid_inverse_lengths).
  T inverse_length[kGridMaxDirections];
};

// Host: 1 / dist(o_e) of direction e, dist = sqrt((dz sz)^2 + (dy sy)^2 + (dx sx)^2), in double.
// Written as sqrt(1 / dist^2) so that the diagonal of unit pixels is sqrt(0.5), the correctly
// rounded 1/sqrt(2) that the image kernels have always used (1 / sqrt(2.0) is one double ulp
// below it).
inline double grid_inverse_length(int directions, int e, double sz, double sy, double sx) {
  int dz, dy, dx;
  grid_offset(directions, e, dz, dy, dx);
  const double squared = (dz * sz) * (dz * sz) + (dy * sy) * (dy * sy) + (dx * sx) * (dx * sx);
  return std::sqrt(1.0 / squared);
}

// Host: g.inverse_length[e] for the E directions, each rounded to T once; entries from E on are 0.
template <typename T>
void set_grid_inverse_lengths(GridCrfImage<T>& g, int directions, double sz, double sy, double sx) {
  for (int e = 0; e < kGridMaxDirections; ++e) {
    g.inverse_length[e] = e < directions ? static_cast<T>(grid_inverse_length(directions, e, sz, sy, sx)) : T(0);
  }
}

// Image (volume) b of a batch stored one after another ([B][K][D][H][W], [B][C][D][H][W],
// [B][D][H][W]), given the view of the first.
template <typename T>
WSLOSS_HD GridCrfImage<T> grid_batch_image(const GridCrfImage<T>& first, int64_t b) {
  const int64_t n = first.depth * first.height * first.width;
  GridCrfImage<T> g = first;
  g.segmentation += b * first.classes * n;
  g.image += b * first.channels * n;
  g.roi += b * n;
  return g;
}

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
  const int64_t n = g.depth * g.height * g.width;
  T distance = T(0);
  // Rolled on CUDA: unrolled inside the unrolled loops over 9 or 13 directions, the channels'
  // loads and addresses took the registers that ptxas then spilled (DESIGN §9). Same sum.
  WSLOSS_ROLLED for (int64_t c = 0; c < g.channels; ++c) {
    const T d = g.image[c * n + q] - g.image[c * n + p];
    distance += d * d;
  }
  return g.roi[p] * g.roi[q] * grid_exp(-distance * g.contrast_scale) * g.inverse_length[e];
}

// The pair term of one class: (a - b)^2, or (a + b) / 2 - a b (for probabilities,
// sum_k of it is 1 - S_p . S_q, the Potts relaxation sum_k S_pk (1 - S_qk) made symmetric).
template <bool kBilinear, typename T>
WSLOSS_HD T grid_pair_term(T a, T b) {
  return kBilinear ? T(0.5) * (a + b) - a * b : (a - b) * (a - b);
}

// d(pair term) / d(own value), given the other voxel's value: the term is symmetric.
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

// Whether the voxel (z, y, x) + step * (dz, dy, dx), step = +1 or -1, lies in the volume. dz >= 0
// but dy may be -1 (volumes), so both ends of y are checked.
template <typename T>
WSLOSS_HD bool grid_inside(const GridCrfImage<T>& g, int64_t z, int64_t y, int64_t x, int step, int dz, int dy,
                           int dx) {
  const int64_t z2 = z + step * dz, y2 = y + step * dy, x2 = x + step * dx;
  return z2 >= 0 && z2 < g.depth && y2 >= 0 && y2 < g.height && x2 >= 0 && x2 < g.width;
}

// The index offset of o_e in the [D][H][W] layout.
template <typename T>
WSLOSS_HD int64_t grid_step(const GridCrfImage<T>& g, int dz, int dy, int dx) {
  return (dz * g.height + dy) * g.width + dx;
}

// sum_e w_e(p) sum_k term(S_pk, S_{p+o_e,k}): the energy of the pairs that start at voxel p = (z, y, x).
template <int E, typename T>
WSLOSS_HD T grid_voxel_energy(const GridCrfImage<T>& g, int64_t z, int64_t y, int64_t x) {
  const int64_t n = g.depth * g.height * g.width, p = (z * g.height + y) * g.width + x;
  T w[E];
  int64_t q[E];
  WSLOSS_UNROLL for (int e = 0; e < E; ++e) {
    int dz, dy, dx;
    grid_offset(E, e, dz, dy, dx);
    const bool inside = grid_inside(g, z, y, x, 1, dz, dy, dx);
    q[e] = inside ? p + grid_step(g, dz, dy, dx) : p;
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

// The pairs j in [kFirst, kLast) of voxel p = (z, y, x) in the gradient below (j < E: the pair
// (p, p + o_j) that starts at p; j >= E: (p - o_{j-E}, p), which ends there), summed over j in
// order for every class k and written to out[k][p], or added to what is there (kAdd).
template <int E, int kFirst, int kLast, bool kAdd, typename T>
WSLOSS_HD void grid_voxel_gradient_pairs(const GridCrfImage<T>& g, const T* grad_energy, int64_t z, int64_t y,
                                         int64_t x, T* out) {
  constexpr int kPairs = kLast - kFirst;
  const int64_t n = g.depth * g.height * g.width, p = (z * g.height + y) * g.width + x;
  T c[kPairs];
  int64_t o[kPairs];
  WSLOSS_UNROLL for (int i = 0; i < kPairs; ++i) {
    const int j = kFirst + i, e = j % E;
    const bool starts = j < E;
    int dz, dy, dx;
    grid_offset(E, e, dz, dy, dx);
    const bool inside = grid_inside(g, z, y, x, starts ? 1 : -1, dz, dy, dx);
    const int64_t step = grid_step(g, dz, dy, dx), first = starts ? p : p - step;
    o[i] = inside ? (starts ? p + step : p - step) : p;
    c[i] = inside ? grad_energy[first] * grid_pair_weight(g, first, first + step, e) : T(0);
  }
  WSLOSS_ROLLED for (int64_t k = 0; k < g.classes; ++k) {
    const T* s = g.segmentation + k * n;
    const T own = s[p];
    T acc = kAdd ? out[k * n + p] : T(0);
    WSLOSS_UNROLL for (int i = 0; i < kPairs; ++i) acc += c[i] * grid_pair_derivative(own, s[o[i]], g.bilinear);
    out[k * n + p] = acc;
  }
}

// d/dS_pk of sum_p' grad_energy[p'] energy(p'), for every class k of voxel p = (z, y, x) (written
// to out [K][D][H][W]): the E pairs that start at p and the E that end at p. Up to 4 directions
// (images, the 6-neighbourhood) keep all 2E pairs' coefficients and neighbours at hand for one
// pass over the classes. With 9 and 13 that pass needs 128 registers or more per CUDA thread,
// where ptxas begins to spill (DESIGN §9), so the pairs that start at p go first and those that
// end at p are added in a second pass: the same sum in the same order, rounded the same way.
template <int E, typename T>
WSLOSS_HD void grid_voxel_gradient(const GridCrfImage<T>& g, const T* grad_energy, int64_t z, int64_t y, int64_t x,
                                   T* out) {
  if constexpr (E <= 4) {
    grid_voxel_gradient_pairs<E, 0, 2 * E, false>(g, grad_energy, z, y, x, out);
  } else {
    grid_voxel_gradient_pairs<E, 0, E, false>(g, grad_energy, z, y, x, out);
    grid_voxel_gradient_pairs<E, E, 2 * E, true>(g, grad_energy, z, y, x, out);
  }
}

}  // namespace wsloss
