// Helpers for the CUDA branches of the ops (each op in src/ops/*.cpp dispatches on
// x.device().is_cuda() to the launchers of backend/cuda/ops_cuda.h).
#pragma once
#include <stdexcept>
#include <string>

#include "backend/cuda/ops_cuda.h"
#include "tensor/tensor.h"

namespace attn {

// Throws unless a CUDA tensor has a dtype the kernels take (f32, or bf16 storage).
inline void check_cuda_float(const Tensor& x, const char* op) {
  if (x.dtype() != DType::F32 && x.dtype() != DType::BF16)
    throw std::invalid_argument(std::string(op) + ": CUDA tensors must be f32 or bf16, got " +
                                dtype_name(x.dtype()));
}

// A tensor of `value` filled on the device (no host buffer, no copy).
inline Tensor cuda_full(const Shape& shape, double value, DType dt, Device dev) {
  Tensor t = Tensor::empty(shape, dt, dev);
  cuda::fill(dt, t.raw_data(), t.numel(), value, dev.index);
  return t;
}
inline Tensor cuda_zeros(const Shape& shape, DType dt, Device dev) {
  return cuda_full(shape, 0.0, dt, dev);
}

// t on `dev` (a copy when it lives elsewhere, e.g. CPU ids for CUDA weights).
inline Tensor on_device(const Tensor& t, Device dev) { return t.device() == dev ? t : t.to(dev); }

// The backward of a CUDA op reads its upstream gradient through raw pointers: it must match
// the output's dtype and device (the autograd engine guarantees it; a hand-made seed may not).
inline void check_grad_like(const Tensor& g, DType dt, Device dev, const char* op) {
  if (g.dtype() != dt || !(g.device() == dev))
    throw std::invalid_argument(std::string(op) + " backward: gradient is " + dtype_name(g.dtype()) +
                                " on " + g.device().str() + ", expected " + dtype_name(dt) +
                                " on " + dev.str());
}
inline void check_grad_like(const Tensor& g, const Tensor& like, const char* op) {
  check_grad_like(g, like.dtype(), like.device(), op);
}

}  // namespace attn
