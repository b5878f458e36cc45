// AdamW: see adamw.h for the maths. The element loop mirrors torch's _single_tensor_adamw
// operation by operation (same scalars, same order) so f64 results agree to a few ulps.
#include "optim/adamw.h"

#include <cmath>
#include <map>
#include <stdexcept>
#include <string>

#include "autograd/node.h"
#include "backend/cuda/ops_cuda.h"
#include "tensor/serialize.h"

namespace attn {

namespace {

constexpr char kMagic[] = "attnlab.adamw.v1";

void check_config(const AdamWConfig& c) {
  auto bad = [](const std::string& what) { throw std::invalid_argument("AdamW: " + what); };
  if (!(c.lr >= 0) || !std::isfinite(c.lr))
    bad("lr must be finite and >= 0, got " + std::to_string(c.lr));
  if (!(c.beta1 >= 0 && c.beta1 < 1))
    bad("beta1 must be in [0, 1), got " + std::to_string(c.beta1));
  if (!(c.beta2 >= 0 && c.beta2 < 1))
    bad("beta2 must be in [0, 1), got " + std::to_string(c.beta2));
  if (!(c.eps >= 0)) bad("eps must be >= 0, got " + std::to_string(c.eps));
  if (!(c.weight_decay >= 0))
    bad("weight_decay must be >= 0, got " + std::to_string(c.weight_decay));
}

// CPU f32/f64, or CUDA f32 (master weights; the fused kernel of kernels/adamw.cuh).
void check_param(const Param& p) {
  const std::string who = "AdamW: parameter '" + p.name + "'";
  if (p.name.empty()) throw std::invalid_argument("AdamW: a parameter has an empty name");
  if (!p.value.defined()) throw std::invalid_argument(who + " is an undefined tensor");
  if (p.value.device().is_cuda() && p.value.dtype() != DType::F32)
    throw std::invalid_argument(who + " is a CUDA " + dtype_name(p.value.dtype()) +
                                " tensor; AdamW on CUDA needs f32 (master) parameters");
  if (p.value.dtype() != DType::F32 && p.value.dtype() != DType::F64)
    throw std::invalid_argument(who + " has dtype " + dtype_name(p.value.dtype()) +
                                "; AdamW needs f32 or f64");
}

void check_grad(const Param& p, const Tensor& g) {
  const std::string who = "AdamW::step: gradient of '" + p.name + "'";
  if (!(g.device() == p.value.device()))
    throw std::invalid_argument(who + " is on " + g.device().str() + ", the param on " +
                                p.value.device().str());
  // On CUDA an f32 parameter also takes a bf16 gradient (converted to f32 in the kernel).
  const bool cuda_bf16_grad = g.device().is_cuda() && g.dtype() == DType::BF16;
  if (g.dtype() != p.value.dtype() && !cuda_bf16_grad)
    throw std::invalid_argument(who + " has dtype " + dtype_name(g.dtype()) + ", the param " +
                                dtype_name(p.value.dtype()));
  if (g.shape() != p.value.shape())
    throw std::invalid_argument(who + " has shape " + shape_str(g.shape()) + ", the param " +
                                shape_str(p.value.shape()));
}

struct Coeffs {
  double decay;     // 1 − lr·wd
  double neg_step;  // −lr / (1 − β₁ᵗ)
  double bc2_sqrt;  // √(1 − β₂ᵗ)
};

// The per-element update; T is the param's dtype, scalars are rounded to T as torch does.
template <class T>
void adamw_kernel(T* p, T* m, T* v, const T* g, int64_t n, const AdamWConfig& c, const Coeffs& k) {
  const T decay = static_cast<T>(k.decay), b1 = static_cast<T>(c.beta1),
          b2 = static_cast<T>(c.beta2), omb1 = static_cast<T>(1 - c.beta1),
          omb2 = static_cast<T>(1 - c.beta2), bc2 = static_cast<T>(k.bc2_sqrt),
          eps = static_cast<T>(c.eps), neg_step = static_cast<T>(k.neg_step);
  for (int64_t i = 0; i < n; ++i) {
    p[i] = p[i] * decay;                          // param.mul_(1 - lr*wd)
    m[i] = m[i] * b1 + omb1 * g[i];               // exp_avg.mul_(b1).add_(g, alpha=1-b1)
    v[i] = v[i] * b2 + omb2 * g[i] * g[i];        // exp_avg_sq.mul_(b2).addcmul_(g, g, 1-b2)
    const T denom = std::sqrt(v[i]) / bc2 + eps;  // (v.sqrt() / bc2_sqrt).add_(eps)
    p[i] = p[i] + neg_step * (m[i] / denom);      // param.addcdiv_(m, denom, -step_size)
  }
}

}  // namespace

AdamW::AdamW(ParamList params, AdamWConfig cfg) : params_(std::move(params)), cfg_(cfg) {
  check_config(cfg_);
  std::map<std::string, int> seen;
  for (const Param& p : params_) {
    check_param(p);
    if (seen[p.name]++)
      throw std::invalid_argument("AdamW: duplicate parameter name '" + p.name + "'");
    TensorOptions o{p.value.dtype(), p.value.device()};  // moments live with the param
    state_.push_back(State{0, zeros(p.value.shape(), o), zeros(p.value.shape(), o)});
  }
}

void AdamW::update(Param& p, State& s, double lr) {
  Tensor g = p.value.grad();
  if (!g.defined()) return;
  check_param(p);
  check_grad(p, g);
  ++s.step;
  const double t = static_cast<double>(s.step);
  const double wd = p.weight_decay ? cfg_.weight_decay : 0.0;
  const Coeffs k{1 - lr * wd, -lr / (1 - std::pow(cfg_.beta1, t)),
                 std::sqrt(1 - std::pow(cfg_.beta2, t))};
  if (p.value.device().is_cuda()) {
    // A bf16 working copy (ops/cast.cpp) is rewritten in the same pass, then stamped current.
    TensorImpl& impl = p.value.impl();
    const bool working = impl.working && impl.working->dtype == DType::BF16;
    float* master = static_cast<float*>(p.value.raw_data());
    cuda::adamw_step(
        master, static_cast<float*>(s.m.raw_data()), static_cast<float*>(s.v.raw_data()), g.dtype(),
        g.raw_data(), working ? static_cast<bf16*>(impl.working->storage->data()) : nullptr,
        p.value.numel(), {k.decay, cfg_.beta1, cfg_.beta2, k.bc2_sqrt, cfg_.eps, k.neg_step},
        p.value.device().index);
    if (working) impl.stamp_working();
    return;
  }
  dispatch_float(p.value.dtype(), "AdamW::step", [&](auto tag) {
    using T = decltype(tag);
    adamw_kernel<T>(p.value.data<T>(), s.m.data<T>(), s.v.data<T>(), g.data<T>(), p.value.numel(),
                    cfg_, k);
  });
}

void AdamW::step(double lr) {
  if (!(lr >= 0) || !std::isfinite(lr))
    throw std::invalid_argument("AdamW::step: lr must be finite and >= 0, got " +
                                std::to_string(lr));
  NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) update(params_[i], state_[i], lr);
  ++steps_;
}

void AdamW::zero_grad() {
  for (Param& p : params_) p.value.zero_grad();
}

// ---- checkpoint -------------------------------------------------------------------------
// Layout: magic string, u64 steps, u64 count, then per param: name, u64 step, m, v.

void AdamW::save(std::ostream& os) const {
  write_string(os, kMagic);
  write_u64(os, static_cast<uint64_t>(steps_));
  write_u64(os, params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    write_string(os, params_[i].name);
    write_u64(os, static_cast<uint64_t>(state_[i].step));
    write_tensor(os, state_[i].m);
    write_tensor(os, state_[i].v);
  }
  if (!os) throw std::runtime_error("AdamW::save: write failed");
}

namespace {

void check_moment(const Param& p, const Tensor& t, const char* which) {
  const std::string who = "AdamW::load: parameter '" + p.name + "': checkpoint " + which;
  if (t.dtype() != p.value.dtype())
    throw std::runtime_error(who + " has dtype " + dtype_name(t.dtype()) +
                             " but the parameter is " + dtype_name(p.value.dtype()));
  if (t.shape() != p.value.shape())
    throw std::runtime_error(who + " has shape " + shape_str(t.shape()) +
                             " but the parameter has shape " + shape_str(p.value.shape()));
}

}  // namespace

void AdamW::load(std::istream& is) {
  if (read_string(is) != kMagic)
    throw std::runtime_error("AdamW::load: not an AdamW state (bad magic)");
  const int64_t steps = static_cast<int64_t>(read_u64(is));
  const uint64_t count = read_u64(is);
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < params_.size(); ++i) index[params_[i].name] = i;

  std::vector<State> loaded(params_.size());
  std::vector<bool> found(params_.size(), false);
  for (uint64_t e = 0; e < count; ++e) {
    const std::string name = read_string(is);
    State s;
    s.step = static_cast<int64_t>(read_u64(is));
    s.m = read_tensor(is);
    s.v = read_tensor(is);
    auto it = index.find(name);
    if (it == index.end())
      throw std::runtime_error("AdamW::load: checkpoint has state for parameter '" + name +
                               "', which this optimizer does not have");
    if (found[it->second])
      throw std::runtime_error("AdamW::load: checkpoint has parameter '" + name + "' twice");
    check_moment(params_[it->second], s.m, "m");
    check_moment(params_[it->second], s.v, "v");
    const Device dev = params_[it->second].value.device();  // checkpoints hold host tensors
    if (!dev.is_cpu()) {
      s.m = s.m.to(dev);
      s.v = s.v.to(dev);
    }
    found[it->second] = true;
    loaded[it->second] = std::move(s);
  }
  for (size_t i = 0; i < params_.size(); ++i)
    if (!found[i])
      throw std::runtime_error("AdamW::load: parameter '" + params_[i].name +
                               "' has no state in the checkpoint");
  state_ = std::move(loaded);
  steps_ = steps;
}

bool AdamW::state_is_finite() const {
  for (const State& s : state_)
    for (const Tensor* t : {&s.m, &s.v})
      if (t->defined())
        for (double x : t->to_vector())
          if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace attn
