// Emulated build: the bf16 conversions of CUDA's cuda_bf16.h that the kernels use, with the
// hardware's rounding (cvt.rn.bf16.f32: to nearest even; NaN stays NaN).
#pragma once
#include <cstdint>

#include "backend/cuda_emu/emu.h"
#include "tensor/dtype.h"

struct __nv_bfloat16 {
  uint16_t x;
};

inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {attn::float_to_bf16(f).bits}; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.x; }
inline float __bfloat162float(__nv_bfloat16 b) { return attn::bf16_to_float(attn::bf16{b.x}); }
