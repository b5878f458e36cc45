// Reductions over one axis of x seen as [outer, n, inner] (src/ops/reduce.cpp):
//   sum / mean  y[o, i] = scale·Σ_k x[o, k, i]         backward dx[o, k, i] = scale·g[o, i]
//   max         y[o, i] = x[o, k*, i], k* the first maximal k      backward: g at k*, 0 elsewhere
// Sums accumulate in f32 in a fixed order (deterministic). Two layouts:
//   inner == 1 (the last axis): one warp per (row, split) task, lanes stride over the row;
//   inner  > 1: 32 × 8 blocks, x over inner (coalesced), y over k, a shared-memory fold over y.
// When there are too few tasks to fill the GPU, the axis is split: pass 1 writes f32 partial
// sums [outer, splits, inner], pass 2 (the same kernel on f32 input) folds the splits.
#pragma once
#include "kernels/common.cuh"

namespace attn::kern {

constexpr int kColsX = 32, kColsY = 8;

// y[r·splits + s] = scale·Σ_{k in split s} x[r, k]; warp per task, blockDim.x a multiple of 32.
template <class In, class Out>
__global__ void sum_rows_kernel(const In* __restrict__ x, Out* __restrict__ y, int64_t rows,
                                int64_t n, int64_t chunk, int64_t splits, float scale) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = grid_threads() >> 5;
  const int64_t tasks = rows * splits;
  for (int64_t t = global_thread() >> 5; t < tasks; t += warps) {  // warp-uniform loop
    const int64_t r = t / splits, s = t % splits;
    const int64_t k0 = s * chunk, k1 = min(n, k0 + chunk);
    const In* xr = x + r * n;
    float acc = 0.f;
    for (int64_t k = k0 + lane; k < k1; k += 32) acc += to_f32(xr[k]);
    acc = warp_sum(acc);
    if (lane == 0) y[t] = from_f32<Out>(acc * scale);
  }
}

// y[(o·splits + s)·inner + i] = scale·Σ_{k in split s} x[(o·n + k)·inner + i].
// Block (32, 8); grid (⌈inner/32⌉, min(outer, 65535), splits).
template <class In, class Out>
__global__ void sum_cols_kernel(const In* __restrict__ x, Out* __restrict__ y, int64_t outer,
                                int64_t n, int64_t inner, int64_t chunk, int64_t splits,
                                float scale) {
  __shared__ float fold[kColsY][kColsX + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kColsX + tx;
  const int64_t s = blockIdx.z;
  const int64_t k0 = s * chunk, k1 = min(n, k0 + chunk);
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {  // block-uniform loop
    float acc = 0.f;
    if (i < inner)
      for (int64_t k = k0 + ty; k < k1; k += kColsY) acc += to_f32(x[(o * n + k) * inner + i]);
    fold[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && i < inner) {
      float total = 0.f;
#pragma unroll
      for (int j = 0; j < kColsY; ++j) total += fold[j][tx];
      y[(o * splits + s) * inner + i] = from_f32<Out>(total * scale);
    }
    __syncthreads();  // fold is rewritten by the next o
  }
}

// dx[o, k, i] = scale·g[o, i]
template <class T>
__global__ void broadcast_axis_kernel(const T* __restrict__ g, T* __restrict__ dx, int64_t outer,
                                      int64_t n, int64_t inner, float scale) {
  const int64_t total = outer * n * inner;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t o = idx / (n * inner), i = idx % inner;
    dx[idx] = from_f32<T>(scale * to_f32(g[o * inner + i]));
  }
}

// Max over the last axis, warp per row. The CPU keeps index 0 and replaces it by any later
// element strictly greater; NaN is never greater, so: NaN at index 0 -> 0, else the first
// maximum over the non-NaN entries. Lanes keep their first maximum (a lane's k increases), and
// the butterfly keeps the larger value, the smaller index on ties: a total order, so every lane
// ends with the same answer.
template <class T>
__global__ void max_rows_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t* __restrict__ arg,
                                int64_t rows, int64_t n) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = grid_threads() >> 5;
  for (int64_t r = global_thread() >> 5; r < rows; r += warps) {
    const T* xr = x + r * n;
    float bv = 0.f;
    long long bi = -1;
    for (int64_t k = lane; k < n; k += 32) {
      const float v = to_f32(xr[k]);
      if (!isnan(v) && (bi < 0 || v > bv)) {
        bv = v;
        bi = k;
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      const float ov = __shfl_xor_sync(kFullMask, bv, off);
      const long long oi = __shfl_xor_sync(kFullMask, bi, off);
      if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
        bv = ov;
        bi = oi;
      }
    }
    if (lane == 0) {
      const int64_t best = (bi < 0 || isnan(to_f32(xr[0]))) ? 0 : bi;
      y[r] = xr[best];
      arg[r] = best;
    }
  }
}

// Max over an inner axis: one thread per (o, i), the CPU's sequential scan (coalesced over i).
template <class T>
__global__ void max_cols_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t* __restrict__ arg,
                                int64_t outer, int64_t n, int64_t inner) {
  const int64_t total = outer * inner;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t o = idx / inner, i = idx % inner;
    const T* base = x + o * n * inner + i;
    int64_t best = 0;
    float bv = to_f32(base[0]);
    for (int64_t k = 1; k < n; ++k) {
      const float v = to_f32(base[k * inner]);
      if (v > bv) {
        bv = v;
        best = k;
      }
    }
    y[idx] = base[best * inner];
    arg[idx] = best;
  }
}

// dx (zeroed by the caller)[o, arg[o, i], i] = g[o, i]
template <class T>
__global__ void max_backward_kernel(const T* __restrict__ g, const int64_t* __restrict__ arg,
                                    T* __restrict__ dx, int64_t outer, int64_t n, int64_t inner) {
  const int64_t total = outer * inner;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t o = idx / inner, i = idx % inner;
    dx[(o * n + arg[idx]) * inner + i] = g[idx];
  }
}

}  // namespace attn::kern
