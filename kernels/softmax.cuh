// Softmax and log-softmax over the last axis (src/ops/softmax.cpp), one warp per row:
//   pass 1 m = max_j x_j, pass 2 s = Σ_j exp(x_j − m), pass 3 the output — the CPU's order of
//   operations (so f32 results agree to an ulp or two), in f32 for bf16 storage too.
//   softmax y = exp(x − m)/s, log_softmax y = x − (m + log s); a row of all −inf gives 0 / −inf.
// Backward: softmax dx = y∘(g − Σ g∘y); log_softmax dx = g − exp(y)·Σ g.
// Rows are re-read from global memory per pass (L1/L2 hits for the row widths this sees).
#pragma once
#include "kernels/common.cuh"

namespace attn::kern {

template <class T>
__global__ void softmax_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows,
                                       int64_t n, bool log_form) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = grid_threads() >> 5;
  for (int64_t r = global_thread() >> 5; r < rows; r += warps) {  // warp-uniform loop
    const T* xr = x + r * n;
    T* yr = y + r * n;
    float m = -CUDART_INF_F;
    for (int64_t k = lane; k < n; k += 32) m = fmaxf(m, to_f32(xr[k]));
    m = warp_max(m);
    if (m == -CUDART_INF_F) {  // every entry masked
      const T fill = from_f32<T>(log_form ? -CUDART_INF_F : 0.f);
      for (int64_t k = lane; k < n; k += 32) yr[k] = fill;
      continue;
    }
    float s = 0.f;
    for (int64_t k = lane; k < n; k += 32) s += expf(to_f32(xr[k]) - m);
    s = warp_sum(s);
    if (log_form) {
      const float lse = m + logf(s);
      for (int64_t k = lane; k < n; k += 32) yr[k] = from_f32<T>(to_f32(xr[k]) - lse);
    } else {
      const float inv = 1.f / s;
      for (int64_t k = lane; k < n; k += 32) yr[k] = from_f32<T>(expf(to_f32(xr[k]) - m) * inv);
    }
  }
}

template <class T>
__global__ void softmax_backward_kernel(const T* __restrict__ y, const T* __restrict__ g,
                                        T* __restrict__ dx, int64_t rows, int64_t n, bool log_form) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = grid_threads() >> 5;
  for (int64_t r = global_thread() >> 5; r < rows; r += warps) {
    const T *yr = y + r * n, *gr = g + r * n;
    T* dr = dx + r * n;
    float dot = 0.f;
    if (log_form) {
      for (int64_t k = lane; k < n; k += 32) dot += to_f32(gr[k]);
    } else {
      for (int64_t k = lane; k < n; k += 32) dot += to_f32(gr[k]) * to_f32(yr[k]);
    }
    dot = warp_sum(dot);
    if (log_form) {
      for (int64_t k = lane; k < n; k += 32)
        dr[k] = from_f32<T>(to_f32(gr[k]) - expf(to_f32(yr[k])) * dot);
    } else {
      for (int64_t k = lane; k < n; k += 32) {
        const float yk = to_f32(yr[k]);
        dr[k] = from_f32<T>(yk * (to_f32(gr[k]) - dot));
      }
    }
  }
}

}  // namespace attn::kern
