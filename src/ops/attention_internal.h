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

// attention() on CUDA tensors (bf16): the flash kernels (ops/attention_cuda.cpp).
AttentionOut attention_cuda(const Tensor& q, const Tensor& k, const Tensor& v,
                            const AttentionSpec& spec, const AttnDims& d);

}  // namespace attn
