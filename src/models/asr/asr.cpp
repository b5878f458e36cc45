#include "models/asr/asr.h"

#include <stdexcept>

#include "nn/positional.h"

namespace attn::models {

using namespace attn::nn;

int64_t conv_out_length(int64_t frames) { return frames < 3 ? 0 : (frames - 3) / 2 + 1; }
int64_t subsampled_length(int64_t frames) { return conv_out_length(conv_out_length(frames)); }

namespace {

AsrConfig resolved(AsrConfig c) {
  auto positive = [](int64_t v, const char* key) {
    if (v <= 0) throw std::invalid_argument(std::string(key) + " must be positive, got " + std::to_string(v));
  };
  positive(c.n_mels, "data.n_mels");
  positive(c.conv_channels, "model.conv_channels");
  positive(c.n_layers, "model.n_layers");
  positive(c.vocab_size, "the vocabulary size");
  if (subsampled_length(c.n_mels) <= 0)
    throw std::invalid_argument("data.n_mels must be at least 7 for the two stride-2 convolutions, got " +
                                std::to_string(c.n_mels));
  if (c.attention.position == PositionKind::Learned)
    throw std::invalid_argument("model.position 'learned' is not available for speech (test utterances may be "
                                "longer than any training one): use sinusoidal, rope, alibi or none");
  c.attention.causal = false;
  c.attention.grid = {};
  return c;
}

}  // namespace

SpeechRecognizer::SpeechRecognizer(const AsrConfig& cfg, uint64_t seed, DType dt)
    : config(resolved(cfg)), dropout_gen(seed ^ 0xa5e7u) {
  const AsrConfig& c = config;
  const int64_t C = c.conv_channels, D = c.d_model;
  Generator gen(seed);
  conv1 = &register_module("conv1", std::make_unique<Conv2d>(1, C, 3, 2, 0, true, c.linear_init(c.init_std), gen, dt));
  conv2 = &register_module("conv2", std::make_unique<Conv2d>(C, C, 3, 2, 0, true, c.linear_init(c.init_std), gen, dt));
  proj = &register_module("proj", std::make_unique<Linear>(C * subsampled_length(c.n_mels), D, true,
                                                           c.linear_init(c.init_std), gen, dt));
  for (int64_t i = 0; i < c.n_layers; ++i) {
    auto* b = &register_module("blocks." + std::to_string(i), std::make_unique<TransformerBlock>(c, c.init_std, gen, dt));
    b->dropout_gen = &dropout_gen;
    blocks.push_back(b);
  }
  if (c.placement != NormPlacement::Post)
    final_norm = &register_module("final_norm", std::make_unique<Norm>(c.norm, D, c.norm_eps, dt));
  head = &register_module("head", std::make_unique<Linear>(D, c.vocab_size, true, c.linear_init(c.init_std), gen, dt));
}

AsrOutput SpeechRecognizer::forward(const Tensor& features, const std::vector<int64_t>& frames) const {
  const AsrConfig& c = config;
  if (features.dim() != 3 || features.size(2) != c.n_mels || static_cast<int64_t>(frames.size()) != features.size(0))
    throw std::invalid_argument("SpeechRecognizer: need features [B, T, " + std::to_string(c.n_mels) +
                                "] and B lengths, got " + shape_str(features.shape()) + " and " +
                                std::to_string(frames.size()) + " lengths");
  AsrOutput out;
  for (int64_t f : frames) {
    if (f > features.size(1) || subsampled_length(f) <= 0)
      throw std::invalid_argument("SpeechRecognizer: an utterance of " + std::to_string(f) +
                                  " frames (need 7 to " + std::to_string(features.size(1)) + ")");
    out.lengths.push_back(subsampled_length(f));
  }
  const int64_t B = features.size(0), T = features.size(1);
  const DType param_dt = proj->weight.dtype();
  Tensor x = working(features.dtype() == param_dt ? features : cast(features, param_dt));
  x = relu(conv1->forward(reshape(x, {B, 1, T, c.n_mels})));
  x = relu(conv2->forward(x));  // [B, C, T', F']
  const int64_t Tp = x.size(2);
  x = reshape(permute(x, {0, 2, 1, 3}), {B, Tp, x.size(1) * x.size(3)});
  x = proj->forward(x);  // [B, T', D]
  if (c.attention.position == PositionKind::Sinusoidal)
    x = add(x, sinusoidal_table(Tp, c.d_model, x.dtype()).to(x.device()));
  for (const TransformerBlock* b : blocks) x = b->forward(x, out.lengths);
  if (final_norm) x = final_norm->forward(x);
  Tensor logits = head->forward(x);
  if (logits.dtype() == DType::BF16) logits = cast(logits, DType::F32);
  out.log_probs = log_softmax(logits);
  return out;
}

Tensor SpeechRecognizer::loss(const Tensor& features, const std::vector<int64_t>& frames,
                              const std::vector<int32_t>& targets, const std::vector<int64_t>& target_lengths) const {
  AsrOutput o = forward(features, frames);
  return ctc_loss(o.log_probs, targets, target_lengths, o.lengths, 0, CtcReduction::Mean, true);
}

}  // namespace attn::models
