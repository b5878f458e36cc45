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

}  // namespace attn
