// The statistics of a study's report: mean and sample standard deviation over seeds, and the
// paired difference of a variant against its baseline (the same other axis values and seed) with
// a 95% confidence interval from Student's t distribution with n − 1 degrees of freedom:
//   d_s = x_s − base_s,  d̄ ± t_{0.975, n−1} · sd(d) / √n.
#pragma once
#include <optional>
#include <vector>

namespace attn::studies {

double mean_of(const std::vector<double>& v);
// Sample standard deviation (n − 1); nullopt below two values.
std::optional<double> sample_std(const std::vector<double>& v);

// The p-quantile of Student's t distribution with df degrees of freedom (0 < p < 1, df ≥ 1).
double student_t_quantile(double p, int df);

struct PairedDifference {
  size_t n = 0;  // pairs
  double mean = 0;
  std::optional<double> std, low, high;  // with n ≥ 2: the differences' sd and the 95% interval
};
// x[i] − base[i] over the pairs (equal lengths; std::invalid_argument otherwise, or when empty).
PairedDifference paired_difference(const std::vector<double>& x, const std::vector<double>& base);

}  // namespace attn::studies
