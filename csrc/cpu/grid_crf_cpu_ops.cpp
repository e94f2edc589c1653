// CPU kernels of wsloss::grid_crf and grid_crf_backward: one pass over the segmentations,
// the rows of all images or volumes in parallel on torch.get_num_threads() threads (grid_crf_cpu.h).
#include <torch/library.h>

#include "../grid_crf_call.h"
#include "aten_parallel_for.h"
#include "grid_crf_cpu.h"

namespace wsloss {
namespace {

at::Tensor grid_crf_cpu(const at::Tensor& segmentations, const at::Tensor& images, const at::Tensor& rois,
                        double sigma, int64_t neighbourhood, bool bilinear, GridSpacingArgument spacing) {
  check_grid_crf(segmentations, images, rois, sigma, neighbourhood, spacing);
  const GridCrfCall call = grid_crf_call(segmentations, images, rois, segmentations.options());
  if (call.out.numel() == 0) return call.out;
  AT_DISPATCH_FLOATING_TYPES(segmentations.scalar_type(), "grid_crf_cpu", [&] {
    cpu::grid_crf_energy(grid_crf_image<scalar_t>(call, sigma, neighbourhood, bilinear, spacing),
                         segmentations.size(0), neighbourhood, call.out.data_ptr<scalar_t>(), cpu::AtenParallelFor{});
  });
  return call.out;
}

at::Tensor grid_crf_backward_cpu(const at::Tensor& grad_energy, const at::Tensor& segmentations,
                                 const at::Tensor& images, const at::Tensor& rois, double sigma,
                                 int64_t neighbourhood, bool bilinear, GridSpacingArgument spacing) {
  check_grid_crf_backward(grad_energy, segmentations, images, rois, sigma, neighbourhood, spacing);
  const GridCrfCall call = grid_crf_backward_call(grad_energy, segmentations, images, rois, segmentations.options());
  if (call.out.numel() == 0) return call.out;
  AT_DISPATCH_FLOATING_TYPES(segmentations.scalar_type(), "grid_crf_backward_cpu", [&] {
    cpu::grid_crf_gradient(grid_crf_image<scalar_t>(call, sigma, neighbourhood, bilinear, spacing),
                           segmentations.size(0), neighbourhood, call.grad_energy.data_ptr<scalar_t>(),
                           call.out.data_ptr<scalar_t>(), cpu::AtenParallelFor{});
  });
  return call.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(wsloss, CPU, m) {
  m.impl("grid_crf", &grid_crf_cpu);
  m.impl("grid_crf_backward", &grid_crf_backward_cpu);
}

}  // namespace wsloss
