// CPU kernels of wsloss::grid_crf and grid_crf_backward: one pass over the segmentations,
// the rows of all images in parallel on torch.get_num_threads() threads (grid_crf_cpu.h).
#include <torch/library.h>

#include "../grid_crf_checks.h"
#include "aten_parallel_for.h"
#include "grid_crf_cpu.h"

namespace wsloss {
namespace {

at::Tensor grid_crf_cpu(const at::Tensor& segmentations, const at::Tensor& images, const at::Tensor& rois,
                        double sigma, int64_t neighbourhood, bool bilinear) {
  check_grid_crf(segmentations, images, rois, sigma, neighbourhood);
  const GridCrfCall call = prepare_grid_crf(segmentations, images, rois);
  const int64_t batch = segmentations.size(0), height = segmentations.size(2), width = segmentations.size(3);
  at::Tensor energy = at::empty({batch, height, width}, segmentations.options());
  if (energy.numel() == 0) return energy;
  AT_DISPATCH_FLOATING_TYPES(segmentations.scalar_type(), "grid_crf_cpu", [&] {
    cpu::grid_crf_energy(grid_crf_image<scalar_t>(call, 0, sigma, bilinear), batch, neighbourhood,
                         energy.data_ptr<scalar_t>(), cpu::AtenParallelFor{});
  });
  return energy;
}

at::Tensor grid_crf_backward_cpu(const at::Tensor& grad_energy_in, const at::Tensor& segmentations,
                                 const at::Tensor& images, const at::Tensor& rois, double sigma,
                                 int64_t neighbourhood, bool bilinear) {
  check_grid_crf_backward(grad_energy_in, segmentations, images, rois, sigma, neighbourhood);
  const GridCrfCall call = prepare_grid_crf(segmentations, images, rois);
  const at::Tensor grad_energy = grad_energy_in.contiguous();
  at::Tensor grad = at::empty_like(call.segmentations);
  if (grad.numel() == 0) return grad;
  AT_DISPATCH_FLOATING_TYPES(segmentations.scalar_type(), "grid_crf_backward_cpu", [&] {
    cpu::grid_crf_gradient(grid_crf_image<scalar_t>(call, 0, sigma, bilinear), segmentations.size(0),
                           neighbourhood, grad_energy.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
                           cpu::AtenParallelFor{});
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(wsloss, CPU, m) {
  m.impl("grid_crf", &grid_crf_cpu);
  m.impl("grid_crf_backward", &grid_crf_backward_cpu);
}

}  // namespace wsloss
