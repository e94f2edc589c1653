// Helpers shared by the lattice tests: a serial parallel_for and the CPU lattice
// (build and filter) as vectors.
#pragma once

#include <cstdio>
#include <vector>

#include "cpu/lattice_cpu.h"
#include "cpu/lattice_filter_cpu.h"
#include "cpu/parallel_for.h"
#include "lattice_math.h"
#include "test_check.h"

namespace {

using Serial = wsloss::cpu::SerialFor;
using wsloss::cpu::LatticeBuilder;
using wsloss::cpu::LatticeView;

struct Built {
  std::vector<int32_t> vertices, neighbours, splat_ptr, splat_index;
  std::vector<float> weights;
  std::vector<int64_t> offsets;
  LatticeView view(int64_t batch, int64_t pixels, int d) const {
    return {vertices.data(), weights.data(), neighbours.data(), splat_ptr.data(), splat_index.data(),
            batch, pixels, static_cast<int64_t>(offsets.back()), d};
  }
};

template <class PF>
Built build(const std::vector<float>& features, int64_t batch, int d, int64_t pixels, PF pf, int64_t threads = 1) {
  Built out;
  out.vertices.resize(batch * pixels * (d + 1));
  out.weights.resize(batch * pixels * (d + 1));
  LatticeBuilder builder(features.data(), batch, d, pixels, out.vertices.data(), out.weights.data());
  CHECK(builder.embed_and_hash(pf, threads));
  out.offsets = builder.offsets();
  const int64_t m = out.offsets.back();
  out.neighbours.resize(m * (d + 1) * 2);
  out.splat_ptr.resize(m + 1);
  out.splat_index.resize(batch * pixels * (d + 1));
  builder.finish(out.neighbours.data(), out.splat_ptr.data(), out.splat_index.data(), pf);
  return out;
}

std::vector<double> filter(const Built& lat, int64_t batch, int64_t pixels, int d,
                           const std::vector<double>& in, int64_t channels, bool transpose, bool scatter,
                           const wsloss::cpu::FilterAffine<double>& affine = {}) {
  const int64_t m = lat.offsets.back();
  const int64_t lanes = wsloss::cpu::padded_channels(channels);
  std::vector<double> out(in.size()), a((m + 1) * lanes), b((m + 1) * lanes), pixel_major(batch * pixels * lanes);
  wsloss::cpu::lattice_filter<double>(lat.view(batch, pixels, d), in.data(), out.data(), channels, 0,
                                      channels, transpose, a.data(), b.data(),
                                      scatter ? nullptr : pixel_major.data(), Serial{}, affine);
  return out;
}

}  // namespace
