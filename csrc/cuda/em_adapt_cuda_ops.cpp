// CUDA kernel of wsloss::em_adapt: a thin torch wrapper; scratch from the caching
// allocator, work on the current stream, no host sync.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../em_adapt_checks.h"
#include "em_adapt_cuda.h"

namespace wsloss {
namespace {

std::tuple<at::Tensor, at::Tensor> em_adapt_cuda(const at::Tensor& logits_in, const at::Tensor& present_in,
                                                 const at::Tensor& order_in, double bg_portion, double fg_portion,
                                                 bool suppress_absent, double margin) {
  const EmAdaptCall call = prepare_em_adapt(logits_in, present_in, order_in, bg_portion, fg_portion, margin);
  const at::Tensor &logits = call.logits, &present = call.present, &order = call.order, &labels = call.labels,
                   &biases = call.biases;
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t batch = logits.size(0), classes = logits.size(1), pixels = logits.size(2);
  at::Tensor max_score = at::empty({batch, pixels}, logits.options());
  at::Tensor histograms = at::empty({cuda::kHistogramBuffers * batch * kDigitBins}, logits.options().dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "em_adapt_cuda", [&] {
    const cuda::EmAdaptBuffers<scalar_t> buffers{logits.data_ptr<scalar_t>(),
                                                 present.data_ptr<bool>(),
                                                 order.data_ptr<int64_t>(),
                                                 batch,
                                                 classes,
                                                 pixels,
                                                 static_cast<uint32_t>(em_rank(bg_portion, pixels)),
                                                 static_cast<uint32_t>(em_rank(fg_portion, pixels)),
                                                 suppress_absent,
                                                 static_cast<scalar_t>(margin),
                                                 max_score.data_ptr<scalar_t>(),
                                                 reinterpret_cast<uint32_t*>(histograms.data_ptr<int32_t>()),
                                                 labels.data_ptr<int64_t>(),
                                                 biases.data_ptr<scalar_t>()};
    const cudaError_t err = cuda::em_adapt<scalar_t>(buffers, c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "em_adapt: ", cudaGetErrorString(err));
  });
  return {labels, biases};
}

}  // namespace

TORCH_LIBRARY_IMPL(wsloss, CUDA, m) { m.impl("em_adapt", &em_adapt_cuda); }

}  // namespace wsloss
