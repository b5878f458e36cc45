// y = x·Wᵀ + b (PyTorch's F.linear): x [..., in], W [out, in], b [out] or none. One op rather than
// matmul + add so that CUDA adds the bias inside the GEMM (cuBLASLt's BIAS epilogue); and
// linear_gelu, gelu(y) with the GELU in the GEMM's epilogue too (GELU_AUX_BIAS).
// With the rows of x flattened to X [R, in] and G = dL/dy as [R, out]:
//   dX = G·W          [R, in]
//   dW = Gᵀ·X         [out, in]
//   db = Σ_r G[r, :]  [out]
#include <cstdlib>
#include <string>

#include "backend/cpu/gemm.h"
#include "backend/cpu/parallel.h"
#include "ops/op_cuda.h"
#include "ops/op_util.h"
#include "ops/ops.h"
#include "ops/record_internal.h"

namespace attn {

namespace {

void check_linear_args(const Tensor& x, const Tensor& w, const Tensor& b) {
  check_same_kind(x, w, "linear");
  if (b.defined()) check_same_kind(x, b, "linear");
  if (x.dim() < 1 || w.dim() != 2 || x.size(-1) != w.size(1) ||
      (b.defined() && (b.dim() != 1 || b.size(0) != w.size(0))))
    throw std::invalid_argument("linear: need x [..., in], W [out, in], b [out], got " + shape_str(x.shape()) +
                                ", " + shape_str(w.shape()) + (b.defined() ? ", " + shape_str(b.shape()) : ""));
}

// Y [R, out] = X·Wᵀ (+ b)
Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, int64_t R) {
  const int64_t in = w.size(1), out = w.size(0);
  Shape shape = x.shape();
  shape.back() = out;
  Tensor y = Tensor::empty(shape, x.dtype(), x.device());
  if (x.device().is_cuda()) {
    check_cuda_float(x, "linear");
    cuda::gemm(x.dtype(), false, true, R, out, in, x.raw_data(), in, 0, w.raw_data(), in, 0, y.raw_data(),
               out, 0, 1, x.device().index, b.defined() ? b.raw_data() : nullptr);
    return y;
  }
  dispatch_float(x.dtype(), "linear", [&](auto tag) {
    using T = decltype(tag);
    T* py = y.data<T>();
    cpu::gemm<T>(false, true, R, out, in, T(1), x.data<T>(), in, w.data<T>(), in, T(0), py, out);
    if (!b.defined()) return;
    const T* pb = b.data<T>();
    cpu::parallel_for(R, out, [&](int64_t r) {
      for (int64_t j = 0; j < out; ++j) py[r * out + j] += pb[j];
    });
  });
  return y;
}

// linear_gelu on CUDA in bf16: one GEMM whose epilogue adds the bias and applies the GELU (its
// input, pre, kept in a second buffer), or, where cuBLASLt has no algorithm for that (or
// ATTNLAB_GELU_EPILOGUE=0 asks for the comparison), the BIAS GEMM and the GELU kernel. f32 (the
// parity runs) always takes the latter: cuBLASLt does not document its GELU's accuracy, and our
// kernel matches the CPU's to f32 rounding; in bf16 the output's own rounding (2^-9) dominates.
bool gelu_epilogue_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("ATTNLAB_GELU_EPILOGUE");
    return !(v && std::string(v) == "0");
  }();
  return on;
}

}  // namespace

Tensor linear_gelu(const Tensor& x, const Tensor& w, const Tensor& b) {
  check_linear_args(x, w, b);
  if (x.device().is_cuda() && x.dtype() == DType::BF16 && b.defined() && gelu_epilogue_enabled()) {
    const int64_t R = x.numel() / w.size(1), in = w.size(1), out = w.size(0);
    Shape shape = x.shape();
    shape.back() = out;
    Tensor pre = Tensor::empty(shape, x.dtype(), x.device());
    Tensor y = Tensor::empty(shape, x.dtype(), x.device());
    if (cuda::gemm_bias_gelu(x.dtype(), false, true, R, out, in, x.raw_data(), in, w.raw_data(), in,
                             y.raw_data(), pre.raw_data(), out, b.raw_data(), x.device().index))
      return record_unary(OpId::Gelu, std::move(y), record_linear(std::move(pre), x, w, b, R));
  }
  return gelu(linear(x, w, b));  // the BIAS GEMM, then the GELU kernel
}

Tensor record_linear(Tensor y, const Tensor& x, const Tensor& w, const Tensor& b, int64_t R) {
  return autograd::record(
      OpId::Linear, std::move(y), {x, w, b},
      [xd = x.detach(), wd = w.detach(), has_bias = b.defined(), R](const Tensor& g) {
        const Tensor G = reshape(g, {R, wd.size(0)}), X = reshape(xd, {R, wd.size(1)});
        Tensor dx = reshape(matmul(G, wd), xd.shape());
        Tensor dw = matmul(G, X, true, false);
        Tensor db = has_bias ? sum(G, 0) : Tensor();
        return std::vector<Tensor>{dx, dw, db};
      });
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  check_linear_args(x, w, b);
  const int64_t R = x.numel() / w.size(1);
  return record_linear(linear_forward(x, w, b, R), x, w, b, R);
}

}  // namespace attn
