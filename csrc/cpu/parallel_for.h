// The parallel_for(begin, end, grain, f) functors that the torch-free CPU kernels take.
#pragma once

#include <cstdint>

namespace wsloss {
namespace cpu {

// Runs f(begin, end) on the calling thread (C++ tests; loops nested in a parallel region).
struct SerialFor {
  template <class F>
  void operator()(int64_t begin, int64_t end, int64_t, const F& f) const {
    if (begin < end) f(begin, end);
  }
};

}  // namespace cpu
}  // namespace wsloss
