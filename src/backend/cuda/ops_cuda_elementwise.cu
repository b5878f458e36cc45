// Host launchers: fill, convert, unary, broadcasting binary, select, dropout
// (kernels/elementwise.cuh, kernels/dropout.cuh). Instantiations: f32 and bf16 only.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "backend/cuda/ops_cuda_util.h"
#include "tensor/tensor.h"
#include "kernels/dropout.cuh"
#include "kernels/elementwise.cuh"

namespace attn::cuda {

using detail::kThreads;
using detail::stream;
using kern::grid_for;

void fill(DType dt, void* out, int64_t n, double value, int device) {
  if (n == 0) return;
  detail::set_device(device);
  if (value == 0.0 && !std::signbit(value)) {  // +0 is all-zero bits in every dtype
    ATTNLAB_CUDA_CHECK(cudaMemsetAsync(out, 0, n * dtype_size(dt), stream()));
    return;
  }
  const unsigned blocks = grid_for(n, kThreads);
  switch (dt) {
    case DType::F32:
      launch(kern::fill_kernel<float>, {blocks, kThreads, 0, stream()}, static_cast<float*>(out), n,
             static_cast<float>(value));
      break;
    case DType::F64:
      launch(kern::fill_kernel<double>, {blocks, kThreads, 0, stream()}, static_cast<double*>(out),
             n, value);
      break;
    case DType::BF16:
      launch(kern::fill_kernel<uint16_t>, {blocks, kThreads, 0, stream()},
             static_cast<uint16_t*>(out), n, float_to_bf16(static_cast<float>(value)).bits);
      break;
    case DType::I32:
      launch(kern::fill_kernel<int32_t>, {blocks, kThreads, 0, stream()},
             static_cast<int32_t*>(out), n, static_cast<int32_t>(value));
      break;
    case DType::I64:
      launch(kern::fill_kernel<int64_t>, {blocks, kThreads, 0, stream()},
             static_cast<int64_t*>(out), n, static_cast<int64_t>(value));
      break;
  }
  ATTNLAB_CUDA_LAUNCHED();
}

void convert(DType out_dt, void* out, DType in_dt, const void* in, int64_t n, int device) {
  if (n == 0) return;
  detail::set_device(device);
  if (out_dt == in_dt) {
    ATTNLAB_CUDA_CHECK(cudaMemcpyAsync(out, in, n * dtype_size(in_dt), cudaMemcpyDeviceToDevice, stream()));
    return;
  }
  detail::dispatch_float(in_dt, "convert", [&](auto in_tag) {
    using In = decltype(in_tag);
    detail::dispatch_float(out_dt, "convert", [&](auto out_tag) {
      using Out = decltype(out_tag);
      launch(kern::convert_kernel<In, Out>, {grid_for(n, kThreads), kThreads, 0, stream()},
             static_cast<const In*>(in), static_cast<Out*>(out), n);
      ATTNLAB_CUDA_LAUNCHED();
    });
  });
}

void unary_forward(UnaryOp op, DType dt, const void* x, void* y, int64_t n, double p, int device) {
  if (n == 0) return;
  detail::set_device(device);
  detail::dispatch_float(dt, "unary op", [&](auto tag) {
    using T = decltype(tag);
    launch(kern::unary_kernel<T>, {grid_for(n, kThreads), kThreads, 0, stream()}, op,
           static_cast<const T*>(x), static_cast<T*>(y), n, static_cast<float>(p));
    ATTNLAB_CUDA_LAUNCHED();
  });
}

void unary_backward(UnaryOp op, DType dt, const void* g, const void* x, void* gx, int64_t n,
                    double p, int device) {
  if (n == 0) return;
  detail::set_device(device);
  detail::dispatch_float(dt, "unary op backward", [&](auto tag) {
    using T = decltype(tag);
    launch(kern::unary_grad_kernel<T>, {grid_for(n, kThreads), kThreads, 0, stream()}, op,
           static_cast<const T*>(g), static_cast<const T*>(x), static_cast<T*>(gx), n,
           static_cast<float>(p), static_cast<float>(p - 1));
    ATTNLAB_CUDA_LAUNCHED();
  });
}

namespace {

// Drops size-1 dims and merges neighbours that both inputs walk contiguously (or both repeat):
// [B, T, D] + [D] becomes [B·T, D] + [D]; same shapes become one dim.
kern::BcastIndex coalesce(const std::vector<int64_t>& out, const std::vector<int64_t>& sa,
                          const std::vector<int64_t>& sb) {
  struct Dim {
    int64_t size, a, b;
  };
  std::vector<Dim> dims;  // innermost first
  for (size_t k = out.size(); k-- > 0;) {
    if (out[k] == 1) continue;
    if (!dims.empty()) {
      Dim& in = dims.back();
      if (sa[k] == in.a * in.size && sb[k] == in.b * in.size) {
        in.size *= out[k];
        continue;
      }
    }
    dims.push_back({out[k], sa[k], sb[k]});
  }
  if (dims.empty()) dims.push_back({1, 0, 0});
  if (dims.size() > static_cast<size_t>(kern::kMaxDims))
    throw std::invalid_argument("binary op: more than " + std::to_string(kern::kMaxDims) +
                                " broadcast dims after merging; not supported on CUDA");
  kern::BcastIndex ix{};
  ix.nd = static_cast<int>(dims.size());
  for (int d = 0; d < ix.nd; ++d) {
    const Dim& src = dims[dims.size() - 1 - d];
    ix.size[d] = src.size;
    ix.sa[d] = src.a;
    ix.sb[d] = src.b;
  }
  return ix;
}

}  // namespace

void binary(BinaryOp op, DType dt, const void* a, const std::vector<int64_t>& shape_a,
            const void* b, const std::vector<int64_t>& shape_b, void* out,
            const std::vector<int64_t>& shape_out, int device) {
  int64_t n = 1;
  for (int64_t d : shape_out) n *= d;
  if (n == 0) return;
  kern::BcastIndex ix = coalesce(shape_out, broadcast_strides(shape_a, shape_out),
                                 broadcast_strides(shape_b, shape_out));
  detail::set_device(device);
  detail::dispatch_float(dt, "binary op", [&](auto tag) {
    using T = decltype(tag);
    launch(kern::binary_kernel<T>, {grid_for(n, kThreads), kThreads, 0, stream()}, op,
           static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), n, ix);
    ATTNLAB_CUDA_LAUNCHED();
  });
}

void select(DType dt, const void* cond, DType cond_dt, bool invert, const void* a, const void* b,
            double b_scalar, void* out, int64_t n, int device) {
  if (n == 0) return;
  detail::set_device(device);
  detail::dispatch_float(dt, "where", [&](auto tag) {
    using T = decltype(tag);
    T scalar;
    if constexpr (std::is_same_v<T, float>) scalar = static_cast<float>(b_scalar);
    else scalar = float_to_bf16(static_cast<float>(b_scalar));
    launch(kern::select_kernel<T>, {grid_for(n, kThreads), kThreads, 0, stream()}, cond, cond_dt,
           invert, static_cast<const T*>(a), static_cast<const T*>(b), scalar, static_cast<T*>(out),
           n);
    ATTNLAB_CUDA_LAUNCHED();
  });
}

void dropout(DType dt, const void* x, void* y, int64_t n, double p, uint64_t seed, uint64_t offset,
             int device) {
  if (n == 0) return;
  detail::set_device(device);
  detail::dispatch_float(dt, "dropout", [&](auto tag) {
    using T = decltype(tag);
    launch(kern::dropout_kernel<T>, {grid_for(n, kThreads), kThreads, 0, stream()},
           static_cast<const T*>(x), static_cast<T*>(y), n, static_cast<float>(p),
           static_cast<float>(1.0 / (1.0 - p)), seed, offset);
    ATTNLAB_CUDA_LAUNCHED();
  });
}

}  // namespace attn::cuda
