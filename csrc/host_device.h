// Qualifiers for functions that run on the host and, under nvcc, on the device.
#pragma once

#if defined(__CUDACC__)
#define WSLOSS_HD __host__ __device__ __forceinline__
#define WSLOSS_UNROLL _Pragma("unroll")
#else
#define WSLOSS_HD inline
#define WSLOSS_UNROLL
#endif
