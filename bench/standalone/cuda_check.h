// CK(call): a CUDA runtime call in the standalone measurement tools (dense_check, the reference
// probe); on failure prints the error, file, line and call, and exits with status 2.
#pragma once
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#define CK(x)                                                                                            \
  do {                                                                                                   \
    cudaError_t e_ = (x);                                                                                \
    if (e_ != cudaSuccess) {                                                                             \
      fprintf(stderr, "CUDA error %s (%s) at %s:%d: %s\n", cudaGetErrorName(e_), cudaGetErrorString(e_), \
              __FILE__, __LINE__, #x);                                                                   \
      exit(2);                                                                                           \
    }                                                                                                    \
  } while (0)
