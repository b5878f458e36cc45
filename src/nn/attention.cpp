// q, k, v = x·Wqᵀ, x·Wkᵀ, x·Wvᵀ split into heads [B, H, T, Dh];
// optional QK-norm (per-head LayerNorm/RMSNorm over Dh) then RoPE (1-D, or 2-D on a grid) on q and k;
// o = attention(q, k, v) merged back to [B, T, D]; out = o·Woᵀ.
#include "nn/attention.h"

#include <cmath>

#include "nn/positional.h"
#include "nn/tap.h"

namespace attn::nn {

SelfAttention::SelfAttention(const BlockConfig& c, double out_std, Generator& gen, DType dt)
    : n_heads(c.n_heads), head_dim(c.d_model / c.n_heads), use_rope(c.attention.position == PositionKind::Rope),
      rope_base(c.attention.rope_base), grid(c.attention.grid) {
  const AttentionConfig& a = c.attention;
  if (c.d_model % c.n_heads != 0)
    throw std::invalid_argument("model.d_model (" + std::to_string(c.d_model) +
                                ") must be divisible by model.n_heads (" + std::to_string(c.n_heads) + ")");
  spec.variant = a.variant;
  spec.sigmoid_bias = a.sigmoid_bias;
  spec.causal = a.causal;
  if (a.position == PositionKind::Alibi) {
    if (grid.rows > 0) spec.score_bias = alibi_bias_2d(alibi_slopes(c.n_heads), grid, dt);
    else spec.alibi_slopes = alibi_slopes(c.n_heads);
  }
  if (use_rope && grid.rows > 0 && head_dim % 4 != 0)
    throw std::invalid_argument("2-D RoPE needs the head dim (model.d_model / model.n_heads = " +
                                std::to_string(head_dim) + ") divisible by 4");
  wq = &register_module("wq", std::make_unique<Linear>(c.d_model, c.d_model, true, c.linear_init(c.init_std), gen, dt));
  wk = &register_module("wk", std::make_unique<Linear>(c.d_model, c.d_model, true, c.linear_init(c.init_std), gen, dt));
  wv = &register_module("wv", std::make_unique<Linear>(c.d_model, c.d_model, true, c.linear_init(c.init_std), gen, dt));
  wo = &register_module("wo", std::make_unique<Linear>(c.d_model, c.d_model, true, c.linear_init(out_std), gen, dt));
  if (a.qk_norm) {
    q_norm = &register_module("q_norm", std::make_unique<Norm>(a.qk_norm_kind, head_dim, c.norm_eps, dt));
    k_norm = &register_module("k_norm", std::make_unique<Norm>(a.qk_norm_kind, head_dim, c.norm_eps, dt));
  }
  spec.clip_gamma = a.clip_gamma;
  spec.clip_zeta = a.clip_zeta;
  if (a.variant == AttentionVariant::Sink) sink = register_param("sink", full({c.n_heads}, a.sink_init, {dt}), false);
  if (a.variant == AttentionVariant::Sigmoid && a.sigmoid_bias_mode == SigmoidBiasMode::Learnable)
    sigmoid_bias = register_param("sigmoid_bias", full({c.n_heads}, a.sigmoid_bias, {dt}), false);
  spec.sigmoid_bias_per_row = a.variant == AttentionVariant::Sigmoid && a.sigmoid_bias_mode == SigmoidBiasMode::PerRow;
  if (a.gated) {
    if (!(a.gate_init > 0 && a.gate_init < 1))
      throw std::invalid_argument("attention.gate_init must be in (0, 1), got " + std::to_string(a.gate_init));
    gate = &register_module("gate", std::make_unique<Linear>(c.d_model, c.n_heads, true, c.linear_init(c.init_std), gen, dt));
    init_constant(gate->bias, std::log(a.gate_init / (1 - a.gate_init)));
  }
}

Tensor SelfAttention::forward(const Tensor& x, const std::vector<int64_t>& key_lengths) const {
  int64_t B = x.size(0), T = x.size(1), D = x.size(2);
  auto heads = [&](const Tensor& t) { return permute(reshape(t, {B, T, n_heads, head_dim}), {0, 2, 1, 3}); };
  Tensor q = heads(wq->forward(x)), k = heads(wk->forward(x)), v = heads(wv->forward(x));
  if (q_norm) {
    q = q_norm->forward(q);
    k = k_norm->forward(k);
  }
  if (use_rope && grid.rows > 0) {
    q = rope_2d(q, grid, rope_base);
    k = rope_2d(k, grid, rope_base);
  } else if (use_rope) {
    q = rope(std::move(q), rope_base);  // in place: nothing else holds q's or k's storage
    k = rope(std::move(k), rope_base);
  }
  AttentionSpec s = spec;
  s.key_padding_lengths = key_lengths;
  s.score_bias = working(spec.score_bias);  // in the activations' dtype (undefined stays so)
  s.sink = working(sink);
  s.sigmoid_bias_param = working(sigmoid_bias);
  if (tap()) tap()->attention(path(), q, k, s);
  Tensor o = attention(q, k, v, s).out;
  if (gate) {  // o_h ∘ σ(gate(x))_h: [B, T, H] -> [B, H, T, 1]
    Tensor g = sigmoid(gate->forward(x));
    o = mul(o, reshape(permute(g, {0, 2, 1}), {B, n_heads, T, 1}));
  }
  return wo->forward(reshape(permute(o, {0, 2, 1, 3}), {B, T, D}));
}

void SelfAttention::to(Device device) {
  Module::to(device);
  if (spec.score_bias.defined() && !(spec.score_bias.device() == device)) spec.score_bias = spec.score_bias.to(device);
}

}  // namespace attn::nn
