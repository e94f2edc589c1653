// What nvcc compiled the CUDA kernels for; defined in build_info.cu, read by ops.cpp.
#pragma once

namespace wsloss {
namespace cuda {

// The architectures of this build as nvcc lists them, e.g. "800,900".
const char* compiled_architectures();
// CUDART_VERSION of the toolkit, e.g. 13000 for 13.0.
int compiled_runtime_version();

}  // namespace cuda
}  // namespace wsloss
