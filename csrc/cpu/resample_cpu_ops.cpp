// CPU kernels of wsloss::resample_down and resample_down_backward: rows of all images in parallel
// on torch.get_num_threads() threads (resample_cpu.h).
#include <torch/library.h>

#include "../resample_call.h"
#include "aten_parallel_for.h"
#include "resample_cpu.h"

namespace wsloss {
namespace {

at::Tensor resample_down_cpu(const at::Tensor& values, const std::optional<at::Tensor>& rois,
                             at::ArrayRef<double> scale_factor) {
  const ResampleCall call = resample_down_call(values, rois, scale_factor);
  if (call.out.numel() == 0) return call.out;
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "resample_down_cpu", [&] {
    cpu::resample_down(resample_shape<scalar_t>(call, scale_factor), call.input.data_ptr<scalar_t>(),
                       optional_data<scalar_t>(call.rois), call.out.data_ptr<scalar_t>(), cpu::AtenParallelFor{});
  });
  return call.out;
}

at::Tensor resample_down_backward_cpu(const at::Tensor& grad, const std::optional<at::Tensor>& rois,
                                      const std::optional<at::Tensor>& channel_weights, at::IntArrayRef input_size,
                                      at::ArrayRef<double> scale_factor) {
  const ResampleCall call = resample_down_backward_call(grad, rois, channel_weights, input_size, scale_factor);
  if (call.out.numel() == 0) return call.out;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "resample_down_backward_cpu", [&] {
    cpu::resample_down_adjoint(resample_shape<scalar_t>(call, scale_factor), call.input.data_ptr<scalar_t>(),
                               optional_data<scalar_t>(call.rois), optional_data<scalar_t>(call.channel_weights),
                               call.out.data_ptr<scalar_t>(), cpu::AtenParallelFor{});
  });
  return call.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(wsloss, CPU, m) {
  m.impl("resample_down", &resample_down_cpu);
  m.impl("resample_down_backward", &resample_down_backward_cpu);
}

}  // namespace wsloss
