// Speech recognition with CTC: log-mel frames -> convolutional subsampling ×4 in time (two 3×3
// stride-2 convolutions with ReLU, as in ESPnet's Conv2dSubsampling) -> Linear (C·F/4 -> D)
// -> [+ sinusoidal positions] -> bidirectional blocks with key padding masks -> final norm
// -> Linear head over the vocabulary (blank = 0) -> log-softmax; CTC loss.
// Positions (attention.position): none; sinusoidal (a 1-D table as long as the batch);
// rope and alibi act inside attention. Learned positions are refused: test utterances may be
// longer than any training one (the length-generalisation set).
// Padding: a padded frame never reaches a valid output. Convolution output t reads input frames
// 2t..2t+2, so with L' = (L − 3)/2 + 1 the valid outputs read only valid inputs; the blocks
// mask keys past each utterance's length; CTC reads frames < L'. An utterance alone and the
// same utterance inside a padded batch give the same output and the same gradients.
#pragma once
#include "nn/block.h"
#include "nn/layers.h"

namespace attn::models {

struct AsrConfig : nn::BlockConfig {
  int64_t n_mels = 80;
  int64_t conv_channels = 144;
  int64_t n_layers = 6;
  int64_t vocab_size = 29;  // blank + the characters
};

// Frames after one 3×3 stride-2 convolution without padding, and after both.
int64_t conv_out_length(int64_t frames);
int64_t subsampled_length(int64_t frames);

struct AsrOutput {
  Tensor log_probs;              // [B, T', V] f32 (f64 for an f64 model)
  std::vector<int64_t> lengths;  // [B] valid frames T'_b = subsampled_length(frames_b)
};

class SpeechRecognizer : public nn::Module {
 public:
  // The blocks are bidirectional: attention.causal is set false here.
  SpeechRecognizer(const AsrConfig& c, uint64_t seed, DType dt = DType::F32);
  // features [B, T, n_mels] (zero-padded), frames [B] the valid lengths (each >= 7, so that at
  // least one frame survives the subsampling).
  AsrOutput forward(const Tensor& features, const std::vector<int64_t>& frames) const;
  // Mean over the batch of CTC(nll_b) / target_length_b (PyTorch's reduction "mean"); an
  // utterance too long for its frames counts 0 (zero_infinity).
  Tensor loss(const Tensor& features, const std::vector<int64_t>& frames, const std::vector<int32_t>& targets,
              const std::vector<int64_t>& target_lengths) const;

  AsrConfig config;
  nn::Conv2d *conv1, *conv2;
  nn::Linear* proj;
  std::vector<nn::TransformerBlock*> blocks;
  nn::Norm* final_norm = nullptr;
  nn::Linear* head;
  Generator dropout_gen;
};

}  // namespace attn::models
