// Fused softmax-cross-entropy with an ignore index (src/ops/loss.cpp):
//   loss = (1/V) Σ_{valid r} (lse_r − x[r, t_r]),  V = number of rows with t_r != ignore
//   dx[r, :] = g/V · (exp(x[r, :] − lse_r) − onehot(t_r)) for valid rows, 0 for ignored ones.
// Forward: one warp per row reads the logits once, keeping per lane an online (max m, sum s)
// pair: a new maximum v rescales s ← s·e^(m−v) + 1, anything else adds e^(v−m); the lanes merge
// their pairs by a butterfly (s = s₁e^(m₁−m) + s₂e^(m₂−m), m = max). lse_r = m + log s is kept
// (f32 [N]) for the backward, with the row's loss; one block then sums the rows' losses in f64
// in a fixed order (the CPU sums in f64 too) and divides by V.
// Backward: one pass writes dx straight from x and lse_r: the probabilities are never stored.
#pragma once
#include "kernels/common.cuh"

namespace attn::kern {

// Folds (m2, s2) into (m, s). A lane that saw only −inf has (−inf, 0) (or s = NaN after a NaN):
// its part is 0 (NaN stays NaN), never e^(−inf − (−inf)) = NaN from a legitimate row.
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
  const float nm = fmaxf(m, m2);
  const float a = (m == -CUDART_INF_F && s == 0.f) ? 0.f : s * expf(m - nm);
  const float b = (m2 == -CUDART_INF_F && s2 == 0.f) ? 0.f : s2 * expf(m2 - nm);
  m = nm;
  s = a + b;
}

template <class T>
__global__ void ce_forward_kernel(const T* __restrict__ x, const void* __restrict__ targets,
                                  bool targets_i64, int64_t ignore_index, int64_t N, int64_t C,
                                  float* __restrict__ lse, float* __restrict__ row_loss) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = grid_threads() >> 5;
  for (int64_t r = global_thread() >> 5; r < N; r += warps) {  // warp-uniform loop
    const T* xr = x + r * C;
    float m = -CUDART_INF_F, s = 0.f;
    for (int64_t c = lane; c < C; c += 32) {
      const float v = to_f32(xr[c]);
      if (v > m) {
        s = s * expf(m - v) + 1.f;  // m = −inf: s·0 + 1
        m = v;
      } else if (m != -CUDART_INF_F || isnan(v)) {
        s += expf(v - m);  // skips only −inf while m is still −inf; NaN propagates
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      const float m2 = __shfl_xor_sync(kFullMask, m, off);
      const float s2 = __shfl_xor_sync(kFullMask, s, off);
      lse_merge(m, s, m2, s2);
    }
    if (lane == 0) {
      const float l = m + logf(s);
      const int64_t t = load_id(targets, targets_i64, r);
      lse[r] = l;
      row_loss[r] = t == ignore_index ? 0.f : l - to_f32(xr[t]);
    }
  }
}

// loss = valid ? Σ_r row_loss[r] / valid : 0, the sum in f64. One block of 1024 threads.
template <class T>
__global__ void ce_finish_kernel(const float* __restrict__ row_loss, int64_t N, int64_t valid,
                                 T* __restrict__ loss) {
  __shared__ double scratch[32];
  double acc = 0;
  for (int64_t r = threadIdx.x; r < N; r += blockDim.x) acc += static_cast<double>(row_loss[r]);
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0)
    loss[0] = from_f32<T>(valid ? static_cast<float>(acc / static_cast<double>(valid)) : 0.f);
}

// Grid (rows, column chunks); scale = g/V in f32 as the CPU (g / float(V)).
template <class T>
__global__ void ce_backward_kernel(const T* __restrict__ x, const float* __restrict__ lse,
                                   const void* __restrict__ targets, bool targets_i64,
                                   int64_t ignore_index, int64_t N, int64_t C, float valid,
                                   const T* __restrict__ g, T* __restrict__ dx) {
  const float g0 = to_f32(g[0]);
  for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {  // block-uniform loop
    const int64_t t = load_id(targets, targets_i64, r);
    const bool row_valid = t != ignore_index;
    const float sc = row_valid ? g0 / valid : 0.f;
    const float l = lse[r];
    const T* xr = x + r * C;
    T* dr = dx + r * C;
    for (int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; c < C;
         c += static_cast<int64_t>(gridDim.y) * blockDim.x) {
      float d = row_valid ? sc * expf(to_f32(xr[c]) - l) : 0.f;
      if (row_valid && c == t) d -= sc;
      dr[c] = from_f32<T>(d);
    }
  }
}

}  // namespace attn::kern
