// The model's hyper-parameters, as the trainer's config resolves them (see docs/config.md).
#pragma once
#include <cstdint>
#include <string>

#include "ops/ops.h"

namespace attn::nn {

enum class NormKind { Layer, Rms };
enum class NormPlacement { Pre, Post, Hybrid };
enum class PositionKind { None, Learned, Sinusoidal, Rope, Alibi };
enum class MlpKind { Gelu, SwiGlu };

struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t d_model = 128;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  int64_t max_seq_len = 128;  // the training sequence length n
  int64_t mlp_hidden = 0;     // 0: 4·d_model (GELU) or the 8/3·d_model rounded to 8 (SwiGLU)
  MlpKind mlp = MlpKind::Gelu;
  NormKind norm = NormKind::Layer;
  NormPlacement placement = NormPlacement::Pre;
  PositionKind position = PositionKind::Rope;
  double rope_base = 10000.0;
  AttentionVariant variant = AttentionVariant::Softmax;
  bool causal = true;
  double sigmoid_bias = 0;   // b; the config's default is -ln(max_seq_len)
  bool qk_norm = false;
  NormKind qk_norm_kind = NormKind::Layer;
  bool layer_scale = false;
  double layer_scale_init = 1e-4;
  bool tied_head = true;
  double init_std = 0.02;
  bool scaled_residual_init = true;  // output projections: std / sqrt(2·n_layers) (GPT-2)
  double dropout = 0.0;
  double norm_eps = 1e-5;
};

}  // namespace attn::nn
