// Vision Transformer (Dosovitskiy et al., 2021) for image classification:
//   patches (p x p, row-major) -> Linear (C·p·p -> D) -> [class token] -> + positions
//   -> bidirectional blocks -> final norm (not for post-norm) -> pool (class token or mean of the
//   patch tokens) -> Linear head -> logits.
// Positions (attention.position): none; learned ([T, D] parameter, class token included);
// sinusoidal (2-D table, class token zeros); rope and alibi act inside attention, 2-D on the patch
// grid (nn/positional.h: axial RoPE; Euclidean ALiBi, class token at distance 0).
#pragma once
#include "nn/block.h"
#include "nn/layers.h"

namespace attn::models {

struct VitConfig : nn::BlockConfig {
  int64_t image_height = 28, image_width = 28, channels = 1;
  int64_t patch_size = 4;
  int64_t n_layers = 6;
  int64_t n_classes = 10;
  enum class Pooling { Cls, Mean } pooling = Pooling::Cls;
  // Stochastic depth: block i of L drops each branch per sample at rate drop_path·i/(L − 1)
  // (timm's linear rule: 0 for the first block, drop_path for the last).
  double drop_path = 0;
  double label_smoothing = 0;        // ε of loss()
  bool scaled_residual_init = false;  // output projections: std / sqrt(2·n_layers) (GPT-2)
};

const char* pooling_name(VitConfig::Pooling p);             // cls | mean
VitConfig::Pooling parse_pooling(const std::string& name);  // throws std::invalid_argument

// images [B, C, H, W] -> [B, (H/p)·(W/p), C·p·p]: patch (r, c) at row r·(W/p) + c, its values in
// (channel, row in patch, column in patch) order, i.e. a Conv2d(C, D, p, stride p) weight
// [D, C, p, p] flattened is this Linear's weight [D, C·p·p].
Tensor patchify(const Tensor& images, int64_t patch_size);

class VisionTransformer : public nn::Module {
 public:
  // The image size must be divisible by patch_size. The blocks are bidirectional and see the
  // patch grid: attention.causal and attention.grid are set here, whatever c had in them.
  VisionTransformer(const VitConfig& c, uint64_t seed, DType dt = DType::F32);
  // images [B, C, H, W] (floating; cast to the model's dtype) -> tokens [B, T, D] entering the
  // first block: patch embeddings after the class token (Cls pooling), plus learned or
  // sinusoidal positions. T = tokens().
  Tensor embed(const Tensor& images) const;
  // images [B, C, H, W] -> logits [B, n_classes].
  Tensor forward(const Tensor& images) const;
  // Mean over the batch of (1 − ε)·CE + ε·mean_c(−log softmax(logits)_c), labels [B] (i32/i64);
  // torch's cross_entropy(label_smoothing=ε). In f32 (f64 for an f64 model), as DecoderLM::loss.
  Tensor loss(const Tensor& images, const Tensor& labels) const;
  // Moves the parameters, the sinusoidal table and the blocks' 2-D ALiBi biases.
  void to(Device device) override;

  int64_t grid_rows() const { return config.image_height / config.patch_size; }
  int64_t grid_cols() const { return config.image_width / config.patch_size; }
  int64_t prefix() const { return config.pooling == VitConfig::Pooling::Cls ? 1 : 0; }
  int64_t tokens() const { return prefix() + grid_rows() * grid_cols(); }

  VitConfig config;  // as resolved: causal false, grid set
  nn::Linear* patch_embed;
  Tensor cls_token;   // [D], Cls pooling only
  Tensor pos_emb;     // [T, D], learned positions only
  Tensor sinusoidal;  // [T, D] 2-D table (a buffer), sinusoidal positions only
  std::vector<nn::TransformerBlock*> blocks;
  nn::Norm* final_norm = nullptr;
  nn::Linear* head;
  Generator dropout_gen;  // dropout and drop-path; the trainer checkpoints its offset
};

}  // namespace attn::models
