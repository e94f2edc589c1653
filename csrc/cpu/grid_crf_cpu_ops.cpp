// CPU kernels of wsloss::grid_crf and grid_crf_backward: one pass over the segmentations,
// the rows of all images in parallel on torch.get_num_threads() threads.
#include <torch/library.h>

#include <ATen/Parallel.h>

#include <type_traits>
#include <vector>

#include "../grid_crf_checks.h"
#include "grid_crf_cpu.h"

namespace wsloss {
namespace {

// f(row, scratch) for the rows b * H + y of all images, in parallel; one scratch per chunk.
template <typename T, class F>
void for_each_row(int64_t rows, int64_t row_values, const F& f) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, row_values));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch;
    for (int64_t row = begin; row < end; ++row) f(row, scratch);
  });
}

// f(directions, bilinear) with both as compile-time constants (std::integral_constant).
template <class F>
void with_grid_kind(int64_t neighbourhood, bool bilinear, const F& f) {
  using Four = std::integral_constant<int, 4>;
  using Two = std::integral_constant<int, 2>;
  if (neighbourhood == 8) bilinear ? f(Four{}, std::true_type{}) : f(Four{}, std::false_type{});
  else bilinear ? f(Two{}, std::true_type{}) : f(Two{}, std::false_type{});
}

at::Tensor grid_crf_cpu(const at::Tensor& segmentations, const at::Tensor& images, const at::Tensor& rois,
                        double sigma, int64_t neighbourhood, bool bilinear) {
  check_grid_crf(segmentations, images, rois, sigma, neighbourhood);
  const GridCrfCall call = prepare_grid_crf(segmentations, images, rois);
  const int64_t batch = segmentations.size(0), classes = segmentations.size(1), height = segmentations.size(2),
                width = segmentations.size(3);
  at::Tensor energy = at::empty({batch, height, width}, segmentations.options());
  if (width == 0) return energy;
  AT_DISPATCH_FLOATING_TYPES(segmentations.scalar_type(), "grid_crf_cpu", [&] {
    with_grid_kind(neighbourhood, bilinear, [&](auto directions, auto bilinear_kind) {
      for_each_row<scalar_t>(batch * height, width * classes, [&](int64_t row, std::vector<scalar_t>& scratch) {
        const auto g = grid_crf_image<scalar_t>(call, row / height, sigma, bilinear);
        cpu::grid_row_energy<decltype(directions)::value, decltype(bilinear_kind)::value>(
            g, row % height, energy.data_ptr<scalar_t>() + row * width, scratch);
      });
    });
  });
  return energy;
}

at::Tensor grid_crf_backward_cpu(const at::Tensor& grad_energy_in, const at::Tensor& segmentations,
                                 const at::Tensor& images, const at::Tensor& rois, double sigma,
                                 int64_t neighbourhood, bool bilinear) {
  check_grid_crf_backward(grad_energy_in, segmentations, images, rois, sigma, neighbourhood);
  const GridCrfCall call = prepare_grid_crf(segmentations, images, rois);
  const at::Tensor grad_energy = grad_energy_in.contiguous();
  const int64_t batch = segmentations.size(0), classes = segmentations.size(1), height = segmentations.size(2),
                width = segmentations.size(3);
  at::Tensor grad = at::empty_like(call.segmentations);
  if (width == 0) return grad;
  AT_DISPATCH_FLOATING_TYPES(segmentations.scalar_type(), "grid_crf_backward_cpu", [&] {
    with_grid_kind(neighbourhood, bilinear, [&](auto directions, auto bilinear_kind) {
      for_each_row<scalar_t>(batch * height, width * classes, [&](int64_t row, std::vector<scalar_t>& scratch) {
        const int64_t b = row / height;
        const auto g = grid_crf_image<scalar_t>(call, b, sigma, bilinear);
        cpu::grid_row_gradient<decltype(directions)::value, decltype(bilinear_kind)::value>(
            g, grad_energy.data_ptr<scalar_t>() + b * height * width, row % height,
            grad.data_ptr<scalar_t>() + b * classes * height * width, scratch);
      });
    });
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(wsloss, CPU, m) {
  m.impl("grid_crf", &grid_crf_cpu);
  m.impl("grid_crf_backward", &grid_crf_backward_cpu);
}

}  // namespace wsloss
