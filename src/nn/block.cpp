#include "nn/block.h"

#include <cmath>

#include "nn/tap.h"

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
  // The branches' raw outputs (the attention output projection, the MLP's second linear) and the
  // block's output are what the Qualcomm outlier statistics look at; a tap sees them here.
  auto attn_out = [&](const Tensor& in) { return seen(attn->forward(in, key_lengths), attn->path()); };
  auto mlp_out = [&](const Tensor& in) { return seen(mlp->forward(in), mlp->path()); };
  Tensor out;
  switch (placement) {
    case NormPlacement::Pre: {
      Tensor h = quant_point("residual", add(x, scaled(attn_out(norm1->forward(x)), gamma1)));
      out = add(h, scaled(mlp_out(norm2->forward(h)), gamma2));
      break;
    }
    case NormPlacement::Post: {
      Tensor h = norm1->forward(quant_point("residual", add(x, scaled(attn_out(x), gamma1))));
      out = norm2->forward(add(h, scaled(mlp_out(h), gamma2)));
      break;
    }
    case NormPlacement::Hybrid: {
      Tensor h = quant_point("residual", add(x, scaled(post_norm1->forward(attn_out(norm1->forward(x))), gamma1)));
      out = add(h, scaled(post_norm2->forward(mlp_out(norm2->forward(h))), gamma2));
      break;
    }
  }
  if (!out.defined()) throw std::logic_error("TransformerBlock: bad placement");
  return seen(quant_point("", out), path());
}

Tensor TransformerBlock::seen(const Tensor& x, const std::string& path) const {
  if (tap()) tap()->activation(path, x);
  return x;
}

}  // namespace attn::nn
