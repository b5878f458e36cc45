// Attention from primitive ops, the reference the fused op is tested against:
//   S = s·Q·Kᵀ + ALiBi, masked entries -inf
//   softmax:   P = softmax(S)
//   softmax_1: P = softmax([S, 0])[:, :M]   (an extra key with logit 0 and value 0)
//   sigmoid:   P = σ(S + b), masked entries 0
//   O = P·V
#include <cmath>
#include <limits>

#include "ops/attention_internal.h"
#include "ops/ops.h"

namespace attn {

namespace {

// ALiBi bias and the mask (1 = hidden), both [B, H, N, M], as constants on `dev`.
void bias_and_mask(const AttnDims& d, const AttentionSpec& spec, DType dt, Device dev, Tensor& bias,
                   Tensor& mask) {
  std::vector<double> bv(d.B * d.H * d.N * d.M, 0.0), mv(bv.size(), 0.0);
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h)
      for (int64_t i = 0; i < d.N; ++i)
        for (int64_t j = 0; j < d.M; ++j) {
          size_t at = ((b * d.H + h) * d.N + i) * d.M + j;
          int64_t qpos = i + d.M - d.N;
          bool hidden = (spec.causal && j > qpos) ||
                        (!spec.key_padding_lengths.empty() && j >= spec.key_padding_lengths[b]);
          mv[at] = hidden ? 1.0 : 0.0;
          if (!spec.alibi_slopes.empty())
            bv[at] = -spec.alibi_slopes[h] * std::abs(static_cast<double>(qpos - j));
        }
  Shape s{d.B, d.H, d.N, d.M};
  bias = from_vector(bv, s, {dt, dev});
  mask = from_vector(mv, s, {dt, dev});
}

}  // namespace

Tensor attention_composed(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionSpec& spec) {
  AttnDims d = check_attention_args(q, k, v, spec);
  Tensor bias, mask;
  bias_and_mask(d, spec, q.dtype(), q.device(), bias, mask);
  Tensor s = add(mul(matmul(q, k, false, true), d.scale), bias);
  const double neg_inf = -std::numeric_limits<double>::infinity();
  Tensor p;
  switch (spec.variant) {
    case AttentionVariant::Softmax:
      p = softmax(masked_fill(s, mask, neg_inf));
      break;
    case AttentionVariant::Softmax1: {
      Tensor zero_logit = zeros({d.B, d.H, d.N, 1}, {q.dtype(), q.device()});
      p = slice(softmax(concat({masked_fill(s, mask, neg_inf), zero_logit}, 3)), 3, 0, d.M);
      break;
    }
    case AttentionVariant::Sigmoid:
      p = masked_fill(sigmoid(add(s, spec.sigmoid_bias)), mask, 0.0);
      break;
  }
  return matmul(p, v);
}

}  // namespace attn
