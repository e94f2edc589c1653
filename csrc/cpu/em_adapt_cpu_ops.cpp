// CPU kernel of wsloss::em_adapt on torch.get_num_threads() threads: images in parallel, or
// one image at a time with its pixel loops in parallel when there are fewer images than threads.
#include <torch/library.h>

#include "../em_adapt_call.h"
#include "aten_parallel_for.h"
#include "em_adapt_cpu.h"
#include "parallel_for.h"

namespace wsloss {
namespace {

std::tuple<at::Tensor, at::Tensor> em_adapt_cpu(const at::Tensor& logits, const at::Tensor& present,
                                                const at::Tensor& order, double bg_portion, double fg_portion,
                                                bool suppress_absent, double margin) {
  check_em_adapt(logits, present, order, bg_portion, fg_portion, margin);
  const EmAdaptCall call = em_adapt_call(logits, present, order, logits.options());
  const int64_t rank_bg = em_rank(bg_portion, call.pixels), rank_fg = em_rank(fg_portion, call.pixels);
  // Images in parallel when there are enough; else one image at a time, its pixel loops in parallel.
  const bool per_image = call.batch >= at::get_num_threads();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "em_adapt_cpu", [&] {
    const auto run_image = [&](int64_t b, auto parallel_for) {
      cpu::em_adapt_image(call.image<scalar_t>(b), rank_bg, rank_fg, suppress_absent, static_cast<scalar_t>(margin),
                          call.labels_of(b), call.biases_of<scalar_t>(b), parallel_for);
    };
    if (per_image) {
      at::parallel_for(0, call.batch, 1, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) run_image(b, cpu::SerialFor{});
      });
    } else {
      for (int64_t b = 0; b < call.batch; ++b) run_image(b, cpu::AtenParallelFor{});
    }
  });
  return {call.labels, call.biases};
}

}  // namespace

TORCH_LIBRARY_IMPL(wsloss, CPU, m) { m.impl("em_adapt", &em_adapt_cpu); }

}  // namespace wsloss
