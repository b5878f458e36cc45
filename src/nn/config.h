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
// Sigmoid attention's b: fixed (sigmoid_bias), learnable per head (starting at sigmoid_bias), or
// per query row −ln n_i (n_i the keys the row sees; sigmoid_bias unused).
enum class SigmoidBiasMode { Fixed, Learnable, PerRow };

// How a Linear's weights start. normal: N(0, std), biases 0 (GPT-2; init_std, scaled for the
// output projections when the model says so). fan_in: PyTorch's nn.Linear default,
// U(−1/√fan_in, 1/√fan_in) for weights and biases alike (std 1/√(3·fan_in)); it trains a small
// ViT faster than N(0, 0.02) (experiments/vit-fmnist-variants/README.md).
enum class InitKind { Normal, FanIn };

struct LinearInit {
  LinearInit(double s) : std(s) {}  // NOLINT: a plain std means normal, as before
  LinearInit(InitKind k, double s) : kind(k), std(s) {}
  InitKind kind = InitKind::Normal;
  double std = 0.02;
};

// Tokens laid out on a grid (a ViT's patches, row-major after `prefix` tokens such as a class
// token): RoPE and ALiBi become 2-D. rows = 0: a 1-D sequence.
struct PositionGrid {
  int64_t rows = 0, cols = 0, prefix = 0;
};

struct AttentionConfig {
  AttentionVariant variant = AttentionVariant::Softmax;
  double sigmoid_bias = 0;  // b; the task's rule: -ln n, n the tokens a query sees in training
  SigmoidBiasMode sigmoid_bias_mode = SigmoidBiasMode::Fixed;  // sigmoid only
  bool causal = true;       // false: bidirectional (ViT, speech encoder)
  bool qk_norm = false;
  NormKind qk_norm_kind = NormKind::Layer;
  PositionKind position = PositionKind::Rope;  // Rope and Alibi act inside attention
  double rope_base = 10000.0;
  PositionGrid grid;
  bool layer_scale = false;  // LayerScale on both residual branches of each block
  double layer_scale_init = 1e-4;
  bool gated = false;        // gated attention over `variant` (nn/attention.h)
  double gate_init = 0.25;   // σ of the gate at init
  double sink_init = 0;      // the sink variant's logits at init (0: softmax_1 at the start)
  double clip_gamma = -0.025, clip_zeta = 1.0;  // clipped_softmax's γ and ζ
};

struct BlockConfig {
  int64_t d_model = 128;
  int64_t n_heads = 4;
  int64_t mlp_hidden = 0;  // 0: 4·d_model (GELU) or the 8/3·d_model rounded to 8 (SwiGLU)
  MlpKind mlp = MlpKind::Gelu;
  NormKind norm = NormKind::Layer;
  NormPlacement placement = NormPlacement::Pre;
  double init_std = 0.02;
  InitKind init = InitKind::Normal;  // the Linears' (embeddings and tokens stay N(0, init_std))
  double dropout = 0.0;  // on each residual branch
  double norm_eps = 1e-5;
  AttentionConfig attention;

  LinearInit linear_init(double std) const { return {init, std}; }
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
