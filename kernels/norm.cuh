// Fused layer_norm / rms_norm over the last axis (src/ops/norm.cpp), statistics in f32:
//   x̂ = (x − μ)·r, r = 1/sqrt(var + eps), y = x̂∘w + b      (rms: μ = 0, var = mean(x²), no b)
//   dx = r·(ĝ − mean(ĝ) − x̂·mean(ĝ∘x̂)), ĝ = g∘w          (rms: no mean(ĝ) term)
//   dw = Σ_rows g∘x̂,  db = Σ_rows g
// Forward and dx: one warp per row (the CPU's two-pass mean/variance and operation order);
// μ and r are saved per row and x̂ is recomputed in the backward (no x̂ tensor is kept).
// dw, db: 32 × 8 blocks over (32 columns, a chunk of rows) write f32 partial sums
// [splits, D], which reduce.cuh's sum_cols_kernel folds (fixed order: deterministic).
#pragma once
#include "kernels/common.cuh"
#include "kernels/reduce.cuh"

namespace attn::kern {

template <class T>
__global__ void norm_forward_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                    const T* __restrict__ b, T* __restrict__ y,
                                    float* __restrict__ mean, float* __restrict__ rstd,
                                    int64_t rows, int64_t D, float eps, bool center) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = grid_threads() >> 5;
  const float Df = static_cast<float>(D);
  for (int64_t r = global_thread() >> 5; r < rows; r += warps) {  // warp-uniform loop
    const T* xr = x + r * D;
    T* yr = y + r * D;
    float mu = 0.f;
    if (center) {
      float s = 0.f;
      for (int64_t k = lane; k < D; k += 32) s += to_f32(xr[k]);
      mu = warp_sum(s) / Df;
    }
    float ss = 0.f;
    for (int64_t k = lane; k < D; k += 32) {
      const float d = to_f32(xr[k]) - mu;
      ss += d * d;
    }
    ss = warp_sum(ss);
    const float rs = 1.f / sqrtf(ss / Df + eps);
    for (int64_t k = lane; k < D; k += 32) {
      const float h = (to_f32(xr[k]) - mu) * rs;
      yr[k] = from_f32<T>(h * to_f32(w[k]) + (b ? to_f32(b[k]) : 0.f));
    }
    if (lane == 0) {
      mean[r] = mu;
      rstd[r] = rs;
    }
  }
}

template <class T>
__global__ void norm_backward_dx_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                        const T* __restrict__ w, const float* __restrict__ mean,
                                        const float* __restrict__ rstd, T* __restrict__ dx,
                                        int64_t rows, int64_t D, bool center) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = grid_threads() >> 5;
  const float Df = static_cast<float>(D);
  for (int64_t r = global_thread() >> 5; r < rows; r += warps) {
    const T *gr = g + r * D, *xr = x + r * D;
    T* dr = dx + r * D;
    const float mu = mean[r], rs = rstd[r];
    float sg = 0.f, sgh = 0.f;
    for (int64_t k = lane; k < D; k += 32) {
      const float gw = to_f32(gr[k]) * to_f32(w[k]);
      const float h = (to_f32(xr[k]) - mu) * rs;
      sg += gw;
      sgh += gw * h;
    }
    sg = warp_sum(sg);
    sgh = warp_sum(sgh);
    const float mean_g = center ? sg / Df : 0.f, mean_gh = sgh / Df;
    for (int64_t k = lane; k < D; k += 32) {
      const float gw = to_f32(gr[k]) * to_f32(w[k]);
      const float h = (to_f32(xr[k]) - mu) * rs;
      dr[k] = from_f32<T>(rs * (gw - mean_g - h * mean_gh));
    }
  }
}

// Partial parameter gradients: dw_part[s, j] = Σ_{r in chunk s} g[r, j]·x̂[r, j], db_part likewise
// with g (db_part may be null). Block (32, 8); grid (⌈D/32⌉, splits).
template <class T>
__global__ void norm_param_grad_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                       const float* __restrict__ mean,
                                       const float* __restrict__ rstd, float* __restrict__ dw_part,
                                       float* __restrict__ db_part, int64_t rows, int64_t D,
                                       int64_t chunk) {
  __shared__ float fw[kColsY][kColsX + 1], fb[kColsY][kColsX + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kColsX + tx;
  const int64_t s = blockIdx.y, r0 = s * chunk, r1 = min(rows, r0 + chunk);
  float aw = 0.f, ab = 0.f;
  if (j < D) {
    for (int64_t r = r0 + ty; r < r1; r += kColsY) {
      const float gv = to_f32(g[r * D + j]);
      aw += gv * ((to_f32(x[r * D + j]) - mean[r]) * rstd[r]);
      ab += gv;
    }
  }
  fw[ty][tx] = aw;
  fb[ty][tx] = ab;
  __syncthreads();
  if (ty == 0 && j < D) {
    float tw = 0.f, tb = 0.f;
#pragma unroll
    for (int k = 0; k < kColsY; ++k) {
      tw += fw[k][tx];
      tb += fb[k][tx];
    }
    dw_part[s * D + j] = tw;
    if (db_part) db_part[s * D + j] = tb;
  }
}

}  // namespace attn::kern
