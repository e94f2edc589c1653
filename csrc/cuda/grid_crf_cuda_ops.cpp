// CUDA kernels of wsloss::grid_crf and grid_crf_backward: thin torch wrappers on the current stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../grid_crf_call.h"
#include "grid_crf_cuda.h"

namespace wsloss {
namespace {

// The whole batch of a call (grid_crf_call / grid_crf_backward_call).
template <typename T>
cuda::GridCrfBuffers<T> grid_buffers(const GridCrfCall& call, double sigma, int64_t neighbourhood, bool bilinear,
                                     GridSpacingArgument spacing) {
  return {grid_crf_image<T>(call, sigma, neighbourhood, bilinear, spacing),
          call.grad_energy.defined() ? call.grad_energy.data_ptr<T>() : nullptr, call.out.data_ptr<T>(),
          call.segmentations.size(0), grid_directions(neighbourhood)};
}

at::Tensor grid_crf_cuda(const at::Tensor& segmentations, const at::Tensor& images, const at::Tensor& rois,
                         double sigma, int64_t neighbourhood, bool bilinear, GridSpacingArgument spacing) {
  check_grid_crf(segmentations, images, rois, sigma, neighbourhood, spacing);
  const c10::cuda::CUDAGuard guard(segmentations.device());
  const GridCrfCall call = grid_crf_call(segmentations, images, rois, segmentations.options());
  AT_DISPATCH_FLOATING_TYPES(segmentations.scalar_type(), "grid_crf_cuda", [&] {
    C10_CUDA_CHECK(cuda::grid_crf_energy(grid_buffers<scalar_t>(call, sigma, neighbourhood, bilinear, spacing),
                                         c10::cuda::getCurrentCUDAStream()));
  });
  return call.out;
}

at::Tensor grid_crf_backward_cuda(const at::Tensor& grad_energy, const at::Tensor& segmentations,
                                  const at::Tensor& images, const at::Tensor& rois, double sigma,
                                  int64_t neighbourhood, bool bilinear, GridSpacingArgument spacing) {
  check_grid_crf_backward(grad_energy, segmentations, images, rois, sigma, neighbourhood, spacing);
  const c10::cuda::CUDAGuard guard(segmentations.device());
  const GridCrfCall call = grid_crf_backward_call(grad_energy, segmentations, images, rois, segmentations.options());
  AT_DISPATCH_FLOATING_TYPES(segmentations.scalar_type(), "grid_crf_backward_cuda", [&] {
    C10_CUDA_CHECK(cuda::grid_crf_gradient(grid_buffers<scalar_t>(call, sigma, neighbourhood, bilinear, spacing),
                                           c10::cuda::getCurrentCUDAStream()));
  });
  return call.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(wsloss, CUDA, m) {
  m.impl("grid_crf", &grid_crf_cuda);
  m.impl("grid_crf_backward", &grid_crf_backward_cuda);
}

}  // namespace wsloss
