// Fused AdamW on f32 master weights (src/optim/adamw.cpp, torch.optim.AdamW), one pass over
// p, m, v and g with the CPU's operation order and f32-rounded scalars:
//   p ← p·decay;  m ← m·β₁ + (1−β₁)·g;  v ← v·β₂ + (1−β₂)·g·g;
//   p ← p + neg_step · m / (√v / bc2 + ε)
// and, when the parameter has a bf16 working copy (mixed precision, ops/cast.cpp), w ← bf16(p)
// in the same pass: the next forward reads w without a conversion of its own.
// and the pieces of global-norm clipping (src/optim/clip.cpp): Σ g² in f64 (per-block partial
// sums, then one block folds every partial in a fixed order), and g ← g·c.
#pragma once
#include "kernels/common.cuh"

namespace attn::kern {

struct AdamWCoeffs {
  float decay, b1, b2, omb1, omb2, bc2, eps, neg_step;
};

template <class G>
__global__ void adamw_kernel(float* __restrict__ p, float* __restrict__ m, float* __restrict__ v,
                             const G* __restrict__ g, attn::bf16* __restrict__ w, int64_t n,
                             AdamWCoeffs c) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const float gi = to_f32(g[i]);
    float pi = p[i] * c.decay;
    const float mi = m[i] * c.b1 + c.omb1 * gi;
    const float vi = v[i] * c.b2 + c.omb2 * gi * gi;
    const float denom = sqrtf(vi) / c.bc2 + c.eps;
    pi = pi + c.neg_step * (mi / denom);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
    if (w) w[i] = from_f32<attn::bf16>(pi);
  }
}

// partial[blockIdx.x] = Σ over this block's grid-stride share of (f64) g².
template <class T>
__global__ void sumsq_kernel(const T* __restrict__ g, int64_t n, double* __restrict__ partial) {
  __shared__ double scratch[32];
  double acc = 0;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const double v = to_f32(g[i]);
    acc += v * v;
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// out[0] = Σ in[0..n) in f64; one block.
__global__ void sum_doubles_kernel(const double* __restrict__ in, int64_t n, double* __restrict__ out) {
  __shared__ double scratch[32];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += in[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) out[0] = acc;
}

template <class T>
__global__ void scale_kernel(T* __restrict__ g, int64_t n, float c) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) g[i] = from_f32<T>(to_f32(g[i]) * c);
}

}  // namespace attn::kern
