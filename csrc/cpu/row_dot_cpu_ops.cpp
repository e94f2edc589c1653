// CPU kernel of wsloss::row_dot: the rows of all images in parallel on torch.get_num_threads()
// threads, each summed in float64 in four interleaved partial sums (row_dot_call.h).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../row_dot_call.h"

namespace wsloss {
namespace {

template <typename T>
double row_dot_row(const T* __restrict a, const T* __restrict b, int64_t n) {
  double sum[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int lane = 0; lane < 4; ++lane)
      sum[lane] += static_cast<double>(a[i + lane]) * static_cast<double>(b[i + lane]);
  for (; i < n; ++i) sum[0] += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return (sum[0] + sum[1]) + (sum[2] + sum[3]);
}

at::Tensor row_dot_cpu(const at::Tensor& a_in, const at::Tensor& b_in) {
  check_row_dot(a_in, b_in);
  const at::Tensor a = a_in.contiguous(), b = b_in.contiguous();
  const int64_t channels = a.size(1), b_channels = b.size(1), n = a.size(2);
  at::Tensor out = at::empty({a.size(0), channels}, a.options().dtype(at::kDouble));
  double* dst = out.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "row_dot_cpu", [&] {
    const scalar_t* pa = a.data_ptr<scalar_t>();
    const scalar_t* pb = b.data_ptr<scalar_t>();
    at::parallel_for(0, out.numel(), std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, n)),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t row = begin; row < end; ++row)
                         dst[row] = row_dot_row(pa + row * n, pb + row_dot_b_row(row, channels, b_channels) * n, n);
                     });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(wsloss, CPU, m) { m.impl("row_dot", &row_dot_cpu); }

}  // namespace wsloss
