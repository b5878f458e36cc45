// The basic layers: Linear, Conv2d, Embedding, normalisation, MLP.
#pragma once
#include "nn/config.h"
#include "nn/module.h"
#include "ops/ops.h"

namespace attn::nn {

// y = x·Wᵀ + b, W [out, in] (PyTorch's layout).
class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias, LinearInit init, Generator& gen, DType dt);
  Tensor forward(const Tensor& x) const;
  Tensor forward_gelu(const Tensor& x) const;  // gelu(forward(x)), fused on CUDA (linear_gelu)
  Tensor weight, bias;
};

// PyTorch's nn.Conv2d with a square kernel: x [B, in, H, W] -> [B, out, Ho, Wo] (ops.h conv2d),
// weight [out, in, k, k], bias [out]. Init as Linear with fan_in = in·k·k: FanIn is PyTorch's
// default U(±1/√fan_in) for weight and bias; Normal is N(0, std) and a zero bias.
class Conv2d : public Module {
 public:
  Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, bool bias,
         LinearInit init, Generator& gen, DType dt);
  Tensor forward(const Tensor& x) const;
  int64_t stride, padding;
  Tensor weight, bias;
};

class Embedding : public Module {
 public:
  Embedding(int64_t vocab, int64_t dim, double init_std, Generator& gen, DType dt);
  // Gathers from the master table, then casts the rows (the same numbers as gathering from a
  // cast table, without converting all V rows each step).
  Tensor forward(const Tensor& ids) const { return working(embedding(weight, ids)); }
  Tensor weight;
};

// LayerNorm (weight and bias) or RMSNorm (weight) over the last dim.
class Norm : public Module {
 public:
  Norm(NormKind kind, int64_t dim, double eps, DType dt);
  Tensor forward(const Tensor& x) const;
  NormKind kind;
  double eps;
  Tensor weight, bias;
};

// GELU: fc2(gelu(fc1 x)); SwiGLU: w2(silu(w1 x) ∘ w3 x). out_std is for the output projection.
class Mlp : public Module {
 public:
  Mlp(const BlockConfig& c, double out_std, Generator& gen, DType dt);
  Tensor forward(const Tensor& x) const;
  MlpKind kind;
  Linear *fc1 = nullptr, *fc2 = nullptr, *gate = nullptr;
};

int64_t mlp_hidden_size(const BlockConfig& c);

}  // namespace attn::nn
