// CUDA kernels of wsloss::grid_crf and grid_crf_backward: thin torch wrappers on the current stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../grid_crf_checks.h"
#include "grid_crf_cuda.h"

namespace wsloss {
namespace {

template <typename T>
cuda::GridCrfBuffers<T> grid_buffers(const GridCrfCall& call, const T* grad_energy, T* out, double sigma,
                                     int64_t neighbourhood, bool bilinear) {
  const at::Tensor& s = call.segmentations;
  return {s.data_ptr<T>(),
          call.images.data_ptr<T>(),
          call.rois.data_ptr<T>(),
          grad_energy,
          out,
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
  const GridCrfCall call = prepare_grid_crf(segmentations, images, rois);
  at::Tensor energy = at::empty({segmentations.size(0), segmentations.size(2), segmentations.size(3)},
                                segmentations.options());
  AT_DISPATCH_FLOATING_TYPES(segmentations.scalar_type(), "grid_crf_cuda", [&] {
    const auto buffers =
        grid_buffers<scalar_t>(call, nullptr, energy.data_ptr<scalar_t>(), sigma, neighbourhood, bilinear);
    const cudaError_t err = cuda::grid_crf_energy(buffers, c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "grid_crf: ", cudaGetErrorString(err));
  });
  return energy;
}

at::Tensor grid_crf_backward_cuda(const at::Tensor& grad_energy_in, const at::Tensor& segmentations,
                                  const at::Tensor& images, const at::Tensor& rois, double sigma,
                                  int64_t neighbourhood, bool bilinear) {
  check_grid_crf_backward(grad_energy_in, segmentations, images, rois, sigma, neighbourhood);
  const c10::cuda::CUDAGuard guard(segmentations.device());
  const GridCrfCall call = prepare_grid_crf(segmentations, images, rois);
  const at::Tensor grad_energy = grad_energy_in.contiguous();
  at::Tensor grad = at::empty_like(call.segmentations);
  AT_DISPATCH_FLOATING_TYPES(segmentations.scalar_type(), "grid_crf_backward_cuda", [&] {
    const auto buffers = grid_buffers<scalar_t>(call, grad_energy.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
                                                sigma, neighbourhood, bilinear);
    const cudaError_t err = cuda::grid_crf_gradient(buffers, c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "grid_crf_backward: ", cudaGetErrorString(err));
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(wsloss, CUDA, m) {
  m.impl("grid_crf", &grid_crf_cuda);
  m.impl("grid_crf_backward", &grid_crf_backward_cuda);
}

}  // namespace wsloss
