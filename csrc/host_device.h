// Qualifiers for functions that run on the host and, under nvcc, on the device.
#pragma once

#if defined(__CUDACC__)
#define WSLOSS_HD __host__ __device__ __forceinline__
#define WSLOSS_UNROLL _Pragma("unroll")
#define WSLOSS_ROLLED _Pragma("unroll 1")
#else
#define WSLOSS_HD inline
#define WSLOSS_UNROLL
#define WSLOSS_ROLLED
#endif
