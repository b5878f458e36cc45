// Multi-head self-attention with a choice of variant, QK-norm, RoPE / ALiBi and masks.
// sink: a learnable logit per head ("sink", [H], no weight decay). Sigmoid with a learnable bias:
// b per head ("sigmoid_bias", [H], no weight decay, starting at the config's b); per-row bias: the
// spec's flag, nothing learnt. Gated attention (Bondarenko et
// al., 2023): each head's output is multiplied per token by σ(gate(x))_h, gate a Linear
// d_model -> n_heads whose bias starts at ln(g/(1 − g)) so the gate starts near g (0.25, their
// OPT recipe); it works over any variant.
// With attention.grid.rows > 0 (a ViT's patches) RoPE and ALiBi are 2-D (nn/positional.h):
// rope_2d on q and k, and ALiBi as a [H, T, T] score bias built once for the grid's T tokens.
#pragma once
#include "nn/config.h"
#include "nn/layers.h"

namespace attn::nn {

class SelfAttention : public Module {
 public:
  SelfAttention(const BlockConfig& c, double out_std, Generator& gen, DType dt);
  // x [B, T, D]; key_lengths (optional, per batch) masks padded keys.
  Tensor forward(const Tensor& x, const std::vector<int64_t>& key_lengths = {}) const;
  // Moves the parameters and the 2-D ALiBi bias.
  void to(Device device) override;

  // variant, bias, causal, ALiBi slopes (1-D) or score_bias (2-D) (scale: 1/sqrt(head dim))
  AttentionSpec spec;
  int64_t n_heads, head_dim;
  bool use_rope;
  double rope_base;
  PositionGrid grid;  // rows = 0: 1-D positions
  Linear *wq, *wk, *wv, *wo;
  Norm *q_norm = nullptr, *k_norm = nullptr;  // over the head dim, shared across heads
  Linear* gate = nullptr;                      // gated attention
  Tensor sink;                                 // sink variant: [H]
  Tensor sigmoid_bias;                         // sigmoid, learnable bias: [H]
};

}  // namespace attn::nn
