// Attention from primitive ops, the reference the fused op is tested against:
//   S = s·Q·Kᵀ + ALiBi + spec.score_bias, masked entries -inf
//   softmax:   P = softmax(S)
//   softmax_1: P = softmax([S, 0])[:, :M]   (an extra key with logit 0 and value 0)
//   sigmoid:   P = σ(S + b)                 (0 where masked: σ(−inf)); b the fixed spec.sigmoid_bias,
//              the learnable b_h (autograd gives Σ dS per head) or the per-row −ln n_i
//   sink:      P = softmax([S, sink_h])[:, :M]  (the sink's key has value 0)
//   clipped:   P = clip((ζ − γ)·softmax(S) + γ, 0, 1), the clip as 1 − relu(1 − relu(·))
//   O = P·V
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/attention_internal.h"
#include "ops/ops.h"

namespace attn {

namespace {

// One additive term for the scores of the query rows `rows` (all N when empty),
// [B or 1, H or 1, R, M]: ALiBi's −slope·|i + M − N − j| where a key is visible, −inf where it
// is hidden (causal or padding). −inf makes softmax's and sigmoid's output exactly 0 there, and
// their gradients too (P = 0; σ' = σ(1 − σ) = 0). The batch and head dims stay 1 unless padding
// or ALiBi need them, so the common causal case builds R·M values on the host, not B·H·R·M (this
// op is also the CUDA f32 path and the bf16 fallback). Undefined when there is nothing to add.
Tensor score_bias(const AttnDims& d, const AttentionSpec& spec, const std::vector<int64_t>& rows, DType dt,
                  Device dev) {
  const bool padded = !spec.key_padding_lengths.empty(), alibi = !spec.alibi_slopes.empty();
  if (!spec.causal && !padded && !alibi) return Tensor();
  const int64_t Bb = padded ? d.B : 1, Hb = alibi ? d.H : 1, R = static_cast<int64_t>(rows.size());
  const double neg_inf = -std::numeric_limits<double>::infinity();
  std::vector<double> v(Bb * Hb * R * d.M, 0.0);
  for (int64_t b = 0; b < Bb; ++b)
    for (int64_t h = 0; h < Hb; ++h)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t j = 0; j < d.M; ++j) {
          const int64_t qpos = rows[r] + d.M - d.N;
          const bool hidden = (spec.causal && j > qpos) || (padded && j >= spec.key_padding_lengths[b]);
          double& x = v[((b * Hb + h) * R + r) * d.M + j];
          if (hidden) x = neg_inf;
          else if (alibi) x = -spec.alibi_slopes[h] * std::abs(static_cast<double>(qpos - j));
        }
  return from_vector(v, {Bb, Hb, R, d.M}, {dt, dev});
}

// The per-row sigmoid bias −ln n_i of the query rows `rows`, [B or 1, 1, R, 1]: n_i the keys row
// i sees (min(length_b, i + M − N + 1) with causal masking and padding), at least 1 so that a row
// that sees nothing gets a finite b (all its P are 0 anyway).
Tensor per_row_sigmoid_bias(const AttnDims& d, const AttentionSpec& spec, const std::vector<int64_t>& rows,
                            DType dt, Device dev) {
  const bool padded = !spec.key_padding_lengths.empty();
  const int64_t Bb = padded ? d.B : 1, R = static_cast<int64_t>(rows.size());
  std::vector<double> v(Bb * R);
  for (int64_t b = 0; b < Bb; ++b)
    for (int64_t r = 0; r < R; ++r) {
      int64_t n = padded ? std::clamp<int64_t>(spec.key_padding_lengths[b], 0, d.M) : d.M;
      if (spec.causal) n = std::min(n, rows[r] + d.M - d.N + 1);
      v[b * R + r] = -std::log(static_cast<double>(std::max<int64_t>(n, 1)));
    }
  return from_vector(v, {Bb, 1, R, 1}, {dt, dev});
}

// s + b for sigmoid attention: the spec's fixed b, its learnable b_h or the per-row b_i.
Tensor add_sigmoid_bias(const Tensor& s, const AttnDims& d, const AttentionSpec& spec,
                        const std::vector<int64_t>& rows) {
  if (spec.sigmoid_bias_param.defined()) return add(s, reshape(spec.sigmoid_bias_param, {1, d.H, 1, 1}));
  if (spec.sigmoid_bias_per_row) return add(s, per_row_sigmoid_bias(d, spec, rows, s.dtype(), s.device()));
  return add(s, spec.sigmoid_bias);
}

// x's rows `rows` along `axis` (x itself when they are all of them, in order).
Tensor take_rows(const Tensor& x, int64_t axis, const std::vector<int64_t>& rows) {
  bool all = static_cast<int64_t>(rows.size()) == x.size(axis);
  for (size_t i = 0; all && i < rows.size(); ++i) all = rows[i] == static_cast<int64_t>(i);
  if (all) return x;
  std::vector<Tensor> parts;
  for (int64_t r : rows) parts.push_back(slice(x, axis, r, r + 1));
  return concat(parts, axis);
}

}  // namespace

AttentionRows attention_rows(const Tensor& q, const Tensor& k, const AttentionSpec& spec,
                             std::vector<int64_t> rows) {
  AttnDims d = check_attention_args(q, k, k, spec);
  if (rows.empty())
    for (int64_t i = 0; i < d.N; ++i) rows.push_back(i);
  for (int64_t r : rows)
    if (r < 0 || r >= d.N)
      throw std::invalid_argument("attention_rows: row " + std::to_string(r) + " is outside [0, " +
                                  std::to_string(d.N) + ")");
  Tensor s = mul(matmul(take_rows(q, 2, rows), k, false, true), d.scale);
  if (Tensor bias = score_bias(d, spec, rows, q.dtype(), q.device()); bias.defined()) s = add(s, bias);
  // The caller's term, [H or 1, N, M] as [1, H or 1, R, M]; masked entries stay −inf (finite + −inf).
  if (spec.score_bias.defined()) {
    Tensor sb = take_rows(spec.score_bias, 1, rows);
    s = add(s, reshape(sb, {1, sb.size(0), sb.size(1), d.M}));
  }
  Tensor p;
  switch (spec.variant) {
    case AttentionVariant::Softmax:
      p = softmax(s);
      break;
    case AttentionVariant::Softmax1: {
      Tensor zero_logit = zeros({d.B, d.H, s.size(2), 1}, {q.dtype(), q.device()});
      p = slice(softmax(concat({s, zero_logit}, 3)), 3, 0, d.M);
      break;
    }
    case AttentionVariant::Sigmoid:
      p = sigmoid(add_sigmoid_bias(s, d, spec, rows));
      break;
    case AttentionVariant::Sink: {
      Tensor sink_logit = add(zeros({d.B, d.H, s.size(2), 1}, {q.dtype(), q.device()}),
                              reshape(spec.sink, {1, d.H, 1, 1}));
      p = slice(softmax(concat({s, sink_logit}, 3)), 3, 0, d.M);
      break;
    }
    case AttentionVariant::ClippedSoftmax: {
      Tensor stretched = add(mul(softmax(s), spec.clip_zeta - spec.clip_gamma), spec.clip_gamma);
      p = add(neg(relu(add(neg(relu(stretched)), 1.0))), 1.0);
      break;
    }
  }
  return {s, p, rows};
}

Tensor attention_composed(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionSpec& spec) {
  check_attention_args(q, k, v, spec);
  return matmul(attention_rows(q, k, spec).probs, v);
}

}  // namespace attn
