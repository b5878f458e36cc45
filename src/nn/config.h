// Hyper-parameters of the layers, as a task resolves them from the run config (docs/config.md).
// AttentionConfig is what every model family shares about attention; BlockConfig adds the rest
// of a transformer block; a model's own config extends BlockConfig (ModelConfig: the decoder LM).
#pragma once
#include <cstdint>
#include <string>

#include "ops/ops.h"

namespace attn::nn {

enum class NormKind { Layer, Rms };
enum class NormPlacement { Pre, Post, Hybrid };
enum class PositionKind { None, Learned, Sinusoidal, Rope, Alibi };
enum class MlpKind { Gelu, SwiGlu };

// Tokens laid out on a grid (a ViT's patches, row-major after `prefix` tokens such as a class
// token): RoPE and ALiBi become 2-D. rows = 0: a 1-D sequence.
struct PositionGrid {
  int64_t rows = 0, cols = 0, prefix = 0;
};

struct AttentionConfig {
  AttentionVariant variant = AttentionVariant::Softmax;
  double sigmoid_bias = 0;  // b; the task's rule: -ln n, n the tokens a query sees in training
  bool causal = true;       // false: bidirectional (ViT, speech encoder)
  bool qk_norm = false;
  NormKind qk_norm_kind = NormKind::Layer;
  PositionKind position = PositionKind::Rope;  // Rope and Alibi act inside attention
  double rope_base = 10000.0;
  PositionGrid grid;
  bool layer_scale = false;  // LayerScale on both residual branches of each block
  double layer_scale_init = 1e-4;
};

struct BlockConfig {
  int64_t d_model = 128;
  int64_t n_heads = 4;
  int64_t mlp_hidden = 0;  // 0: 4·d_model (GELU) or the 8/3·d_model rounded to 8 (SwiGLU)
  MlpKind mlp = MlpKind::Gelu;
  NormKind norm = NormKind::Layer;
  NormPlacement placement = NormPlacement::Pre;
  double init_std = 0.02;
  double dropout = 0.0;  // on each residual branch
  double norm_eps = 1e-5;
  AttentionConfig attention;
};

// The decoder LM: blocks plus its own keys.
struct ModelConfig : BlockConfig {
  int64_t vocab_size = 0;
  int64_t n_layers = 4;
  int64_t max_seq_len = 128;  // the training sequence length n
  bool tied_head = true;
  bool scaled_residual_init = true;  // output projections: std / sqrt(2·n_layers) (GPT-2)
};

}  // namespace attn::nn
