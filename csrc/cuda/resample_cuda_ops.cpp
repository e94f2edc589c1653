// CUDA kernels of wsloss::resample_down and resample_down_backward: thin torch wrappers on the
// current stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../resample_call.h"
#include "resample_cuda.h"

namespace wsloss {
namespace {

at::Tensor resample_down_cuda(const at::Tensor& values, const std::optional<at::Tensor>& rois,
                              at::ArrayRef<double> scale_factor) {
  const c10::cuda::CUDAGuard guard(values.device());
  const ResampleCall call = resample_down_call(values, rois, scale_factor);
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "resample_down_cuda", [&] {
    C10_CUDA_CHECK(cuda::resample_down(resample_shape<scalar_t>(call, scale_factor), call.input.data_ptr<scalar_t>(),
                                       optional_data<scalar_t>(call.rois), call.out.data_ptr<scalar_t>(),
                                       c10::cuda::getCurrentCUDAStream()));
  });
  return call.out;
}

at::Tensor resample_down_backward_cuda(const at::Tensor& grad, const std::optional<at::Tensor>& rois,
                                       const std::optional<at::Tensor>& channel_weights, at::IntArrayRef input_size,
                                       at::ArrayRef<double> scale_factor) {
  const c10::cuda::CUDAGuard guard(grad.device());
  const ResampleCall call = resample_down_backward_call(grad, rois, channel_weights, input_size, scale_factor);
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "resample_down_backward_cuda", [&] {
    C10_CUDA_CHECK(cuda::resample_down_adjoint(resample_shape<scalar_t>(call, scale_factor),
                                               call.input.data_ptr<scalar_t>(), optional_data<scalar_t>(call.rois),
                                               optional_data<scalar_t>(call.channel_weights),
                                               call.out.data_ptr<scalar_t>(), c10::cuda::getCurrentCUDAStream()));
  });
  return call.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(wsloss, CUDA, m) {
  m.impl("resample_down", &resample_down_cuda);
  m.impl("resample_down_backward", &resample_down_backward_cuda);
}

}  // namespace wsloss
