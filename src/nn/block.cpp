#include "nn/block.h"

#include <cmath>

namespace attn::nn {

Tensor drop_path(const Tensor& x, double p, bool training, Generator& gen) {
  if (!training || p == 0) return x;
  Shape mask_shape(x.dim(), 1);
  mask_shape[0] = x.size(0);
  return mul(x, attn::dropout(ones(mask_shape, {x.dtype(), x.device()}), p, true, gen));
}

TransformerBlock::TransformerBlock(const BlockConfig& c, double out_std, Generator& gen, DType dt)
    : placement(c.placement), dropout(c.dropout) {
  norm1 = &register_module("norm1", std::make_unique<Norm>(c.norm, c.d_model, c.norm_eps, dt));
  attn = &register_module("attn", std::make_unique<SelfAttention>(c, out_std, gen, dt));
  norm2 = &register_module("norm2", std::make_unique<Norm>(c.norm, c.d_model, c.norm_eps, dt));
  mlp = &register_module("mlp", std::make_unique<Mlp>(c, out_std, gen, dt));
  if (placement == NormPlacement::Hybrid) {
    post_norm1 = &register_module("post_norm1", std::make_unique<Norm>(c.norm, c.d_model, c.norm_eps, dt));
    post_norm2 = &register_module("post_norm2", std::make_unique<Norm>(c.norm, c.d_model, c.norm_eps, dt));
  }
  if (c.attention.layer_scale) {
    gamma1 = register_param("gamma1", full({c.d_model}, c.attention.layer_scale_init, {dt}), false);
    gamma2 = register_param("gamma2", full({c.d_model}, c.attention.layer_scale_init, {dt}), false);
  }
}

Tensor TransformerBlock::scaled(const Tensor& branch, const Tensor& gamma) const {
  Tensor b = branch;
  if ((dropout > 0 || drop_path_rate > 0) && training() && !dropout_gen)
    throw std::logic_error("TransformerBlock: dropout or drop-path without a generator");
  if (dropout > 0 && training()) b = attn::dropout(branch, dropout, true, *dropout_gen);
  if (gamma.defined()) b = mul(b, working(gamma));
  if (drop_path_rate > 0 && training()) b = drop_path(b, drop_path_rate, true, *dropout_gen);
  return b;
}

Tensor TransformerBlock::forward(const Tensor& x, const std::vector<int64_t>& key_lengths) const {
  switch (placement) {
    case NormPlacement::Pre: {
      Tensor h = add(x, scaled(attn->forward(norm1->forward(x), key_lengths), gamma1));
      return add(h, scaled(mlp->forward(norm2->forward(h)), gamma2));
    }
    case NormPlacement::Post: {
      Tensor h = norm1->forward(add(x, scaled(attn->forward(x, key_lengths), gamma1)));
      return norm2->forward(add(h, scaled(mlp->forward(h), gamma2)));
    }
    case NormPlacement::Hybrid: {
      Tensor h = add(x, scaled(post_norm1->forward(attn->forward(norm1->forward(x), key_lengths)), gamma1));
      return add(h, scaled(post_norm2->forward(mlp->forward(norm2->forward(h))), gamma2));
    }
  }
  throw std::logic_error("TransformerBlock: bad placement");
}

}  // namespace attn::nn
