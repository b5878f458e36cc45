// Global-norm gradient clipping; semantics in clip.h.
#include "optim/clip.h"

#include <cmath>
#include <map>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "backend/cuda/ops_cuda.h"

namespace attn {

namespace {

// Calls f(T* data, int64_t n) on each defined CPU f32/f64 gradient (CUDA ones: see below).
template <class F>
void for_each_grad(const ParamList& params, const char* op, F&& f) {
  for (const Param& p : params) {
    Tensor g = p.value.grad();
    if (!g.defined() || g.device().is_cuda()) continue;
    dispatch_float(g.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      f(g.data<T>(), g.numel());
    });
  }
}

// Σ g² (f64) over the CUDA gradients: one reduction per device (kernels/adamw.cuh), 0 if none.
double cuda_sum_squares(const ParamList& params) {
  std::map<int, std::vector<cuda::GradRef>> by_device;
  for (const Param& p : params) {
    Tensor g = p.value.grad();
    if (g.defined() && g.device().is_cuda())
      by_device[g.device().index].push_back({g.dtype(), g.raw_data(), g.numel()});
  }
  double sum = 0;
  for (const auto& [device, grads] : by_device) sum += cuda::sum_squares(grads, device);
  return sum;
}

void cuda_scale(const ParamList& params, double coef) {
  for (const Param& p : params) {
    Tensor g = p.value.grad();
    if (g.defined() && g.device().is_cuda())
      cuda::scale_inplace(g.dtype(), g.raw_data(), g.numel(), coef, g.device().index);
  }
}

}  // namespace

double grad_sum_squares(const ParamList& params) {
  double sum_sq = 0;  // Σ g², in f64 whatever the gradient dtype
  for_each_grad(params, "clip_grad_norm", [&](const auto* g, int64_t n) {
    for (int64_t i = 0; i < n; ++i) sum_sq += static_cast<double>(g[i]) * static_cast<double>(g[i]);
  });
  return sum_sq + cuda_sum_squares(params);
}

void scale_grads(const ParamList& params, double coef) {
  for_each_grad(params, "clip_grad_norm", [&](auto* g, int64_t n) {
    using T = std::remove_pointer_t<decltype(g)>;
    const T c = static_cast<T>(coef);
    for (int64_t i = 0; i < n; ++i) g[i] *= c;
  });
  cuda_scale(params, coef);
}

double clip_grad_norm(const ParamList& params, double max_norm) {
  if (std::isnan(max_norm)) throw std::invalid_argument("clip_grad_norm: max_norm is NaN");
  const double norm = std::sqrt(grad_sum_squares(params));
  if (max_norm <= 0 || !std::isfinite(norm)) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1) scale_grads(params, coef);
  return norm;
}

bool grads_finite(const ParamList& params) {
  bool ok = true;
  for_each_grad(params, "grads_finite", [&](const auto* g, int64_t n) {
    for (int64_t i = 0; i < n && ok; ++i) ok = std::isfinite(static_cast<double>(g[i]));
  });
  // CUDA: a sum of f64 squares of f32/bf16 values cannot overflow, so it is finite exactly when
  // every element is.
  return ok && std::isfinite(cuda_sum_squares(params));
}

}  // namespace attn
