// What one CUDA thread of each lattice kernel does, as host-device functions.
//
// lattice_cuda.cu wraps each step in a grid-stride kernel; tests/cpp/test_cuda_steps.cpp
// runs the same steps serially (in shuffled orders) on the CPU and checks the result
// against the CPU lattice, so the build and filter logic of the CUDA engine is tested
// on machines without a GPU. Atomics are hardware atomics on the device and serial
// read-modify-writes on the host. No CUDA runtime or torch headers.
#pragma once

#include <cstdint>

#include "../lattice_math.h"

namespace wsloss {
namespace cuda {

using PackedKey = unsigned long long;

// A free hash slot. Keys are packed into at most 63 bits, so no key is all ones;
// cudaMemset with byte 0x7f gives kEmptyCorner, above every corner index (< 2^30).
constexpr PackedKey kEmptyKey = ~PackedKey{0};
constexpr int kMaxPackedBits = 63;
constexpr int32_t kEmptyCorner = 0x7f7f7f7f;
// Sorted splat entries one thread sums in the first splat pass: a vertex with L
// entries costs at most this many loads per thread, plus L / kSplatChunk in the second.
constexpr int64_t kSplatChunk = 64;

// ---------------------------------------------------------------- atomics
template <typename T>  // int32_t or PackedKey
WSLOSS_HD T atomic_cas(T* p, T expected, T desired) {
#if defined(__CUDA_ARCH__)
  return atomicCAS(p, expected, desired);
#else
  const T old = *p;
  if (old == expected) *p = desired;
  return old;
#endif
}
WSLOSS_HD void atomic_min(int32_t* p, int32_t value) {
#if defined(__CUDA_ARCH__)
  atomicMin(p, value);
#else
  if (value < *p) *p = value;
#endif
}
// A read that other threads' atomics may have changed since the kernel started.
template <typename T>
WSLOSS_HD T load_shared_slot(const T* p) {
  return *static_cast<const volatile T*>(p);
}

// ---------------------------------------------------------------- keys
// How vertex keys (coordinates 0..d-1; coordinate d is implied by sum = 0) are packed
// into 64 bits for a batch: coordinate i of image b is stored as key_i - lo_bi in
// `width[i]` bits at bit `shift[i]`, lo_bi = (min over the image's pixels of z_i) - d.
// Every vertex coordinate lies in [min z_i - d, max z_i + d] (docs/DESIGN.md §1 step 7, ranks in
// 0..d), so the widths cover the widest image; `packed` = 0 when they exceed 63 bits
// and the build falls back to keys compared coordinate by coordinate.
struct KeyLayout {
  int32_t packed;
  int32_t shift[kMaxFeatureDim];
  int32_t width[kMaxFeatureDim];
};

// From the per-image ranges of the remainder-0 points, coordinate_min/max [B][d].
WSLOSS_HD void key_layout_step(const int32_t* coordinate_min, const int32_t* coordinate_max, int64_t batch,
                               int d, KeyLayout* layout) {
  int total = 0;
  for (int i = 0; i < d; ++i) {
    int64_t range = 0;
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t image_range = int64_t{coordinate_max[b * d + i]} - coordinate_min[b * d + i] + 2 * d;
      range = range > image_range ? range : image_range;
    }
    int width = 1;
    while (width < 40 && (int64_t{1} << width) <= range) ++width;
    layout->shift[i] = total;
    layout->width[i] = width;
    total += width;
  }
  layout->packed = total <= kMaxPackedBits;
}

// Packed key of `key` in an image whose coordinate minima are `coordinate_min`, or
// kEmptyKey if a coordinate is outside the range of every vertex of the batch (a blur
// neighbour that cannot exist).
template <int D>
WSLOSS_HD PackedKey pack_key(const int* key, const int32_t* coordinate_min, const KeyLayout& layout) {
  PackedKey packed = 0;
WSLOSS_UNROLL
  for (int i = 0; i < D; ++i) {
    const int64_t field = int64_t{key[i]} - (int64_t{coordinate_min[i]} - D);
    if (field < 0 || field >= (int64_t{1} << layout.width[i])) return kEmptyKey;
    packed |= static_cast<PackedKey>(field) << layout.shift[i];
  }
  return packed;
}

// Murmur3's 64-bit finalizer: packed keys differ in low bits of few fields.
WSLOSS_HD PackedKey hash_packed(PackedKey x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  return x ^ (x >> 33);
}

template <int D>
WSLOSS_HD uint32_t hash_coordinates(const int* key) {
  uint32_t h = 2166136261u;
WSLOSS_UNROLL
  for (int i = 0; i < D; ++i) h = (h ^ static_cast<uint32_t>(key[i])) * 16777619u;
  return h ^ (h >> 15);
}

// Coordinates 0..D-1 of corner k of pixel q's simplex, from its remainder-0 point and ranks.
template <int D>
WSLOSS_HD void corner_key(const int32_t* remainder, const int8_t* rank, int64_t q, int k, int* key) {
WSLOSS_UNROLL
  for (int i = 0; i < D; ++i) key[i] = vertex_coordinate(remainder[q * (D + 1) + i], rank[q * (D + 1) + i], D, k);
}

// True when corner `corner` (q (D+1) + k) has the coordinates `key`.
template <int D>
WSLOSS_HD bool corner_has_key(const int32_t* remainder, const int8_t* rank, int32_t corner, const int* key) {
  int other[D];
  corner_key<D>(remainder, rank, corner / (D + 1), corner % (D + 1), other);
  bool same = true;
WSLOSS_UNROLL
  for (int i = 0; i < D; ++i) same = same && other[i] == key[i];
  return same;
}

// ---------------------------------------------------------------- build
// Hash slots per image: a power of two >= 2 N (d+1), so a segment is never full.
WSLOSS_HD int64_t table_capacity(int64_t pixels, int d) {
  int64_t capacity = 64;
  while (capacity < 2 * pixels * (d + 1)) capacity *= 2;
  return capacity;
}

// Buffers of one batched build, B images of N pixels, P = B N, D + 1 corners a pixel.
// The hash table has B segments of `capacity` slots (a power of two >= 2 N (D+1): at
// most half full, so every probe ends). A slot holds a packed key (packed layout) and
// the smallest corner (q (D+1) + k) with that key; the wide layout finds a slot's key
// through that corner's remainder point and ranks.
struct BuildBuffers {
  const float* features;   // [B][D][N]
  int64_t batch, pixels;
  int d;
  int64_t capacity;
  int32_t* remainder;      // [P][D+1] remainder-0 points z
  int8_t* rank;            // [P][D+1]
  float* weights;          // [P][D+1] out
  int32_t* vertices;       // [P][D+1] out: a corner's table slot, then its vertex id
  int32_t* coordinate_min; // [B][D] min of z_i over each image's pixels
  int32_t* coordinate_max; // [B][D]
  KeyLayout* layout;
  PackedKey* table_key;    // [B capacity]
  int32_t* table_corner;   // [B capacity]
  int32_t* first;          // [P][D+1] 1 where a corner is the smallest with its key
  int32_t* vertex_id;      // [P][D+1] exclusive scan of first
  int64_t* offsets;        // [B+1] out: first vertex of each image
  int32_t* status;         // [2] vertex count M; 1 if a feature was not finite or too large
};

// Embeds pixel q (DESIGN §1 steps 1-6). Returns false (and a zero simplex) when a feature
// is not finite or too large to embed; z receives the remainder-0 point.
template <int D>
WSLOSS_HD bool embed_step(int64_t q, const BuildBuffers& a, const float* scales, int* z) {
  const float* f = a.features + (q / a.pixels) * D * a.pixels + q % a.pixels;
  bool ok = true;
WSLOSS_UNROLL
  for (int i = 0; i < D; ++i) ok = ok && feature_in_range(f[i * a.pixels]);  // NaN fails too
  int r[D + 2];
  float b[D + 1];
  if (ok) {
    lattice_embed(f, a.pixels, scales, D, z, r, b);
  } else {
    for (int i = 0; i <= D; ++i) z[i] = r[i] = 0, b[i] = 0.0f;
  }
WSLOSS_UNROLL
  for (int i = 0; i <= D; ++i) {
    a.remainder[q * (D + 1) + i] = z[i];
    a.rank[q * (D + 1) + i] = static_cast<int8_t>(r[i]);
    a.weights[q * (D + 1) + i] = b[i];
  }
  return ok;
}

// Inserts corner s with a single atomicCAS of its key: no locks, no duplicates; the
// slot then keeps the smallest corner with that key (atomicMin among equal keys), so
// the vertex numbering does not depend on thread timing.
template <int D>
WSLOSS_HD void insert_step(int64_t s, const BuildBuffers& a) {
  const int64_t q = s / (D + 1), image = q / a.pixels, mask = a.capacity - 1;
  const int32_t corner = static_cast<int32_t>(s);
  int key[D];
  corner_key<D>(a.remainder, a.rank, q, static_cast<int>(s % (D + 1)), key);
  int32_t* corners = a.table_corner + image * a.capacity;
  int64_t h;
  if (a.layout->packed) {
    const PackedKey packed = pack_key<D>(key, a.coordinate_min + image * D, *a.layout);
    PackedKey* keys = a.table_key + image * a.capacity;
    for (h = hash_packed(packed) & mask;; h = (h + 1) & mask) {
      PackedKey held = load_shared_slot(keys + h);
      if (held == kEmptyKey) held = atomic_cas(keys + h, kEmptyKey, packed);
      if (held == kEmptyKey || held == packed) break;
    }
    if (corner < load_shared_slot(corners + h)) atomic_min(corners + h, corner);
  } else {
    for (h = hash_coordinates<D>(key) & mask;; h = (h + 1) & mask) {
      int32_t owner = load_shared_slot(corners + h);
      if (owner == kEmptyCorner) {
        owner = atomic_cas(corners + h, kEmptyCorner, corner);
        if (owner == kEmptyCorner) break;
      }
      // A slot's key never changes: any corner read here has the same key.
      if (corner_has_key<D>(a.remainder, a.rank, owner, key)) {
        if (corner < owner) atomic_min(corners + h, corner);
        break;
      }
    }
  }
  a.vertices[s] = static_cast<int32_t>(image * a.capacity + h);
}

// Slot of `key` in image `image`'s table segment, or -1.
template <int D>
WSLOSS_HD int64_t find_step(const BuildBuffers& a, int64_t image, const int* key) {
  const int64_t mask = a.capacity - 1;
  if (a.layout->packed) {
    const PackedKey packed = pack_key<D>(key, a.coordinate_min + image * D, *a.layout);
    if (packed == kEmptyKey) return -1;
    const PackedKey* keys = a.table_key + image * a.capacity;
    for (int64_t h = hash_packed(packed) & mask;; h = (h + 1) & mask) {
      if (keys[h] == packed) return h;
      if (keys[h] == kEmptyKey) return -1;
    }
  }
  const int32_t* corners = a.table_corner + image * a.capacity;
  for (int64_t h = hash_coordinates<D>(key) & mask;; h = (h + 1) & mask) {
    if (corners[h] == kEmptyCorner) return -1;
    if (corner_has_key<D>(a.remainder, a.rank, corners[h], key)) return h;
  }
}

// first[s] = 1 if corner s is the smallest corner with its key (it opens a vertex).
WSLOSS_HD void first_step(int64_t s, const BuildBuffers& a) {
  a.first[s] = a.table_corner[a.vertices[s]] == s;
}

// After the exclusive scan of `first`: per-image vertex offsets and M (one thread).
WSLOSS_HD void offsets_step(const BuildBuffers& a) {
  const int64_t corners_per_image = a.pixels * (a.d + 1), last = a.batch * corners_per_image - 1;
  for (int64_t b = 0; b < a.batch; ++b) a.offsets[b] = a.vertex_id[b * corners_per_image];
  a.offsets[a.batch] = a.vertex_id[last] + a.first[last];
  a.status[0] = static_cast<int32_t>(a.offsets[a.batch]);
}

// owner[v] = the corner that opened vertex v.
WSLOSS_HD void owner_step(int64_t s, const BuildBuffers& a, int32_t* owner) {
  if (a.first[s]) owner[a.vertex_id[s]] = static_cast<int32_t>(s);
}

// vertices[s]: table slot on entry, vertex id on exit.
WSLOSS_HD void vertex_id_step(int64_t s, const BuildBuffers& a) {
  a.vertices[s] = a.vertex_id[a.table_corner[a.vertices[s]]];
}

// Blur neighbours of vertex v, [v][j][0] = v - e_j, [v][j][1] = v + e_j, where
// e_j = (-1, ..., D at j, ..., -1); a missing neighbour is M (the zero row).
template <int D>
WSLOSS_HD void neighbours_step(int64_t v, const BuildBuffers& a, const int32_t* owner, int64_t num_vertices,
                               int32_t* neighbours) {
  const int32_t o = owner[v];
  const int64_t image = (o / (D + 1)) / a.pixels;
  int key[D], other[D];
  corner_key<D>(a.remainder, a.rank, o / (D + 1), o % (D + 1), key);
  for (int j = 0; j <= D; ++j) {
    for (int sign = 0; sign < 2; ++sign) {
      const int step = sign == 0 ? 1 : -1;
WSLOSS_UNROLL
      for (int i = 0; i < D; ++i) other[i] = key[i] + (i == j ? -D * step : step);
      const int64_t h = find_step<D>(a, image, other);
      neighbours[(v * (D + 1) + j) * 2 + sign] =
          h < 0 ? static_cast<int32_t>(num_vertices) : a.vertex_id[a.table_corner[image * a.capacity + h]];
    }
  }
}

// splat_ptr from the corners sorted by vertex id (every vertex has at least one corner).
WSLOSS_HD void splat_ptr_step(int64_t i, const int32_t* sorted_vertices, int64_t entries, int64_t num_vertices,
                              int32_t* splat_ptr) {
  if (i == 0 || sorted_vertices[i - 1] != sorted_vertices[i]) splat_ptr[sorted_vertices[i]] = static_cast<int32_t>(i);
  if (i == 0) splat_ptr[num_vertices] = static_cast<int32_t>(entries);
}

// ---------------------------------------------------------------- filter
// A built lattice and one filtering: values in [P][C] (pixel-major), out [B][C][N].
template <typename T>
struct FilterBuffers {
  const int32_t* vertices;     // [P][D+1]
  const float* weights;        // [P][D+1]
  const int32_t* neighbours;   // [M][D+1][2]
  const int32_t* splat_ptr;    // [M+1]
  const int32_t* splat_index;  // [P (D+1)]
  int64_t batch, pixels, num_vertices, channels;
  int d;
  const T* in;
  T* out;
  T* lattice_a;  // [M+1][C]; row M stays zero (every missing neighbour)
  T* lattice_b;  // [M+1][C]
  T* carry;      // [chunks][C]
  // The message parts, each optional: out = softmax_groups(add + scale_out * A (scale_in * in)),
  // as the CPU kernel's FilterAffine (the same arithmetic, so the same numbers up to the exp).
  PixelScale<T> scale_in = {}, scale_out = {};
  const T* add = nullptr;   // [B][C][N]
  int64_t softmax_group = 0;
};

// Chunks start at each image's first entry, so an image's sums do not depend on the
// images batched with it (a batch filters bit for bit like its images one by one).
WSLOSS_HD int64_t splat_chunks_per_image(int64_t image_entries) {
  return (image_entries + kSplatChunk - 1) / kSplatChunk;
}
WSLOSS_HD int64_t splat_chunks(int64_t batch, int64_t image_entries) {
  return batch * splat_chunks_per_image(image_entries);
}

// Splat, pass 1 (DESIGN §1 step 8 as a balanced, deterministic segmented sum): thread
// (chunk, ch) sums channel ch over its chunk's sorted entries (at most kSplatChunk)
// vertex by vertex. A vertex whose entries start in this chunk gets its (partial) sum
// written; the entries continuing a vertex from an earlier chunk go to carry[chunk].
template <typename T>
WSLOSS_HD void splat_chunk_step(int64_t chunk, int64_t ch, const FilterBuffers<T>& a) {
  const int d1 = a.d + 1;
  const int64_t image_entries = a.pixels * d1, per_image = splat_chunks_per_image(image_entries);
  const int64_t image = chunk / per_image, image_end = (image + 1) * image_entries;
  const int64_t s0 = image * image_entries + (chunk - image * per_image) * kSplatChunk;
  const int64_t s1 = s0 + kSplatChunk < image_end ? s0 + kSplatChunk : image_end;
  int64_t lo = 0, hi = a.num_vertices - 1;  // the last v with splat_ptr[v] <= s0
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (a.splat_ptr[mid] <= s0) lo = mid; else hi = mid - 1;
  }
  int64_t s = s0;
  for (int64_t v = lo; s < s1; ++v) {
    const int64_t begin = a.splat_ptr[v], end = a.splat_ptr[v + 1] < s1 ? a.splat_ptr[v + 1] : s1;
    T acc = T(0);
    for (; s < end; ++s) {
      const int32_t slot = a.splat_index[s];
      const int64_t q = slot / d1;  // a pixel of `image`: the chunk's entries are the image's
      T value = a.in[q * a.channels + ch];
      if (a.scale_in.data != nullptr) value *= a.scale_in.at(image, q - image * a.pixels);
      acc += static_cast<T>(a.weights[slot]) * value;
    }
    if (begin >= s0) a.lattice_a[v * a.channels + ch] = acc;
    else a.carry[chunk * a.channels + ch] = acc;
  }
}

// Splat, pass 2: add the carries of a vertex's later chunks to its first partial sum,
// in chunk order. A vertex's entries lie in one image.
template <typename T>
WSLOSS_HD void splat_carry_step(int64_t v, int64_t ch, const FilterBuffers<T>& a) {
  const int64_t image_entries = a.pixels * (a.d + 1), per_image = splat_chunks_per_image(image_entries);
  const int64_t begin = a.splat_ptr[v], image = begin / image_entries, base = image * image_entries;
  const int64_t first = image * per_image + (begin - base) / kSplatChunk;
  const int64_t last = image * per_image + (a.splat_ptr[v + 1] - 1 - base) / kSplatChunk;
  if (first == last) return;
  T acc = a.lattice_a[v * a.channels + ch];
  for (int64_t c = first + 1; c <= last; ++c) acc += a.carry[c * a.channels + ch];
  a.lattice_a[v * a.channels + ch] = acc;
}

// Blur along direction j (DESIGN §1 step 9): out = in + (in[v - e_j] + in[v + e_j]) / 2.
template <typename T>
WSLOSS_HD void blur_step(int64_t v, int64_t ch, int j, const FilterBuffers<T>& a, const T* in, T* out) {
  const int32_t* nb = a.neighbours + (v * (a.d + 1) + j) * 2;
  out[v * a.channels + ch] =
      in[v * a.channels + ch] + T(0.5) * (in[nb[0] * a.channels + ch] + in[nb[1] * a.channels + ch]);
}

// Slice (DESIGN §1 step 10) of pixel q, every channel, into channel-planar out, with the
// message parts (scale_out, add, then the softmax of each group, re-reading what the thread
// wrote): the pixel's corners are loaded once, and a warp of consecutive pixels writes coalesced.
template <int D, typename T>
WSLOSS_HD void slice_step(int64_t q, const FilterBuffers<T>& a, const T* lattice, T alpha) {
  int64_t row[D + 1];
  T weight[D + 1];
WSLOSS_UNROLL
  for (int k = 0; k <= D; ++k) {
    row[k] = static_cast<int64_t>(a.vertices[q * (D + 1) + k]) * a.channels;
    weight[k] = static_cast<T>(a.weights[q * (D + 1) + k]);
  }
  const int64_t b = q / a.pixels, p = q % a.pixels, first = b * a.channels * a.pixels + p;
  const T factor = a.scale_out.data != nullptr ? a.scale_out.at(b, p) : T(1);
  T* dst = a.out + first;
  for (int64_t ch = 0; ch < a.channels; ++ch) {
    T acc = T(0);
WSLOSS_UNROLL
    for (int k = 0; k <= D; ++k) acc += weight[k] * lattice[row[k] + ch];
    T value = alpha * acc;
    if (a.scale_out.data != nullptr) value *= factor;
    if (a.add != nullptr) value = a.add[first + ch * a.pixels] + value;
    dst[ch * a.pixels] = value;
  }
  for (int64_t g = 0; a.softmax_group > 0 && g < a.channels; g += a.softmax_group)
    softmax_in_place(dst + g * a.pixels, a.pixels, a.softmax_group);
}

}  // namespace cuda
}  // namespace wsloss
