// Quantisation points: where a fake quantiser (src/metrics/fake_quant.h) may replace an activation
// by its quantised value. The points are each Linear's input "<path>.in" and output
// "<path>.out" (after the GELU when it is fused into the Linear), and the residual stream after
// each residual add of a block: "<block>.residual" (after attention) and "<block>" (its output).
// Module::set_quantizer hands one quantizer to the whole tree; unset, a point is the identity.
#pragma once
#include <string>

#include "tensor/tensor.h"

namespace attn::nn {

class ActivationQuantizer {
 public:
  virtual ~ActivationQuantizer() = default;
  virtual Tensor at(const std::string& point, const Tensor& x) = 0;
};

}  // namespace attn::nn
