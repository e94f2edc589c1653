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
cuda::GridCrfBuffers<T> grid_buffers(const GridCrfCall& call, double sigma, int64_t neighbourhood, bool bilinear) {
  const at::Tensor& s = call.segmentations;
  return {s.data_ptr<T>(),
          call.images.data_ptr<T>(),
          call.rois.data_ptr<T>(),
          call.grad_energy.defined() ? call.grad_energy.data_ptr<T>() : nullptr,
          call.out.data_ptr<T>(),
          s.size(0),
          s.size(1),
          call.images.size(1),
          s.size(2),
          s.size(3),
          static_cast<int>(neighbourhood / 2),
          static_cast<T>(grid_contrast_scale(sigma)),
          bilinear};
}

at::Tensor grid_crf_cuda(const at::Tensor& segmentations, const at::Tensor& images, const at::Tensor& rois,
                         double sigma, int64_t neighbourhood, bool bilinear) {
  check_grid_crf(segmentations, images, rois, sigma, neighbourhood);
  const c10::cuda::CUDAGuard guard(segmentations.device());
  const GridCrfCall call = grid_crf_call(segmentations, images, rois, segmentations.options());
  AT_DISPATCH_FLOATING_TYPES(segmentations.scalar_type(), "grid_crf_cuda", [&] {
    C10_CUDA_CHECK(cuda::grid_crf_energy(grid_buffers<scalar_t>(call, sigma, neighbourhood, bilinear),
                                         c10::cuda::getCurrentCUDAStream()));
  });
  return call.out;
}

at::Tensor grid_crf_backward_cuda(const at::Tensor& grad_energy, const at::Tensor& segmentations,
                                  const at::Tensor& images, const at::Tensor& rois, double sigma,
                                  int64_t neighbourhood, bool bilinear) {
  check_grid_crf_backward(grad_energy, segmentations, images, rois, sigma, neighbourhood);
  const c10::cuda::CUDAGuard guard(segmentations.device());
  const GridCrfCall call = grid_crf_backward_call(grad_energy, segmentations, images, rois, segmentations.options());
  AT_DISPATCH_FLOATING_TYPES(segmentations.scalar_type(), "grid_crf_backward_cuda", [&] {
    C10_CUDA_CHECK(cuda::grid_crf_gradient(grid_buffers<scalar_t>(call, sigma, neighbourhood, bilinear),
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
