// Fake quantisation for post-training evaluation (the protocol of Bondarenko et al., Qualcomm,
// "Quantizable Transformers", 2023): every value is replaced by the nearest value of a b-bit
// grid, and the model runs on in floating point, so the metric shows what the rounding costs.
//   weights      symmetric, per tensor (or per output channel): s = max|W| / (2^(b−1) − 1),
//                W_q = round(W / s)·s, the grid [−(2^(b−1) − 1), 2^(b−1) − 1]·s;
//   activations  asymmetric, per tensor: the range [lo, hi] (widened to hold 0) is estimated
//                over calibration batches, s = (hi − lo)/(2^b − 1), z = round(−lo/s),
//                x_q = (clamp(round(x/s) + z, 0, 2^b − 1) − z)·s — torch's
//                fake_quantize_per_tensor_affine with quant_min 0, quant_max 2^b − 1.
// The range estimate is a running min–max: the first calibration batch sets [lo, hi], each next
// one moves it by (1 − momentum) toward that batch's min and max (momentum 0.9, Qualcomm's
// RunningMinMaxEstimator).
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/quant_point.h"
#include "optim/param.h"

namespace attn::metrics {

// "w8a8", "w8a16", "w4a8", …: weight bits and activation bits, each in [2, 16].
struct QuantScheme {
  int weight_bits = 8, act_bits = 8;
  bool per_channel = false;  // weights: one scale per output row instead of per tensor
  std::string name() const;
};
QuantScheme parse_quant_scheme(const std::string& s);  // std::invalid_argument naming s

// The affine fake quantiser above, for a given scale and zero point (tensor ops, any device).
Tensor fake_quant_affine(const Tensor& x, double scale, double zero_point, int64_t quant_max);
// The symmetric weight quantiser, per tensor or per output row (dim 0) of w.
Tensor fake_quant_weight(const Tensor& w, int bits, bool per_channel);

// True when `name` ("head.weight", "blocks.0.mlp") is `prefix` or lies under it ("head.").
bool under(const std::string& name, const std::vector<std::string>& prefixes);

// Replaces in place every parameter with two or more dims (the matrices and embeddings) by its
// fake-quantised value, except those under `keep` (the output head); biases and norms stay.
// Returns {name: ‖W_q − W‖ / ‖W‖}.
nlohmann::json quantize_weights(const ParamList& params, const QuantScheme& scheme,
                                const std::vector<std::string>& keep);

class ActivationFakeQuant : public nn::ActivationQuantizer {
 public:
  enum class Mode { Calibrate, Quantize };
  // Points under `keep` (the output head) pass through untouched.
  ActivationFakeQuant(int bits, std::vector<std::string> keep, double momentum = 0.9);
  void set_mode(Mode m) { mode_ = m; }
  Tensor at(const std::string& point, const Tensor& x) override;
  // {point: {"min", "max", "scale", "zero_point", "rel_error": ‖x_q − x‖/‖x‖ over the quantised
  // batches}}, points in first-seen order.
  nlohmann::json report() const;
  size_t points() const { return order_.size(); }

 private:
  struct Point {
    double lo = 0, hi = 0;
    bool seen = false;
    Tensor err_sq, norm_sq;  // device scalars over the quantised batches
  };
  int bits_;
  std::vector<std::string> keep_;
  double momentum_;
  Mode mode_ = Mode::Calibrate;
  std::vector<std::string> order_;
  std::map<std::string, Point> points_;
};

}  // namespace attn::metrics
