// Statistics of activations and weights that tell whether a model grows outliers (Bondarenko et
// al., Qualcomm, NeurIPS 2023, "Quantizable Transformers"):
//   kurtosis   μ₄ / (σ⁴ + 1e-6) of a tensor's values, raw (a Gaussian gives 3, not 0);
//   ∞-norm     max |x|.
// For an activation [B, ...] both are taken per sample (over the sample's T × d values) and then
// averaged over the samples seen: the Qualcomm protocol, so one odd batch does not dominate.
#pragma once
#include <cstdint>
#include <span>

#include "tensor/tensor.h"

namespace attn::metrics {

// Raw kurtosis of n values (f64 two-pass): μ₄ / (σ⁴ + 1e-6) with population moments about the
// mean. A constant tensor gives 0.
double raw_kurtosis(std::span<const double> x);
double max_abs(std::span<const double> x);

// Per-sample ∞-norm and kurtosis of activations, averaged over every sample added.
class ActivationStat {
 public:
  // x: [B, ...] on any device (copied to the host in f64); each of the B samples counts once.
  void add(const Tensor& x);
  void add_sample(std::span<const double> sample);
  int64_t samples() const { return samples_; }
  double mean_inf_norm() const { return samples_ ? sum_inf_norm_ / samples_ : 0; }
  double mean_kurtosis() const { return samples_ ? sum_kurtosis_ / samples_ : 0; }
  double max_inf_norm() const { return max_inf_norm_; }  // over every sample, for reference

 private:
  int64_t samples_ = 0;
  double sum_inf_norm_ = 0, sum_kurtosis_ = 0, max_inf_norm_ = 0;
};

// Raw kurtosis of each row of x [R, n] as tensor ops on x's device (f32): [R].
Tensor row_kurtosis(const Tensor& x);

// Kurtosis of a weight matrix (all its values, one number per matrix).
double weight_kurtosis(const Tensor& w);

}  // namespace attn::metrics
