// Global-norm gradient clipping; semantics in clip.h.
#include "optim/clip.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace attn {

namespace {

// Calls f(T* data, int64_t n) on each defined CPU f32/f64 gradient.
template <class F>
void for_each_grad(const ParamList& params, const char* op, F&& f) {
  for (const Param& p : params) {
    Tensor g = p.value.grad();
    if (!g.defined()) continue;
    if (!g.device().is_cpu())
      throw std::invalid_argument(std::string(op) + ": gradient of '" + p.name + "' is on " +
                                  g.device().str() + "; only CPU is supported for now");
    dispatch_float(g.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      f(g.data<T>(), g.numel());
    });
  }
}

}  // namespace

double clip_grad_norm(const ParamList& params, double max_norm) {
  if (std::isnan(max_norm)) throw std::invalid_argument("clip_grad_norm: max_norm is NaN");
  double sum_sq = 0;  // Σ g², in f64 whatever the gradient dtype
  for_each_grad(params, "clip_grad_norm", [&](const auto* g, int64_t n) {
    for (int64_t i = 0; i < n; ++i) sum_sq += static_cast<double>(g[i]) * static_cast<double>(g[i]);
  });
  const double norm = std::sqrt(sum_sq);
  if (max_norm <= 0 || !std::isfinite(norm)) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (!(coef < 1)) return norm;
  for_each_grad(params, "clip_grad_norm", [&](auto* g, int64_t n) {
    using T = std::remove_pointer_t<decltype(g)>;
    const T c = static_cast<T>(coef);
    for (int64_t i = 0; i < n; ++i) g[i] *= c;
  });
  return norm;
}

bool grads_finite(const ParamList& params) {
  bool ok = true;
  for_each_grad(params, "grads_finite", [&](const auto* g, int64_t n) {
    for (int64_t i = 0; i < n && ok; ++i) ok = std::isfinite(static_cast<double>(g[i]));
  });
  return ok;
}

}  // namespace attn
