// at::parallel_for as a functor for the CPU kernels: honours torch.get_num_threads().
#pragma once

#include <ATen/Parallel.h>

namespace wsloss {
namespace cpu {

struct AtenParallelFor {
  template <class F>
  void operator()(int64_t begin, int64_t end, int64_t grain, const F& f) const {
    at::parallel_for(begin, end, grain, f);
  }
};

}  // namespace cpu
}  // namespace wsloss
