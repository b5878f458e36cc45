// A tap: what a model shows an observer while it runs forward, so that statistics of the inside
// of the model (src/metrics/) need no change to the model's maths. A module with a tap reports
//   activation(path, x)  x [B, T, D]: the attention output projection ("blocks.3.attn"), the MLP
//                        output ("blocks.3.mlp") and each block's output ("blocks.3");
//   attention(path, q, k, spec)  the scores' inputs of one attention ("blocks.3.attn"), q and k
//                        as the kernel sees them (after QK-norm and RoPE), with the spec (variant,
//                        bias, masks), so the observer can recompute rows of P.
// The tensors belong to the forward: an observer must not change them, and should compute
// under no-grad on detached copies (the tap is also called in training steps).
#pragma once
#include <string>

#include "ops/ops.h"

namespace attn::nn {

class Tap {
 public:
  virtual ~Tap() = default;
  virtual void activation(const std::string& path, const Tensor& x) = 0;
  virtual void attention(const std::string& path, const Tensor& q, const Tensor& k, const AttentionSpec& spec) = 0;
};

}  // namespace attn::nn
