// Element types and devices. bf16 is stored as the upper 16 bits of an IEEE f32.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#if defined(__CUDACC__)
#define ATTNLAB_HD __host__ __device__ __forceinline__
#else
#define ATTNLAB_HD inline
#endif

namespace attn {

enum class DType : uint8_t { F32, F64, BF16, I32, I64 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
inline bool is_floating(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::BF16; }
inline bool is_integer(DType t) { return t == DType::I32 || t == DType::I64; }

struct bf16 {
  uint16_t bits = 0;
};

// Round to nearest even; NaN stays NaN (quiet bit forced).
ATTNLAB_HD bf16 float_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  bf16 r;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    r.bits = static_cast<uint16_t>((u >> 16) | 0x40u);
    return r;
  }
  u += 0x7fffu + ((u >> 16) & 1u);
  r.bits = static_cast<uint16_t>(u >> 16);
  return r;
}

ATTNLAB_HD float bf16_to_float(bf16 b) {
  uint32_t u = static_cast<uint32_t>(b.bits) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

struct Device {
  enum Kind : uint8_t { CPU, CUDA };
  Kind kind = CPU;
  int index = 0;
  static Device cpu() { return {CPU, 0}; }
  static Device cuda(int i = 0) { return {CUDA, i}; }
  bool is_cpu() const { return kind == CPU; }
  bool is_cuda() const { return kind == CUDA; }
  bool operator==(const Device&) const = default;
  std::string str() const { return kind == CPU ? "cpu" : "cuda:" + std::to_string(index); }
};

}  // namespace attn
