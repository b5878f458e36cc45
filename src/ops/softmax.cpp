// Softmax and log-softmax over the last axis, one row at a time.
//   softmax:     y = exp(x - m) / Σ exp(x - m);     dx = y ∘ (g - Σ g∘y)
//   log_softmax: y = x - m - log Σ exp(x - m);      dx = g - exp(y) Σ g
// A row of all -inf (every entry masked) gives y = 0 for softmax, -inf for log_softmax.
#include <cmath>
#include <limits>

#include "backend/cpu/parallel.h"
#include "ops/op_cuda.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace attn {

namespace {

template <class T>
void softmax_row(const T* x, T* y, int64_t n, bool log_form) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < n; ++j) m = std::max(m, x[j]);
  if (m == -std::numeric_limits<T>::infinity()) {
    for (int64_t j = 0; j < n; ++j) y[j] = log_form ? m : T(0);
    return;
  }
  T s = 0;
  for (int64_t j = 0; j < n; ++j) s += std::exp(x[j] - m);
  if (log_form) {
    T lse = m + std::log(s);
    for (int64_t j = 0; j < n; ++j) y[j] = x[j] - lse;
  } else {
    T inv = T(1) / s;
    for (int64_t j = 0; j < n; ++j) y[j] = std::exp(x[j] - m) * inv;
  }
}

template <class T>
void softmax_row_backward(const T* y, const T* g, T* dx, int64_t n, bool log_form) {
  T dot = 0;
  if (log_form) {
    for (int64_t j = 0; j < n; ++j) dot += g[j];
    for (int64_t j = 0; j < n; ++j) dx[j] = g[j] - std::exp(y[j]) * dot;
  } else {
    for (int64_t j = 0; j < n; ++j) dot += g[j] * y[j];
    for (int64_t j = 0; j < n; ++j) dx[j] = y[j] * (g[j] - dot);
  }
}

Tensor row_op(const Tensor& x, const Tensor& g, bool log_form, bool backward) {
  const char* name = log_form ? "log_softmax" : "softmax";
  if (x.device().is_cuda()) {
    if (x.dim() == 0) throw std::invalid_argument(std::string(name) + ": needs at least 1 dim");
    check_cuda_float(x, name);
    if (backward) check_grad_like(g, x, name);
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
    int64_t n = x.size(-1), rows = n ? x.numel() / n : 0;
    if (backward)
      cuda::softmax_backward(x.dtype(), x.raw_data(), g.raw_data(), out.raw_data(), rows, n,
                             log_form, x.device().index);
    else
      cuda::softmax_forward(x.dtype(), x.raw_data(), out.raw_data(), rows, n, log_form,
                            x.device().index);
    return out;
  }
  check_cpu(x, name);
  if (x.dim() == 0) throw std::invalid_argument(std::string(name) + ": needs at least 1 dim");
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  int64_t n = x.size(-1), rows = n ? x.numel() / n : 0;
  dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const T* pg = backward ? g.data<T>() : nullptr;
    cpu::parallel_for(rows, 4 * n, [&](int64_t r) {
      if (backward) softmax_row_backward(px + r * n, pg + r * n, po + r * n, n, log_form);
      else softmax_row(px + r * n, po + r * n, n, log_form);
    });
  });
  return out;
}

Tensor softmax_family(const Tensor& x, bool log_form) {
  Tensor y = row_op(x, Tensor(), log_form, false);
  return autograd::record(log_form ? OpId::LogSoftmax : OpId::Softmax, y, {x},
                          [yd = y.detach(), log_form](const Tensor& g) {
    return std::vector<Tensor>{row_op(yd, g, log_form, true)};
  });
}

}  // namespace

Tensor softmax(const Tensor& x) { return softmax_family(x, false); }
Tensor log_softmax(const Tensor& x) { return softmax_family(x, true); }

}  // namespace attn
