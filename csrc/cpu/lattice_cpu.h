// Permutohedral lattice on the CPU, torch-free: the build (hash table, blur neighbours,
// splat CSR), and what the filter's kernels (lattice_filter_cpu.h, compiled once for each
// instruction set) share. The torch wrapper passes at::parallel_for; the C++ tests pass a
// serial loop.
//
// A built lattice is plain arrays (see lattice_cpu_ops.cpp for the tensor shapes):
//   vertices  [P][d+1] int32  global vertex id of each pixel's simplex corners
//   weights   [P][d+1] float  barycentric weights
//   neighbours[M][d+1][2]     blur neighbours along each lattice direction; M = missing
//   splat_ptr [M+1], splat_index[P(d+1)]  CSR of (pixel, corner) slots per vertex, for a
//                                          race-free gather splat (CUDA; CPU with few images);
//                                          optional on the CPU (empty: the splat scatters)
// where P = B N pixels of all images and M the number of vertices of all images.
#pragma once

// Also every header that lattice_filter_cpu.h's kernels use: lattice_filter_avx2.cpp includes
// them here, before it switches the instruction set.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef __SSE__
#include <xmmintrin.h>
#endif

#include "../lattice_math.h"
#include "parallel_for.h"

namespace wsloss {
namespace cpu {

// Open-addressing hash table from d integer coordinates to dense vertex ids of one
// image. Grows (doubling, rehash) at half load, so it never overflows. Each slot
// keeps 32 more bits of the key's hash, so that probing past other keys and looking
// up absent keys (most blur neighbours of sparse lattices) rarely reads a stored key.
// The key operations take the dimension as kD > 0 where the caller knows it at compile time
// (their loops unroll; kD = 0: the table's own d).
class VertexHashTable {
 public:
  // Starts small (a compact table stays in cache; smooth images have few vertices).
  explicit VertexHashTable(int d) : d_(d), slots_(4096) {}

  int32_t size() const { return count_; }
  // Room for `keys` keys without growing (an empty table only; the ids stay the same either way).
  void reserve(int32_t keys) {
    size_t slots = slots_.size();
    while (slots < 2 * (static_cast<size_t>(keys) + 1)) slots *= 2;
    if (slots > slots_.size()) slots_.assign(slots, Slot{});
    keys_.reserve(static_cast<size_t>(keys) * d_);
  }
  const int32_t* key(int32_t id) const { return keys_.data() + static_cast<int64_t>(id) * d_; }

  // Id of the key, inserting it if absent; `h` = hash(key).
  int32_t insert(const int32_t* key) { return insert(key, hash(key)); }
  template <int kD = 0>
  int32_t insert(const int32_t* key, uint64_t h) {
    if (2 * (static_cast<int64_t>(size()) + 1) > static_cast<int64_t>(slots_.size())) grow();
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    const size_t mask = slots_.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      Slot& slot = slots_[i];
      if (slot.id < 0) {
        slot = {tag, count_++};
        keys_.insert(keys_.end(), key, key + d_);
        return slot.id;
      }
      if (slot.tag == tag && equal<kD>(slot.id, key)) return slot.id;
    }
  }

  // Id of the key, or -1 if absent.
  int32_t find(const int32_t* key) const { return find(key, hash(key)); }
  template <int kD = 0>
  int32_t find(const int32_t* key, uint64_t h) const {
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    const size_t mask = slots_.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& slot = slots_[i];
      if (slot.id < 0 || (slot.tag == tag && equal<kD>(slot.id, key))) return slot.id;
    }
  }

  // Starts loading the slot where a key of hash h begins its probe.
  void prefetch(uint64_t h) const { __builtin_prefetch(&slots_[h & (slots_.size() - 1)]); }
  // True when the table outgrows the L2 cache, where its probes miss unless prefetched (a
  // smaller table's prefetches only cost instructions).
  bool large() const { return slots_.size() >= (size_t{1} << 17); }
  // Starts loading the stored key that a probe for hash h compares first (after prefetch(h)
  // for a batch of keys: their slot misses overlap, then their key misses).
  void prefetch_key(uint64_t h) const {
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    const size_t mask = slots_.size() - 1;
    for (size_t i = h & mask; slots_[i].id >= 0; i = (i + 1) & mask) {
      if (slots_[i].tag != tag) continue;
      const int32_t* stored = key(slots_[i].id);
      __builtin_prefetch(stored);
      __builtin_prefetch(stored + d_ - 1);  // a key may straddle two cache lines
      return;
    }
  }

  template <int kD = 0>
  uint64_t hash(const int32_t* key) const {
    const int d = kD > 0 ? kD : d_;
    // Independent products (no serial dependency between coordinates), then one mix.
    static constexpr uint64_t kOdd[kMaxFeatureDim] = {
        0x9E3779B97F4A7C15ull, 0xC2B2AE3D27D4EB4Full, 0x165667B19E3779F9ull, 0xD6E8FEB86659FD93ull,
        0xFF51AFD7ED558CCDull, 0xC4CEB9FE1A85EC53ull, 0x94D049BB133111EBull, 0xBF58476D1CE4E5B9ull,
        0x2545F4914F6CDD1Dull, 0x9FB21C651E98DF25ull, 0xDB4F0B9175AE2165ull, 0x8CB92BA72F3D8DD7ull,
        0xA0761D6478BD642Full, 0xE7037ED1A0B428DBull, 0x8EBC6AF09C88C6E3ull, 0x589965CC75374CC3ull};
    uint64_t h = 0;
    for (int i = 0; i < d; ++i) h += static_cast<uint64_t>(static_cast<uint32_t>(key[i])) * kOdd[i];
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ull;
    return h ^ (h >> 29);
  }

 private:
  struct Slot {
    uint32_t tag = 0;
    int32_t id = -1;
  };

  template <int kD>
  bool equal(int32_t id, const int32_t* key) const {
    const int d = kD > 0 ? kD : d_;
    const int32_t* stored = this->key(id);
    bool same = true;  // no early exit: the compares of an unrolled loop beat its branches
    for (int i = 0; i < d; ++i) same &= stored[i] == key[i];
    return same;
  }
  void grow() {
    std::vector<Slot> slots(slots_.size() * 2);
    const size_t mask = slots.size() - 1;
    for (const Slot& slot : slots_) {
      if (slot.id < 0) continue;
      size_t i = hash(key(slot.id)) & mask;
      while (slots[i].id >= 0) i = (i + 1) & mask;
      slots[i] = slot;
    }
    slots_.swap(slots);
  }

  int d_;
  int32_t count_ = 0;  // keys_.size() / d_, kept: a division per insert shows in the build's time
  std::vector<Slot> slots_;
  std::vector<int32_t> keys_;
};

// The corner ids of recently hashed simplices, by remainder-0 point and ranks, in a direct-mapped
// table (a new simplex overwrites an older one of the same index): a smooth image has 3 to 7
// times fewer distinct simplices than pixels, and a pixel whose simplex is cached skips the
// hashing of its corners (the same ids, so the same lattice). kD = 0 (d > 6): no cache. Where
// fewer than one simplex in 8 is found (noise), it switches itself off.
template <int kD>
class SimplexCache {
 public:
  struct Entry {
    uint64_t ranks = ~uint64_t{0};  // 4 bits a rank; all ones: empty
    int32_t z[kD + 1];
    int32_t ids[kD + 1];
  };

  explicit SimplexCache(int64_t pixels) {
    if constexpr (kD == 0) return;
    size_t size = 64;
    while (size < kMaxEntries && static_cast<int64_t>(size) * 8 < pixels) size *= 2;
    entries_.resize(size);
  }

  // The entry that holds or would hold this simplex; null while switched off.
  Entry* find(const int* z, const int* rank) {
    if (entries_.empty()) return nullptr;
    if (++lookups_ == kProbation) {
      if (hits_ * 8 < lookups_) {
        entries_.clear();
        return nullptr;
      }
      lookups_ = hits_ = 0;
    }
    uint64_t h = pack_ranks(rank) * 0x9E3779B97F4A7C15ull;
    for (int i = 0; i <= kD; ++i) h += static_cast<uint64_t>(static_cast<int64_t>(z[i])) * kZMultipliers[i];
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    return &entries_[(h >> 20) & (entries_.size() - 1)];
  }
  bool holds(const Entry& entry, const int* z, const int* rank) {
    bool same = entry.ranks == pack_ranks(rank);
    for (int i = 0; i <= kD; ++i) same &= entry.z[i] == z[i];
    hits_ += same;
    return same;
  }
  void store(Entry& entry, const int* z, const int* rank, const int32_t* ids) {
    entry.ranks = pack_ranks(rank);
    std::copy(z, z + kD + 1, entry.z);
    std::copy(ids, ids + kD + 1, entry.ids);
  }

 private:
  static constexpr size_t kMaxEntries = 8192;
  static constexpr int64_t kProbation = 4096;  // lookups between checks of the hit rate
  static constexpr uint64_t kZMultipliers[7] = {0xC2B2AE3D27D4EB4Full, 0x165667B19E3779F9ull,
                                                0xD6E8FEB86659FD93ull, 0xFF51AFD7ED558CCDull,
                                                0xC4CEB9FE1A85EC53ull, 0x94D049BB133111EBull,
                                                0x2545F4914F6CDD1Dull};
  static uint64_t pack_ranks(const int* rank) {
    uint64_t bits = 0;
    for (int i = 0; i <= kD; ++i) bits |= static_cast<uint64_t>(rank[i]) << (4 * i);
    return bits;
  }

  std::vector<Entry> entries_;
  int64_t lookups_ = 0, hits_ = 0;
};

// lattice_embed (DESIGN §1 steps 3-6) of 4 consecutive pixels at once, one per lane of
// GCC/Clang vectors: the same float32 operations lane by lane, the same comparisons and
// integer steps, so bit for bit the same z, ranks and weights (about a third of the
// build's time was the scalar embedding). Pixel t's features are feature[i * stride + t];
// weights[t * (d + 1) + k] receives its weights. Returns false, with nothing written, when a
// lane needs the scalar path: a feature out of range (or NaN), or a value that
// round_half_even rounds without the magic number.
template <int kD>
bool lattice_embed4(const float* feature, int64_t stride, const float* scale, int d_runtime,
                    int (*z_out)[kMaxFeatureDim + 2], int (*rank_out)[kMaxFeatureDim + 2], float* weights) {
  typedef float F4 __attribute__((vector_size(16)));
  typedef int32_t I4 __attribute__((vector_size(16)));
  const int d = kD > 0 ? kD : d_runtime, d1 = d + 1;
  auto load = [](const float* src) {
    F4 v;
    std::memcpy(&v, src, sizeof(v));
    return v;
  };
  // |v| <= limit in every lane, NaN failing: on the bits, which order like the magnitudes.
  auto within = [](F4 v, float limit) {
    int32_t limit_bits;
    std::memcpy(&limit_bits, &limit, sizeof(limit_bits));
    const I4 inside = ((I4)v & 0x7fffffff) <= limit_bits;
    return (inside[0] & inside[1] & inside[2] & inside[3]) != 0;
  };
  F4 elevated[kMaxFeatureDim + 1];
  F4 sum = {};
  for (int j = d; j > 0; --j) {
    const F4 f = load(feature + (j - 1) * stride);
    if (!within(f, kMaxFeatureMagnitude)) return false;  // feature_in_range
    const F4 cf = f * scale[j - 1];
    elevated[j] = sum - static_cast<float>(j) * cf;
    sum = sum + cf;
  }
  elevated[0] = sum;

  const float down_factor = 1.0f / static_cast<float>(d1);
  constexpr float kMagic = 12582912.0f;  // as round_half_even
  I4 z[kMaxFeatureDim + 1], rank[kMaxFeatureDim + 1];
  I4 remainder_sum = {};
  for (int i = 0; i <= d; ++i) {
    const F4 v = elevated[i] * down_factor;
    if (!within(v, 4194303.5f)) return false;  // |v| < 2^22
    const I4 r = __builtin_convertvector((v + kMagic) - kMagic, I4);
    z[i] = r * d1;
    remainder_sum += r;
    rank[i] = I4{};
  }
  F4 delta[kMaxFeatureDim + 1];
  for (int i = 0; i <= d; ++i) delta[i] = elevated[i] - __builtin_convertvector(z[i], F4);
  for (int i = 0; i < d; ++i) {
    for (int j = i + 1; j <= d; ++j) {
      const I4 smaller = delta[i] < delta[j];  // -1 where true
      rank[i] -= smaller;
      rank[j] += 1 + smaller;
    }
  }
  for (int i = 0; i <= d; ++i) {
    rank[i] += remainder_sum;
    const I4 shift = ((rank[i] < 0) & d1) - ((rank[i] > d) & d1);
    rank[i] += shift;
    z[i] += shift;
  }
  F4 by_rank[kMaxFeatureDim + 1] = {};
  for (int i = 0; i <= d; ++i) {
    const F4 v = (elevated[i] - __builtin_convertvector(z[i], F4)) * down_factor;
    for (int r = 0; r <= d; ++r) {
      const I4 here = rank[i] == r;
      by_rank[r] = (F4)(((I4)v & here) | ((I4)by_rank[r] & ~here));
    }
  }
  F4 bary[kMaxFeatureDim + 1];
  bary[0] = by_rank[d] + (1.0f - by_rank[0]);
  for (int j = 1; j <= d; ++j) bary[j] = by_rank[d - j] - by_rank[d + 1 - j];
  for (int t = 0; t < 4; ++t) {
    for (int i = 0; i <= d; ++i) {
      z_out[t][i] = z[i][t];
      rank_out[t][i] = rank[i][t];
      weights[t * d1 + i] = bary[i][t];
    }
  }
  return true;
}

// Builds a batched lattice in two phases so that the caller can size the per-vertex
// outputs once the vertex count is known. Vertices are numbered per image in order of
// their first (pixel, corner), the numbering the CUDA build reproduces.
class LatticeBuilder {
 public:
  // Fewest pixels per range when an image is hashed in parallel ranges.
  static constexpr int64_t kPixelsPerPart = 1 << 16;

  // features: [B][d][N] float32. Scratch `vertices` [B N][d+1] and the outputs
  // `weights` [B N][d+1] must stay alive until finish() returns.
  LatticeBuilder(const float* features, int64_t batch, int d, int64_t pixels, int32_t* vertices,
                 float* weights)
      : features_(features), batch_(batch), d_(d), pixels_(pixels), vertices_(vertices),
        weights_(weights) {}

  // Phase 1: per image, the simplex (remainder-0 point and ranks) and weights of each pixel
  // and the hash table of its vertices (`threads`: how many parallel_for runs at once; the
  // result does not depend on it). Returns false if a feature is not finite or too large to
  // embed (nothing else is then valid).
  template <class ParallelFor>
  bool embed_and_hash(ParallelFor&& parallel_for, int64_t threads = 1) {
    float scale[kMaxFeatureDim];
    for (int i = 0; i < d_; ++i) scale[i] = elevation_scale(i, d_);
    const int d1 = d_ + 1;
    // With fewer images than threads, each image's pixels are hashed in `parts` ranges at
    // once, each into its own table; merging the tables in range order then numbers every
    // vertex as one pass over the image would (by its first (pixel, corner)).
    const int64_t parts = batch_ >= threads ? 1 : std::max<int64_t>(1, std::min<int64_t>((threads + batch_ - 1) / batch_,
                                                                                          pixels_ / kPixelsPerPart));
    tables_.clear();
    for (int64_t i = 0; i < batch_ * parts; ++i) tables_.emplace_back(d_);
    auto range = [&](int64_t item) {  // pixels [first, last) of item = (image, part)
      const int64_t b = item / parts, j = item % parts;
      return std::pair<int64_t, int64_t>{b * pixels_ + j * pixels_ / parts, b * pixels_ + (j + 1) * pixels_ / parts};
    };
    std::atomic<bool> bad{false};
    // Each table starts with room for the most vertices a range hashed so far had: images of one
    // batch are alike, and a table grown by doubling rehashes every key it holds (noise, 150,000
    // vertices an image: about a sixth of the embedding and hashing).
    std::atomic<int32_t> most_vertices{0};
    parallel_for(0, batch_ * parts, 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end && !bad.load(std::memory_order_relaxed); ++item) {
        const auto [first, last] = range(item);
        VertexHashTable& table = tables_[item];
        table.reserve(most_vertices.load(std::memory_order_relaxed));
        const bool ok = with_fixed_dim(d_, [&](auto fixed) {
          return embed_and_hash_pixels<decltype(fixed)::value>(table, first, last, scale);
        });
        if (!ok) bad.store(true, std::memory_order_relaxed);
        int32_t most = most_vertices.load(std::memory_order_relaxed);
        while (most < table.size() && !most_vertices.compare_exchange_weak(most, table.size())) {
        }
      }
    });
    if (bad.load()) return false;
    if (parts > 1) {
      std::vector<std::vector<int32_t>> renumber(static_cast<size_t>(batch_ * parts));
      parallel_for(0, batch_, 1, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          VertexHashTable& merged = tables_[b * parts];
          for (int64_t item = b * parts + 1; item < (b + 1) * parts; ++item) {
            const VertexHashTable& part = tables_[item];
            std::vector<int32_t>& ids = renumber[item];
            ids.resize(static_cast<size_t>(part.size()));
            for (int32_t id = 0; id < part.size(); ++id) ids[id] = merged.insert(part.key(id));
          }
        }
      });
      parallel_for(0, batch_ * parts, 1, [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
          if (item % parts == 0) continue;
          const auto [first, last] = range(item);
          const std::vector<int32_t>& ids = renumber[item];
          for (int32_t* id = vertices_ + first * d1; id < vertices_ + last * d1; ++id) *id = ids[*id];
        }
      });
      std::vector<VertexHashTable> merged;
      for (int64_t b = 0; b < batch_; ++b) merged.push_back(std::move(tables_[b * parts]));
      tables_.swap(merged);
    }
    offsets_.assign(static_cast<size_t>(batch_ + 1), 0);
    for (int64_t b = 0; b < batch_; ++b) offsets_[b + 1] = offsets_[b] + tables_[b].size();
    return true;
  }

  // Vertex offset of each image (size B + 1); the last entry is M.
  const std::vector<int64_t>& offsets() const { return offsets_; }

  // Phase 2: global vertex ids, blur neighbours [M][d+1][2] (v - e_j at 2j, v + e_j at
  // 2j+1; missing = M) and, unless splat_ptr is null, the splat CSR (splat_ptr [M+1],
  // splat_index [B N (d+1)], pixels in ascending order).
  template <class ParallelFor>
  void finish(int32_t* neighbours, int32_t* splat_ptr, int32_t* splat_index,
              ParallelFor&& parallel_for) {
    const int d1 = d_ + 1;
    const int64_t slots_per_image = pixels_ * d1;
    const int32_t missing = static_cast<int32_t>(offsets_[batch_]);
    // v - e_j is missing unless the search from it below finds v as its v' + e_j.
    parallel_for(0, missing, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t v = begin; v < end; ++v)
        for (int j = 0; j < d1; ++j) neighbours[(v * d1 + j) * 2] = missing;
    });
    for (int64_t b = 0; b < batch_; ++b) {
      const VertexHashTable& table = tables_[b];
      const int64_t offset = offsets_[b];
      parallel_for(0, table.size(), 2048, [&](int64_t begin, int64_t end) {
        with_fixed_dim(d_, [&](auto fixed) {
          find_neighbours<decltype(fixed)::value>(table, offset, begin, end, missing, neighbours);
        });
      });
    }
    if (splat_ptr != nullptr) splat_ptr[offsets_[batch_]] = static_cast<int32_t>(batch_ * slots_per_image);
    parallel_for(0, batch_, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t offset = offsets_[b], count = tables_[b].size();
        int32_t* ids = vertices_ + b * slots_per_image;
        if (splat_ptr == nullptr) {  // global ids only
          for (int64_t s = 0; s < slots_per_image; ++s) ids[s] += static_cast<int32_t>(offset);
          continue;
        }
        std::vector<int32_t> fill(static_cast<size_t>(count) + 1, 0);
        for (int64_t s = 0; s < slots_per_image; ++s) ++fill[ids[s] + 1];
        int32_t position = static_cast<int32_t>(b * slots_per_image);
        for (int64_t v = 0; v < count; ++v) {
          position += fill[v + 1];
          fill[v + 1] = position;  // end of v's segment; becomes its start below
        }
        fill[0] = static_cast<int32_t>(b * slots_per_image);
        for (int64_t v = 0; v < count; ++v) splat_ptr[offset + v] = fill[v];
        for (int64_t s = 0; s < slots_per_image; ++s) {
          splat_index[fill[ids[s]]++] = static_cast<int32_t>(b * slots_per_image + s);
          ids[s] += static_cast<int32_t>(offset);
        }
      }
    });
    tables_.clear();
  }

 private:
  // f(std::integral_constant<int, kD>) with kD = d for the common feature dimensions 2 to 6, else
  // kD = 0: fixed at compile time, the embedding's and the keys' loops unroll and small arrays
  // stay in registers (same arithmetic, so the same lattice).
  template <class F>
  static auto with_fixed_dim(int d, F&& f) {
    switch (d) {
      case 2: return f(std::integral_constant<int, 2>{});
      case 3: return f(std::integral_constant<int, 3>{});
      case 4: return f(std::integral_constant<int, 4>{});
      case 5: return f(std::integral_constant<int, 5>{});
      case 6: return f(std::integral_constant<int, 6>{});
      default: return f(std::integral_constant<int, 0>{});
    }
  }

  // The + neighbours of vertices [begin, end) of one image's table (its first global id
  // `offset`), and, for each found u = v + e_j, u's - neighbour v (see finish).
  template <int kD>
  void find_neighbours(const VertexHashTable& table, int64_t offset, int64_t begin, int64_t end, int32_t missing,
                       int32_t* neighbours) const {
    const int d = kD > 0 ? kD : d_, d1 = d + 1;
    // Only the d+1 keys v + e_j are looked up (u = v + e_j gives u - e_j = v: half the probes).
    // A block of vertices' keys first, a large table's slots then stored keys prefetched, then
    // the probes: the lookups are independent cache misses, and a block keeps enough of them in
    // flight to overlap.
    constexpr int kBlock = 8;
    int32_t keys[kBlock][kMaxFeatureDim + 1][kMaxFeatureDim];
    uint64_t hashes[kBlock][kMaxFeatureDim + 1];
    for (int64_t first = begin; first < end; first += kBlock) {
      const int count = static_cast<int>(std::min<int64_t>(kBlock, end - first));
      for (int n = 0; n < count; ++n) {
        const int32_t* own = table.key(static_cast<int32_t>(first + n));
        // e_j = (-1, ..., d at j, ..., -1); coordinate d is implied.
        for (int j = 0; j < d1; ++j) {
          for (int i = 0; i < d; ++i) keys[n][j][i] = own[i] + (i == j ? d : -1);
          hashes[n][j] = table.template hash<kD>(keys[n][j]);
        }
      }
      if (table.large()) {
        for (int n = 0; n < count; ++n)
          for (int j = 0; j < d1; ++j) table.prefetch(hashes[n][j]);
        for (int n = 0; n < count; ++n)
          for (int j = 0; j < d1; ++j) table.prefetch_key(hashes[n][j]);
      }
      for (int n = 0; n < count; ++n) {
        const int64_t v = offset + first + n;
        for (int j = 0; j < d1; ++j) {
          const int32_t u = table.template find<kD>(keys[n][j], hashes[n][j]);
          neighbours[(v * d1 + j) * 2 + 1] = u < 0 ? missing : static_cast<int32_t>(offset + u);
          // Each (u, j) has one v = u - e_j, so no two writes meet.
          if (u >= 0) neighbours[((offset + u) * d1 + j) * 2] = static_cast<int32_t>(v);
        }
      }
    }
  }

  // Pixels [first, last) (global pixel indices q of one image): their simplices (DESIGN §1
  // steps 1-6; weights into weights_) and the local ids of their corners in `table`
  // (into vertices_), numbered by first (pixel, corner). kD > 0 is d_ fixed at compile time.
  // Returns false at the first feature that is not finite or too large to embed.
  template <int kD>
  bool embed_and_hash_pixels(VertexHashTable& table, int64_t first, int64_t last, const float* scale) {
    const int d = kD > 0 ? kD : d_, d1 = d + 1;
    const int64_t image = first / pixels_;
    int previous_z[kMaxFeatureDim + 1] = {}, previous_rank[kMaxFeatureDim + 1] = {};
    // This pixel's corners and the previous hashed simplex's (swapped per simplex); the latter
    // are the previous pixel's corners only while `previous_hashed`.
    int32_t corner_keys[2][kMaxFeatureDim + 1][kMaxFeatureDim];
    uint64_t corner_hashes[2][kMaxFeatureDim + 1];
    int current = 0;
    bool previous_hashed = false;
    SimplexCache<kD> cache(last - first);
    // The simplices of a group of 4 pixels (lattice_embed4), or of one (lattice_embed into its lane).
    int block_z[4][kMaxFeatureDim + 2], block_rank[4][kMaxFeatureDim + 2];
    bool block_embedded = false;
    for (int64_t q = first; q < last; ++q) {
      const float* f = features_ + image * d * pixels_ + (q - image * pixels_);
      const int lane = static_cast<int>((q - first) % 4);
      if (lane == 0) {
        block_embedded = last - q >= 4 && lattice_embed4<kD>(f, pixels_, scale, d, block_z, block_rank,
                                                              weights_ + q * d1);
      }
      int* z = block_z[lane];
      int* rank = block_rank[lane];
      if (!block_embedded) {
        bool ok = true;
        for (int i = 0; i < d; ++i) ok = ok && feature_in_range(f[i * pixels_]);  // NaN fails too
        if (!ok) return false;
        lattice_embed(f, pixels_, scale, d, z, rank, weights_ + q * d1);
      }
      int32_t* ids = vertices_ + q * d1;
      bool same_simplex = q > first;
      for (int i = 0; i <= d; ++i) {
        same_simplex = same_simplex && z[i] == previous_z[i] && rank[i] == previous_rank[i];
        previous_z[i] = z[i];
        previous_rank[i] = rank[i];
      }
      if (same_simplex) {  // common in smooth regions: reuse the previous pixel's ids
        std::copy(ids - d1, ids, ids);
        continue;
      }
      typename SimplexCache<kD>::Entry* entry = cache.find(z, rank);
      if (entry != nullptr && cache.holds(*entry, z, rank)) {  // a simplex seen before: its ids
        std::copy(entry->ids, entry->ids + d1, ids);
        previous_hashed = false;
        continue;
      }
      auto& keys = corner_keys[current];
      uint64_t* hashes = corner_hashes[current];
      // All keys first: a large table's slots are requested before the probes.
      for (int k = 0; k <= d; ++k) {
        for (int i = 0; i < d; ++i) keys[k][i] = vertex_coordinate(z[i], rank[i], d, k);
        hashes[k] = table.template hash<kD>(keys[k]);
      }
      if (table.large()) {
        for (int k = 0; k <= d; ++k) table.prefetch(hashes[k]);
        for (int k = 0; k <= d; ++k) table.prefetch_key(hashes[k]);
      }
      // Neighbouring pixels' simplices share about half their corners: those ids come
      // from the previous simplex, without a probe (same ids, so the same lattice).
      const auto& previous_keys = corner_keys[1 - current];
      const uint64_t* previous_hashes = corner_hashes[1 - current];
      for (int k = 0; k <= d; ++k) {
        int32_t id = -1;
        for (int j = 0; j <= d && previous_hashed && id < 0; ++j) {
          if (previous_hashes[j] != hashes[k]) continue;
          bool equal = true;
          for (int i = 0; i < d; ++i) equal = equal && keys[k][i] == previous_keys[j][i];
          if (equal) id = ids[j - d1];
        }
        ids[k] = id >= 0 ? id : table.template insert<kD>(keys[k], hashes[k]);  // local ids for now
      }
      if (entry != nullptr) cache.store(*entry, z, rank, ids);
      current = 1 - current;
      previous_hashed = true;
    }
    return true;
  }

  const float* features_;
  int64_t batch_;
  int d_;
  int64_t pixels_;
  int32_t* vertices_;
  float* weights_;
  std::vector<VertexHashTable> tables_;
  std::vector<int64_t> offsets_;
};

// Pixels per tile: a tile's values (all channels of a chunk) stay in L1 while they are
// transposed between the channel-planar tensors and the vertex-major lattice rows.
constexpr int64_t kTilePixels = 64;
// Most channels filtered in one pass over the lattice (the caller loops over chunks).
constexpr int64_t kMaxChunkChannels = 32;
// Tile and scratch lattice rows hold c channels padded to a multiple of this many lanes
// (zeros), so that every channel loop is whole vector operations with no scalar tail (21
// channels: 24 lanes, 6 SSE or 3 AVX2 float vectors).
constexpr int64_t kChannelLanes = 4;
// Fewer channels than lanes stay unpadded (scalar loops): one channel padded to four made
// the rows, and the filtering, twice as slow.
constexpr int64_t padded_channels(int64_t c) {
  return c < kChannelLanes ? c : (c + kChannelLanes - 1) / kChannelLanes * kChannelLanes;
}

// A built lattice, as produced by LatticeBuilder (see the top of this file).
struct LatticeView {
  const int32_t* vertices;
  const float* weights;
  const int32_t* neighbours;
  const int32_t* splat_ptr;
  const int32_t* splat_index;
  int64_t batch, pixels, num_vertices;
  int d;
};

// The factors of pixels p0 .. p0 + count - 1 of image b, into factors (a tile's worth).
template <typename scalar_t>
void load_factors(const PixelScale<scalar_t>& scale, int64_t b, int64_t p0, int64_t count, scalar_t* factors) {
  const scalar_t* first = &scale.data[b * scale.batch_stride + p0 * scale.pixel_stride];
  if (scale.pixel_stride == 0) {
    std::fill(factors, factors + count, *first);
  } else {
    std::copy(first, first + count, factors);
  }
}

// out = add + scale_out * (A (scale_in * in)), each part optional: a mean-field message
// (DESIGN §5) in the filtering's own passes over the pixels. Same arithmetic as the separate
// products and sum, so the same numbers. add [B][C][N] channel-planar, as out (may not overlap it).
template <typename scalar_t>
struct FilterAffine {
  PixelScale<scalar_t> scale_in, scale_out;
  const scalar_t* add = nullptr;
};

// Images [image_begin, image_end) of a batched lattice and their vertices [vertex_begin, vertex_end)
// (an image's vertices are numbered consecutively, see LatticeBuilder).
struct LatticeRange {
  int64_t image_begin, image_end, vertex_begin, vertex_end;
};

// True when each image's corners and its vertices' blur neighbours lie in its own vertex range
// [first_vertex[b], first_vertex[b + 1]) (or are missing, M): a built lattice's are, and only
// then may images be filtered apart (lattice_filter_images).
template <class ParallelFor>
bool images_own_their_vertices(const LatticeView& lat, const std::vector<int64_t>& first_vertex,
                               ParallelFor&& parallel_for) {
  const int d1 = lat.d + 1;
  std::atomic<bool> own{true};
  parallel_for(0, lat.batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end && own.load(std::memory_order_relaxed); ++b) {
      const int64_t lo = first_vertex[b], hi = first_vertex[b + 1];
      bool inside = true;
      for (int64_t s = b * lat.pixels * d1; s < (b + 1) * lat.pixels * d1; ++s)
        inside &= lat.vertices[s] >= lo && lat.vertices[s] < hi;
      for (int64_t s = lo * d1 * 2; s < hi * d1 * 2; ++s)
        inside &= (lat.neighbours[s] >= lo && lat.neighbours[s] < hi) || lat.neighbours[s] == lat.num_vertices;
      if (!inside) own.store(false, std::memory_order_relaxed);
    }
  });
  return own.load();
}

// Zeroes row M, the row of every missing neighbour, of both scratch lattices (rows of `stride`).
template <typename scalar_t>
void clear_missing_rows(scalar_t* lattice_a, scalar_t* lattice_b, int64_t num_vertices, int64_t stride) {
  std::fill(lattice_a + num_vertices * stride, lattice_a + (num_vertices + 1) * stride, scalar_t(0));
  std::fill(lattice_b + num_vertices * stride, lattice_b + (num_vertices + 1) * stride, scalar_t(0));
}

// A parallel_for(begin, end, grain, f) behind a function boundary: the filter's kernels of
// each instruction set take their threads as one (a call per pass, so its cost is nil).
using ParallelForFunction =
    std::function<void(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& f)>;

// The filter's kernels of one instruction set (lattice_filter_cpu.h's lattice_filter and
// lattice_filter_images); every set gives the same results, bit for bit.
template <typename scalar_t>
struct FilterKernels {
  void (*filter)(const LatticeView& lat, const scalar_t* in, scalar_t* out, int64_t channels, int64_t c0, int64_t c,
                 bool transpose, scalar_t* lattice_a, scalar_t* lattice_b, scalar_t* pixel_major,
                 const ParallelForFunction& parallel_for, const FilterAffine<scalar_t>& affine);
  void (*filter_images)(const LatticeView& lat, const LatticeRange& part, const scalar_t* in, scalar_t* out,
                        int64_t channels, int64_t c0, int64_t c, int64_t stride, bool transpose, scalar_t* lattice_a,
                        scalar_t* lattice_b, const FilterAffine<scalar_t>& affine);
};

// The kernels compiled for AVX2 (lattice_filter_avx2.cpp), or null where this build has none
// (not x86-64, or not GCC). Whether the CPU runs them is the caller's choice.
template <typename scalar_t>
const FilterKernels<scalar_t>* avx2_filter_kernels();
extern template const FilterKernels<float>* avx2_filter_kernels<float>();
extern template const FilterKernels<double>* avx2_filter_kernels<double>();

}  // namespace cpu
}  // namespace wsloss
