#include "metrics/model_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "autograd/node.h"
#include "metrics/activation_stats.h"
#include "ops/ops.h"

namespace attn::metrics {

std::vector<int64_t> sampled_rows(int64_t n, int64_t count) {
  std::vector<int64_t> rows;
  if (n <= 0 || count <= 0) return rows;
  if (count >= n) {
    for (int64_t i = 0; i < n; ++i) rows.push_back(i);
    return rows;
  }
  // Row r·(n−1)/(count−1), r = 0 … count−1: the first and the last query, evenly between.
  for (int64_t r = 0; r < count; ++r)
    rows.push_back(count == 1 ? n - 1 : r * (n - 1) / (count - 1));
  return rows;
}

namespace {

Tensor accumulate(const Tensor& acc, const Tensor& x) { return acc.defined() ? add(acc, x) : x; }

// 1 where a key is visible to the sampled query row, else 0: [B or 1, 1, R, M], from the
// logits' −inf (a finite logit is visible). exp(logits − max) would underflow for a visible
// key far below the max; comparing with the mask built from the logits does not.
Tensor visible_keys(const Tensor& logits) {
  // where(cond, a, b) takes a non-zero cond as true: −inf + inf = NaN, so go through a finite
  // test that holds for finite values only: x − x is 0 for finite x and NaN for ±inf.
  Tensor finite_zero = sub(logits, logits);            // 0 or NaN
  Tensor one = ones(logits.shape(), {logits.dtype(), logits.device()});
  Tensor nan_to_one = where(finite_zero, one, finite_zero);  // NaN is non-zero: 1 there, 0 else
  return sub(one, nan_to_one);                          // 1 visible, 0 hidden
}

}  // namespace

void ModelStats::activation(const std::string& path, const Tensor& x_in) {
  autograd::NoGradGuard no_grad;
  if (x_in.dim() < 2) throw std::invalid_argument("ModelStats: activation '" + path + "' is not [B, ...]");
  const int64_t B = x_in.size(0);
  Tensor x = reshape(cast(x_in.detach(), DType::F32), {B, -1});
  Tensor kurt = row_kurtosis(x);                  // [B]
  Tensor inf = max(sqrt(mul(x, x)), 1);           // [B]
  auto [it, fresh] = acts_.try_emplace(path);
  if (fresh) act_order_.push_back(path);
  it->second.sum_inf = accumulate(it->second.sum_inf, sum(inf));
  it->second.sum_kurt = accumulate(it->second.sum_kurt, sum(kurt));
  it->second.samples += B;
}

void ModelStats::attention(const std::string& path, const Tensor& q_in, const Tensor& k_in,
                           const AttentionSpec& spec) {
  autograd::NoGradGuard no_grad;
  Tensor q = cast(q_in.detach(), DType::F32), k = cast(k_in.detach(), DType::F32);
  AttentionSpec s = spec;
  if (s.score_bias.defined()) s.score_bias = cast(s.score_bias.detach(), DType::F32);
  AttentionRows a = attention_rows(q, k, s, sampled_rows(q.size(2), attention_rows_));
  const Tensor& p = a.probs;  // [B, H, R, M]
  const int64_t B = p.size(0), H = p.size(1), R = p.size(2), M = p.size(3);
  Tensor visible = visible_keys(a.logits);
  Tensor row_mass = sum(p, 3, true);
  // Entropy of the row normalised to 1; 0·log 0 = 0 (p̂ log(p̂ + tiny) is 0 there). A row of
  // mass 0 (a sigmoid head that attends to nothing at all) has entropy 0.
  Tensor p_hat = div(p, add(row_mass, 1e-30));
  Tensor entropy = neg(sum(mul(p_hat, log(add(p_hat, 1e-30))), 3));  // [B, H, R]
  Tensor sink = reshape(slice(p, 3, 0, 1), {B, H, R});
  Tensor top = max(p, 3);
  Tensor zero = where(p, zeros(p.shape(), {p.dtype(), p.device()}), visible);  // visible and P == 0
  Tensor zero_fraction = div(sum(zero, 3), sum(visible, 3));
  // Hidden logits are −inf, so the max is over visible keys (a row sees at least its first key).
  Tensor max_logit = max(reshape(permute(a.logits, {1, 0, 2, 3}), {H, -1}), 1);  // [H]
  auto per_head_sum = [&](const Tensor& t) {  // [B, H, R] -> [1, H]
    return reshape(sum(sum(t, 2), 0), {1, H});
  };
  Tensor sums = concat({per_head_sum(entropy), per_head_sum(sink), per_head_sum(top),
                        per_head_sum(reshape(row_mass, {B, H, R})), per_head_sum(zero_fraction),
                        reshape(max_logit, {1, H})},
                       0);  // [6, H]
  auto [it, fresh] = attns_.try_emplace(path);
  if (fresh) attn_order_.push_back(path);
  Attn& acc = it->second;
  if (!acc.sums.defined()) {
    acc.sums = sums;
  } else {
    // Rows 0-4 add up; row 5 (the max logit) keeps the larger: max over a stacked pair.
    Tensor added = add(slice(acc.sums, 0, 0, 5), slice(sums, 0, 0, 5));
    Tensor pair = concat({slice(acc.sums, 0, 5, 6), slice(sums, 0, 5, 6)}, 0);  // [2, H]
    acc.sums = concat({added, reshape(max(pair, 0), {1, H})}, 0);
  }
  acc.rows += B * R;
  (void)M;
}

void ModelStats::clear() {
  act_order_.clear();
  attn_order_.clear();
  acts_.clear();
  attns_.clear();
}

nlohmann::json ModelStats::report() const {
  // One transfer: every accumulator into one host vector.
  std::vector<Tensor> parts;
  for (const auto& path : act_order_) {
    parts.push_back(reshape(acts_.at(path).sum_inf, {1}));
    parts.push_back(reshape(acts_.at(path).sum_kurt, {1}));
  }
  for (const auto& path : attn_order_) parts.push_back(reshape(attns_.at(path).sums, {-1}));
  nlohmann::json out = {{"activations", nlohmann::json::object()}, {"attention", nlohmann::json::object()}};
  if (parts.empty()) return out;
  const std::vector<double> v = concat(parts, 0).to_vector();
  size_t at = 0;
  double max_inf = 0, max_kurt = 0;
  for (const auto& path : act_order_) {
    const double n = static_cast<double>(acts_.at(path).samples);
    const double inf = v[at++] / n, kurt = v[at++] / n;
    out["activations"][path] = {{"inf_norm", inf}, {"kurtosis", kurt}, {"samples", acts_.at(path).samples}};
    max_inf = std::max(max_inf, inf);
    max_kurt = std::max(max_kurt, kurt);
  }
  double sink = 0, mass = 0, entropy = 0;
  int64_t heads_seen = 0;
  for (const auto& path : attn_order_) {
    const Attn& a = attns_.at(path);
    const int64_t H = a.sums.size(1);
    const double rows_per_head = static_cast<double>(a.rows);
    auto head_means = [&](int which, bool is_max) {
      std::vector<double> h(H);
      for (int64_t j = 0; j < H; ++j) h[j] = v[at + which * H + j] / (is_max ? 1.0 : rows_per_head);
      return h;
    };
    nlohmann::json j = {{"entropy", head_means(0, false)},      {"sink_mass", head_means(1, false)},
                        {"top_mass", head_means(2, false)},     {"row_mass", head_means(3, false)},
                        {"zero_fraction", head_means(4, false)}, {"max_logit", head_means(5, true)},
                        {"rows", a.rows}};
    for (int64_t h = 0; h < H; ++h) {
      entropy += j["entropy"][h].get<double>();
      sink += j["sink_mass"][h].get<double>();
      mass += j["row_mass"][h].get<double>();
    }
    heads_seen += H;
    out["attention"][path] = std::move(j);
    at += 6 * H;
  }
  nlohmann::json summary = nlohmann::json::object();
  if (!act_order_.empty()) summary["max_inf_norm"] = max_inf, summary["max_kurtosis"] = max_kurt;
  if (heads_seen > 0) {
    summary["sink_mass"] = sink / heads_seen;
    summary["row_mass"] = mass / heads_seen;
    summary["entropy"] = entropy / heads_seen;
  }
  out["summary"] = std::move(summary);
  return out;
}

}  // namespace attn::metrics
