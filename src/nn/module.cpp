#include "nn/module.h"

#include <cstring>

#include "nn/quant_point.h"
#include "ops/ops.h"

namespace attn::nn {

Tensor Module::register_param(const std::string& name, Tensor value, bool weight_decay) {
  for (const Param& p : params_)
    if (p.name == name) throw std::logic_error("Module: parameter '" + name + "' registered twice");
  value.set_requires_grad(true);
  params_.push_back({name, value, weight_decay});
  return value;
}

void Module::collect(const std::string& prefix, ParamList& out) const {
  for (const Param& p : params_) out.push_back({prefix + p.name, p.value, p.weight_decay});
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", out);
}

ParamList Module::parameters() const {
  ParamList out;
  collect("", out);
  return out;
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (const Param& p : parameters()) n += p.value.numel();
  return n;
}

void Module::to(Device device) {
  for (Param& p : params_) {
    TensorImpl& impl = p.value.impl();
    if (impl.storage->device() == device) continue;
    impl.storage = p.value.to(device).impl().storage;
    impl.grad.reset();
    impl.working.reset();
  }
  for (auto& [name, child] : children_) child->to(device);
}

void Module::set_compute_dtype(DType dt) {
  if (!is_floating(dt))
    throw std::invalid_argument(std::string("Module::set_compute_dtype: ") + dtype_name(dt) + " is not a floating dtype");
  compute_dtype_ = dt;
  for (auto& [name, child] : children_) child->set_compute_dtype(dt);
}

Tensor Module::working(const Tensor& p) const { return compute_dtype_ && p.defined() ? cast(p, *compute_dtype_) : p; }

void Module::walk(const std::string& path, const std::function<void(Module&)>& f) {
  path_ = path;
  f(*this);
  for (auto& [name, child] : children_) child->walk(path.empty() ? name : path + "." + name, f);
}

void Module::set_tap(Tap* tap) {
  walk("", [tap](Module& m) { m.tap_ = tap; });
}

void Module::set_quantizer(ActivationQuantizer* q) {
  walk("", [q](Module& m) { m.quantizer_ = q; });
}

Tensor Module::quant_point(const char* suffix, const Tensor& x) const {
  if (!quantizer_) return x;
  return quantizer_->at(*suffix ? (path_.empty() ? std::string(suffix) : path_ + "." + suffix) : path_, x);
}

void Module::set_training(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->set_training(on);
}

void init_normal(Tensor& t, double std, Generator& gen) {
  Tensor r = randn(t.shape(), gen, {t.dtype(), t.device()}, 0.0, std);
  copy_bytes(t.raw_data(), t.device(), r.raw_data(), r.device(), t.nbytes());
}

void init_constant(Tensor& t, double value) {
  Tensor r = full(t.shape(), value, {t.dtype(), t.device()});
  copy_bytes(t.raw_data(), t.device(), r.raw_data(), r.device(), t.nbytes());
}

}  // namespace attn::nn
