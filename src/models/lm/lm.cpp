#include "models/lm/lm.h"

#include <cmath>

#include "nn/positional.h"

namespace attn::models {

using namespace attn::nn;

DecoderLM::DecoderLM(const ModelConfig& c, uint64_t seed, DType dt) : config(c), dropout_gen(seed ^ 0xd809u) {
  if (c.vocab_size <= 0) throw std::invalid_argument("DecoderLM: vocab_size must be set");
  Generator gen(seed);
  tok_emb = &register_module("tok_emb", std::make_unique<Embedding>(c.vocab_size, c.d_model, c.init_std, gen, dt));
  if (c.attention.position == PositionKind::Learned)
    pos_emb = &register_module("pos_emb", std::make_unique<Embedding>(c.max_seq_len, c.d_model, c.init_std, gen, dt));
  if (c.attention.position == PositionKind::Sinusoidal) sinusoidal = sinusoidal_table(c.max_seq_len, c.d_model, dt);
  const double out_std = c.scaled_residual_init ? c.init_std / std::sqrt(2.0 * c.n_layers) : c.init_std;
  for (int64_t i = 0; i < c.n_layers; ++i) {
    blocks.push_back(
        &register_module("blocks." + std::to_string(i), std::make_unique<TransformerBlock>(c, out_std, gen, dt)));
    blocks.back()->dropout_gen = &dropout_gen;
  }
  if (c.placement != NormPlacement::Post)
    final_norm = &register_module("final_norm", std::make_unique<Norm>(c.norm, c.d_model, c.norm_eps, dt));
  if (!c.tied_head)
    head = &register_module("head", std::make_unique<Linear>(c.d_model, c.vocab_size, false, c.linear_init(c.init_std), gen, dt));
}

Tensor DecoderLM::forward(const Tensor& ids) const {
  int64_t T = ids.size(1);
  if (T > config.max_seq_len && pos_emb)
    throw std::invalid_argument("DecoderLM: sequence of " + std::to_string(T) +
                                " tokens is longer than the " + std::to_string(config.max_seq_len) +
                                " learned positions (model.seq_len)");
  Tensor x = tok_emb->forward(ids);
  if (pos_emb) x = add(x, pos_emb->forward(arange(0, T, 1, {DType::I64, ids.device()})));
  if (sinusoidal.defined()) x = add(x, working(sinusoidal_rows(T)));
  for (const TransformerBlock* b : blocks) x = b->forward(x);
  if (final_norm) x = final_norm->forward(x);
  return head ? head->forward(x) : linear(x, working(tok_emb->weight));
}

// Row t of the table depends on t alone: beyond the training length (an evaluation at a longer
// L) the longer table is computed for the call, its first rows those of the stored one.
Tensor DecoderLM::sinusoidal_rows(int64_t T) const {
  if (T <= sinusoidal.size(0)) return slice(sinusoidal, 0, 0, T);
  return sinusoidal_table(T, config.d_model, sinusoidal.dtype()).to(sinusoidal.device());
}

void DecoderLM::to(Device device) {
  Module::to(device);
  if (sinusoidal.defined() && !(sinusoidal.device() == device)) sinusoidal = sinusoidal.to(device);
}

Tensor DecoderLM::loss(const Tensor& ids, const Tensor& targets) const {
  Tensor logits = forward(ids);
  if (logits.dtype() == DType::BF16) logits = cast(logits, DType::F32);
  int64_t V = logits.size(-1);
  return cross_entropy(reshape(logits, {-1, V}), reshape(targets, {-1}));
}

}  // namespace attn::models
