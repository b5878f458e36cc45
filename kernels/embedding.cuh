// Embedding (src/ops/embedding.cpp): out[i, :] = weight[ids[i], :]; the backward scatter-adds
//   dweight[v, :] = Σ_{i: ids[i] = v} g[i, :]
// with f32 atomicAdd (a repeated id is summed in whatever order the atomics land: the result
// can differ from the CPU's sequential sum by rounding, and run to run). bf16 gradients are
// accumulated in an f32 buffer and rounded once. Ids are validated on the host by the op.
#pragma once
#include "kernels/common.cuh"

namespace attn::kern {

// W: a same-size stand-in for the element type (the gather copies bits).
template <class W>
__global__ void embedding_gather_kernel(const W* __restrict__ weight, const void* __restrict__ ids,
                                        bool ids_i64, int64_t n, int64_t D, W* __restrict__ out) {
  const int64_t total = n * D;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t i = idx / D, j = idx - i * D;
    out[idx] = weight[load_id(ids, ids_i64, i) * D + j];
  }
}

// dw (zeroed f32 [V, D]) += g rows at their ids.
template <class T>
__global__ void embedding_scatter_kernel(const T* __restrict__ g, const void* __restrict__ ids,
                                         bool ids_i64, int64_t n, int64_t D, float* __restrict__ dw) {
  const int64_t total = n * D;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t i = idx / D, j = idx - i * D;
    atomicAdd(dw + load_id(ids, ids_i64, i) * D + j, to_f32(g[idx]));
  }
}

}  // namespace attn::kern
