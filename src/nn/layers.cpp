#include "nn/layers.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace attn::nn {

Linear::Linear(int64_t in, int64_t out, bool with_bias, LinearInit init, Generator& gen, DType dt) {
  if (init.kind == InitKind::FanIn) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    weight = register_param("weight", uniform({out, in}, gen, {dt}, -bound, bound), true);
    if (with_bias) bias = register_param("bias", uniform({out}, gen, {dt}, -bound, bound), false);
    return;
  }
  Tensor w = Tensor::empty({out, in}, dt);
  init_normal(w, init.std, gen);
  weight = register_param("weight", w, true);
  if (with_bias) bias = register_param("bias", zeros({out}, {dt}), false);
}

Tensor Linear::forward(const Tensor& x) const {
  return quant_point("out", linear(quant_point("in", x), working(weight), working(bias)));
}

Tensor Linear::forward_gelu(const Tensor& x) const {
  return quant_point("out", linear_gelu(quant_point("in", x), working(weight), working(bias)));
}

Conv2d::Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t s, int64_t p, bool with_bias,
               LinearInit init, Generator& gen, DType dt)
    : stride(s), padding(p) {
  if (in < 1 || out < 1 || kernel < 1 || s < 1 || p < 0)
    throw std::invalid_argument(
        "Conv2d: need in, out, kernel, stride >= 1 and padding >= 0, got in " + std::to_string(in) +
        ", out " + std::to_string(out) + ", kernel " + std::to_string(kernel) + ", stride " +
        std::to_string(s) + ", padding " + std::to_string(p));
  const Shape shape{out, in, kernel, kernel};
  if (init.kind == InitKind::FanIn) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in * kernel * kernel));
    weight = register_param("weight", uniform(shape, gen, {dt}, -bound, bound), true);
    if (with_bias) bias = register_param("bias", uniform({out}, gen, {dt}, -bound, bound), false);
    return;
  }
  Tensor w = Tensor::empty(shape, dt);
  init_normal(w, init.std, gen);
  weight = register_param("weight", w, true);
  if (with_bias) bias = register_param("bias", zeros({out}, {dt}), false);
}

Tensor Conv2d::forward(const Tensor& x) const {
  return conv2d(x, working(weight), working(bias), stride, padding);
}

Embedding::Embedding(int64_t vocab, int64_t dim, double init_std, Generator& gen, DType dt) {
  Tensor w = Tensor::empty({vocab, dim}, dt);
  init_normal(w, init_std, gen);
  weight = register_param("weight", w, false);
}

Norm::Norm(NormKind k, int64_t dim, double e, DType dt) : kind(k), eps(e) {
  weight = register_param("weight", ones({dim}, {dt}), false);
  if (kind == NormKind::Layer) bias = register_param("bias", zeros({dim}, {dt}), false);
}

Tensor Norm::forward(const Tensor& x) const {
  return kind == NormKind::Layer ? layer_norm(x, working(weight), working(bias), eps)
                                 : rms_norm(x, working(weight), eps);
}

int64_t mlp_hidden_size(const BlockConfig& c) {
  if (c.mlp_hidden > 0) return c.mlp_hidden;
  if (c.mlp == MlpKind::Gelu) return 4 * c.d_model;
  return (8 * c.d_model / 3 + 7) / 8 * 8;  // SwiGLU keeps the parameter count of a 4·d MLP
}

Mlp::Mlp(const BlockConfig& c, double out_std, Generator& gen, DType dt) : kind(c.mlp) {
  int64_t h = mlp_hidden_size(c);
  bool bias = c.mlp == MlpKind::Gelu;
  fc1 = &register_module("fc1", std::make_unique<Linear>(c.d_model, h, bias, c.linear_init(c.init_std), gen, dt));
  if (kind == MlpKind::SwiGlu)
    gate = &register_module("gate", std::make_unique<Linear>(c.d_model, h, false, c.linear_init(c.init_std), gen, dt));
  fc2 = &register_module("fc2", std::make_unique<Linear>(h, c.d_model, bias, c.linear_init(out_std), gen, dt));
}

Tensor Mlp::forward(const Tensor& x) const {
  if (kind == MlpKind::Gelu) return fc2->forward(fc1->forward_gelu(x));
  return fc2->forward(mul(silu(fc1->forward(x)), gate->forward(x)));
}

}  // namespace attn::nn
