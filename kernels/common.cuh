// Helpers shared by the op kernels: f32 <-> storage conversion, warp and block reductions,
// grid-stride loops and launch sizes. Device code; included by src/backend/cuda/ops_cuda_*.cu.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math_constants.h>

#include <cstdint>

#include "tensor/dtype.h"

namespace attn::kern {

constexpr unsigned kFullMask = 0xffffffffu;

// ---- storage <-> f32 -----------------------------------------------------------------------
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(attn::bf16 x) {
  return __uint_as_float(static_cast<uint32_t>(x.bits) << 16);
}

template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
  return x;
}
// Round to nearest even (the hardware cvt.rn.bf16.f32 on sm_80+), as float_to_bf16 on the host.
template <>
__device__ __forceinline__ attn::bf16 from_f32<attn::bf16>(float x) {
  attn::bf16 r;
  r.bits = __bfloat16_as_ushort(__float2bfloat16_rn(x));
  return r;
}

// ---- reductions ----------------------------------------------------------------------------
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Sum over a 1-D block (blockDim.x a multiple of 32, at most 1024); every thread must call it.
// The result is valid in thread 0. `scratch` holds 32 values; it may be reused right after.
template <class T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // a previous call's readers are done with scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int warps = static_cast<int>(blockDim.x >> 5);
    v = lane < warps ? scratch[lane] : T(0);
    v = warp_sum(v);
  }
  return v;
}

// ---- indexing ------------------------------------------------------------------------------
__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// Element i of an id tensor (i32 or i64).
__device__ __forceinline__ int64_t load_id(const void* ids, bool i64, int64_t i) {
  return i64 ? static_cast<const int64_t*>(ids)[i] : static_cast<int64_t>(static_cast<const int32_t*>(ids)[i]);
}

// Blocks for a grid-stride loop over n items with `per_block` items per block per sweep.
// Capped: the loops cover the rest.
inline unsigned grid_for(int64_t n, int64_t per_block, int64_t cap = int64_t{1} << 16) {
  int64_t b = (n + per_block - 1) / per_block;
  if (b < 1) b = 1;
  if (b > cap) b = cap;
  return static_cast<unsigned>(b);
}

}  // namespace attn::kern
