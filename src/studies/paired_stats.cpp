#include "studies/paired_stats.h"

#include <cmath>
#include <stdexcept>

namespace attn::studies {

namespace {

// The continued fraction of the incomplete beta function (modified Lentz), the part that
// converges fast for x < (a + 1) / (a + b + 2):
//   I_x(a, b) = x^a (1 − x)^b / (a B(a, b)) · 1 / (1 + d₁ / (1 + d₂ / (1 + …))),
//   d_{2m+1} = −(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)),  d_{2m} = m (b − m) x / ((a + 2m −
//   1)(a + 2m)).
double beta_fraction(double a, double b, double x) {
  const double tiny = 1e-300, eps = 1e-15;
  double c = 1, d = 1 - (a + b) * x / (a + 1);
  if (std::fabs(d) < tiny) d = tiny;
  d = 1 / d;
  double f = d;
  for (int m = 1; m <= 10000; ++m) {
    for (int odd = 0; odd < 2; ++odd) {
      const double num = odd ? -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
                             : m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
      d = 1 + num * d;
      c = 1 + num / c;
      if (std::fabs(d) < tiny) d = tiny;
      if (std::fabs(c) < tiny) c = tiny;
      d = 1 / d;
      f *= c * d;
      if (odd && std::fabs(c * d - 1) < eps) return f;
    }
  }
  return f;
}

// The regularised incomplete beta function I_x(a, b).
double incomplete_beta(double a, double b, double x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const double front = std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) +
                                a * std::log(x) + b * std::log1p(-x));
  if (x < (a + 1) / (a + b + 2)) return front * beta_fraction(a, b, x) / a;
  return 1 - front * beta_fraction(b, a, 1 - x) / b;  // I_x(a, b) = 1 − I_{1−x}(b, a)
}

// P(T ≤ t) for t ≥ 0: 1 − ½ I_{df/(df + t²)}(df/2, ½).
double t_cdf_upper_half(double t, int df) {
  const double v = df;
  return 1 - 0.5 * incomplete_beta(v / 2, 0.5, v / (v + t * t));
}

}  // namespace

double mean_of(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m += x;
  return m / static_cast<double>(v.size());
}

std::optional<double> sample_std(const std::vector<double>& v) {
  if (v.size() < 2) return std::nullopt;
  const double m = mean_of(v);
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return std::sqrt(ss / static_cast<double>(v.size() - 1));
}

double student_t_quantile(double p, int df) {
  if (!(p > 0 && p < 1) || df < 1)
    throw std::invalid_argument("student_t_quantile: needs 0 < p < 1 and df >= 1");
  if (p < 0.5) return -student_t_quantile(1 - p, df);
  if (p == 0.5) return 0;
  double lo = 0, hi = 1;
  while (t_cdf_upper_half(hi, df) < p) hi *= 2;  // the CDF is increasing: bracket, then bisect
  for (int i = 0; i < 200 && hi - lo > 1e-13 * hi; ++i) {
    const double mid = 0.5 * (lo + hi);
    (t_cdf_upper_half(mid, df) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

PairedDifference paired_difference(const std::vector<double>& x, const std::vector<double>& base) {
  if (x.size() != base.size() || x.empty())
    throw std::invalid_argument("paired_difference: needs two non-empty lists of equal length");
  std::vector<double> d;
  for (size_t i = 0; i < x.size(); ++i) d.push_back(x[i] - base[i]);
  PairedDifference out;
  out.n = d.size();
  out.mean = mean_of(d);
  out.std = sample_std(d);
  if (out.std) {
    const double half = student_t_quantile(0.975, static_cast<int>(out.n) - 1) * *out.std /
                        std::sqrt(static_cast<double>(out.n));
    out.low = out.mean - half;
    out.high = out.mean + half;
  }
  return out;
}

}  // namespace attn::studies
