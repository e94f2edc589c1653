// The filter's kernels (lattice_filter_cpu.h) compiled a second time, for AVX2: 8 float lanes a
// vector where the baseline build has 4 (benchmarks/RESULTS.md: about a fifth off a 21-channel
// filtering of photographs). lattice_cpu_ops.cpp runs them where torch's CPU capability
// includes AVX2. AVX2 without FMA: the baseline build's elementwise operations, so its bits.
// Torch-free.
#include "lattice_cpu.h"  // every header the kernels use, for the default target

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define WSLOSS_FILTER_AVX2
// For the functions defined from here to pop_options: the kernels, not the standard library's
// templates (defined above), whose instances must be the same in every translation unit.
#pragma GCC push_options
#pragma GCC target("avx2")
#define WSLOSS_CPU_ISA avx2
#define WSLOSS_CPU_VECTOR_BYTES 32
#include "lattice_filter_cpu.h"
#pragma GCC pop_options
#endif

namespace wsloss {
namespace cpu {

template <typename scalar_t>
const FilterKernels<scalar_t>* avx2_filter_kernels() {
#ifdef WSLOSS_FILTER_AVX2
  return &avx2::kFilterKernels<scalar_t>;
#else
  return nullptr;
#endif
}
template const FilterKernels<float>* avx2_filter_kernels<float>();
template const FilterKernels<double>* avx2_filter_kernels<double>();

}  // namespace cpu
}  // namespace wsloss
