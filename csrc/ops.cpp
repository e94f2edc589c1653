// Operator schemas of wsloss; kernels register per dispatch key in cpu/ and cuda/.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// The extension is loaded as a Python module only so that its static
// initializers register the ops; it defines no Python functions.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(wsloss, m) {
  // features [B, d, N] float32 -> offsets [B+1] int64, vertices [B, N, d+1] int32,
  // weights [B, N, d+1] float32, neighbours [M, d+1, 2] int32, splat_ptr [M+1] int32,
  // splat_index [B N (d+1)] int32.
  m.def(
      "lattice_build(Tensor features) -> (Tensor offsets, Tensor vertices, Tensor weights, "
      "Tensor neighbours, Tensor splat_ptr, Tensor splat_index)");
  // values [B, C, N] float32/float64 -> A values (transpose: A^T values), [B, C, N].
  m.def(
      "lattice_filter(Tensor vertices, Tensor weights, Tensor neighbours, Tensor splat_ptr, "
      "Tensor splat_index, Tensor values, bool transpose=False) -> Tensor");
  // The same filtering into the caller's out ([B, C, N], contiguous, values' dtype), with a
  // 1-D workspace of values' dtype that it grows when too small. CPU only: it lets a loop
  // (dense CRF inference) reuse its memory, where fresh pages are expensive; CUDA's caching
  // allocator already gives lattice_filter that.
  m.def(
      "lattice_filter_into(Tensor vertices, Tensor weights, Tensor neighbours, Tensor splat_ptr, "
      "Tensor splat_index, Tensor values, bool transpose, Tensor(a!) out, Tensor(b!) workspace) -> ()");
  // EM-Adapt (SPEC 4): logits [B, K, N] float32/float64, present [B, K] bool, order [B, K]
  // int64 (visiting order) -> labels [B, N] int64, biases [B, K] (the logits' dtype).
  m.def(
      "em_adapt(Tensor logits, Tensor present, Tensor order, float bg_portion, float fg_portion, "
      "bool suppress_absent, float margin) -> (Tensor labels, Tensor biases)");
  // Sparse grid CRF (SPEC 3): segmentations [B, K, H, W] float32/float64, images [B, C, H, W]
  // and rois [B, H, W] of the same dtype -> the energy of the pairs (p, p + o_e) starting at
  // each pixel, [B, H, W] (directions o_e: right, down; with neighbourhood 8 also down-right,
  // down-left; weights roi_p roi_q exp(-|I_p - I_q|^2 / (2 sigma^2)) / |o_e|).
  m.def(
      "grid_crf(Tensor segmentations, Tensor images, Tensor rois, float sigma, int neighbourhood, "
      "bool bilinear) -> Tensor");
  // d(sum grad_energy * energy) / d segmentations, [B, K, H, W].
  m.def(
      "grid_crf_backward(Tensor grad_energy, Tensor segmentations, Tensor images, Tensor rois, float sigma, "
      "int neighbourhood, bool bilinear) -> Tensor");
}
