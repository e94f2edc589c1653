// Large CPU outputs on transparent huge pages, reused from call to call.
//
// A fresh 4 KiB page costs a fault on its first write, and on some machines (VMs) those faults make
// the first write of a fresh 176 MB gradient cost five times a write to memory already mapped
// (75 ms against 14 ms, 2-core development VM). Outputs of the CPU kernels at least
// kHugePageMinBytes large are therefore allocated 2 MiB-aligned and advised MADV_HUGEPAGE
// (honoured where THP is "madvise" or "always", ignored elsewhere), and when such a tensor is freed
// its memory goes back to a small pool that the next output of the same size takes, already
// mapped: a training loop's steps then write their gradients, S~ and lattices without a fault.
// The pool holds at most WSLOSS_CPU_POOL_MB megabytes (default 1024, read once; 0: no pool),
// dropping its oldest blocks first. Every CUDA tensor and every smaller one comes from torch's
// allocator.
#pragma once

#include <ATen/ATen.h>

#include <cstdlib>
#include <deque>
#include <mutex>
#include <string>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace wsloss {

constexpr int64_t kHugePageBytes = int64_t{2} << 20;
constexpr int64_t kHugePageMinBytes = int64_t{8} << 20;

// Freed output blocks (2 MiB-aligned, a multiple of 2 MiB long), newest last. One per process,
// never destroyed (tensors may outlive static destructors); a mutex guards it.
class OutputPool {
 public:
  static OutputPool& instance() {
    static OutputPool* pool = new OutputPool();
    return *pool;
  }

  // A block of `bytes` (a multiple of kHugePageBytes): the newest cached one of that size, or a
  // new one; null if the allocation fails.
  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) {
        if (it->second != bytes) continue;
        void* data = it->first;
        cached_ -= bytes;
        blocks_.erase(std::next(it).base());
        return data;
      }
    }
    void* data = nullptr;
    if (posix_memalign(&data, kHugePageBytes, bytes) != 0) return nullptr;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(data, bytes, MADV_HUGEPAGE);  // advice: a kernel without THP maps ordinary pages
#endif
    return data;
  }

  // Back into the pool, dropping the oldest blocks beyond the limit.
  void give(void* data, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (bytes > limit_) {
      std::free(data);
      return;
    }
    blocks_.emplace_back(data, bytes);
    cached_ += bytes;
    while (cached_ > limit_) {
      std::free(blocks_.front().first);
      cached_ -= blocks_.front().second;
      blocks_.pop_front();
    }
  }

 private:
  OutputPool() {
    const char* megabytes = std::getenv("WSLOSS_CPU_POOL_MB");
    limit_ = (megabytes != nullptr ? std::strtoull(megabytes, nullptr, 10) : size_t{1024}) << 20;
  }

  std::mutex mutex_;
  std::deque<std::pair<void*, size_t>> blocks_;
  size_t cached_ = 0, limit_ = 0;
};

inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  const int64_t bytes = c10::multiply_integers(sizes) * static_cast<int64_t>(options.dtype().itemsize());
  if (!options.device().is_cpu() || bytes < kHugePageMinBytes) return at::empty(sizes, options);
  const size_t rounded = static_cast<size_t>((bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes);
  void* data = OutputPool::instance().take(rounded);
  if (data == nullptr) return at::empty(sizes, options);
  return at::from_blob(data, sizes, [rounded](void* p) { OutputPool::instance().give(p, rounded); },
                       options.memory_format(std::nullopt));
}

}  // namespace wsloss
