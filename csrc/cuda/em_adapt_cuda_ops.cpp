// CUDA kernel of wsloss::em_adapt: a thin torch wrapper; scratch from the caching
// allocator, work on the current stream, no host sync.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../em_adapt_call.h"
#include "em_adapt_cuda.h"

namespace wsloss {
namespace {

std::tuple<at::Tensor, at::Tensor> em_adapt_cuda(const at::Tensor& logits_in, const at::Tensor& present,
                                                 const at::Tensor& order, double bg_portion, double fg_portion,
                                                 bool suppress_absent, double margin) {
  // The checks first (a tensor on another device gets their message), then the guard, then the allocations.
  check_em_adapt(logits_in, present, order, bg_portion, fg_portion, margin);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const EmAdaptCall call = em_adapt_call(logits_in, present, order, logits_in.options());
  const at::Tensor& logits = call.logits;
  const int64_t batch = call.batch, classes = call.classes, pixels = call.pixels;
  at::Tensor max_score = at::empty({batch, pixels}, logits.options());
  at::Tensor histograms = at::empty({cuda::kHistogramBuffers * batch * kDigitBins}, logits.options().dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "em_adapt_cuda", [&] {
    const cuda::EmAdaptBuffers<scalar_t> buffers{logits.data_ptr<scalar_t>(),
                                                 call.present.data_ptr<bool>(),
                                                 call.order.data_ptr<int64_t>(),
                                                 batch,
                                                 classes,
                                                 pixels,
                                                 static_cast<uint32_t>(em_rank(bg_portion, pixels)),
                                                 static_cast<uint32_t>(em_rank(fg_portion, pixels)),
                                                 suppress_absent,
                                                 static_cast<scalar_t>(margin),
                                                 max_score.data_ptr<scalar_t>(),
                                                 reinterpret_cast<uint32_t*>(histograms.data_ptr<int32_t>()),
                                                 call.labels.data_ptr<int64_t>(),
                                                 call.biases.data_ptr<scalar_t>()};
    C10_CUDA_CHECK(cuda::em_adapt<scalar_t>(buffers, c10::cuda::getCurrentCUDAStream()));
  });
  return {call.labels, call.biases};
}

}  // namespace

TORCH_LIBRARY_IMPL(wsloss, CUDA, m) { m.impl("em_adapt", &em_adapt_cuda); }

}  // namespace wsloss
