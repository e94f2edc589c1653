// Operator schemas of wsloss; kernels register per dispatch key in cpu/ and cuda/.
#include <Python.h>
#include <torch/library.h>
#include <torch/version.h>

#ifdef WSLOSS_WITH_CUDA
#include "cuda/build_info.h"
#endif

#define WSLOSS_STRING(x) #x
#define WSLOSS_VERSION_STRING(major, minor, patch) WSLOSS_STRING(major) "." WSLOSS_STRING(minor) "." WSLOSS_STRING(patch)
#if defined(__clang__)
#define WSLOSS_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define WSLOSS_COMPILER "gcc " __VERSION__
#else
#define WSLOSS_COMPILER "unknown compiler"
#endif

namespace wsloss {
namespace cpu {
bool filter_uses_avx2();  // cpu/lattice_cpu_ops.cpp
}  // namespace cpu
}  // namespace wsloss

namespace {

// How this binary was built, and which build of the CPU filter runs here, for
// wsloss.show_config(): a dict of str and int.
PyObject* build_info(PyObject*, PyObject*) {
#ifdef WSLOSS_WITH_CUDA
  const char* archs = wsloss::cuda::compiled_architectures();
  const int cuda_runtime = wsloss::cuda::compiled_runtime_version();
#else
  const char* archs = "";
  const int cuda_runtime = 0;
#endif
#ifdef _OPENMP
  const int openmp = 1;
#else
  const int openmp = 0;
#endif
  return Py_BuildValue(
      "{s:s,s:s,s:i,s:i,s:s,s:s}", "torch",
      WSLOSS_VERSION_STRING(TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, TORCH_VERSION_PATCH), "compiler",
      WSLOSS_COMPILER, "openmp", openmp, "cuda_runtime", cuda_runtime, "cuda_archs", archs, "cpu_filter",
      wsloss::cpu::filter_uses_avx2() ? "avx2" : "baseline");
}

PyMethodDef methods[] = {
    {"build_info", build_info, METH_NOARGS,
     "How this binary was built and runs (torch, compiler, OpenMP, CUDA, the CPU filter's instruction set)."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

extern "C" {
// Loading the extension as a Python module runs its static initializers, which register the
// ops; its one Python function reports the build (plain C API: py_limited_api, no pybind11).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(wsloss, m) {
  // features [B, d, N] float32 -> offsets [B+1] int64, vertices [B, N, d+1] int32,
  // weights [B, N, d+1] float32, neighbours [M, d+1, 2] int32, splat_ptr [M+1] int32,
  // splat_index [B N (d+1)] int32; splat_csr=False (CPU only): splat_ptr and splat_index empty,
  // for lattices whose filterings all scatter (DESIGN §5).
  m.def(
      "lattice_build(Tensor features, bool splat_csr=True) -> (Tensor offsets, Tensor vertices, Tensor weights, "
      "Tensor neighbours, Tensor splat_ptr, Tensor splat_index)");
  // values [B, C, N] float32/float64 -> A values (transpose: A^T values), [B, C, N]. validate
  // checks the lattice tensors' indices and consistency first (one host sync, check_lattice_tensors);
  // PermutohedralLattice, whose tensors come straight from lattice_build, passes false.
  // Optionally scale_out * A (scale_in * values) (scales [B or 1, 1, N or 1]) in the filtering's
  // own passes: a dense loss's ROI mask at scale 1 (R A (R S)) without a masked copy of S.
  m.def(
      "lattice_filter(Tensor vertices, Tensor weights, Tensor neighbours, Tensor splat_ptr, "
      "Tensor splat_index, Tensor values, bool transpose=False, bool validate=True, Tensor? scale_in=None, "
      "Tensor? scale_out=None) -> Tensor");
  // The same filtering into the caller's out ([B, C, N], contiguous, values' dtype), with a
  // 1-D workspace of values' dtype that it grows when too small: a loop (dense CRF inference)
  // reuses its memory, where fresh pages are expensive (CPU). CPU and CUDA kernels, so that
  // no caller branches on the device; PermutohedralLattice.apply(out=...) keeps the workspace.
  // Optionally out = add + scale_out * A (scale_in * values) (scales [B or 1, 1, N or 1], add
  // [B, C, N]), then, softmax_group > 0 (a divisor of C), the softmax of each pixel's
  // consecutive groups of that many channels: a whole mean-field update in the filtering's own
  // passes (dense CRF inference).
  m.def(
      "lattice_filter_into(Tensor vertices, Tensor weights, Tensor neighbours, Tensor splat_ptr, "
      "Tensor splat_index, Tensor values, bool transpose, Tensor(a!) out, Tensor(b!) workspace, "
      "bool validate=True, Tensor? scale_in=None, Tensor? scale_out=None, Tensor? add=None, "
      "int softmax_group=0) -> ()");
  // EM-Adapt (docs/DESIGN.md §4): logits [B, K, N] float32/float64, present [B, K] bool, order [B, K]
  // int64 (visiting order) -> labels [B, N] int64, biases [B, K] (the logits' dtype).
  m.def(
      "em_adapt(Tensor logits, Tensor present, Tensor order, float bg_portion, float fg_portion, "
      "bool suppress_absent, float margin) -> (Tensor labels, Tensor biases)");
  // Sparse grid CRF (DESIGN §3): segmentations [B, K, H, W] (images) or [B, K, D, H, W] (volumes)
  // float32/float64, images [B, C, (D,) H, W] and rois [B, (D,) H, W] of the same dtype -> the
  // energy of the pairs (p, p + o_e) starting at each voxel, [B, (D,) H, W]; o_e the half
  // neighbourhood of neighbourhood 4 or 8 (images), 6, 18 or 26 (volumes), weights
  // roi_p roi_q exp(-|I_p - I_q|^2 / (2 sigma^2)) / dist(o_e) with dist measured in spacing
  // ((sy, sx) or (sz, sy, sx); None: 1 per axis).
  m.def(
      "grid_crf(Tensor segmentations, Tensor images, Tensor rois, float sigma, int neighbourhood, "
      "bool bilinear, float[]? spacing=None) -> Tensor");
  // d(sum grad_energy * energy) / d segmentations, like the segmentations.
  m.def(
      "grid_crf_backward(Tensor grad_energy, Tensor segmentations, Tensor images, Tensor rois, float sigma, "
      "int neighbourhood, bool bilinear, float[]? spacing=None) -> Tensor");
  // The dense losses' resampling of S (DESIGN §2): values [B, C, H, W] or [B, C, D, H, W]
  // float32/float64 downscaled as F.interpolate(mode="bilinear"/"trilinear", align_corners=False,
  // scale_factor) computes it (one factor per spatial axis, each in (0, 1]), times rois
  // [B, <downscaled size>] if given, in one pass.
  m.def("resample_down(Tensor values, Tensor? rois, float[] scale_factor) -> Tensor");
  // Its adjoint, of the masked downscale, times channel_weights [B, C] if given: grad
  // [B, C, <downscaled size>] -> [B, C, <input_size>], one gather pass that writes each element
  // once (deterministic on every device).
  m.def("resample_down_backward(Tensor grad, Tensor? rois, Tensor? channel_weights, int[] input_size, "
        "float[] scale_factor) -> Tensor");
  // The dense losses' reductions: a [B, K, N], b [B, K or 1, N] float32/float64 -> [B, K] float64,
  // sum_n a[b, k, n] b[b, k or 0, n] with every product and sum in float64.
  m.def("row_dot(Tensor a, Tensor b) -> Tensor");
}
