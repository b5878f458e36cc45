// Normalisation over the last axis, one row of width D at a time (statistics in the row type).
//   layer_norm: x̂ = (x - μ)·r, r = 1/sqrt(var + eps), y = x̂∘w + b
//               dx = r · (ĝ - mean(ĝ) - x̂ · mean(ĝ∘x̂)), ĝ = g∘w; dw = Σ g∘x̂; db = Σ g
//   rms_norm:   x̂ = x·r, r = 1/sqrt(mean(x²) + eps), y = x̂∘w
//               dx = r · (ĝ - x̂ · mean(ĝ∘x̂)); dw = Σ g∘x̂
#include <cmath>

#include "backend/cpu/parallel.h"
#include "ops/op_cuda.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace attn {

namespace {

void check_norm_args(const Tensor& x, const Tensor& w, const Tensor& b, const char* op) {
  if (x.device().is_cuda()) {
    check_cuda_float(x, op);
    if (b.defined()) check_same_kind(x, b, op);
  } else {
    check_cpu(x, op);
  }
  check_same_kind(x, w, op);
  if (x.dim() == 0 || w.shape() != Shape{x.size(-1)} || (b.defined() && b.shape() != w.shape()))
    throw std::invalid_argument(std::string(op) + ": x " + shape_str(x.shape()) +
                                " needs weight (and bias) of shape [" +
                                std::to_string(x.dim() ? x.size(-1) : 0) + "], got " +
                                shape_str(w.shape()));
}

// Forward for both norms; saves x̂ and r per row for the backward.
struct NormSaved {
  Tensor xhat, rstd;
};

NormSaved norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps, bool center,
                       Tensor& y) {
  int64_t D = x.size(-1), rows = x.numel() / std::max<int64_t>(D, 1);
  NormSaved s{Tensor::empty(x.shape(), x.dtype()), Tensor::empty({rows}, x.dtype())};
  y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), center ? "layer_norm" : "rms_norm", [&](auto tag) {
    using T = decltype(tag);
    const T *px = x.data<T>(), *pw = w.data<T>(), *pb = b.defined() ? b.data<T>() : nullptr;
    T *py = y.data<T>(), *ph = s.xhat.data<T>(), *pr = s.rstd.data<T>();
    cpu::parallel_for(rows, 4 * D, [&](int64_t r) {
      const T* xr = px + r * D;
      T mu = 0, ss = 0;
      if (center) {
        for (int64_t j = 0; j < D; ++j) mu += xr[j];
        mu /= static_cast<T>(D);
      }
      for (int64_t j = 0; j < D; ++j) ss += (xr[j] - mu) * (xr[j] - mu);
      T rs = T(1) / std::sqrt(ss / static_cast<T>(D) + static_cast<T>(eps));
      pr[r] = rs;
      for (int64_t j = 0; j < D; ++j) {
        T h = (xr[j] - mu) * rs;
        ph[r * D + j] = h;
        py[r * D + j] = h * pw[j] + (pb ? pb[j] : T(0));
      }
    });
  });
  return s;
}

std::vector<Tensor> norm_backward(const Tensor& g, const NormSaved& s, const Tensor& w, bool center,
                                  bool with_bias) {
  int64_t D = w.size(0), rows = s.rstd.numel();
  Tensor dx = Tensor::empty(s.xhat.shape(), g.dtype());
  Tensor dw = zeros({D}, {g.dtype()}), db = with_bias ? zeros({D}, {g.dtype()}) : Tensor();
  dispatch_float(g.dtype(), "norm backward", [&](auto tag) {
    using T = decltype(tag);
    const T *pg = g.data<T>(), *ph = s.xhat.data<T>(), *pr = s.rstd.data<T>(), *pw = w.data<T>();
    T* pdx = dx.data<T>();
    cpu::parallel_for(rows, 6 * D, [&](int64_t r) {
      const T *gr = pg + r * D, *hr = ph + r * D;
      T mean_g = 0, mean_gh = 0;
      for (int64_t j = 0; j < D; ++j) {
        mean_g += gr[j] * pw[j];
        mean_gh += gr[j] * pw[j] * hr[j];
      }
      mean_g = center ? mean_g / static_cast<T>(D) : T(0);
      mean_gh /= static_cast<T>(D);
      for (int64_t j = 0; j < D; ++j)
        pdx[r * D + j] = pr[r] * (gr[j] * pw[j] - mean_g - hr[j] * mean_gh);
    });
    // Parameter gradients: a reduction over rows, kept serial per column block for determinism.
    T *pdw = dw.data<T>(), *pdb = with_bias ? db.data<T>() : nullptr;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < D; ++j) {
        pdw[j] += pg[r * D + j] * ph[r * D + j];
        if (pdb) pdb[j] += pg[r * D + j];
      }
  });
  return {dx, dw, db};
}

// Both norms on the device (kernels/norm.cuh): saves μ and r per row (f32) instead of x̂.
Tensor norm_cuda(OpId id, const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  const bool center = id == OpId::LayerNorm, has_bias = b.defined();
  const Device dev = x.device();
  const int64_t D = x.size(-1), rows = x.numel() / std::max<int64_t>(D, 1);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), dev);
  Tensor mean = Tensor::empty({rows}, DType::F32, dev), rstd = Tensor::empty({rows}, DType::F32, dev);
  cuda::norm_forward(x.dtype(), x.raw_data(), w.raw_data(), has_bias ? b.raw_data() : nullptr,
                     y.raw_data(), static_cast<float*>(mean.raw_data()),
                     static_cast<float*>(rstd.raw_data()), rows, D, eps, center, dev.index);
  std::vector<Tensor> inputs{x, w};
  if (center) inputs.push_back(b);
  return autograd::record(id, y, std::move(inputs),
                          [xd = x.detach(), wd = w.detach(), mean, rstd, center, has_bias, rows,
                           D](const Tensor& g) {
    check_grad_like(g, xd, center ? "layer_norm" : "rms_norm");
    const Device dev = xd.device();
    Tensor dx = Tensor::empty(xd.shape(), xd.dtype(), dev), dw = Tensor::empty({D}, xd.dtype(), dev);
    Tensor db = has_bias ? Tensor::empty({D}, xd.dtype(), dev) : Tensor();
    cuda::norm_backward(xd.dtype(), g.raw_data(), xd.raw_data(), wd.raw_data(),
                        static_cast<const float*>(mean.raw_data()),
                        static_cast<const float*>(rstd.raw_data()), dx.raw_data(), dw.raw_data(),
                        has_bias ? db.raw_data() : nullptr, rows, D, center, dev.index);
    std::vector<Tensor> grads{dx, dw};
    if (center) grads.push_back(db);
    return grads;
  });
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  check_norm_args(x, weight, bias, "layer_norm");
  if (x.device().is_cuda()) return norm_cuda(OpId::LayerNorm, x, weight, bias, eps);
  Tensor y;
  NormSaved s = norm_forward(x, weight, bias, eps, true, y);
  bool has_bias = bias.defined();
  return autograd::record(OpId::LayerNorm, y, {x, weight, bias},
                          [s, wd = weight.detach(), has_bias](const Tensor& g) {
    return norm_backward(g, s, wd, true, has_bias);
  });
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  check_norm_args(x, weight, Tensor(), "rms_norm");
  if (x.device().is_cuda()) return norm_cuda(OpId::RmsNorm, x, weight, Tensor(), eps);
  Tensor y;
  NormSaved s = norm_forward(x, weight, Tensor(), eps, false, y);
  return autograd::record(OpId::RmsNorm, y, {x, weight}, [s, wd = weight.detach()](const Tensor& g) {
    auto grads = norm_backward(g, s, wd, false, false);
    grads.pop_back();
    return grads;
  });
}

}  // namespace attn
