// Decoder-only language model: token embedding (+ learned or sinusoidal positions), blocks,
// final norm (not for post-norm, whose blocks end normalised), tied or untied head.
#pragma once
#include "nn/block.h"
#include "nn/layers.h"

namespace attn::models {

class DecoderLM : public nn::Module {
 public:
  DecoderLM(const nn::ModelConfig& c, uint64_t seed, DType dt = DType::F32);
  // ids [B, T] (i32/i64) -> logits [B, T, V]
  Tensor forward(const Tensor& ids) const;
  // Mean cross-entropy of next-token prediction; targets [B, T]. Computed in f32 (f64 for an
  // f64 model) whatever the compute dtype: bf16 logits are cast up first, as autocast does.
  Tensor loss(const Tensor& ids, const Tensor& targets) const;
  // Moves the parameters and the sinusoidal table.
  void to(Device device) override;
  // The first T rows of the sinusoidal positions, at any T (longer than the stored table too).
  Tensor sinusoidal_rows(int64_t T) const;

  nn::ModelConfig config;
  nn::Embedding* tok_emb;
  nn::Embedding* pos_emb = nullptr;  // learned positions
  Tensor sinusoidal;                 // fixed positions [max_seq_len, D], when chosen
  std::vector<nn::TransformerBlock*> blocks;
  nn::Norm* final_norm = nullptr;
  nn::Linear* head = nullptr;  // untied only
  Generator dropout_gen;
};

}  // namespace attn::models
