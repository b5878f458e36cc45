// A transformer block: attention and MLP branches with pre-, post- or hybrid-norm and optional
// LayerScale.
//   pre:    x = x + γ₁∘attn(n₁(x));            x = x + γ₂∘mlp(n₂(x))
//   post:   x = n₁(x + γ₁∘attn(x));            x = n₂(x + γ₂∘mlp(x))
//   hybrid: x = x + γ₁∘m₁(attn(n₁(x)));        x = x + γ₂∘m₂(mlp(n₂(x)))   (Apple's LM recipe)
// γ is LayerScale (a per-channel vector, init layer_scale_init) when on, else 1.
// Each branch, in training: dropout, then γ, then drop-path (stochastic depth) at the block's
// drop_path_rate (0: off, the default; the ViT sets it per depth).
#pragma once
#include "nn/attention.h"

namespace attn::nn {

// Stochastic depth (Huang et al., 2016; timm's DropPath): each sample b of x [B, ...] is zeroed
// with probability p, else scaled by 1/(1 − p), so E[out] = x. The per-sample mask is dropout on
// a [B, 1, ..., 1] tensor of ones (Philox: the same on every device); identity when !training or
// p == 0.
Tensor drop_path(const Tensor& x, double p, bool training, Generator& gen);

class TransformerBlock : public Module {
 public:
  // out_std: the init std of the branches' output projections (GPT-2 scales it by depth).
  TransformerBlock(const BlockConfig& c, double out_std, Generator& gen, DType dt);
  Tensor forward(const Tensor& x, const std::vector<int64_t>& key_lengths = {}) const;

  NormPlacement placement;
  SelfAttention* attn;
  Mlp* mlp;
  Norm *norm1, *norm2;
  Norm *post_norm1 = nullptr, *post_norm2 = nullptr;  // hybrid only
  Tensor gamma1, gamma2;                              // LayerScale, when on
  double dropout;
  double drop_path_rate = 0;         // stochastic depth of both branches, set by the model
  Generator* dropout_gen = nullptr;  // owned by the model, saved in checkpoints; dropout and drop-path

 private:
  Tensor scaled(const Tensor& branch, const Tensor& gamma) const;
  Tensor seen(const Tensor& x, const std::string& path) const;  // x, shown to the tap
};

}  // namespace attn::nn
