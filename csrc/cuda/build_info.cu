#include "build_info.h"

#include <cuda_runtime_api.h>

// __CUDA_ARCH_LIST__ holds commas, hence the variadic stringification.
#define WSLOSS_STRING(...) #__VA_ARGS__
#define WSLOSS_EXPANDED_STRING(...) WSLOSS_STRING(__VA_ARGS__)

namespace wsloss {
namespace cuda {

const char* compiled_architectures() { return WSLOSS_EXPANDED_STRING(__CUDA_ARCH_LIST__); }

int compiled_runtime_version() { return CUDART_VERSION; }

}  // namespace cuda
}  // namespace wsloss
