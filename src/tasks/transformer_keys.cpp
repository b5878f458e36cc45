// The keys of the transformer stack every task shares (src/nn/config.h), and their reading.
#include "tasks/transformer_keys.h"

#include <fmt/format.h>

#include "ops/ops.h"

namespace attn::tasks {

using namespace config;

std::vector<KeySpec> transformer_keys() {
  return {
      int_key("model.d_model", "128", "Width of the residual stream.", 1, kMaxWidth),
      int_key("model.n_layers", "4", "Transformer blocks.", 1, 4096),
      int_key("model.n_heads", "4", "Attention heads (must divide d_model).", 1, 4096),
      choice_key("model.mlp", "gelu", "MLP: gelu (4·d hidden) or swiglu (8/3·d hidden).", {"gelu", "swiglu"}),
      int_key("model.mlp_hidden", "0", "MLP hidden width (0: the MLP kind's default).", 0, kMaxWidth),
      choice_key("model.norm", "layer", "Normalisation: layer (LayerNorm) or rms (RMSNorm).", {"layer", "rms"}),
      choice_key("model.norm_placement", "pre", "pre: x + f(n(x)); post: n(x + f(x)); hybrid: x + n2(f(n1(x))).", {"pre", "post", "hybrid"}),
      float_key("model.norm_eps", "1e-5", "Epsilon of every norm.", 0, 1, true),
      choice_key("model.position", "rope", "Positions: none, learned, sinusoidal, rope or alibi (standard geometric slopes).", {"none", "learned", "sinusoidal", "rope", "alibi"}),
      float_key("model.rope_base", "10000", "RoPE frequency base.", 1),
      float_key("model.init_std", "0.02", "Std of the normal init of weights and embeddings.", 0, 10, true),
      choice_key("model.init", "normal", "The Linears' init. normal: N(0, init_std), biases 0 (GPT-2). fan_in: PyTorch's nn.Linear default U(±1/√fan_in) for weights and biases; embeddings, class token and positions stay N(0, init_std).", {"normal", "fan_in"}),
      float_key("model.dropout", "0", "Dropout on each residual branch.", 0, 0.99),
      choice_key("attention.variant", "softmax", "softmax; sigmoid: σ(qk·s + b); softmax1: softmax with an extra zero logit (quiet attention); sink: an extra key per head with a learnable logit and value 0; clipped_softmax: clip((ζ − γ)·softmax + γ, 0, 1); gated: attention.gated_base with each head's output times σ(Linear(x)).", {"softmax", "sigmoid", "softmax1", "sink", "clipped_softmax", "gated"}),
      choice_key("attention.gated_base", "softmax", "The variant under the gate when attention.variant is gated.", {"softmax", "sigmoid", "softmax1", "sink", "clipped_softmax"}),
      float_key("attention.gate_init", "0.25", "Gated attention: σ of the gate at init (its bias is ln(g/(1 − g))).", 1e-6, 1 - 1e-6),
      float_key("attention.sink_init", "0", "The sink variant: initial sink logit of every head.", -1e6, 1e6),
      float_key("attention.clip_gamma", "-0.025", "clipped_softmax: γ (<= 0); weights below −γ/(ζ − γ) become 0.", -1e6, 0),
      float_key("attention.clip_zeta", "1", "clipped_softmax: ζ (>= 1); weights above (1 − γ)/(ζ − γ) become 1.", 1, 1e6),
      auto_allowed(float_key("attention.sigmoid_bias", "auto", "b of sigmoid attention (auto: -ln n, n the tokens a query attends to in training: model.seq_len for the LM). Unused by the other variants.", -1e6, 1e6)),
      choice_key("attention.sigmoid_bias_mode", "fixed", "How sigmoid attention gets its b. fixed: attention.sigmoid_bias. learnable: a parameter per head (blocks.i.attn.sigmoid_bias, no weight decay), initialised to attention.sigmoid_bias. per_row: b_i = -ln n_i, n_i the keys query row i sees (causal: i + 1; with key padding: the valid length, or its causal count), not learnt; attention.sigmoid_bias is ignored. Unused by the other variants.", {"fixed", "learnable", "per_row"}),
      bool_key("attention.qk_norm", "false", "Normalise q and k per head (over the head dim) before the product."),
      choice_key("attention.qk_norm_kind", "layer", "QK-norm kind: layer or rms.", {"layer", "rms"}),
      bool_key("attention.layer_scale", "false", "LayerScale: a learned per-channel scale on each residual branch."),
      float_key("attention.layer_scale_init", "1e-4", "Initial LayerScale value.", 0, 10),
  };
}

nn::BlockConfig block_config(const Config& c) {
  nn::BlockConfig m;
  m.d_model = c.get_int("model.d_model");
  m.n_heads = c.get_int("model.n_heads");
  m.mlp = c.get_string("model.mlp") == "gelu" ? nn::MlpKind::Gelu : nn::MlpKind::SwiGlu;
  m.mlp_hidden = c.get_int("model.mlp_hidden");
  m.norm = c.get_string("model.norm") == "layer" ? nn::NormKind::Layer : nn::NormKind::Rms;
  const std::string& pl = c.get_string("model.norm_placement");
  m.placement = pl == "pre" ? nn::NormPlacement::Pre : pl == "post" ? nn::NormPlacement::Post : nn::NormPlacement::Hybrid;
  m.norm_eps = c.get_float("model.norm_eps");
  m.init_std = c.get_float("model.init_std");
  m.init = c.get_string("model.init") == "fan_in" ? nn::InitKind::FanIn : nn::InitKind::Normal;
  m.dropout = c.get_float("model.dropout");
  nn::AttentionConfig& a = m.attention;
  const std::string& pos = c.get_string("model.position");
  a.position = pos == "none"         ? nn::PositionKind::None
               : pos == "learned"    ? nn::PositionKind::Learned
               : pos == "sinusoidal" ? nn::PositionKind::Sinusoidal
               : pos == "rope"       ? nn::PositionKind::Rope
                                     : nn::PositionKind::Alibi;
  a.rope_base = c.get_float("model.rope_base");
  const std::string& variant = c.get_string("attention.variant");
  a.gated = variant == "gated";
  a.variant = parse_variant(a.gated ? c.get_string("attention.gated_base") : variant);
  a.gate_init = c.get_float("attention.gate_init");
  a.sink_init = c.get_float("attention.sink_init");
  a.clip_gamma = c.get_float("attention.clip_gamma");
  a.clip_zeta = c.get_float("attention.clip_zeta");
  a.sigmoid_bias = c.get_float("attention.sigmoid_bias");
  const std::string& bias_mode = c.get_string("attention.sigmoid_bias_mode");
  a.sigmoid_bias_mode = bias_mode == "learnable" ? nn::SigmoidBiasMode::Learnable
                        : bias_mode == "per_row" ? nn::SigmoidBiasMode::PerRow
                                                 : nn::SigmoidBiasMode::Fixed;
  a.qk_norm = c.get_bool("attention.qk_norm");
  a.qk_norm_kind = c.get_string("attention.qk_norm_kind") == "layer" ? nn::NormKind::Layer : nn::NormKind::Rms;
  a.layer_scale = c.get_bool("attention.layer_scale");
  a.layer_scale_init = c.get_float("attention.layer_scale_init");
  return m;
}

void check_transformer_keys(const Config& c) {
  if (c.get_int("model.d_model") % c.get_int("model.n_heads") != 0)
    throw ConfigError(fmt::format("config key 'model.n_heads': {} does not divide model.d_model = {}",
                                  c.get_int("model.n_heads"), c.get_int("model.d_model")));
  if (c.get_string("model.position") == "rope" && (c.get_int("model.d_model") / c.get_int("model.n_heads")) % 2)
    throw ConfigError("config key 'model.position': rope needs an even head dim (d_model / n_heads)");
}

}  // namespace attn::tasks
