// Error checking for every CUDA runtime call, with file and line.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#define ATTNLAB_CUDA_CHECK(expr)                                                             \
  do {                                                                                       \
    cudaError_t err_ = (expr);                                                               \
    if (err_ != cudaSuccess)                                                                 \
      throw std::runtime_error(std::string("CUDA error at ") + __FILE__ + ":" +             \
                               std::to_string(__LINE__) + ": " + #expr + ": " +              \
                               cudaGetErrorString(err_));                                    \
  } while (0)
