#include "metrics/fake_quant.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <regex>
#include <stdexcept>

#include "autograd/node.h"
#include "ops/ops.h"

namespace attn::metrics {

std::string QuantScheme::name() const {
  return fmt::format("w{}a{}{}", weight_bits, act_bits, per_channel ? " (per-channel weights)" : "");
}

QuantScheme parse_quant_scheme(const std::string& s) {
  static const std::regex form("w([0-9]+)a([0-9]+)");
  std::smatch m;
  if (!std::regex_match(s, m, form))
    throw std::invalid_argument("quantisation scheme '" + s + "': expected wNaM (weight and activation bits), e.g. w8a8 or w8a16");
  QuantScheme q;
  q.weight_bits = std::stoi(m[1]);
  q.act_bits = std::stoi(m[2]);
  if (q.weight_bits < 2 || q.weight_bits > 16 || q.act_bits < 2 || q.act_bits > 16)
    throw std::invalid_argument("quantisation scheme '" + s + "': bits must be in [2, 16]");
  return q;
}

namespace {

// clamp(v, 0, q) from relu: r = relu(v) is v floored at 0; q − relu(q − r) caps it at q.
Tensor clamp_0_q(const Tensor& v, double q) { return add(neg(relu(add(neg(relu(v)), q))), q); }

double host_scalar(const Tensor& t) { return t.item(); }

}  // namespace

Tensor fake_quant_affine(const Tensor& x, double scale, double zero_point, int64_t quant_max) {
  Tensor q = clamp_0_q(add(round(mul(x, 1.0 / scale)), zero_point), static_cast<double>(quant_max));
  return mul(add(q, -zero_point), scale);
}

Tensor fake_quant_weight(const Tensor& w, int bits, bool per_channel) {
  const double qmax = std::ldexp(1.0, bits - 1) - 1;
  Tensor a = sqrt(mul(w, w));  // |w|
  if (!per_channel || w.dim() < 2) {
    const double s = host_scalar(max(reshape(a, {-1}), 0)) / qmax;
    if (s == 0) return w;  // all zeros: exact already
    return mul(round(mul(w, 1.0 / s)), s);
  }
  // One scale per output row: s_r = max_j |w_rj| / qmax (a zero row keeps scale 1: exact).
  Tensor rows = reshape(a, {w.size(0), -1});
  Tensor s = mul(max(rows, 1, true), 1.0 / qmax);                 // [out, 1]
  Tensor zero = where(s, zeros(s.shape(), {s.dtype(), s.device()}), ones(s.shape(), {s.dtype(), s.device()}));
  s = add(s, zero);                                                 // 0 -> 1
  Tensor wr = reshape(w, {w.size(0), -1});
  return reshape(mul(round(div(wr, s)), s), w.shape());
}

bool under(const std::string& name, const std::vector<std::string>& prefixes) {
  for (const std::string& p : prefixes)
    if (name == p || name.rfind(p + ".", 0) == 0) return true;
  return false;
}

nlohmann::json quantize_weights(const ParamList& params, const QuantScheme& scheme, const std::vector<std::string>& keep) {
  autograd::NoGradGuard no_grad;
  nlohmann::json err = nlohmann::json::object();
  for (const Param& p : params) {
    if (p.value.dim() < 2 || under(p.name, keep)) continue;
    Tensor w = p.value.detach();
    Tensor q = fake_quant_weight(w, scheme.weight_bits, scheme.per_channel);
    Tensor d = sub(q, w);
    const double norm = std::sqrt(host_scalar(sum(mul(w, w))));
    err[p.name] = norm > 0 ? std::sqrt(host_scalar(sum(mul(d, d)))) / norm : 0.0;
    Tensor target = p.value;  // shares the parameter's storage
    copy_bytes(target.raw_data(), target.device(), q.raw_data(), q.device(), target.nbytes());
    target.impl().working.reset();  // a mixed-precision copy would be stale
  }
  return err;
}

ActivationFakeQuant::ActivationFakeQuant(int bits, std::vector<std::string> keep, double momentum)
    : bits_(bits), keep_(std::move(keep)), momentum_(momentum) {}

Tensor ActivationFakeQuant::at(const std::string& point, const Tensor& x) {
  if (under(point, keep_)) return x;
  autograd::NoGradGuard no_grad;
  auto [it, fresh] = points_.try_emplace(point);
  if (fresh) order_.push_back(point);
  Point& p = it->second;
  Tensor flat = reshape(x, {-1});
  if (mode_ == Mode::Calibrate) {
    const double lo = -host_scalar(max(neg(flat), 0)), hi = host_scalar(max(flat, 0));
    if (!p.seen) p.lo = lo, p.hi = hi, p.seen = true;
    else p.lo = momentum_ * p.lo + (1 - momentum_) * lo, p.hi = momentum_ * p.hi + (1 - momentum_) * hi;
    return x;
  }
  if (!p.seen)
    throw std::logic_error("fake quantisation: point '" + point + "' was not seen in calibration");
  const double qmax = std::ldexp(1.0, bits_) - 1;
  const double lo = std::min(p.lo, 0.0), hi = std::max(p.hi, 0.0);
  const double scale = hi > lo ? (hi - lo) / qmax : 1.0;
  const double zero_point = std::clamp(std::nearbyint(-lo / scale), 0.0, qmax);
  Tensor q = fake_quant_affine(x, scale, zero_point, static_cast<int64_t>(qmax));
  Tensor d = reshape(sub(q, x), {-1});
  Tensor e = sum(mul(d, d)), n = sum(mul(flat, flat));
  p.err_sq = p.err_sq.defined() ? add(p.err_sq, e) : e;
  p.norm_sq = p.norm_sq.defined() ? add(p.norm_sq, n) : n;
  return q;
}

nlohmann::json ActivationFakeQuant::report() const {
  nlohmann::json out = nlohmann::json::object();
  const double qmax = std::ldexp(1.0, bits_) - 1;
  for (const std::string& name : order_) {
    const Point& p = points_.at(name);
    const double lo = std::min(p.lo, 0.0), hi = std::max(p.hi, 0.0);
    const double scale = hi > lo ? (hi - lo) / qmax : 1.0;
    nlohmann::json j = {{"min", p.lo}, {"max", p.hi}, {"scale", scale},
                        {"zero_point", std::clamp(std::nearbyint(-lo / scale), 0.0, qmax)}};
    if (p.err_sq.defined()) {
      const double n = host_scalar(p.norm_sq);
      j["rel_error"] = n > 0 ? std::sqrt(host_scalar(p.err_sq) / n) : 0.0;
    }
    out[name] = std::move(j);
  }
  return out;
}

}  // namespace attn::metrics
