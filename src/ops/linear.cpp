// y = x·Wᵀ + b (PyTorch's F.linear): x [..., in], W [out, in], b [out] or none. One op rather than
// matmul + add so that CUDA adds the bias inside the GEMM (cuBLASLt's BIAS epilogue).
// With the rows of x flattened to X [R, in] and G = dL/dy as [R, out]:
//   dX = G·W          [R, in]
//   dW = Gᵀ·X         [out, in]
//   db = Σ_r G[r, :]  [out]
#include "backend/cpu/gemm.h"
#include "backend/cpu/parallel.h"
#include "ops/op_cuda.h"
#include "ops/op_util.h"
#include "ops/ops.h"

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

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  check_linear_args(x, w, b);
  const int64_t R = x.numel() / w.size(1);
  Tensor y = linear_forward(x, w, b, R);
  return autograd::record(OpId::Linear, y, {x, w, b},
                          [xd = x.detach(), wd = w.detach(), has_bias = b.defined(), R](const Tensor& g) {
    const Tensor G = reshape(g, {R, wd.size(0)}), X = reshape(xd, {R, wd.size(1)});
    Tensor dx = reshape(matmul(G, wd), xd.shape());
    Tensor dw = matmul(G, X, true, false);
    Tensor db = has_bias ? sum(G, 0) : Tensor();
    return std::vector<Tensor>{dx, dw, db};
  });
}

}  // namespace attn
