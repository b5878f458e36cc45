// Elementwise kernels: the unary maths functions and their derivatives, broadcasting binary
// arithmetic, select (where / masked_fill), fill and f32 <-> bf16 conversion.
// Formulas follow src/ops/elementwise.cpp (the same forms as its vectorised CPU path, e.g.
// gelu y = x·σ(2u)), evaluated in f32 whatever the storage type. One thread per element in a
// grid-stride loop; consecutive threads touch consecutive elements (coalesced).
#pragma once
#include "backend/cuda/ops_cuda.h"
#include "kernels/common.cuh"

namespace attn::kern {

using cuda::BinaryOp;
using cuda::UnaryOp;

constexpr double kGeluC = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kGeluA = 0.044715;

__device__ __forceinline__ float unary_value(UnaryOp op, float x, float p) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return expf(x);
    case UnaryOp::Log: return logf(x);
    case UnaryOp::Sqrt: return sqrtf(x);
    case UnaryOp::Rsqrt: return 1.f / sqrtf(x);  // not rsqrtf (2 ulp): the CPU divides
    case UnaryOp::Pow: return powf(x, p);
    case UnaryOp::Tanh: return tanhf(x);
    case UnaryOp::Sigmoid: return 1.f / (1.f + expf(-x));
    case UnaryOp::Relu: return x > 0.f ? x : 0.f;
    case UnaryOp::Gelu: {
      const float u2 = static_cast<float>(2 * kGeluC) * (x + static_cast<float>(kGeluA) * (x * x * x));
      return x / (1.f + expf(-u2));
    }
    case UnaryOp::Silu: return x / (1.f + expf(-x));
    case UnaryOp::Round: return rintf(x);  // half to even, as the CPU's nearbyint
  }
  return 0.f;
}

// g·f'(x) from x and y = f(x) (the CPU's derivative formulas); pm1 = p − 1 for pow.
__device__ __forceinline__ float unary_grad(UnaryOp op, float g, float x, float y, float p,
                                            float pm1) {
  switch (op) {
    case UnaryOp::Neg: return g * -1.f;
    case UnaryOp::Exp: return g * y;
    case UnaryOp::Log: return g * (1.f / x);
    case UnaryOp::Sqrt: return g * (0.5f / y);
    case UnaryOp::Rsqrt: return g * (-0.5f * y * y * y);
    case UnaryOp::Pow: return g * (p * powf(x, pm1));
    case UnaryOp::Tanh: return g * (1.f - y * y);
    case UnaryOp::Sigmoid: return g * y * (1.f - y);
    case UnaryOp::Relu: return g * (x > 0.f ? 1.f : 0.f);
    case UnaryOp::Gelu: {
      // t = tanh u = 2σ(2u) − 1;  y' = (1 + t)/2 + x/2 (1 − t²) c (1 + 3a x²)
      const float u2 = static_cast<float>(2 * kGeluC) * (x + static_cast<float>(kGeluA) * (x * x * x));
      const float t = 2.f / (1.f + expf(-u2)) - 1.f;
      return g * (0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * static_cast<float>(kGeluC) *
                                         (1.f + static_cast<float>(3 * kGeluA) * (x * x)));
    }
    case UnaryOp::Silu: {
      const float s = 1.f / (1.f + expf(-x));  // y' = s (1 + x (1 − s))
      return g * s * (1.f + x * (1.f - s));
    }
    case UnaryOp::Round: return 0.f;  // a step function: 0 almost everywhere
  }
  return 0.f;
}

template <class T>
__global__ void unary_kernel(UnaryOp op, const T* __restrict__ x, T* __restrict__ y, int64_t n,
                             float p) {
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    y[i] = from_f32<T>(unary_value(op, to_f32(x[i]), p));
}

// y = f(x) is recomputed in f32 rather than read (see ops_cuda.h: exact y for bf16 storage).
template <class T>
__global__ void unary_grad_kernel(UnaryOp op, const T* __restrict__ g, const T* __restrict__ x,
                                  T* __restrict__ gx, int64_t n, float p, float pm1) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const float xi = to_f32(x[i]);
    gx[i] = from_f32<T>(unary_grad(op, to_f32(g[i]), xi, unary_value(op, xi, p), p, pm1));
  }
}

// ---- broadcasting binary -----------------------------------------------------------------------
constexpr int kMaxDims = 8;

// The output's (coalesced) dims, innermost last, with each input's element stride along them
// (0 where the input is broadcast).
struct BcastIndex {
  int nd;
  int64_t size[kMaxDims];
  int64_t sa[kMaxDims];
  int64_t sb[kMaxDims];
};

__device__ __forceinline__ float binary_value(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
  }
  return 0.f;
}

template <class T>
__global__ void binary_kernel(BinaryOp op, const T* __restrict__ a, const T* __restrict__ b,
                              T* __restrict__ out, int64_t n, BcastIndex ix) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    int64_t oa, ob;
    if (ix.nd == 1) {  // same shapes, or a scalar / a repeated contiguous block: no division
      oa = i * ix.sa[0];
      ob = i * ix.sb[0];
    } else {
      int64_t rem = i;
      oa = 0;
      ob = 0;
      for (int d = ix.nd - 1; d >= 0; --d) {
        const int64_t idx = rem % ix.size[d];
        rem /= ix.size[d];
        oa += idx * ix.sa[d];
        ob += idx * ix.sb[d];
      }
    }
    out[i] = from_f32<T>(binary_value(op, to_f32(a[oa]), to_f32(b[ob])));
  }
}

// ---- select ------------------------------------------------------------------------------------
// Non-zero test in the condition's own dtype (NaN counts as true, -0.0 as false, as on the CPU).
__device__ __forceinline__ bool truthy(const void* c, DType dt, int64_t i) {
  switch (dt) {
    case DType::F32: return static_cast<const float*>(c)[i] != 0.f;
    case DType::F64: return static_cast<const double*>(c)[i] != 0.0;
    case DType::BF16: return (static_cast<const uint16_t*>(c)[i] & 0x7fffu) != 0;
    case DType::I32: return static_cast<const int32_t*>(c)[i] != 0;
    case DType::I64: return static_cast<const int64_t*>(c)[i] != 0;
  }
  return false;
}

template <class T>
__global__ void select_kernel(const void* __restrict__ cond, DType cond_dt, bool invert,
                              const T* __restrict__ a, const T* __restrict__ b, T b_scalar,
                              T* __restrict__ out, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    out[i] = truthy(cond, cond_dt, i) != invert ? a[i] : (b ? b[i] : b_scalar);
}

// ---- fill / convert ----------------------------------------------------------------------------
template <class W>
__global__ void fill_kernel(W* __restrict__ out, int64_t n, W value) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) out[i] = value;
}

template <class In, class Out>
__global__ void convert_kernel(const In* __restrict__ in, Out* __restrict__ out, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) out[i] = from_f32<Out>(to_f32(in[i]));
}

}  // namespace attn::kern
