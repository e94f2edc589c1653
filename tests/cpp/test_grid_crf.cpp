// The torch-free sparse grid CRF CPU core (cpu/grid_crf_cpu.h) with the serial parallel_for,
// against docs/DESIGN.md §3 written out directly in double precision: every unordered pair of
// neighbouring pixels once, both in the ROI, w_pq = exp(-||I_p - I_q||^2 / (2 sigma^2)) / dist(p, q),
// the quadratic term w_pq ||S_p - S_q||^2 or the bilinear w_pq sum_k (S_pk + S_qk)/2 - S_pk S_qk.
// A pair's energy belongs to whichever of its pixels comes first in raster order (the core's
// per-pixel energy). The backward (d/dS of sum_p grad_energy_p energy_p) is checked against the
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
  int64_t batch, classes, channels, height, width;
  int neighbourhood;
  bool bilinear;
  double sigma;
  std::vector<double> segmentations, images, rois, grad_energy;  // [B][K][H][W], [B][C][H][W], [B][H][W], [B][H][W]
};

// One unordered neighbouring pair of image b: pixel p first in raster order, both in the ROI.
struct Pair {
  int64_t p, q;
  double w;
};

// The pairs of §3, found by looking at every pixel's 4 or 8 neighbours.
std::vector<Pair> reference_pairs(const Problem& pr, int64_t b) {
  const int64_t h = pr.height, w = pr.width, n = h * w;
  std::vector<Pair> pairs;
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      for (int dy = -1; dy <= 1; ++dy) {
        for (int dx = -1; dx <= 1; ++dx) {
          const bool diagonal = dy != 0 && dx != 0;
          if ((dy == 0 && dx == 0) || (diagonal && pr.neighbourhood == 4)) continue;
          const int64_t y2 = y + dy, x2 = x + dx;
          if (y2 < 0 || y2 >= h || x2 < 0 || x2 >= w) continue;
          const int64_t p = y * w + x, q = y2 * w + x2;
          if (q < p) continue;  // the pair once, from its first pixel
          const double* roi = pr.rois.data() + b * n;
          if (roi[p] == 0 || roi[q] == 0) continue;
          double distance2 = 0;
          for (int64_t c = 0; c < pr.channels; ++c) {
            const double* image = pr.images.data() + (b * pr.channels + c) * n;
            distance2 += (image[p] - image[q]) * (image[p] - image[q]);
          }
          const double dist = diagonal ? std::sqrt(2.0) : 1.0;
          pairs.push_back({p, q, std::exp(-distance2 / (2 * pr.sigma * pr.sigma)) / dist});
        }
      }
    }
  }
  return pairs;
}

double reference_term(bool bilinear, double a, double b) {
  return bilinear ? (a + b) / 2 - a * b : (a - b) * (a - b);
}

// energy [B][H][W]; scale [B][H][W]: the sum of the absolute values that went into it (for tolerances).
void reference_energy(const Problem& pr, const std::vector<double>& s, std::vector<double>& energy,
                      std::vector<double>& scale) {
  const int64_t n = pr.height * pr.width;
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
  const int64_t n = pr.height * pr.width;
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

Problem make_problem(std::mt19937& gen, int64_t height, int64_t width, int64_t classes, int64_t channels,
                     int neighbourhood, bool bilinear, bool holes) {
  Problem pr{2, classes, channels, height, width, neighbourhood, bilinear, 0.4, {}, {}, {}, {}};
  const int64_t n = height * width;
  std::uniform_real_distribution<double> uniform(0, 1), signed_uniform(-1, 1);
  pr.segmentations.resize(pr.batch * classes * n);
  for (int64_t b = 0; b < pr.batch; ++b) {  // probabilities: each pixel's classes sum to 1
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
  }
  pr.grad_energy.resize(pr.batch * n);
  for (double& g : pr.grad_energy) g = signed_uniform(gen);
  return pr;
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
  const int64_t n = pr.height * pr.width;
  // The references read the values the core reads.
  for (auto* v : {&pr.segmentations, &pr.images, &pr.rois, &pr.grad_energy}) {
    for (double& x : *v) x = static_cast<double>(static_cast<T>(x));
  }
  const std::vector<T> s = cast<T>(pr.segmentations), images = cast<T>(pr.images), rois = cast<T>(pr.rois),
                       grad_energy = cast<T>(pr.grad_energy);
  // The wrapper's view of image 0: contrast_scale = 1 / (2 sigma^2), rounded to T.
  const GridCrfImage<T> first{s.data(),    images.data(), rois.data(), pr.classes,
                              pr.channels, pr.height,     pr.width,    static_cast<T>(1.0 / (2.0 * pr.sigma * pr.sigma)),
                              pr.bilinear};

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

  if (sizeof(T) == 8) {
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
  const GridCrfImage<double> first{s, image, roi, 1, 1, 1, 3, 1.0, false};
  double energy[3], grad[3];
  cpu::grid_crf_energy(first, 1, 4, energy, cpu::SerialFor{});
  CHECK(energy[0] == 1.0 && energy[1] == 0.5625 && energy[2] == 0.0);
  cpu::grid_crf_gradient(first, 1, 4, g, grad, cpu::SerialFor{});
  // 1 * 2 (0 - 1); 1 * 2 (1 - 0) + 2 * 2 (1 - 0.25); 2 * 2 (0.25 - 1).
  CHECK(grad[0] == -2.0 && grad[1] == 5.0 && grad[2] == -3.0);
}

}  // namespace

int main() {
  std::mt19937 gen(2024);
  check_by_hand();
  struct Shape {
    int64_t height, width;
  };
  int cases = 0;
  for (const Shape shape : {Shape{1, 1}, Shape{1, 5}, Shape{5, 1}, Shape{2, 2}, Shape{3, 4}, Shape{5, 7},
                            Shape{4, 33}}) {
    for (int64_t classes = 1; classes <= 3; ++classes) {
      for (const int neighbourhood : {4, 8}) {
        for (const bool bilinear : {false, true}) {
          for (const bool holes : {false, true}) {
            const int64_t channels = (classes + neighbourhood) % 2 == 0 ? 1 : 3;
            const Problem pr = make_problem(gen, shape.height, shape.width, classes, channels, neighbourhood,
                                            bilinear, holes);
            check_problem<float>(pr);
            check_problem<double>(pr);
            ++cases;
          }
        }
      }
    }
  }
  std::printf("grid CRF: %d problems, float and double\n", cases);
  if (failures) std::fprintf(stderr, "%d checks failed\n", failures);
  return failures ? 1 : 0;
}
