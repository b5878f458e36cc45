// Dropout with the counter-based Philox generator of tensor/philox.h: element i is kept when
// philox_uniform(offset + i, seed) >= p, exactly the CPU's test (src/ops/dropout.cpp), so a mask
// is the same on every device and in any thread layout. The backward is the same kernel on g.
#pragma once
#include "kernels/common.cuh"
#include "tensor/philox.h"

namespace attn::kern {

// y_i = keep_i ? x_i·scale : 0, scale = f32(1 / (1 − p)) (the CPU's static_cast<float>).
template <class T>
__global__ void dropout_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, float p,
                               float scale, uint64_t seed, uint64_t offset) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const bool keep = philox_uniform(offset + static_cast<uint64_t>(i), seed) >= p;
    y[i] = from_f32<T>(keep ? to_f32(x[i]) * scale : 0.f);
  }
}

}  // namespace attn::kern
