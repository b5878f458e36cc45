// Shape copies (src/ops/shape.cpp): permute (a gather through the permuted strides) and the
// strided row copies behind concat, slice and their backwards. Element types are same-size
// stand-ins (the copies move bits, whatever the dtype).
#pragma once
#include "kernels/common.cuh"

namespace attn::kern {

constexpr int kMaxPermuteDims = 8;

// Output dims (coalesced, innermost last) and the source element stride along each.
struct PermuteIndex {
  int nd;
  int64_t size[kMaxPermuteDims];
  int64_t src_stride[kMaxPermuteDims];
};

// out[idx] = x[Σ_d index_d(idx)·src_stride[d]]: writes coalesced; reads coalesced when the last
// dim stays last (heads split/merge), strided for a transpose of the last two dims.
template <class W>
__global__ void permute_kernel(const W* __restrict__ x, W* __restrict__ out, int64_t n,
                               PermuteIndex ix) {
  for (int64_t idx = global_thread(); idx < n; idx += grid_threads()) {
    int64_t rem = idx, off = 0;
    for (int d = ix.nd - 1; d >= 0; --d) {
      const int64_t q = rem / ix.size[d];
      off += (rem - q * ix.size[d]) * ix.src_stride[d];
      rem = q;
    }
    out[idx] = x[off];
  }
}

// dst[o·dst_stride + k] = src[o·src_stride + k] for o < outer, k < len (all in units of W).
template <class W>
__global__ void copy_rows_kernel(W* __restrict__ dst, int64_t dst_stride, const W* __restrict__ src,
                                 int64_t src_stride, int64_t outer, int64_t len) {
  const int64_t total = outer * len;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t o = idx / len, k = idx - o * len;
    dst[o * dst_stride + k] = src[o * src_stride + k];
  }
}

}  // namespace attn::kern
