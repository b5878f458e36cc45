#include "metrics/param_stats.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <vector>

#include "autograd/node.h"
#include "metrics/activation_stats.h"
#include "ops/ops.h"

namespace attn::metrics {

std::string layer_of(const std::string& name) {
  const size_t first = name.find('.');
  if (first == std::string::npos) return name;
  const size_t second = name.find('.', first + 1);
  const std::string next = name.substr(first + 1, second == std::string::npos ? std::string::npos : second - first - 1);
  const bool index = !next.empty() && std::all_of(next.begin(), next.end(), [](unsigned char c) { return std::isdigit(c); });
  return index ? name.substr(0, first + 1 + next.size()) : name.substr(0, first);
}

namespace {

// Raw kurtosis of all of w's values, as a [1] tensor (f32, on w's device).
Tensor kurtosis_of(const Tensor& w) {
  return row_kurtosis(reshape(cast(w.detach(), DType::F32), {1, -1}));
}

// [1] tensors on one device (the model's) to host values in one transfer.
std::vector<double> to_host(const std::vector<Tensor>& parts) {
  if (parts.empty()) return {};
  return concat(parts, 0).to_vector();
}

}  // namespace

nlohmann::json weight_kurtosis(const ParamList& params) {
  autograd::NoGradGuard no_grad;
  std::vector<Tensor> parts;
  std::vector<std::string> names;
  for (const Param& p : params)
    if (p.value.dim() >= 2) parts.push_back(kurtosis_of(p.value)), names.push_back(p.name);
  const std::vector<double> v = to_host(parts);
  nlohmann::json out = nlohmann::json::object();
  for (size_t i = 0; i < names.size(); ++i) out[names[i]] = v[i];
  return out;
}

nlohmann::json grad_norms_by_layer(const ParamList& params) {
  autograd::NoGradGuard no_grad;
  std::vector<std::string> layers;  // in first-seen order
  std::map<std::string, Tensor> sq;
  for (const Param& p : params) {
    Tensor g = p.value.grad();
    if (!g.defined()) continue;
    Tensor gf = reshape(cast(g, DType::F32), {-1});
    Tensor s = reshape(sum(mul(gf, gf)), {1});
    const std::string layer = layer_of(p.name);
    auto [it, fresh] = sq.try_emplace(layer, s);
    if (fresh) layers.push_back(layer);
    else it->second = add(it->second, s);
  }
  std::vector<Tensor> parts;
  for (const auto& l : layers) parts.push_back(sq.at(l));
  const std::vector<double> v = to_host(parts);
  nlohmann::json out = nlohmann::json::object();
  for (size_t i = 0; i < layers.size(); ++i) out[layers[i]] = std::sqrt(v[i]);
  return out;
}

}  // namespace attn::metrics
