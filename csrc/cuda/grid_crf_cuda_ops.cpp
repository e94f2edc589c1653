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
cuda::GridCrfBuffers<T> grid_buffers(const at::Tensor& segmentations, const at::Tensor& edge_weights,
                                     const T* grad_energy, T* out, bool bilinear) {
  return {segmentations.data_ptr<T>(), edge_weights.data_ptr<T>(), grad_energy, out, segmentations.size(0),
          segmentations.size(1), segmentations.size(2), segmentations.size(3),
          static_cast<int>(edge_weights.size(1)), bilinear};
}

at::Tensor grid_crf_cuda(const at::Tensor& segmentations_in, const at::Tensor& edge_weights_in, bool bilinear) {
  check_grid_crf(segmentations_in, edge_weights_in);
  const c10::cuda::CUDAGuard guard(segmentations_in.device());
  const at::Tensor segmentations = segmentations_in.contiguous(), edge_weights = edge_weights_in.contiguous();
  at::Tensor energy = at::empty({segmentations.size(0), segmentations.size(2), segmentations.size(3)},
                                segmentations.options());
  AT_DISPATCH_FLOATING_TYPES(segmentations.scalar_type(), "grid_crf_cuda", [&] {
    const auto buffers =
        grid_buffers<scalar_t>(segmentations, edge_weights, nullptr, energy.data_ptr<scalar_t>(), bilinear);
    const cudaError_t err = cuda::grid_crf_energy(buffers, c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "grid_crf: ", cudaGetErrorString(err));
  });
  return energy;
}

at::Tensor grid_crf_backward_cuda(const at::Tensor& grad_energy_in, const at::Tensor& segmentations_in,
                                  const at::Tensor& edge_weights_in, bool bilinear) {
  check_grid_crf_backward(grad_energy_in, segmentations_in, edge_weights_in);
  const c10::cuda::CUDAGuard guard(segmentations_in.device());
  const at::Tensor grad_energy = grad_energy_in.contiguous(), segmentations = segmentations_in.contiguous(),
                   edge_weights = edge_weights_in.contiguous();
  at::Tensor grad = at::empty_like(segmentations);
  AT_DISPATCH_FLOATING_TYPES(segmentations.scalar_type(), "grid_crf_backward_cuda", [&] {
    const auto buffers = grid_buffers<scalar_t>(segmentations, edge_weights, grad_energy.data_ptr<scalar_t>(),
                                                grad.data_ptr<scalar_t>(), bilinear);
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
