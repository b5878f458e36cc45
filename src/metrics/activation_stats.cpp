#include "metrics/activation_stats.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "ops/ops.h"

namespace attn::metrics {

double raw_kurtosis(std::span<const double> x) {
  if (x.empty()) return 0;
  const double n = static_cast<double>(x.size());
  double mean = 0;
  for (double v : x) mean += v;
  mean /= n;
  // Central moments about the mean, second pass: no cancellation of E[x⁴] − … terms.
  double m2 = 0, m4 = 0;
  for (double v : x) {
    const double d = v - mean, d2 = d * d;
    m2 += d2;
    m4 += d2 * d2;
  }
  m2 /= n;
  m4 /= n;
  return m4 / (m2 * m2 + 1e-6);
}

double max_abs(std::span<const double> x) {
  double m = 0;
  for (double v : x) m = std::max(m, std::abs(v));
  return m;
}

void ActivationStat::add_sample(std::span<const double> sample) {
  const double inf = max_abs(sample);
  sum_inf_norm_ += inf;
  sum_kurtosis_ += raw_kurtosis(sample);
  max_inf_norm_ = std::max(max_inf_norm_, inf);
  ++samples_;
}

void ActivationStat::add(const Tensor& x) {
  if (x.dim() < 2 || x.size(0) == 0)
    throw std::invalid_argument("ActivationStat: need an activation [B, ...], got " + shape_str(x.shape()));
  const std::vector<double> v = x.to_vector();
  const int64_t per = x.numel() / x.size(0);
  for (int64_t b = 0; b < x.size(0); ++b)
    add_sample(std::span<const double>(v.data() + b * per, static_cast<size_t>(per)));
}

Tensor row_kurtosis(const Tensor& x) {
  Tensor centred = sub(x, mean(x, 1, true));
  Tensor d2 = mul(centred, centred);
  Tensor m2 = mean(d2, 1), m4 = mean(mul(d2, d2), 1);
  return div(m4, add(mul(m2, m2), 1e-6));
}

double weight_kurtosis(const Tensor& w) {
  const std::vector<double> v = w.to_vector();
  return raw_kurtosis(v);
}

}  // namespace attn::metrics
