// Large CPU outputs on transparent huge pages. A fresh 4 KiB page costs a fault on its first
// write, and on some machines (VMs) those faults make the first write of a fresh 176 MB gradient
// cost five times a write to memory already mapped (75 ms against 14 ms, 2-core VM); a 2 MiB page
// costs one fault for 512 of them. Outputs of the CPU kernels at least kHugePageMinBytes large are
// allocated 2 MiB-aligned and advised MADV_HUGEPAGE (honoured where THP is "madvise" or "always";
// elsewhere the advice is ignored and they are ordinary pages). Everything else, and every CUDA
// tensor, comes from torch's allocator.
#pragma once

#include <ATen/ATen.h>

#include <cstdlib>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace wsloss {

constexpr int64_t kHugePageBytes = int64_t{2} << 20;
constexpr int64_t kHugePageMinBytes = int64_t{8} << 20;

inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const int64_t bytes = c10::multiply_integers(sizes) * static_cast<int64_t>(options.dtype().itemsize());
  if (options.device().is_cpu() && bytes >= kHugePageMinBytes) {
    const size_t rounded = static_cast<size_t>((bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes);
    void* data = nullptr;
    if (posix_memalign(&data, kHugePageBytes, rounded) == 0) {
      madvise(data, rounded, MADV_HUGEPAGE);  // advice: a kernel without THP maps ordinary pages
      return at::from_blob(data, sizes, [](void* p) { std::free(p); }, options.memory_format(std::nullopt));
    }
  }
#endif
  return at::empty(sizes, options);
}

}  // namespace wsloss
