// Rotary position embedding (src/ops/rope.cpp, the rotate-half layout): for x [rows, D] with
// row r at position offset + r % T, i < D/2, θ_i = base^(−2i/D), a = (offset + t)·θ_i:
//   y[i] = x[i] cos a − x[i + D/2] sin a,   y[i + D/2] = x[i] sin a + x[i + D/2] cos a
// The inverse (the backward) rotates by −a. As on the CPU, a table [T, D/2] of (cos a, sin a) is
// computed in f64 and rounded to f32 once per call (rope_table_kernel), then applied.
#pragma once
#include "kernels/common.cuh"

namespace attn::kern {

__global__ void rope_table_kernel(float2* __restrict__ table, int64_t T, int64_t half, int64_t D,
                                  double base, int64_t offset) {
  const int64_t total = T * half;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t t = idx / half, i = idx - t * half;
    const double a = static_cast<double>(offset + t) *
                     pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(D));
    table[idx] = make_float2(static_cast<float>(cos(a)), static_cast<float>(sin(a)));
  }
}

// One thread per rotated pair (i, i + D/2) of a row: reads both before writing both, so y may
// alias x.
template <class T>
__global__ void rope_kernel(const T* x, T* y, const float2* __restrict__ table, int64_t rows,
                            int64_t T_, int64_t half, bool inverse) {
  const int64_t total = rows * half, D = 2 * half;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t r = idx / half, i = idx - r * half;
    const float2 cs = table[(r % T_) * half + i];
    const float c = cs.x, s = inverse ? -cs.y : cs.y;
    const float x0 = to_f32(x[r * D + i]), x1 = to_f32(x[r * D + i + half]);
    y[r * D + i] = from_f32<T>(x0 * c - x1 * s);
    y[r * D + i + half] = from_f32<T>(x0 * s + x1 * c);
  }
}

}  // namespace attn::kern
