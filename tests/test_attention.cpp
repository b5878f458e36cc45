// The fused attention op against the composed reference and a brute-force f64 loop, for every
// variant × mask × ALiBi, tile-crossing and ragged sizes, the softmax_1 short-row trap and fully
// masked rows; gradients of the fused op against the composed op's autograd gradients.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <tuple>

#include "test_util.h"

using namespace attn;
using attn::testing::all_close;
using attn::testing::rand_tensor;

namespace {

struct Brute {
  std::vector<double> out, lse;
};

// Straight from the definitions, one query row at a time, in long double.
Brute brute_force(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionSpec& spec) {
  int64_t B = q.size(0), H = q.size(1), N = q.size(2), M = k.size(2), D = q.size(3);
  double scale = spec.scale ? spec.scale : 1 / std::sqrt(double(D));
  std::vector<double> Q = q.to_vector(), K = k.to_vector(), V = v.to_vector();
  Brute r{std::vector<double>(B * H * N * D, 0.0), std::vector<double>(B * H * N, 0.0)};
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
          if (vis[j]) mx = std::max(mx, x[j]);
        }
        std::vector<long double> p(M, 0);
        long double denom = spec.variant == AttentionVariant::Softmax1 ? 1.0L : 0.0L;
        for (int64_t j = 0; j < M; ++j)
          if (vis[j]) denom += std::exp(x[j]);
        for (int64_t j = 0; j < M; ++j) {
          if (!vis[j]) continue;
          if (spec.variant == AttentionVariant::Sigmoid) p[j] = 1 / (1 + std::exp(-(x[j] + spec.sigmoid_bias)));
          else p[j] = std::exp(x[j]) / denom;
        }
        for (int64_t d = 0; d < D; ++d) {
          long double o = 0;
          for (int64_t j = 0; j < M; ++j) o += p[j] * V[((b * H + h) * M + j) * D + d];
          r.out[((b * H + h) * N + i) * D + d] = (double)o;
        }
        r.lse[(b * H + h) * N + i] = denom == 0 ? -INFINITY : (double)std::log(denom);
        (void)mx;
      }
  return r;
}

const AttentionVariant kVariants[] = {AttentionVariant::Softmax, AttentionVariant::Sigmoid,
                                      AttentionVariant::Softmax1};

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
    if (variant != AttentionVariant::Sigmoid)
      EXPECT_TRUE(all_close(fused.lse, from_vector(ref.lse, {B, H, N}, {DType::F64}), 1e-12, 1e-10));
    else
      EXPECT_FALSE(fused.lse.defined());
    EXPECT_TRUE(all_close(attention_composed(q, k, v, spec), fused.out, 1e-12, 1e-10));
    // f32 fused against the f64 brute force: f32 rounding over D·M terms.
    AttentionOut f32 = attention(q.to(DType::F32), k.to(DType::F32), v.to(DType::F32), spec);
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

}  // namespace

// The softmax_1 trap (RESEARCH.md §1): short rows whose logits are all negative. The +1 in the
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
