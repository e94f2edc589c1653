// CPU kernel of wsloss::em_adapt on torch.get_num_threads() threads: images in parallel, or
// one image at a time with its pixel loops in parallel when there are fewer images than threads.
#include <torch/library.h>

#include "../em_adapt_checks.h"
#include "aten_parallel_for.h"
#include "em_adapt_cpu.h"
#include "parallel_for.h"

namespace wsloss {
namespace {

std::tuple<at::Tensor, at::Tensor> em_adapt_cpu(const at::Tensor& logits_in, const at::Tensor& present_in,
                                                const at::Tensor& order_in, double bg_portion, double fg_portion,
                                                bool suppress_absent, double margin) {
  const EmAdaptCall call = prepare_em_adapt(logits_in, present_in, order_in, bg_portion, fg_portion, margin);
  const at::Tensor &logits = call.logits, &present = call.present, &order = call.order, &labels = call.labels,
                   &biases = call.biases;
  const int64_t batch = logits.size(0), classes = logits.size(1), pixels = logits.size(2);
  const int64_t rank_bg = em_rank(bg_portion, pixels), rank_fg = em_rank(fg_portion, pixels);
  // Images in parallel when there are enough; else one image at a time, its pixel loops in parallel.
  const bool per_image = batch >= at::get_num_threads();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "em_adapt_cpu", [&] {
    const auto run_image = [&](int64_t b, auto parallel_for) {
      const EmAdaptImage<scalar_t> image{logits.data_ptr<scalar_t>() + b * classes * pixels,
                                         present.data_ptr<bool>() + b * classes,
                                         order.data_ptr<int64_t>() + b * classes, classes, pixels};
      cpu::em_adapt_image(image, rank_bg, rank_fg, suppress_absent, static_cast<scalar_t>(margin),
                          labels.data_ptr<int64_t>() + b * pixels, biases.data_ptr<scalar_t>() + b * classes,
                          parallel_for);
    };
    if (per_image) {
      at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) run_image(b, cpu::SerialFor{});
      });
    } else {
      for (int64_t b = 0; b < batch; ++b) run_image(b, cpu::AtenParallelFor{});
    }
  });
  return {labels, biases};
}

}  // namespace

TORCH_LIBRARY_IMPL(wsloss, CPU, m) { m.impl("em_adapt", &em_adapt_cpu); }

}  // namespace wsloss
