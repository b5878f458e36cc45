// The fused attention op against the composed reference and a brute-force f64 loop, for every
// variant × mask × ALiBi, tile-crossing and ragged sizes, causal with more queries than keys
// (forward and gradients against the brute force), the softmax_1 short-row trap and fully masked
// rows; gradients of the fused op against the composed op's autograd gradients.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>

#include "autograd/node.h"
#include "config/config.h"
#include "nn/attention.h"
#include "tasks/transformer_keys.h"
#include "test_util.h"

using namespace attn;
using attn::testing::all_close;
using attn::testing::rand_tensor;

namespace {

struct Brute {
  std::vector<double> out, lse;
  std::vector<double> dq, dk, dv;  // with a dout: the gradients of sum(out ∘ dout)
  std::vector<double> dsink;       // sink, with a dout: [H]
  std::vector<double> dbias;       // sigmoid with a learnable bias, with a dout: [H]
};

// Straight from the definitions, one query row at a time, in long double. With `dout`, also the
// backward by hand: dV_j += p_j·dO_i, dp_j = dO_i·V_j, dx_j = p_j·(dp_j − Σ_k p_k·dp_k) for the
// softmax family (the +1 of softmax_1 and the sink's e^{sink} are constants here) and
// dp_j·p_j·(1 − p_j) for sigmoid, dQ_i += s·Σ_j dx_j·K_j, dK_j += s·dx_j·Q_i. clipped_softmax:
// p = clip((ζ − γ)·π + γ, 0, 1) over the softmax π; the backward goes through the clip
// (dπ_j = dp_j·(ζ − γ) where 0 < (ζ − γ)·π_j + γ < 1, else 0) and then the softmax's.
// dsink_h (sink) = −Σ_i p_sink,i·Σ_j p_j·dp_j. Sigmoid's b: the fixed one, the learnable b_h
// (dbias_h = Σ_{i,j} dx_j) or −ln n_i per row with n_i counted from the row's own visible keys.
Brute brute_force(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionSpec& spec,
                  const Tensor* dout = nullptr) {
  int64_t B = q.size(0), H = q.size(1), N = q.size(2), M = k.size(2), D = q.size(3);
  double scale = spec.scale ? spec.scale : 1 / std::sqrt(double(D));
  std::vector<double> Q = q.to_vector(), K = k.to_vector(), V = v.to_vector();
  std::vector<double> dO = dout ? dout->to_vector() : std::vector<double>();
  Brute r;
  r.out.assign(B * H * N * D, 0.0);
  r.lse.assign(B * H * N, 0.0);
  std::vector<long double> dQ(dout ? Q.size() : 0, 0), dK(dout ? K.size() : 0, 0),
      dV(dout ? V.size() : 0, 0), dS(H, 0), dB(H, 0);
  const std::vector<double> bias_h =
      spec.sigmoid_bias_param.defined() ? spec.sigmoid_bias_param.to_vector() : std::vector<double>();
  const std::vector<double> sink = spec.sink.defined() ? spec.sink.to_vector() : std::vector<double>();
  const bool clipped = spec.variant == AttentionVariant::ClippedSoftmax;
  const long double stretch = spec.clip_zeta - spec.clip_gamma;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < N; ++i) {
        std::vector<long double> x(M);
        std::vector<bool> vis(M);
        long double mx = -INFINITY;
        for (int64_t j = 0; j < M; ++j) {
          vis[j] = (!spec.causal || j <= i + M - N) &&
                   (spec.key_padding_lengths.empty() || j < spec.key_padding_lengths[b]);
          long double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += (long double)Q[((b * H + h) * N + i) * D + d] * K[((b * H + h) * M + j) * D + d];
          x[j] = dot * scale;
          if (!spec.alibi_slopes.empty()) x[j] -= spec.alibi_slopes[h] * std::abs(double(i + M - N - j));
          if (spec.score_bias.defined())  // [H or 1, N, M]
            x[j] += spec.score_bias.data<double>()[((spec.score_bias.size(0) == 1 ? 0 : h) * N + i) * M + j];
          if (vis[j]) mx = std::max(mx, x[j]);
        }
        std::vector<long double> p(M, 0), soft(M, 0);
        long double denom = spec.variant == AttentionVariant::Softmax1 ? 1.0L
                            : spec.variant == AttentionVariant::Sink   ? std::exp((long double)sink[h])
                                                                       : 0.0L;
        int64_t n_vis = 0;
        for (int64_t j = 0; j < M; ++j)
          if (vis[j]) denom += std::exp(x[j]), ++n_vis;
        const long double bias = !bias_h.empty()              ? (long double)bias_h[h]
                                 : spec.sigmoid_bias_per_row ? -std::log((long double)std::max<int64_t>(n_vis, 1))
                                                             : (long double)spec.sigmoid_bias;
        for (int64_t j = 0; j < M; ++j) {
          if (!vis[j]) continue;
          if (spec.variant == AttentionVariant::Sigmoid) p[j] = 1 / (1 + std::exp(-(x[j] + bias)));
          else p[j] = soft[j] = std::exp(x[j]) / denom;
          if (clipped) p[j] = std::clamp(stretch * soft[j] + spec.clip_gamma, 0.0L, 1.0L);
        }
        for (int64_t d = 0; d < D; ++d) {
          long double o = 0;
          for (int64_t j = 0; j < M; ++j) o += p[j] * V[((b * H + h) * M + j) * D + d];
          r.out[((b * H + h) * N + i) * D + d] = (double)o;
        }
        r.lse[(b * H + h) * N + i] = denom == 0 ? -INFINITY : (double)std::log(denom);
        (void)mx;
        if (!dout) continue;
        const int64_t qi = ((b * H + h) * N + i) * D;
        std::vector<long double> dp(M, 0), dx(M, 0);
        long double p_dp = 0;
        for (int64_t j = 0; j < M; ++j) {
          const int64_t kj = ((b * H + h) * M + j) * D;
          for (int64_t d = 0; d < D; ++d) {
            dV[kj + d] += p[j] * dO[qi + d];
            dp[j] += (long double)dO[qi + d] * V[kj + d];
          }
          if (clipped) {  // through the clip, onto the softmax's weights
            const long double y = stretch * soft[j] + spec.clip_gamma;
            dp[j] = (y > 0 && y < 1) ? dp[j] * stretch : 0;
          }
          p_dp += (clipped ? soft[j] : p[j]) * dp[j];
        }
        if (spec.variant == AttentionVariant::Sink) dS[h] -= std::exp((long double)sink[h]) / denom * p_dp;
        for (int64_t j = 0; j < M; ++j) {
          dx[j] = spec.variant == AttentionVariant::Sigmoid ? dp[j] * p[j] * (1 - p[j])
                  : clipped                                 ? soft[j] * (dp[j] - p_dp)
                                                            : p[j] * (dp[j] - p_dp);
          if (vis[j]) dB[h] += dx[j];
          const int64_t kj = ((b * H + h) * M + j) * D;
          for (int64_t d = 0; d < D; ++d) {
            dQ[qi + d] += scale * dx[j] * K[kj + d];
            dK[kj + d] += scale * dx[j] * Q[qi + d];
          }
        }
      }
  r.dq.assign(dQ.begin(), dQ.end());
  r.dk.assign(dK.begin(), dK.end());
  r.dv.assign(dV.begin(), dV.end());
  r.dsink.assign(dS.begin(), dS.end());
  r.dbias.assign(dB.begin(), dB.end());
  return r;
}

const AttentionVariant kVariants[] = {AttentionVariant::Softmax, AttentionVariant::Sigmoid,
                                      AttentionVariant::Softmax1, AttentionVariant::Sink,
                                      AttentionVariant::ClippedSoftmax};

// Variants without an lse: sigmoid (none to have) and clipped_softmax (the composed op's).
bool has_lse(AttentionVariant v) { return v != AttentionVariant::Sigmoid && v != AttentionVariant::ClippedSoftmax; }

enum Mask { kFull, kCausal, kPadding, kCausalPadding };

AttentionSpec make_spec(AttentionVariant v, Mask m, bool alibi, int64_t B, int64_t H, int64_t M) {
  AttentionSpec s;
  s.variant = v;
  s.sigmoid_bias = -std::log(double(M));
  s.causal = m == kCausal || m == kCausalPadding;
  if (m == kPadding || m == kCausalPadding)
    for (int64_t b = 0; b < B; ++b) s.key_padding_lengths.push_back(std::max<int64_t>(1, M - 3 * b - 1));
  if (alibi)
    for (int64_t h = 0; h < H; ++h) s.alibi_slopes.push_back(std::pow(2.0, -8.0 * (h + 1) / H));
  // sink: one head with a large sink logit (it takes most of the mass), one with a negative one.
  if (v == AttentionVariant::Sink) {
    std::vector<double> sink;
    for (int64_t h = 0; h < H; ++h) sink.push_back(h % 2 ? -1.3 : 2.5);
    s.sink = from_vector(sink, {H}, {DType::F64});
  }
  // clipped_softmax: a γ large enough that rows of 5 to 133 keys both clip weights to 0 and
  // (with the logits spread by ×2) keep some inside (0, 1).
  if (v == AttentionVariant::ClippedSoftmax) s.clip_gamma = -0.03, s.clip_zeta = 1.05;
  return s;
}

// The spec for f32 inputs: the sink logits in f32 too.
AttentionSpec in_f32(AttentionSpec s) {
  if (s.sink.defined()) s.sink = s.sink.to(DType::F32);
  if (s.sigmoid_bias_param.defined()) s.sigmoid_bias_param = s.sigmoid_bias_param.to(DType::F32);
  return s;
}

using Combo = std::tuple<AttentionVariant, Mask, bool>;

class AttentionCombo : public ::testing::TestWithParam<Combo> {};

// Sizes cross the 64-row/64-key tiles and are ragged (N = 70, M = 133), with N != M.
TEST_P(AttentionCombo, FusedMatchesBruteForceAndComposed) {
  auto [variant, mask, alibi] = GetParam();
  for (auto [N, M] : {std::pair<int64_t, int64_t>{70, 133}, {5, 5}, {67, 67}}) {
    int64_t B = 2, H = 2, D = 8;
    AttentionSpec spec = make_spec(variant, mask, alibi, B, H, M);
    Tensor q = mul(rand_tensor({B, H, N, D}, 1), 2.0), k = mul(rand_tensor({B, H, M, D}, 2), 2.0),
           v = rand_tensor({B, H, M, D}, 3);
    AttentionOut fused = attention(q, k, v, spec);
    Brute ref = brute_force(q, k, v, spec);
    EXPECT_TRUE(all_close(fused.out, from_vector(ref.out, q.shape(), {DType::F64}), 1e-12, 1e-10))
        << "N=" << N << " M=" << M;
    if (has_lse(variant))
      EXPECT_TRUE(all_close(fused.lse, from_vector(ref.lse, {B, H, N}, {DType::F64}), 1e-12, 1e-10));
    else
      EXPECT_FALSE(fused.lse.defined());
    EXPECT_TRUE(all_close(attention_composed(q, k, v, spec), fused.out, 1e-12, 1e-10));
    // f32 fused against the f64 brute force: f32 rounding over D·M terms.
    AttentionOut f32 = attention(q.to(DType::F32), k.to(DType::F32), v.to(DType::F32), in_f32(spec));
    EXPECT_TRUE(all_close(f32.out, from_vector(ref.out, q.shape(), {DType::F64}), 2e-5, 2e-4));
  }
}

TEST_P(AttentionCombo, FusedGradientsMatchComposedAutograd) {
  auto [variant, mask, alibi] = GetParam();
  int64_t B = 2, H = 2, N = 67, M = 70, D = 4;
  AttentionSpec spec = make_spec(variant, mask, alibi, B, H, M);
  auto leaf = [](Tensor t) { return t.set_requires_grad(true); };
  Tensor q1 = leaf(rand_tensor({B, H, N, D}, 4)), k1 = leaf(rand_tensor({B, H, M, D}, 5)),
         v1 = leaf(rand_tensor({B, H, M, D}, 6));
  Tensor q2 = leaf(q1.detach().clone()), k2 = leaf(k1.detach().clone()), v2 = leaf(v1.detach().clone());
  Generator g(7);
  Tensor R = randn({B, H, N, D}, g, {DType::F64});
  sum(mul(attention(q1, k1, v1, spec).out, R)).backward();
  sum(mul(attention_composed(q2, k2, v2, spec), R)).backward();
  EXPECT_TRUE(all_close(q1.grad(), q2.grad(), 1e-12, 1e-9)) << "dq";
  EXPECT_TRUE(all_close(k1.grad(), k2.grad(), 1e-12, 1e-9)) << "dk";
  EXPECT_TRUE(all_close(v1.grad(), v2.grad(), 1e-12, 1e-9)) << "dv";
}

// Causal with more queries than keys (N > M). The mask is bottom-right aligned (docs/
// architecture.md): the last query lines up with the last key, so query i sees keys
// j ≤ i − (N − M), the first N − M rows see no key at all, row N − M sees key 0 only and the last
// row sees every key. The GPU tests compare the flash kernels against the fused op here, so the
// fused op itself must be right: fused and composed against the brute force, forward, lse and
// gradients; the rows with no visible key give O = 0, zero dQ and no NaN. Shapes: a ragged one
// crossing the 64-row and 64-key tiles with N − M = 63 (row 63, the last of the first query
// tile, is the first to see a key), one whose whole first query tile sees nothing, and M = 1.
class AttentionCausalMoreQueries : public ::testing::TestWithParam<Combo> {};

TEST_P(AttentionCausalMoreQueries, MatchesBruteForce) {
  auto [variant, mask, alibi] = GetParam();
  for (auto [N, M] : {std::pair<int64_t, int64_t>{133, 70}, {70, 5}, {6, 1}}) {
    SCOPED_TRACE("N=" + std::to_string(N) + " M=" + std::to_string(M));
    int64_t B = 2, H = 2, D = 8;
    AttentionSpec spec = make_spec(variant, mask, alibi, B, H, M);
    auto leaf = [](Tensor t) { return t.set_requires_grad(true); };
    Tensor q = leaf(mul(rand_tensor({B, H, N, D}, 11), 2.0)),
           k = leaf(mul(rand_tensor({B, H, M, D}, 12), 2.0)),
           v = leaf(rand_tensor({B, H, M, D}, 13));
    Tensor q2 = leaf(q.detach().clone()), k2 = leaf(k.detach().clone()),
           v2 = leaf(v.detach().clone());
    Tensor R = rand_tensor({B, H, N, D}, 14);
    Brute ref = brute_force(q, k, v, spec, &R);
    auto want = [](const std::vector<double>& x, const Shape& s) {
      return from_vector(x, s, {DType::F64});
    };

    AttentionOut fused = attention(q, k, v, spec);
    Tensor composed = attention_composed(q2, k2, v2, spec);
    EXPECT_TRUE(all_close(fused.out, want(ref.out, q.shape()), 1e-12, 1e-10)) << "fused O";
    EXPECT_TRUE(all_close(composed, want(ref.out, q.shape()), 1e-12, 1e-10)) << "composed O";
    if (!has_lse(variant)) {
      EXPECT_FALSE(fused.lse.defined());
    } else {
      // Opt-in: a row with no visible key has lse = ln 0 = −∞ under softmax (softmax_1: ln 1 = 0),
      // and the fused op must give exactly that −∞ in exactly those rows.
      EXPECT_TRUE(all_close(fused.lse, want(ref.lse, {B, H, N}), 1e-12, 1e-10,
                            attn::testing::NonFinite::kMustMatch))
          << "lse";
    }
    sum(mul(fused.out, R)).backward();
    sum(mul(composed, R)).backward();
    for (auto [got, name] :
         {std::pair<Tensor, const char*>{q.grad(), "fused dq"}, {q2.grad(), "composed dq"}})
      EXPECT_TRUE(all_close(got, want(ref.dq, q.shape()), 1e-12, 1e-9)) << name;
    for (auto [got, name] :
         {std::pair<Tensor, const char*>{k.grad(), "fused dk"}, {k2.grad(), "composed dk"}})
      EXPECT_TRUE(all_close(got, want(ref.dk, k.shape()), 1e-12, 1e-9)) << name;
    for (auto [got, name] :
         {std::pair<Tensor, const char*>{v.grad(), "fused dv"}, {v2.grad(), "composed dv"}})
      EXPECT_TRUE(all_close(got, want(ref.dv, v.shape()), 1e-12, 1e-9)) << name;

    // The alignment itself, from the definition rather than the shared formula: rows i < N − M
    // are exactly 0 in O and dQ (fused and composed), and row N − M sees key 0 alone, so under
    // softmax its output is V_0 (one key, weight 1) up to rounding.
    std::vector<double> o = fused.out.to_vector(), oc = composed.to_vector();
    std::vector<double> dq = q.grad().to_vector(), dqc = q2.grad().to_vector();
    std::vector<double> vv = v.to_vector();
    for (int64_t bh = 0; bh < B * H; ++bh) {
      for (int64_t i = 0; i < N - M; ++i)
        for (int64_t d = 0; d < D; ++d) {
          const int64_t at = (bh * N + i) * D + d;
          ASSERT_EQ(o[at], 0.0) << "fused O, (b·H + h) " << bh << ", row " << i;
          ASSERT_EQ(oc[at], 0.0) << "composed O, (b·H + h) " << bh << ", row " << i;
          ASSERT_EQ(dq[at], 0.0) << "fused dq, (b·H + h) " << bh << ", row " << i;
          ASSERT_EQ(dqc[at], 0.0) << "composed dq, (b·H + h) " << bh << ", row " << i;
        }
      if (variant == AttentionVariant::Softmax) {
        for (int64_t d = 0; d < D; ++d)
          EXPECT_NEAR(o[(bh * N + N - M) * D + d], vv[bh * M * D + d], 1e-14) << "row N − M";
      }
    }
    // f32 fused against the f64 brute force (f32 rounding over D·M terms), and no NaN there.
    Tensor f32 = attention(q.detach().to(DType::F32), k.detach().to(DType::F32),
                           v.detach().to(DType::F32), in_f32(spec))
                     .out;
    EXPECT_TRUE(all_close(f32, want(ref.out, q.shape()), 2e-5, 2e-4)) << "f32 fused O";
  }
}

std::string combo_name(const ::testing::TestParamInfo<Combo>& info) {
  static const char* const kMasks[] = {"full", "causal", "padding", "causal_padding"};
  return std::string(variant_name(std::get<0>(info.param))) + "_" + kMasks[std::get<1>(info.param)] +
         (std::get<2>(info.param) ? "_alibi" : "");
}

INSTANTIATE_TEST_SUITE_P(AllVariants, AttentionCombo,
                         ::testing::Combine(::testing::ValuesIn(kVariants),
                                            ::testing::Values(kFull, kCausal, kPadding, kCausalPadding),
                                            ::testing::Bool()),
                         combo_name);

INSTANTIATE_TEST_SUITE_P(AllVariants, AttentionCausalMoreQueries,
                         ::testing::Combine(::testing::ValuesIn(kVariants),
                                            ::testing::Values(kCausal, kCausalPadding),
                                            ::testing::Bool()),
                         combo_name);

}  // namespace

// The sink's own gradient: fused (the op's −Σ_i e^{sink − lse_i}·D_i) and composed (autograd
// through the concatenated logit) against the brute force, with causal masking and padding so
// that some rows see few keys and the sink dominates them.
TEST(Attention, SinkGradientMatchesBruteForce) {
  const int64_t B = 2, H = 2, N = 9, M = 9, D = 4;
  AttentionSpec spec = make_spec(AttentionVariant::Sink, kCausalPadding, false, B, H, M);
  auto leaf = [](Tensor t) { return t.set_requires_grad(true); };
  Tensor q = rand_tensor({B, H, N, D}, 31), k = rand_tensor({B, H, M, D}, 32), v = rand_tensor({B, H, M, D}, 33);
  Tensor R = rand_tensor({B, H, N, D}, 34);
  Brute ref = brute_force(q, k, v, spec, &R);
  Tensor want = from_vector(ref.dsink, {H}, {DType::F64});
  for (bool fused : {true, false}) {
    AttentionSpec s = spec;
    s.sink = leaf(spec.sink.detach().clone());
    Tensor out = fused ? attention(q, k, v, s).out : attention_composed(q, k, v, s);
    sum(mul(out, R)).backward();
    EXPECT_TRUE(all_close(s.sink.grad(), want, 1e-12, 1e-10)) << (fused ? "fused" : "composed");
  }
  EXPECT_GT(std::abs(ref.dsink[0]), 1e-3);  // a gradient that is there to be wrong
}

// softmax_1 is the sink with its logit fixed at 0: the same outputs and lse.
TEST(Attention, SinkAtZeroIsSoftmax1) {
  const int64_t B = 1, H = 3, N = 6, M = 6, D = 4;
  AttentionSpec one = make_spec(AttentionVariant::Softmax1, kCausal, false, B, H, M);
  AttentionSpec sink = make_spec(AttentionVariant::Sink, kCausal, false, B, H, M);
  sink.sink = zeros({H}, {DType::F64});
  Tensor q = rand_tensor({B, H, N, D}, 41), k = rand_tensor({B, H, M, D}, 42), v = rand_tensor({B, H, M, D}, 43);
  AttentionOut a = attention(q, k, v, one), b = attention(q, k, v, sink);
  EXPECT_TRUE(all_close(b.out, a.out, 0, 1e-15));
  EXPECT_TRUE(all_close(b.lse, a.lse, 0, 1e-15));
}

// clipped_softmax really clips: some weights exactly 0 and, with a sharp row, some exactly 1.
TEST(Attention, ClippedSoftmaxReachesZeroAndOne) {
  AttentionSpec spec;
  spec.variant = AttentionVariant::ClippedSoftmax;
  spec.clip_gamma = -0.025;
  spec.clip_zeta = 1.05;  // with ζ = 1 only a weight of exactly 1 would reach 1
  // One query, 4 keys: logits {8, 0, 0, 0} -> softmax {0.99899, 3.4e-4 ×3}; stretched by
  // ζ − γ = 1.075 and shifted by γ: {1.0489, −0.0246 ×3}, clipped to {1, 0, 0, 0}.
  Tensor q = from_vector({8}, {1, 1, 1, 1}, {DType::F64}), k = from_vector({1, 0, 0, 0}, {1, 1, 4, 1}, {DType::F64});
  Tensor v = from_vector({1, 2, 3, 4}, {1, 1, 4, 1}, {DType::F64});
  EXPECT_EQ(attention(q, k, v, spec).out.item(), 1.0);  // exactly V_0: the weights are 1, 0, 0, 0
  AttentionRows r = attention_rows(q, k, spec);
  EXPECT_EQ(r.probs.to_vector(), (std::vector<double>{1, 0, 0, 0}));
}

// The softmax_1 trap: short rows whose logits are all negative. The +1 in the
// denominator dominates, so the row mass Σp = Σe^x / (1 + Σe^x) is far below 1 — and far below
// the [0.5, 1) that the popular wrong form e^{x-m} / (1 + Σe^{x-m}) is stuck in.
TEST(Attention, Softmax1ShortNegativeRows) {
  int64_t M = 2, D = 4;
  // q·k·s = -3 for every key: q = (-2, ...), k = (3, ...) / scale folded in.
  Tensor q = full({1, 1, 1, D}, -1.0, {DType::F64}), k = full({1, 1, M, D}, 1.5, {DType::F64});
  Tensor v = ones({1, 1, M, D}, {DType::F64});
  AttentionSpec spec;
  spec.variant = AttentionVariant::Softmax1;
  AttentionOut r = attention(q, k, v, spec);  // logits = -1·1.5·4/2 = -3
  double mass = 2 * std::exp(-3.0) / (1 + 2 * std::exp(-3.0));
  for (double o : r.out.to_vector()) EXPECT_NEAR(o, mass, 1e-15);
  EXPECT_LT(mass, 0.1);
  EXPECT_NEAR(r.lse.item(), std::log(1 + 2 * std::exp(-3.0)), 1e-15);
  // The same in f32 and through the composed reference.
  EXPECT_NEAR(attention(q.to(DType::F32), k.to(DType::F32), v.to(DType::F32), spec).out.to_vector()[0], mass, 1e-7);
  EXPECT_NEAR(attention_composed(q, k, v, spec).to_vector()[0], mass, 1e-15);
}

// Rows with no visible key (causal with more keys hidden than exist, or zero-length padding):
// output 0 and no NaN anywhere, forward and backward, for every variant.
TEST(Attention, FullyMaskedRowsGiveZeroAndNoNaN) {
  for (AttentionVariant variant : kVariants) {
    AttentionSpec spec;
    spec.variant = variant;
    spec.key_padding_lengths = {0, 3};  // batch 0: every key hidden
    spec.sigmoid_bias = -1;
    if (variant == AttentionVariant::Sink) spec.sink = from_vector({0.5}, {1}, {DType::F64});
    Tensor q = rand_tensor({2, 1, 4, 3}, 1).set_requires_grad(true);
    Tensor k = rand_tensor({2, 1, 5, 3}, 2).set_requires_grad(true);
    Tensor v = rand_tensor({2, 1, 5, 3}, 3).set_requires_grad(true);
    AttentionOut r = attention(q, k, v, spec);
    std::vector<double> o = r.out.to_vector();
    for (int i = 0; i < 12; ++i) EXPECT_EQ(o[i], 0.0) << variant_name(variant);
    for (double x : o) EXPECT_FALSE(std::isnan(x));
    sum(r.out).backward();
    for (const Tensor& t : {q, k, v})
      for (double g : t.grad().to_vector()) EXPECT_FALSE(std::isnan(g)) << variant_name(variant);
    // Hidden keys get no gradient.
    std::vector<double> dk = k.grad().to_vector();
    for (int j = 3; j < 5; ++j)
      for (int d = 0; d < 3; ++d) EXPECT_EQ(dk[15 + j * 3 + d], 0.0);
    EXPECT_TRUE(all_close(attention_composed(q, k, v, spec), r.out, 1e-12, 1e-10));
  }
}

// Sigmoid attention is not shift-invariant: ALiBi must be the exact -slope·|i-j| (not softmax's
// equivalent +slope·j), so a shifted bias must change the output.
TEST(Attention, SigmoidAlibiUsesTheExactDistance) {
  AttentionSpec spec;
  spec.variant = AttentionVariant::Sigmoid;
  spec.alibi_slopes = {0.5};
  Tensor q = zeros({1, 1, 3, 2}, {DType::F64}), k = zeros({1, 1, 3, 2}, {DType::F64});
  Tensor v = ones({1, 1, 3, 2}, {DType::F64});
  std::vector<double> o = attention(q, k, v, spec).out.to_vector();
  auto s = [](double x) { return 1 / (1 + std::exp(-x)); };
  EXPECT_NEAR(o[0], s(0) + s(-0.5) + s(-1.0), 1e-15);  // row 0: distances 0, 1, 2
  EXPECT_NEAR(o[2], s(-0.5) + s(0) + s(-0.5), 1e-15);  // row 1: distances 1, 0, 1
}

// The backward recomputes score tiles: no tensor of N×M elements is ever allocated.
TEST(Attention, NoNxMTensorIsKept) {
  int64_t N = 512, M = 512, D = 16;
  Tensor q = rand_tensor({1, 1, N, D}, 1).set_requires_grad(true);
  Tensor k = rand_tensor({1, 1, M, D}, 2).set_requires_grad(true);
  Tensor v = rand_tensor({1, 1, M, D}, 3).set_requires_grad(true);
  Tensor R = rand_tensor({1, 1, N, D}, 4);
  AttentionSpec spec;
  spec.causal = true;
  size_t before = Storage::live_bytes(Device::CPU);
  Storage::reset_peak(Device::CPU);
  sum(mul(attention(q, k, v, spec).out, R)).backward();
  size_t extra = Storage::peak_bytes(Device::CPU) - before;
  size_t nxm = N * M * sizeof(double);
  EXPECT_LT(extra, nxm / 4) << "peak extra bytes " << extra << " vs N·M·8 = " << nxm;
  // The composed reference does materialise P: the measurement can see it.
  q.zero_grad();
  Storage::reset_peak(Device::CPU);
  before = Storage::live_bytes(Device::CPU);
  sum(mul(attention_composed(q, k, v, spec), R)).backward();
  EXPECT_GT(Storage::peak_bytes(Device::CPU) - before, nxm);
}

TEST(Attention, BadArgumentsAreClearErrors) {
  Tensor q = rand_tensor({1, 2, 3, 4}, 1), k = rand_tensor({1, 2, 5, 4}, 2);
  AttentionSpec spec;
  EXPECT_THROW(attention(q, k, rand_tensor({1, 2, 5, 3}, 3), spec), std::invalid_argument);
  spec.alibi_slopes = {1.0};
  EXPECT_THROW(attention(q, k, k, spec), std::invalid_argument);
  EXPECT_THROW(parse_variant("relu"), std::invalid_argument);
  EXPECT_EQ(parse_variant("softmax_1"), AttentionVariant::Softmax1);
}

// A caller's additive score term (AttentionSpec::score_bias, [H or 1, N, M]; a ViT's 2-D ALiBi):
// the fused op routes it to the composed op (no lse), and both must match the brute force,
// forward and gradients, per head and broadcast over heads, alone and with masks and ALiBi.
TEST(Attention, ScoreBiasRoutedFusedComposedAndBruteForceAgree) {
  const int64_t B = 2, H = 3, N = 7, M = 9, D = 4;
  for (AttentionVariant variant : kVariants)
    for (int64_t bias_heads : {H, int64_t{1}})
      for (Mask mask : {kFull, kCausalPadding}) {
        SCOPED_TRACE(std::string(variant_name(variant)) + " bias heads " + std::to_string(bias_heads) +
                     (mask == kFull ? " full" : " causal+padding+alibi"));
        AttentionSpec spec = make_spec(variant, mask, mask != kFull, B, H, M);
        spec.score_bias = rand_tensor({bias_heads, N, M}, 31, -2, 1);
        auto leaf = [](Tensor t) { return t.set_requires_grad(true); };
        Tensor q = leaf(mul(rand_tensor({B, H, N, D}, 32), 2.0)), k = leaf(mul(rand_tensor({B, H, M, D}, 33), 2.0)),
               v = leaf(rand_tensor({B, H, M, D}, 34));
        Tensor q2 = leaf(q.detach().clone()), k2 = leaf(k.detach().clone()), v2 = leaf(v.detach().clone());
        Tensor R = rand_tensor({B, H, N, D}, 35);
        Brute ref = brute_force(q, k, v, spec, &R);
        auto want = [](const std::vector<double>& x, const Shape& s) { return from_vector(x, s, {DType::F64}); };
        AttentionOut fused = attention(q, k, v, spec);
        EXPECT_FALSE(fused.lse.defined()) << "the composed path returns no lse";
        Tensor composed = attention_composed(q2, k2, v2, spec);
        EXPECT_TRUE(all_close(fused.out, want(ref.out, q.shape()), 1e-12, 1e-10)) << "fused O";
        EXPECT_TRUE(all_close(composed, want(ref.out, q.shape()), 1e-12, 1e-10)) << "composed O";
        sum(mul(fused.out, R)).backward();
        sum(mul(composed, R)).backward();
        for (const auto& [got, ref_g] : {std::pair<Tensor, std::vector<double>*>{q.grad(), &ref.dq},
                                         {q2.grad(), &ref.dq}, {k.grad(), &ref.dk}, {k2.grad(), &ref.dk},
                                         {v.grad(), &ref.dv}, {v2.grad(), &ref.dv}})
          EXPECT_TRUE(all_close(got, want(*ref_g, got.shape()), 1e-12, 1e-9));
        // The bias matters: without it the output differs.
        AttentionSpec no_bias = spec;
        no_bias.score_bias = Tensor();
        EXPECT_FALSE(all_close(attention(q, k, v, no_bias).out, fused.out, 1e-3, 1e-3));
      }
  AttentionSpec bad;
  Tensor q = rand_tensor({1, 2, 3, 4}, 1), k = rand_tensor({1, 2, 5, 4}, 2);
  bad.score_bias = rand_tensor({2, 5, 3}, 3);  // [H, M, N]: transposed
  EXPECT_THROW(attention(q, k, k, bad), std::invalid_argument);
  bad.score_bias = rand_tensor({2, 3, 5}, 3, -1, 1, DType::F32);  // wrong dtype
  EXPECT_THROW(attention(q, k, k, bad), std::invalid_argument);
}

// ---- sigmoid's learnable and per-row biases ---------------------------------------------------

namespace {

enum class BiasForm { kLearnable, kPerRow };

// A sigmoid spec with the learnable b_h (spread around −ln M so that the heads differ) or the
// per-row b_i; ALiBi off (its interplay with b is the fixed bias's, tested above).
AttentionSpec bias_spec(BiasForm form, Mask mask, int64_t B, int64_t H, int64_t M) {
  AttentionSpec s = make_spec(AttentionVariant::Sigmoid, mask, false, B, H, M);
  s.sigmoid_bias = 7.0;  // must be ignored by both forms: a wrong path gives P ≈ 1
  if (form == BiasForm::kPerRow) {
    s.sigmoid_bias_per_row = true;
  } else {
    std::vector<double> b;
    for (int64_t h = 0; h < H; ++h) b.push_back(-std::log(double(M)) + (h % 2 ? -1.1 : 0.7));
    s.sigmoid_bias_param = from_vector(b, {H}, {DType::F64});
  }
  return s;
}

using BiasCombo = std::tuple<BiasForm, Mask>;

class SigmoidBias : public ::testing::TestWithParam<BiasCombo> {};

// Fused and composed against the brute force, forward and every gradient (the learnable bias's
// too), on tile-crossing ragged shapes with N < M, N = M and N > M (causal: rows that see
// nothing, whose per-row n is clamped to 1), in f64; the fused f32 forward against f64.
TEST_P(SigmoidBias, FusedAndComposedMatchBruteForce) {
  auto [form, mask] = GetParam();
  const bool learnable = form == BiasForm::kLearnable;
  for (auto [N, M] : {std::pair<int64_t, int64_t>{70, 133}, {67, 67}, {133, 70}, {5, 5}}) {
    SCOPED_TRACE("N=" + std::to_string(N) + " M=" + std::to_string(M));
    const int64_t B = 2, H = 2, D = 8;
    AttentionSpec spec = bias_spec(form, mask, B, H, M);
    auto leaf = [](Tensor t) { return t.set_requires_grad(true); };
    Tensor q = leaf(mul(rand_tensor({B, H, N, D}, 21), 2.0)), k = leaf(mul(rand_tensor({B, H, M, D}, 22), 2.0)),
           v = leaf(rand_tensor({B, H, M, D}, 23));
    Tensor q2 = leaf(q.detach().clone()), k2 = leaf(k.detach().clone()), v2 = leaf(v.detach().clone());
    Tensor R = rand_tensor({B, H, N, D}, 24);
    Brute ref = brute_force(q, k, v, spec, &R);
    auto want = [](const std::vector<double>& x, const Shape& s) { return from_vector(x, s, {DType::F64}); };
    AttentionSpec s1 = spec, s2 = spec;
    if (learnable) {
      s1.sigmoid_bias_param = leaf(spec.sigmoid_bias_param.clone());
      s2.sigmoid_bias_param = leaf(spec.sigmoid_bias_param.clone());
    }
    AttentionOut fused = attention(q, k, v, s1);
    EXPECT_FALSE(fused.lse.defined());
    Tensor composed = attention_composed(q2, k2, v2, s2);
    EXPECT_TRUE(all_close(fused.out, want(ref.out, q.shape()), 1e-12, 1e-10)) << "fused O";
    EXPECT_TRUE(all_close(composed, want(ref.out, q.shape()), 1e-12, 1e-10)) << "composed O";
    sum(mul(fused.out, R)).backward();
    sum(mul(composed, R)).backward();
    for (const auto& [got, ref_g, name] :
         {std::tuple<Tensor, std::vector<double>*, const char*>{q.grad(), &ref.dq, "fused dq"},
          {q2.grad(), &ref.dq, "composed dq"}, {k.grad(), &ref.dk, "fused dk"}, {k2.grad(), &ref.dk, "composed dk"},
          {v.grad(), &ref.dv, "fused dv"}, {v2.grad(), &ref.dv, "composed dv"}})
      EXPECT_TRUE(all_close(got, want(*ref_g, got.shape()), 1e-12, 1e-9)) << name;
    if (learnable) {
      Tensor db = want(ref.dbias, {H});
      EXPECT_TRUE(all_close(s1.sigmoid_bias_param.grad(), db, 1e-12, 1e-9)) << "fused dbias";
      EXPECT_TRUE(all_close(s2.sigmoid_bias_param.grad(), db, 1e-12, 1e-9)) << "composed dbias";
      EXPECT_GT(std::abs(ref.dbias[0]), 1e-2);  // a gradient that is there to be wrong
    }
    AttentionOut f32 = attention(q.detach().to(DType::F32), k.detach().to(DType::F32),
                                 v.detach().to(DType::F32), in_f32(spec));
    EXPECT_TRUE(all_close(f32.out, want(ref.out, q.shape()), 2e-5, 2e-4)) << "f32 fused O";
  }
}

std::string bias_combo_name(const ::testing::TestParamInfo<BiasCombo>& info) {
  static const char* const kMasks[] = {"full", "causal", "padding", "causal_padding"};
  return std::string(std::get<0>(info.param) == BiasForm::kLearnable ? "learnable" : "per_row") + "_" +
         kMasks[std::get<1>(info.param)];
}

INSTANTIATE_TEST_SUITE_P(BothForms, SigmoidBias,
                         ::testing::Combine(::testing::Values(BiasForm::kLearnable, BiasForm::kPerRow),
                                            ::testing::Values(kFull, kCausal, kPadding, kCausalPadding)),
                         bias_combo_name);

}  // namespace

// The per-row bias from its definition, not the brute force's loop: with q = k = 0 every visible
// P is σ(−ln n_i) = 1/(1 + n_i), so with V = 1 row i's output is n_i/(n_i + 1): causal N = M
// n_i = i + 1, padded n_i = the batch's length, both: min(i + 1, length), none: M.
TEST(Attention, PerRowSigmoidBiasIsMinusLogOfTheRowsKeys) {
  const int64_t B = 2, N = 6, M = 6, D = 2;
  Tensor q = zeros({B, 1, N, D}, {DType::F64}), k = zeros({B, 1, M, D}, {DType::F64});
  Tensor v = ones({B, 1, M, D}, {DType::F64});
  const std::vector<int64_t> lengths = {4, 6};
  for (bool causal : {false, true})
    for (bool padded : {false, true}) {
      AttentionSpec spec;
      spec.variant = AttentionVariant::Sigmoid;
      spec.sigmoid_bias_per_row = true;
      spec.causal = causal;
      if (padded) spec.key_padding_lengths = lengths;
      for (bool fused : {true, false}) {
        std::vector<double> o = (fused ? attention(q, k, v, spec).out : attention_composed(q, k, v, spec)).to_vector();
        for (int64_t b = 0; b < B; ++b)
          for (int64_t i = 0; i < N; ++i) {
            int64_t n = padded ? lengths[b] : M;
            if (causal) n = std::min(n, i + 1);
            EXPECT_NEAR(o[(b * N + i) * D], double(n) / (n + 1), 1e-15)
                << (fused ? "fused" : "composed") << (causal ? " causal" : "") << (padded ? " padded" : "")
                << " b " << b << " row " << i;
          }
      }
      // attention_rows (the model statistics) sees the same P: 1/(1 + n_i) on visible keys.
      AttentionRows r = attention_rows(q, k, spec, {0, N - 1});
      std::vector<double> p = r.probs.to_vector();
      const int64_t n0 = causal ? 1 : padded ? lengths[0] : M;
      EXPECT_NEAR(p[0], 1.0 / (1 + n0), 1e-15);
    }
}

// The learnable bias is b itself: at b_h = the fixed b the output is the fixed-bias output; the
// spec's checks name what is wrong.
TEST(Attention, LearnableSigmoidBiasAtTheFixedValueIsTheFixedBias) {
  const int64_t B = 1, H = 3, N = 7, M = 7, D = 4;
  AttentionSpec fixed = make_spec(AttentionVariant::Sigmoid, kCausal, true, B, H, M);
  AttentionSpec learnt = fixed;
  learnt.sigmoid_bias_param = full({H}, fixed.sigmoid_bias, {DType::F64});
  learnt.sigmoid_bias = 0;
  Tensor q = rand_tensor({B, H, N, D}, 51), k = rand_tensor({B, H, M, D}, 52), v = rand_tensor({B, H, M, D}, 53);
  EXPECT_TRUE(all_close(attention(q, k, v, learnt).out, attention(q, k, v, fixed).out, 0, 1e-15));
  AttentionSpec bad = learnt;
  bad.sigmoid_bias_param = full({H + 1}, -1.0, {DType::F64});
  EXPECT_THROW(attention(q, k, v, bad), std::invalid_argument);
  bad = learnt;
  bad.sigmoid_bias_per_row = true;
  EXPECT_THROW(attention(q, k, v, bad), std::invalid_argument);
  bad = learnt;
  bad.variant = AttentionVariant::Softmax;
  EXPECT_THROW(attention(q, k, v, bad), std::invalid_argument);
  bad = fixed;
  bad.variant = AttentionVariant::Softmax;
  bad.sigmoid_bias_per_row = true;
  EXPECT_THROW(attention(q, k, v, bad), std::invalid_argument);
}

// The config key: its three values reach the model's config, anything else is an error that
// names the key and the choices.
TEST(SigmoidBiasConfig, ModeKeyValuesAndError) {
  config::Config c = config::Config::defaults();
  c.set("attention.sigmoid_bias=-2");
  EXPECT_EQ(tasks::block_config(c).attention.sigmoid_bias_mode, nn::SigmoidBiasMode::Fixed);  // the default
  c.set("attention.sigmoid_bias_mode=learnable");
  EXPECT_EQ(tasks::block_config(c).attention.sigmoid_bias_mode, nn::SigmoidBiasMode::Learnable);
  c.set("attention.sigmoid_bias_mode=per_row");
  EXPECT_EQ(tasks::block_config(c).attention.sigmoid_bias_mode, nn::SigmoidBiasMode::PerRow);
  c.set("attention.sigmoid_bias_mode=fixed");
  EXPECT_EQ(tasks::block_config(c).attention.sigmoid_bias_mode, nn::SigmoidBiasMode::Fixed);
  try {
    c.set("attention.sigmoid_bias_mode=dynamic");
    ADD_FAILURE() << "an unknown mode was accepted";
  } catch (const config::ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("config key 'attention.sigmoid_bias_mode'"), std::string::npos) << what;
    EXPECT_NE(what.find("fixed, learnable, per_row"), std::string::npos) << what;
  }
}

// The layer: learnable registers "sigmoid_bias" [H] at the configured b, without weight decay,
// and its gradient through the whole layer is the central difference of the loss (f64); per_row
// and fixed register nothing, per_row sets the spec's flag.
TEST(SigmoidBiasLayer, LearnableIsAParameterPerRowIsAFlag) {
  nn::BlockConfig c;
  c.d_model = 8;
  c.n_heads = 2;
  c.attention.variant = AttentionVariant::Sigmoid;
  c.attention.causal = true;
  c.attention.position = nn::PositionKind::None;
  c.attention.sigmoid_bias = -1.5;
  auto find = [](const nn::SelfAttention& a, const std::string& name) -> const Param* {
    static ParamList ps;
    ps = a.parameters();
    for (const Param& p : ps)
      if (p.name == name) return &p;
    return nullptr;
  };
  for (nn::SigmoidBiasMode mode : {nn::SigmoidBiasMode::Fixed, nn::SigmoidBiasMode::PerRow}) {
    c.attention.sigmoid_bias_mode = mode;
    Generator gen(3);
    nn::SelfAttention a(c, 0.02, gen, DType::F64);
    EXPECT_EQ(find(a, "sigmoid_bias"), nullptr);
    EXPECT_EQ(a.spec.sigmoid_bias_per_row, mode == nn::SigmoidBiasMode::PerRow);
  }
  c.attention.sigmoid_bias_mode = nn::SigmoidBiasMode::Learnable;
  Generator gen(3);
  nn::SelfAttention a(c, 0.3, gen, DType::F64);
  const Param* p = find(a, "sigmoid_bias");
  ASSERT_NE(p, nullptr);
  EXPECT_FALSE(p->weight_decay);
  EXPECT_EQ(p->value.to_vector(), (std::vector<double>{-1.5, -1.5}));
  EXPECT_FALSE(a.spec.sigmoid_bias_per_row);
  Tensor bias = p->value;
  Tensor x = rand_tensor({2, 5, 8}, 61), R = rand_tensor({2, 5, 8}, 62);
  sum(mul(a.forward(x, {5, 3}), R)).backward();
  const std::vector<double> grad = bias.grad().to_vector();
  for (int64_t h = 0; h < 2; ++h) {
    auto loss_at = [&](double delta) {
      autograd::NoGradGuard no_grad;
      double* b = bias.data<double>();
      const double saved = b[h];
      b[h] = saved + delta;
      const double l = sum(mul(a.forward(x, {5, 3}), R)).item();
      b[h] = saved;
      return l;
    };
    const double eps = 1e-5, fd = (loss_at(eps) - loss_at(-eps)) / (2 * eps);
    EXPECT_NEAR(grad[h], fd, 1e-7 * (1 + std::abs(fd))) << "head " << h;
    EXPECT_GT(std::abs(fd), 1e-3) << "head " << h;
  }
}
