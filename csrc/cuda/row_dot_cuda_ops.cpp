// CUDA kernel of wsloss::row_dot: a thin torch wrapper on the current stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../row_dot_call.h"
#include "row_dot_cuda.h"

namespace wsloss {
namespace {

at::Tensor row_dot_cuda(const at::Tensor& a_in, const at::Tensor& b_in) {
  check_row_dot(a_in, b_in);
  const c10::cuda::CUDAGuard guard(a_in.device());
  const at::Tensor a = a_in.contiguous(), b = b_in.contiguous();
  at::Tensor out = at::empty({a.size(0), a.size(1)}, a.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "row_dot_cuda", [&] {
    C10_CUDA_CHECK(cuda::row_dot(a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), out.numel(), a.size(1), b.size(1),
                                 a.size(2), out.data_ptr<double>(), c10::cuda::getCurrentCUDAStream()));
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(wsloss, CUDA, m) { m.impl("row_dot", &row_dot_cuda); }

}  // namespace wsloss
