// Multi-head self-attention with a choice of variant, QK-norm, RoPE / ALiBi and masks.
#pragma once
#include "nn/config.h"
#include "nn/layers.h"

namespace attn::nn {

class SelfAttention : public Module {
 public:
  SelfAttention(const BlockConfig& c, double out_std, Generator& gen, DType dt);
  // x [B, T, D]; key_lengths (optional, per batch) masks padded keys.
  Tensor forward(const Tensor& x, const std::vector<int64_t>& key_lengths = {}) const;

  AttentionSpec spec;  // variant, bias, causal, ALiBi slopes (scale: 1/sqrt(head dim))
  int64_t n_heads, head_dim;
  bool use_rope;
  double rope_base;
  Linear *wq, *wk, *wv, *wo;
  Norm *q_norm = nullptr, *k_norm = nullptr;  // over the head dim, shared across heads
};

}  // namespace attn::nn
