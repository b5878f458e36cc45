// Attention from primitive ops, the reference the fused op is tested against:
//   S = s·Q·Kᵀ + ALiBi + spec.score_bias, masked entries -inf
//   softmax:   P = softmax(S)
//   softmax_1: P = softmax([S, 0])[:, :M]   (an extra key with logit 0 and value 0)
//   sigmoid:   P = σ(S + b)                 (0 where masked: σ(−inf))
//   O = P·V
#include <cmath>
#include <limits>

#include "ops/attention_internal.h"
#include "ops/ops.h"

namespace attn {

namespace {

// One additive term for the scores, [B or 1, H or 1, N, M]: ALiBi's −slope·|i + M − N − j| where
// a key is visible, −inf where it is hidden (causal or padding). −inf makes softmax's and
// sigmoid's output exactly 0 there, and their gradients too (P = 0; σ' = σ(1 − σ) = 0). The batch
// and head dims stay 1 unless padding or ALiBi need them, so the common causal case builds N·M
// values on the host, not B·H·N·M (this op is also the CUDA f32 path and the bf16 fallback).
// Undefined when there is nothing to add.
Tensor score_bias(const AttnDims& d, const AttentionSpec& spec, DType dt, Device dev) {
  const bool padded = !spec.key_padding_lengths.empty(), alibi = !spec.alibi_slopes.empty();
  if (!spec.causal && !padded && !alibi) return Tensor();
  const int64_t Bb = padded ? d.B : 1, Hb = alibi ? d.H : 1;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  std::vector<double> v(Bb * Hb * d.N * d.M, 0.0);
  for (int64_t b = 0; b < Bb; ++b)
    for (int64_t h = 0; h < Hb; ++h)
      for (int64_t i = 0; i < d.N; ++i)
        for (int64_t j = 0; j < d.M; ++j) {
          const int64_t qpos = i + d.M - d.N;
          const bool hidden = (spec.causal && j > qpos) || (padded && j >= spec.key_padding_lengths[b]);
          double& x = v[((b * Hb + h) * d.N + i) * d.M + j];
          if (hidden) x = neg_inf;
          else if (alibi) x = -spec.alibi_slopes[h] * std::abs(static_cast<double>(qpos - j));
        }
  return from_vector(v, {Bb, Hb, d.N, d.M}, {dt, dev});
}

}  // namespace

Tensor attention_composed(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionSpec& spec) {
  AttnDims d = check_attention_args(q, k, v, spec);
  Tensor s = mul(matmul(q, k, false, true), d.scale);
  if (Tensor bias = score_bias(d, spec, q.dtype(), q.device()); bias.defined()) s = add(s, bias);
  // The caller's term, [H or 1, N, M] as [1, H or 1, N, M]; masked entries stay −inf (finite + −inf).
  if (spec.score_bias.defined()) s = add(s, reshape(spec.score_bias, {1, spec.score_bias.size(0), d.N, d.M}));
  Tensor p;
  switch (spec.variant) {
    case AttentionVariant::Softmax:
      p = softmax(s);
      break;
    case AttentionVariant::Softmax1: {
      Tensor zero_logit = zeros({d.B, d.H, d.N, 1}, {q.dtype(), q.device()});
      p = slice(softmax(concat({s, zero_logit}, 3)), 3, 0, d.M);
      break;
    }
    case AttentionVariant::Sigmoid:
      p = sigmoid(add(s, spec.sigmoid_bias));
      break;
  }
  return matmul(p, v);
}

}  // namespace attn
