// Shared by the fused and the composed attention.
#pragma once
#include "ops/ops.h"

namespace attn {

struct AttnDims {
  int64_t B, H, N, M, D;
  double scale;  // the spec's, or 1/sqrt(D)
};

AttnDims check_attention_args(const Tensor& q, const Tensor& k, const Tensor& v,
                              const AttentionSpec& spec);

// ∂L/∂sink_h = −Σ_{b,i} exp(sink_h − lse_{b,h,i})·D_{b,h,i}, D = rowsum(dO ∘ O): the sink's
// weight in each row times that row's D (the softmax backward's own D), summed over rows. Tensor
// ops on any device, in the dtype of its arguments (the CUDA path passes f32).
Tensor sink_grad(const Tensor& sink, const Tensor& lse, const Tensor& o, const Tensor& g);

// attention() on CUDA tensors (bf16): the flash kernels (ops/attention_cuda.cpp).
AttentionOut attention_cuda(const Tensor& q, const Tensor& k, const Tensor& v,
                            const AttentionSpec& spec, const AttnDims& d);

}  // namespace attn
