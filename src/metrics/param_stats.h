// Statistics of the parameters, for the inside-the-model log (metrics/model_stats.h has the
// activations'): the raw kurtosis μ₄/(σ⁴ + 1e-6) of each weight matrix (Gaussian = 3) and the
// gradient norm per layer. Tensor ops on the parameters' device, one transfer to the host.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "optim/param.h"

namespace attn::metrics {

// The layer a parameter belongs to, from its dotted name: its first component, or the first
// two when the second is an index ("blocks.3.attn.wq.weight" -> "blocks.3", "head.weight" ->
// "head", "cls_token" -> "cls_token").
std::string layer_of(const std::string& param_name);

// {name: kurtosis} for every parameter with two or more dims (the matrices).
nlohmann::json weight_kurtosis(const ParamList& params);

// {layer: ‖g‖₂ over the layer's parameters}; parameters without a gradient are left out.
nlohmann::json grad_norms_by_layer(const ParamList& params);

}  // namespace attn::metrics
