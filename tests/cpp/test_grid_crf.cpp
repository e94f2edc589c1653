// The torch-free sparse grid CRF CPU core (cpu/grid_crf_cpu.h) with the serial parallel_for, on
// images (4- and 8-neighbourhoods, depth 1) and volumes (6, 18 and 26), against docs/DESIGN.md §3
// written out directly in double precision: every unordered pair of neighbouring voxels once, both
// in the ROI, w_pq = exp(-||I_p - I_q||^2 / (2 sigma^2)) / dist(p, q) with
// dist = sqrt((dz sz)^2 + (dy sy)^2 + (dx sx)^2), the quadratic term w_pq ||S_p - S_q||^2 or the
// bilinear w_pq sum_k (S_pk + S_qk)/2 - S_pk S_qk. A pair's energy belongs to whichever of its
// voxels comes first in raster order (the core's per-voxel energy). The backward (d/dS of sum_p grad_energy_p energy_p) is checked against the
// closed form of §3 and against central differences of the direct sum; chunked parallel_for
// orders must give the same bits as the serial one.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/grid_crf_cpu.h"
#include "cpu/parallel_for.h"
#include "grid_crf_math.h"
#include "test_check.h"

using namespace wsloss;

namespace {

// Runs f on chunks of `chunk` indices, last chunk first (another split and order of the rows).
struct ChunkedReverseFor {
  int64_t chunk;
  template <class F>
  void operator()(int64_t begin, int64_t end, int64_t, const F& f) const {
    if (begin >= end) return;
    for (int64_t hi = end; hi > begin;) {
      const int64_t lo = std::max(begin, hi - chunk);
      f(lo, hi);
      hi = lo;
    }
  }
};

struct Problem {
  int64_t batch, classes, channels, depth, height, width;  // depth 1 for images
  int neighbourhood;                                       // 4, 8 (images); 6, 18, 26 (volumes)
  bool bilinear;
  double sigma;
  double spacing[3];  // sz, sy, sx
  // [B][K][D][H][W], [B][C][D][H][W], [B][D][H][W], [B][D][H][W]
  std::vector<double> segmentations, images, rois, grad_energy;

  int64_t voxels() const { return depth * height * width; }
};

// One unordered neighbouring pair of volume b: voxel p first in raster order, both in the ROI.
struct Pair {
  int64_t p, q;
  double w;
};

// Whether (dz, dy, dx) != 0 joins neighbours: images see the offsets of their plane, 4 those that
// share an edge, 8 all; volumes 6 those that share a face, 18 also an edge, 26 all.
bool neighbours(int neighbourhood, int dz, int dy, int dx) {
  const int changed = (dz != 0) + (dy != 0) + (dx != 0);
  if (changed == 0) return false;
  switch (neighbourhood) {
    case 4: return dz == 0 && changed == 1;
    case 8: return dz == 0;
    case 6: return changed == 1;
    case 18: return changed <= 2;
    default: return true;
  }
}

// The pairs of §3, found by looking at every voxel's full neighbourhood.
std::vector<Pair> reference_pairs(const Problem& pr, int64_t b) {
  const int64_t d = pr.depth, h = pr.height, w = pr.width, n = pr.voxels();
  std::vector<Pair> pairs;
  for (int64_t z = 0; z < d; ++z) {
    for (int64_t y = 0; y < h; ++y) {
      for (int64_t x = 0; x < w; ++x) {
        for (int dz = -1; dz <= 1; ++dz) {
          for (int dy = -1; dy <= 1; ++dy) {
            for (int dx = -1; dx <= 1; ++dx) {
              if (!neighbours(pr.neighbourhood, dz, dy, dx)) continue;
              const int64_t z2 = z + dz, y2 = y + dy, x2 = x + dx;
              if (z2 < 0 || z2 >= d || y2 < 0 || y2 >= h || x2 < 0 || x2 >= w) continue;
              const int64_t p = (z * h + y) * w + x, q = (z2 * h + y2) * w + x2;
              if (q < p) continue;  // the pair once, from its first voxel
              const double* roi = pr.rois.data() + b * n;
              if (roi[p] == 0 || roi[q] == 0) continue;
              double distance2 = 0;
              for (int64_t c = 0; c < pr.channels; ++c) {
                const double* image = pr.images.data() + (b * pr.channels + c) * n;
                distance2 += (image[p] - image[q]) * (image[p] - image[q]);
              }
              const double dist = std::sqrt(std::pow(dz * pr.spacing[0], 2) + std::pow(dy * pr.spacing[1], 2) +
                                            std::pow(dx * pr.spacing[2], 2));
              pairs.push_back({p, q, roi[p] * roi[q] * std::exp(-distance2 / (2 * pr.sigma * pr.sigma)) / dist});
            }
          }
        }
      }
    }
  }
  return pairs;
}

double reference_term(bool bilinear, double a, double b) {
  return bilinear ? (a + b) / 2 - a * b : (a - b) * (a - b);
}

// energy [B][D][H][W]; scale [B][D][H][W]: the sum of the absolute values that went into it (for tolerances).
void reference_energy(const Problem& pr, const std::vector<double>& s, std::vector<double>& energy,
                      std::vector<double>& scale) {
  const int64_t n = pr.voxels();
  energy.assign(pr.batch * n, 0.0);
  scale.assign(pr.batch * n, 0.0);
  for (int64_t b = 0; b < pr.batch; ++b) {
    for (const Pair& pair : reference_pairs(pr, b)) {
      for (int64_t k = 0; k < pr.classes; ++k) {
        const double* sk = s.data() + (b * pr.classes + k) * n;
        const double a = sk[pair.p], c = sk[pair.q];
        energy[b * n + pair.p] += pair.w * reference_term(pr.bilinear, a, c);
        scale[b * n + pair.p] += pair.w * (std::abs(a) + std::abs(c) + std::abs(a * c) + (a - c) * (a - c));
      }
    }
  }
}

// sum_p grad_energy_p energy_p.
double reference_objective(const Problem& pr, const std::vector<double>& s) {
  std::vector<double> energy, scale;
  reference_energy(pr, s, energy, scale);
  double total = 0;
  for (size_t i = 0; i < energy.size(); ++i) total += pr.grad_energy[i] * energy[i];
  return total;
}

// The closed form of §3: per pair, c = grad_energy_p w_pq, and on each pixel k of the pair
// c * 2 (S_own - S_other) (quadratic) or c * (1/2 - S_other) (bilinear).
void reference_gradient(const Problem& pr, std::vector<double>& grad, std::vector<double>& scale) {
  const int64_t n = pr.voxels();
  grad.assign(pr.batch * pr.classes * n, 0.0);
  scale.assign(grad.size(), 0.0);
  for (int64_t b = 0; b < pr.batch; ++b) {
    for (const Pair& pair : reference_pairs(pr, b)) {
      const double c = pr.grad_energy[b * n + pair.p] * pair.w;
      for (int64_t k = 0; k < pr.classes; ++k) {
        const int64_t plane = (b * pr.classes + k) * n;
        const double sp = pr.segmentations[plane + pair.p], sq = pr.segmentations[plane + pair.q];
        grad[plane + pair.p] += pr.bilinear ? c * (0.5 - sq) : c * 2 * (sp - sq);
        grad[plane + pair.q] += pr.bilinear ? c * (0.5 - sp) : c * 2 * (sq - sp);
        const double size = std::abs(c) * (0.5 + 2 * (std::abs(sp) + std::abs(sq)));
        scale[plane + pair.p] += size;
        scale[plane + pair.q] += size;
      }
    }
  }
}

// B = 2 random probabilities, images of `channels` channels in [0, 1), and either a full ROI or
// one with random holes, a whole row and (volumes) a whole plane left out.
Problem make_problem(std::mt19937& gen, int64_t depth, int64_t height, int64_t width, int64_t classes,
                     int64_t channels, int neighbourhood, bool bilinear, bool holes, const double (&spacing)[3]) {
  Problem pr{2, classes, channels, depth, height, width, neighbourhood, bilinear, 0.4,
             {spacing[0], spacing[1], spacing[2]}, {}, {}, {}, {}};
  const int64_t n = pr.voxels();
  std::uniform_real_distribution<double> uniform(0, 1), signed_uniform(-1, 1);
  pr.segmentations.resize(pr.batch * classes * n);
  for (int64_t b = 0; b < pr.batch; ++b) {  // probabilities: each voxel's classes sum to 1
    for (int64_t p = 0; p < n; ++p) {
      double total = 0;
      for (int64_t k = 0; k < classes; ++k) total += pr.segmentations[(b * classes + k) * n + p] = uniform(gen) + 0.05;
      for (int64_t k = 0; k < classes; ++k) pr.segmentations[(b * classes + k) * n + p] /= total;
    }
  }
  pr.images.resize(pr.batch * channels * n);
  for (double& v : pr.images) v = uniform(gen);
  pr.rois.assign(pr.batch * n, 1.0);
  if (holes) {
    std::bernoulli_distribution hole(0.3);
    for (double& r : pr.rois) r = hole(gen) ? 0.0 : 1.0;
    if (height > 2) std::fill(pr.rois.begin() + width, pr.rois.begin() + 2 * width, 0.0);  // a whole row out
    if (depth > 2) std::fill(pr.rois.begin() + n + height * width, pr.rois.begin() + n + 2 * height * width, 0.0);
  }
  pr.grad_energy.resize(pr.batch * n);
  for (double& g : pr.grad_energy) g = signed_uniform(gen);
  return pr;
}

// The core's view of volume 0, as the wrappers make it (grid_crf_call.h): contrast_scale
// = 1 / (2 sigma^2) and the directions' 1 / dist from the spacing, rounded to T.
template <typename T>
GridCrfImage<T> core_view(const Problem& pr, const T* s, const T* images, const T* rois) {
  GridCrfImage<T> g{};
  g.segmentation = s;
  g.image = images;
  g.roi = rois;
  g.classes = pr.classes;
  g.channels = pr.channels;
  g.depth = pr.depth;
  g.height = pr.height;
  g.width = pr.width;
  g.contrast_scale = static_cast<T>(1.0 / (2.0 * pr.sigma * pr.sigma));
  g.bilinear = pr.bilinear;
  set_grid_inverse_lengths(g, grid_directions(pr.neighbourhood), pr.spacing[0], pr.spacing[1], pr.spacing[2]);
  return g;
}

template <typename T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// Runs the core in T on pr (the inputs rounded to T) and checks it against the references,
// which see the same rounded inputs.
template <typename T>
void check_problem(Problem pr) {
  const double tol = sizeof(T) == 4 ? 2e-5 : 1e-12;
  const int64_t n = pr.voxels();
  // The references read the values the core reads.
  for (auto* v : {&pr.segmentations, &pr.images, &pr.rois, &pr.grad_energy}) {
    for (double& x : *v) x = static_cast<double>(static_cast<T>(x));
  }
  const std::vector<T> s = cast<T>(pr.segmentations), images = cast<T>(pr.images), rois = cast<T>(pr.rois),
                       grad_energy = cast<T>(pr.grad_energy);
  const GridCrfImage<T> first = core_view<T>(pr, s.data(), images.data(), rois.data());

  std::vector<T> energy(pr.batch * n, T(-7));
  cpu::grid_crf_energy(first, pr.batch, pr.neighbourhood, energy.data(), cpu::SerialFor{});
  std::vector<double> energy_ref, energy_scale;
  reference_energy(pr, pr.segmentations, energy_ref, energy_scale);
  double total = 0, total_ref = 0, total_scale = 0;
  for (int64_t i = 0; i < pr.batch * n; ++i) {
    CHECK(std::abs(energy[i] - energy_ref[i]) <= tol * energy_scale[i]);
    total += energy[i], total_ref += energy_ref[i], total_scale += energy_scale[i];
  }
  CHECK(std::abs(total - total_ref) <= tol * total_scale);

  std::vector<T> grad(pr.batch * pr.classes * n, T(-7));
  cpu::grid_crf_gradient(first, pr.batch, pr.neighbourhood, grad_energy.data(), grad.data(), cpu::SerialFor{});
  std::vector<double> grad_ref, grad_scale;
  reference_gradient(pr, grad_ref, grad_scale);
  for (size_t i = 0; i < grad.size(); ++i) CHECK(std::abs(grad[i] - grad_ref[i]) <= tol * grad_scale[i]);

  if (sizeof(T) == 8 && pr.classes <= 3) {
    // Central differences of the direct sum: the objective is quadratic in each S_pk, so they are
    // exact up to rounding.
    const double h = 1e-3, objective_scale = 1 + std::abs(reference_objective(pr, pr.segmentations));
    std::vector<double> shifted = pr.segmentations;
    for (size_t i = 0; i < shifted.size(); ++i) {
      shifted[i] = pr.segmentations[i] + h;
      const double up = reference_objective(pr, shifted);
      shifted[i] = pr.segmentations[i] - h;
      const double down = reference_objective(pr, shifted);
      shifted[i] = pr.segmentations[i];
      CHECK(std::abs(grad[i] - (up - down) / (2 * h)) <= 1e-9 * objective_scale);
    }
  }

  // Other splits of the rows into chunks, in another order: the same bits.
  for (const int64_t chunk : {int64_t{1}, int64_t{2}}) {
    std::vector<T> energy_chunked(energy.size(), T(-7)), grad_chunked(grad.size(), T(-7));
    cpu::grid_crf_energy(first, pr.batch, pr.neighbourhood, energy_chunked.data(), ChunkedReverseFor{chunk});
    cpu::grid_crf_gradient(first, pr.batch, pr.neighbourhood, grad_energy.data(), grad_chunked.data(),
                           ChunkedReverseFor{chunk});
    CHECK(same_bits(energy, energy_chunked));
    CHECK(same_bits(grad, grad_chunked));
  }
}

// A 1 x 3 strip by hand: quadratic, 4-neighbourhood, one class, equal intensities (w = 1).
void check_by_hand() {
  const double s[] = {0.0, 1.0, 0.25}, image[] = {0.5, 0.5, 0.5}, roi[] = {1, 1, 1}, g[] = {1, 2, 3};
  const Problem strip{1, 1, 1, 1, 1, 3, 4, false, 1.0, {1, 1, 1}, {}, {}, {}, {}};
  const GridCrfImage<double> first = core_view<double>(strip, s, image, roi);
  double energy[3], grad[3];
  cpu::grid_crf_energy(first, 1, 4, energy, cpu::SerialFor{});
  CHECK(energy[0] == 1.0 && energy[1] == 0.5625 && energy[2] == 0.0);
  cpu::grid_crf_gradient(first, 1, 4, g, grad, cpu::SerialFor{});
  // 1 * 2 (0 - 1); 1 * 2 (1 - 0) + 2 * 2 (1 - 0.25); 2 * 2 (0.25 - 1).
  CHECK(grad[0] == -2.0 && grad[1] == 5.0 && grad[2] == -3.0);
}

// The same 3-voxel line along z of a volume (6-neighbourhood, sz = 2): the pairs are one plane
// apart, at distance 2, so every value is half the strip's.
void check_by_hand_along_depth() {
  const double s[] = {0.0, 1.0, 0.25}, image[] = {0.5, 0.5, 0.5}, roi[] = {1, 1, 1}, g[] = {1, 2, 3};
  const Problem line{1, 1, 1, 3, 1, 1, 6, false, 1.0, {2, 1, 1}, {}, {}, {}, {}};
  const GridCrfImage<double> first = core_view<double>(line, s, image, roi);
  double energy[3], grad[3];
  cpu::grid_crf_energy(first, 1, 6, energy, cpu::SerialFor{});
  CHECK(energy[0] == 0.5 && energy[1] == 0.28125 && energy[2] == 0.0);
  cpu::grid_crf_gradient(first, 1, 6, g, grad, cpu::SerialFor{});
  CHECK(grad[0] == -1.0 && grad[1] == 2.5 && grad[2] == -1.5);
}

// With unit spacing the image directions' 1 / dist are exactly the constants the image kernels
// used before spacing existed, 1 and 0.70710678118654752440 rounded to T: images keep their bits.
template <typename T>
void check_unit_spacing_keeps_the_image_constants() {
  GridCrfImage<T> g{};
  set_grid_inverse_lengths(g, grid_directions(8), 1.0, 1.0, 1.0);
  CHECK(g.inverse_length[0] == T(1) && g.inverse_length[1] == T(1));
  CHECK(g.inverse_length[2] == T(0.70710678118654752440) && g.inverse_length[3] == T(0.70710678118654752440));
}

// A volume of one plane has no pairs across planes: with 6 (26) neighbours its energy and gradient
// are the image's with 4 (8), bit for bit (the in-plane directions come in the same order).
template <typename T>
void check_one_plane_volume_is_the_image(std::mt19937& gen) {
  for (const bool bilinear : {false, true}) {
    for (const int image_neighbourhood : {4, 8}) {
      const Problem image = make_problem(gen, 1, 5, 7, 3, 2, image_neighbourhood, bilinear, true, {1, 1, 1});
      Problem volume = image;
      volume.neighbourhood = image_neighbourhood == 4 ? 6 : 26;
      const std::vector<T> s = cast<T>(image.segmentations), images = cast<T>(image.images),
                           rois = cast<T>(image.rois), grad_energy = cast<T>(image.grad_energy);
      const int64_t n = image.voxels();
      std::vector<T> energy2d(image.batch * n), energy3d(image.batch * n);
      std::vector<T> grad2d(image.batch * image.classes * n), grad3d(grad2d.size());
      const GridCrfImage<T> first2d = core_view<T>(image, s.data(), images.data(), rois.data());
      const GridCrfImage<T> first3d = core_view<T>(volume, s.data(), images.data(), rois.data());
      cpu::grid_crf_energy(first2d, image.batch, image.neighbourhood, energy2d.data(), cpu::SerialFor{});
      cpu::grid_crf_energy(first3d, volume.batch, volume.neighbourhood, energy3d.data(), cpu::SerialFor{});
      cpu::grid_crf_gradient(first2d, image.batch, image.neighbourhood, grad_energy.data(), grad2d.data(),
                             cpu::SerialFor{});
      cpu::grid_crf_gradient(first3d, volume.batch, volume.neighbourhood, grad_energy.data(), grad3d.data(),
                             cpu::SerialFor{});
      CHECK(same_bits(energy2d, energy3d));
      CHECK(same_bits(grad2d, grad3d));
    }
  }
}

}  // namespace

int main() {
  std::mt19937 gen(2024);
  check_by_hand();
  check_by_hand_along_depth();
  check_unit_spacing_keeps_the_image_constants<float>();
  check_unit_spacing_keeps_the_image_constants<double>();
  check_one_plane_volume_is_the_image<float>(gen);
  check_one_plane_volume_is_the_image<double>(gen);
  struct Shape {
    int64_t depth, height, width;
  };
  const double unit[3] = {1, 1, 1}, anisotropic[3] = {2.5, 0.75, 1.25};
  int cases = 0;
  // Images (depth 1), with unit spacing and with a non-square pixel.
  for (const Shape shape : {Shape{1, 1, 1}, Shape{1, 1, 5}, Shape{1, 5, 1}, Shape{1, 2, 2}, Shape{1, 3, 4},
                            Shape{1, 5, 7}, Shape{1, 4, 33}}) {
    for (int64_t classes = 1; classes <= 3; ++classes) {
      for (const int neighbourhood : {4, 8}) {
        for (const bool bilinear : {false, true}) {
          for (const bool holes : {false, true}) {
            const int64_t channels = (classes + neighbourhood) % 2 == 0 ? 1 : 3;
            const Problem pr = make_problem(gen, shape.depth, shape.height, shape.width, classes, channels,
                                            neighbourhood, bilinear, holes, holes ? anisotropic : unit);
            check_problem<float>(pr);
            check_problem<double>(pr);
            ++cases;
          }
        }
      }
    }
  }
  // Volumes: odd sizes, a single voxel, lines and planes along each axis, and wide rows (the
  // vectorized interior); unit and anisotropic spacing.
  for (const Shape shape : {Shape{1, 1, 1}, Shape{3, 1, 1}, Shape{1, 4, 5}, Shape{3, 1, 5}, Shape{3, 4, 1},
                            Shape{2, 2, 2}, Shape{3, 5, 7}, Shape{4, 3, 33}}) {
    for (const int64_t classes : {1, 2, 3}) {
      for (const int neighbourhood : {6, 18, 26}) {
        for (const bool bilinear : {false, true}) {
          for (const bool holes : {false, true}) {
            const int64_t channels = (classes + neighbourhood / 2) % 2 == 0 ? 1 : 2;
            const Problem pr = make_problem(gen, shape.depth, shape.height, shape.width, classes, channels,
                                            neighbourhood, bilinear, holes, holes ? anisotropic : unit);
            check_problem<float>(pr);
            check_problem<double>(pr);
            ++cases;
          }
        }
      }
    }
  }
  // Many classes (K = 21 as in VOC, and 23) on volumes; the closed-form gradient only.
  for (const int64_t classes : {21, 23}) {
    for (const int neighbourhood : {6, 18, 26}) {
      for (const bool bilinear : {false, true}) {
        const Problem pr = make_problem(gen, 3, 4, 9, classes, 3, neighbourhood, bilinear, true, anisotropic);
        check_problem<float>(pr);
        check_problem<double>(pr);
        ++cases;
      }
    }
  }
  std::printf("grid CRF: %d problems, float and double\n", cases);
  if (failures) std::fprintf(stderr, "%d checks failed\n", failures);
  return failures ? 1 : 0;
}
