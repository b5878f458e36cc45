// The data movement around conv2d's GEMMs (src/ops/conv.cpp; launchers in
// src/backend/cuda/ops_cuda_conv.cu), for a chunk of nb samples starting at sample n0, with
// P = Ho·Wo positions per sample and the chunk's column matrix [Cin·KH·KW, nb·P]:
//   im2col   col[(c, i, j), n·P + (oh, ow)] = x[n0 + n, c, oh·s − p + i, ow·s − p + j] (0 outside)
//   col2im   dx[n0 + n, c, h, w] = Σ_(i, j) dcol[(c, i, j), n·P + (oh, ow)] over the (i, j) with
//            h = oh·s − p + i and w = ow·s − p + j for some in-range (oh, ow): a gather per x
//            element, in (i, j) order as the CPU's scatter, summed in f32 (no atomics).
// With a bias, the forward's column matrix gets one more row of ones and W one more column, b:
// y = [W b]·[col; 1] is then one GEMM whose result is rounded once (a bias added to a bf16 GEMM
// result would round twice, and flip the sign of, hence the ReLU after, outputs near 0).
// And the f32 accumulation of dW's per-chunk partial sums.
#pragma once
#include "kernels/common.cuh"

namespace attn::kern {

struct ConvGeom {
  int64_t cin, h, w;  // input channels, height, width
  int64_t kh, kw;     // kernel
  int64_t stride, pad;
  int64_t ho, wo;  // output height, width
};

// One thread per column element: the writes (along n·P + (oh, ow)) are coalesced. ones_row: a
// last row of ones (row Cin·KH·KW), for the bias.
template <class T>
__global__ void im2col_kernel(const T* __restrict__ x, T* __restrict__ col, ConvGeom g, int64_t n0,
                              int64_t nb, bool ones_row) {
  const int64_t P = g.ho * g.wo, ld = nb * P, K = g.cin * g.kh * g.kw;
  const int64_t total = (K + (ones_row ? 1 : 0)) * ld;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t r = idx / ld, q = idx - r * ld;
    if (r == K) {
      col[idx] = from_f32<T>(1.f);
      continue;
    }
    const int64_t n = q / P, p = q - n * P;
    const int64_t oh = p / g.wo, ow = p - oh * g.wo;
    const int64_t j = r % g.kw, i = (r / g.kw) % g.kh, c = r / (g.kw * g.kh);
    const int64_t h = oh * g.stride - g.pad + i, w = ow * g.stride - g.pad + j;
    const bool inside = h >= 0 && h < g.h && w >= 0 && w < g.w;
    col[idx] = inside ? x[(((n0 + n) * g.cin + c) * g.h + h) * g.w + w] : from_f32<T>(0.f);
  }
}

// One thread per x element of the chunk (dx written from sample n0 on).
template <class T>
__global__ void col2im_kernel(const T* __restrict__ dcol, T* __restrict__ dx, ConvGeom g,
                              int64_t n0, int64_t nb) {
  const int64_t P = g.ho * g.wo, ld = nb * P, total = nb * g.cin * g.h * g.w;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t w = idx % g.w, h = (idx / g.w) % g.h, c = (idx / (g.w * g.h)) % g.cin;
    const int64_t n = idx / (g.w * g.h * g.cin);
    float acc = 0.f;
    for (int64_t i = 0; i < g.kh; ++i) {
      const int64_t th = h + g.pad - i;  // = oh·s for the output row that reads h through i
      if (th < 0 || th % g.stride != 0 || th / g.stride >= g.ho) continue;
      const int64_t oh = th / g.stride;
      for (int64_t j = 0; j < g.kw; ++j) {
        const int64_t tw = w + g.pad - j;
        if (tw < 0 || tw % g.stride != 0 || tw / g.stride >= g.wo) continue;
        const int64_t r = (c * g.kh + i) * g.kw + j;
        acc += to_f32(dcol[r * ld + n * P + oh * g.wo + tw / g.stride]);
      }
    }
    dx[n0 * g.cin * g.h * g.w + idx] = from_f32<T>(acc);
  }
}

// wb [Cout, K + 1] = [W b]: W [Cout, K] with the bias as a last column.
template <class T>
__global__ void weight_bias_kernel(const T* __restrict__ w, const T* __restrict__ bias,
                                   T* __restrict__ wb, int64_t cout, int64_t K) {
  const int64_t total = cout * (K + 1);
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t o = idx / (K + 1), k = idx - o * (K + 1);
    wb[idx] = k < K ? w[o * K + k] : bias[o];
  }
}

// acc = (first ? 0 : acc) + part, in f32.
template <class T>
__global__ void accumulate_kernel(float* __restrict__ acc, const T* __restrict__ part, int64_t n,
                                  bool first) {
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    acc[i] = (first ? 0.f : acc[i]) + to_f32(part[i]);
}

}  // namespace attn::kern
