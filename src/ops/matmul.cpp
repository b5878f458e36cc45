// C = op(A) · op(B), with the batch dims of A either matched by B or B shared (2-D).
//   dA = dC · op(B)ᵀ  (or its transpose when A was transposed)
//   dB = op(A)ᵀ · dC  (or its transpose when B was transposed)
#include "backend/cpu/gemm.h"
#include "ops/op_cuda.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace attn {

namespace {

Tensor batched_gemm(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  int64_t d = a.dim();
  int64_t M = ta ? a.size(-1) : a.size(-2), K = ta ? a.size(-2) : a.size(-1);
  int64_t Kb = tb ? b.size(-1) : b.size(-2), N = tb ? b.size(-2) : b.size(-1);
  if (K != Kb)
    throw std::invalid_argument("matmul: inner dims differ: " + shape_str(a.shape()) +
                                (ta ? "ᵀ" : "") + " · " + shape_str(b.shape()) + (tb ? "ᵀ" : ""));
  Shape batch(a.shape().begin(), a.shape().end() - 2);
  bool shared_b = b.dim() == 2;
  if (!shared_b && (b.dim() != d || !std::equal(batch.begin(), batch.end(), b.shape().begin())))
    throw std::invalid_argument("matmul: batch dims differ: " + shape_str(a.shape()) + " · " +
                                shape_str(b.shape()));
  Shape out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  int64_t nb = shape_numel(batch);
  if (a.device().is_cuda()) {  // cuBLASLt, one strided-batched call (stride 0 for a shared B)
    check_cuda_float(a, "matmul");
    Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
    cuda::gemm(a.dtype(), ta, tb, M, N, K, a.raw_data(), a.size(-1), M * K, b.raw_data(),
               b.size(-1), shared_b ? 0 : K * N, out.raw_data(), N, M * N, nb, a.device().index);
    return out;
  }
  Tensor out = Tensor::empty(out_shape, a.dtype());
  dispatch_float(a.dtype(), "matmul", [&](auto tag) {
    using T = decltype(tag);
    const T *pa = a.data<T>(), *pb = b.data<T>();
    T* pc = out.data<T>();
    for (int64_t i = 0; i < nb; ++i)
      cpu::gemm<T>(ta, tb, M, N, K, T(1), pa + i * M * K, a.size(-1), pb + (shared_b ? 0 : i * K * N),
                   b.size(-1), T(0), pc + i * M * N, N);
  });
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  check_same_kind(a, b, "matmul");
  if (a.dim() < 2 || b.dim() < 2)
    throw std::invalid_argument("matmul: inputs need >= 2 dims, got " + shape_str(a.shape()) +
                                " and " + shape_str(b.shape()));
  // A shared B with an untransposed batched A is one big GEMM over the flattened rows.
  if (b.dim() == 2 && a.dim() > 2 && !ta) {
    Shape out_shape(a.shape().begin(), a.shape().end() - 1);
    out_shape.push_back(tb ? b.size(0) : b.size(1));
    return reshape(matmul(reshape(a, {-1, a.size(-1)}), b, false, tb), out_shape);
  }
  if (b.dim() == 2 && a.dim() > 2)
    throw std::invalid_argument("matmul: a transposed batched A with a shared 2-D B is not "
                                "supported; transpose A first");
  Tensor out = batched_gemm(a, b, ta, tb);
  return autograd::record(OpId::Matmul, out, {a, b},
                          [ad = a.detach(), bd = b.detach(), ta, tb](const Tensor& g) {
    Tensor ga = ta ? matmul(bd, g, tb, true) : matmul(g, bd, false, !tb);
    Tensor gb = tb ? matmul(g, ad, true, ta) : matmul(ad, g, !ta, false);
    return std::vector<Tensor>{ga, gb};
  });
}

}  // namespace attn
