// The inside-the-model statistics (src/metrics/) against hand-computed values and naive loops:
// kurtosis of known distributions (a Gaussian's 3, a Student-t's 3 + 6/(ν − 4)), the ∞-norm with
// an outlier planted in one channel, the attention rows of attention_rows() against the fused op's
// output and a naive f64 P, every attention statistic against the same statistic of that P, and a
// ViT's tap: the activations it reports are the ones its forward computed.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "autograd/node.h"
#include "metrics/activation_stats.h"
#include "metrics/model_stats.h"
#include "metrics/param_stats.h"
#include "models/vit/vit.h"
#include "test_util.h"
#include "tiny_vit.h"

using namespace attn;
using attn::testing::all_close;
using attn::testing::rand_tensor;

namespace {

TEST(Kurtosis, HandComputed) {
  // {0, 0, 0, 0, 10}: mean 2, deviations −2 (×4) and 8; m2 = (4·4 + 64)/5 = 16,
  // m4 = (4·16 + 4096)/5 = 832; kurtosis 832/256 = 3.25.
  std::vector<double> x = {0, 0, 0, 0, 10};
  const double m2 = 16, m4 = 832;
  EXPECT_NEAR(metrics::raw_kurtosis(x), m4 / (m2 * m2 + 1e-6), 1e-12);
  // Two-point ±1: m4 = m2 = 1, kurtosis 1 (the smallest possible).
  std::vector<double> two = {1, -1, 1, -1};
  EXPECT_NEAR(metrics::raw_kurtosis(two), 1.0 / (1.0 + 1e-6), 1e-12);
  std::vector<double> constant(7, 3.5);
  EXPECT_EQ(metrics::raw_kurtosis(constant), 0.0);
}

TEST(Kurtosis, GaussianIsThreeAndStudentTIsHeavy) {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal;
  std::student_t_distribution<double> t10(10.0);
  const int n = 1 << 20;
  std::vector<double> g(n), t(n);
  for (int i = 0; i < n; ++i) g[i] = normal(rng), t[i] = t10(rng);
  // The sample kurtosis of n Gaussians has standard error sqrt(24/n) = 0.005.
  EXPECT_NEAR(metrics::raw_kurtosis(g), 3.0, 0.03);
  // Student-t, ν = 10: 3 + 6/(ν − 4) = 4. Its standard error is larger (the 8th moment is big):
  // about 0.05 at this n for ν = 10, so 0.25 is five of them.
  EXPECT_NEAR(metrics::raw_kurtosis(t), 4.0, 0.25);
}

TEST(ActivationStat, PerSampleMeansWithAPlantedOutlier) {
  // Two samples [2, 3, 4]; sample 0 has an outlier of 50 in channel 2 of token 1.
  Tensor x = rand_tensor({2, 3, 4}, 11, -1, 1);
  std::vector<double> v = x.to_vector();
  v[1 * 4 + 2] = 50.0;
  x = from_vector(v, {2, 3, 4}, {DType::F64});
  std::span<const double> s0(v.data(), 12), s1(v.data() + 12, 12);
  metrics::ActivationStat host;
  host.add(x);
  EXPECT_EQ(host.samples(), 2);
  EXPECT_NEAR(host.mean_inf_norm(), (50.0 + metrics::max_abs(s1)) / 2, 1e-12);
  EXPECT_NEAR(host.mean_kurtosis(), (metrics::raw_kurtosis(s0) + metrics::raw_kurtosis(s1)) / 2, 1e-12);
  EXPECT_GT(metrics::raw_kurtosis(s0), 8.0);  // one value in twelve far out: heavy-tailed
  EXPECT_EQ(host.max_inf_norm(), 50.0);

  // The device-side statistics (tensor ops, f32) agree with the host ones, twice accumulated.
  metrics::ModelStats stats;
  stats.activation("blocks.0", x);
  stats.activation("blocks.0", x);
  nlohmann::json r = stats.report();
  EXPECT_NEAR(r["activations"]["blocks.0"]["inf_norm"].get<double>(), host.mean_inf_norm(), 1e-4);
  EXPECT_NEAR(r["activations"]["blocks.0"]["kurtosis"].get<double>(), host.mean_kurtosis(), 1e-4);
  EXPECT_EQ(r["activations"]["blocks.0"]["samples"].get<int64_t>(), 4);
  EXPECT_NEAR(r["summary"]["max_inf_norm"].get<double>(), host.mean_inf_norm(), 1e-4);
}

TEST(ParamStats, LayersGradNormsAndWeightKurtosis) {
  EXPECT_EQ(metrics::layer_of("blocks.3.attn.wq.weight"), "blocks.3");
  EXPECT_EQ(metrics::layer_of("blocks.12.mlp.fc1.bias"), "blocks.12");
  EXPECT_EQ(metrics::layer_of("head.weight"), "head");
  EXPECT_EQ(metrics::layer_of("cls_token"), "cls_token");
  EXPECT_EQ(metrics::layer_of("tok_emb.weight"), "tok_emb");
  // Gradients {3, 4} and {12} in block 0 (norm 13), {1, 2, 2} in the head (norm 3), none for a
  // parameter without a gradient.
  auto param = [](const std::string& name, std::vector<double> v, std::vector<double> g) {
    Tensor t = from_vector(v, {static_cast<int64_t>(v.size())}, {DType::F64}).set_requires_grad(true);
    if (!g.empty()) sum(mul(t, from_vector(g, {static_cast<int64_t>(g.size())}, {DType::F64}))).backward();
    return Param{name, t, true};
  };
  ParamList ps = {param("blocks.0.a", {1, 1}, {3, 4}), param("blocks.0.b", {1}, {12}), param("head.weight", {0, 0, 0}, {1, 2, 2}),
                  param("blocks.1.c", {1}, {})};
  nlohmann::json g = metrics::grad_norms_by_layer(ps);
  EXPECT_NEAR(g["blocks.0"].get<double>(), 13.0, 1e-6);
  EXPECT_NEAR(g["head"].get<double>(), 3.0, 1e-6);
  EXPECT_FALSE(g.contains("blocks.1"));
  // Weight kurtosis: only matrices, the same number as the host's raw kurtosis.
  Tensor w = rand_tensor({5, 7}, 61);
  ParamList mats = {{"m.weight", w, true}, {"m.bias", rand_tensor({5}, 62), false}};
  nlohmann::json k = metrics::weight_kurtosis(mats);
  EXPECT_EQ(k.size(), 1u);
  EXPECT_NEAR(k["m.weight"].get<double>(), metrics::raw_kurtosis(w.to_vector()), 1e-5);
}

TEST(SampledRows, EvenlySpacedWithEnds) {
  EXPECT_EQ(metrics::sampled_rows(5, 16), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(metrics::sampled_rows(10, 4), (std::vector<int64_t>{0, 3, 6, 9}));
  EXPECT_EQ(metrics::sampled_rows(10, 1), (std::vector<int64_t>{9}));
}

struct Case {
  AttentionVariant variant;
  bool causal;
};

class AttentionRowsTest : public ::testing::TestWithParam<Case> {};

// P of one (b, h, i) by the variant's formula, naively in f64; hidden keys get P = 0 and
// logit −inf.
struct NaiveRow {
  std::vector<double> p, logit;
};
NaiveRow naive_row(const std::vector<double>& q, const std::vector<double>& k, int64_t H, int64_t N,
                   int64_t M, int64_t D, int64_t b, int64_t h, int64_t i, const AttentionSpec& spec) {
  NaiveRow r{std::vector<double>(M, 0.0), std::vector<double>(M, -std::numeric_limits<double>::infinity())};
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < M; ++j) {
    if (spec.causal && j > i + M - N) continue;
    double s = 0;
    for (int64_t d = 0; d < D; ++d) s += q[((b * H + h) * N + i) * D + d] * k[((b * H + h) * M + j) * D + d];
    r.logit[j] = s * scale;
    mx = std::max(mx, r.logit[j]);
  }
  double z = spec.variant == AttentionVariant::Softmax1 ? std::exp(-mx) : 0;
  for (int64_t j = 0; j < M; ++j)
    if (std::isfinite(r.logit[j])) z += std::exp(r.logit[j] - mx);
  for (int64_t j = 0; j < M; ++j) {
    if (!std::isfinite(r.logit[j])) continue;
    r.p[j] = spec.variant == AttentionVariant::Sigmoid ? 1 / (1 + std::exp(-(r.logit[j] + spec.sigmoid_bias)))
                                                       : std::exp(r.logit[j] - mx) / z;
  }
  return r;
}

TEST_P(AttentionRowsTest, MatchFusedOutputAndNaiveStatistics) {
  const Case c = GetParam();
  const int64_t B = 2, H = 3, N = 9, M = 9, D = 8;
  AttentionSpec spec;
  spec.variant = c.variant;
  spec.causal = c.causal;
  spec.sigmoid_bias = -std::log(static_cast<double>(N));
  // Scores spread wide enough that the sigmoid's exact zeros and softmax_1's row mass < 1 show.
  Tensor q = rand_tensor({B, H, N, D}, 21, -2, 2), k = rand_tensor({B, H, M, D}, 22, -2, 2),
         v = rand_tensor({B, H, M, D}, 23, -1, 1);
  const std::vector<int64_t> rows = {0, 4, 8};
  AttentionRows a = attention_rows(q, k, spec, rows);

  // The rows' P·V is the fused op's output at those rows: the recomputed P is the kernel's.
  Tensor o = attention(q, k, v, spec).out;
  for (size_t r = 0; r < rows.size(); ++r)
    EXPECT_TRUE(all_close(matmul(slice(a.probs, 2, r, r + 1), v), slice(o, 2, rows[r], rows[r] + 1), 1e-12, 1e-12));

  // Every statistic of ModelStats against the same statistic of the naive P, per head.
  metrics::ModelStats stats(/*attention_rows=*/3);  // sampled_rows(9, 3) = {0, 4, 8}
  ASSERT_EQ(metrics::sampled_rows(N, 3), rows);
  stats.attention("blocks.0.attn", q, k, spec);
  nlohmann::json j = stats.report()["attention"]["blocks.0.attn"];
  ASSERT_EQ(j["rows"].get<int64_t>(), B * static_cast<int64_t>(rows.size()));
  const std::vector<double> qv = q.to_vector(), kv = k.to_vector();
  for (int64_t h = 0; h < H; ++h) {
    double entropy = 0, sink = 0, top = 0, mass = 0, zero = 0, max_logit = -1e300;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i : rows) {
        NaiveRow r = naive_row(qv, kv, H, N, M, D, b, h, i, spec);
        double row_mass = 0, row_top = 0, visible = 0, zeros = 0;
        for (int64_t jj = 0; jj < M; ++jj) {
          if (!std::isfinite(r.logit[jj])) continue;
          row_mass += r.p[jj], row_top = std::max(row_top, r.p[jj]), ++visible;
          zeros += r.p[jj] == 0.0;
          max_logit = std::max(max_logit, r.logit[jj]);
        }
        for (int64_t jj = 0; jj < M; ++jj)
          if (r.p[jj] > 0) entropy -= (r.p[jj] / row_mass) * std::log(r.p[jj] / row_mass);
        sink += r.p[0], top += row_top, mass += row_mass, zero += zeros / visible;
      }
    const double n = static_cast<double>(B * rows.size());
    // f32 statistics of f64 inputs (ModelStats works in f32 on every device): 1e-5 relative.
    EXPECT_NEAR(j["entropy"][h].get<double>(), entropy / n, 1e-5) << "head " << h;
    EXPECT_NEAR(j["sink_mass"][h].get<double>(), sink / n, 1e-5) << "head " << h;
    EXPECT_NEAR(j["top_mass"][h].get<double>(), top / n, 1e-5) << "head " << h;
    EXPECT_NEAR(j["row_mass"][h].get<double>(), mass / n, 1e-5) << "head " << h;
    EXPECT_NEAR(j["zero_fraction"][h].get<double>(), zero / n, 1e-9) << "head " << h;
    EXPECT_NEAR(j["max_logit"][h].get<double>(), max_logit, 1e-5) << "head " << h;
    if (c.variant == AttentionVariant::Softmax) {
      EXPECT_NEAR(mass / n, 1.0, 1e-12);
    }
    if (c.variant == AttentionVariant::Softmax1) {
      EXPECT_LT(mass / n, 1.0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, AttentionRowsTest,
                         ::testing::Values(Case{AttentionVariant::Softmax, false}, Case{AttentionVariant::Softmax, true},
                                           Case{AttentionVariant::Sigmoid, false}, Case{AttentionVariant::Sigmoid, true},
                                           Case{AttentionVariant::Softmax1, false},
                                           Case{AttentionVariant::Softmax1, true}));

TEST(ModelStats, SigmoidZerosAreCounted) {
  // A logit of −200 + b underflows σ to exactly 0 in f32: the zero fraction must see it.
  AttentionSpec spec;
  spec.variant = AttentionVariant::Sigmoid;
  spec.sigmoid_bias = -200;
  Tensor q = rand_tensor({1, 1, 4, 2}, 1, -0.1, 0.1, DType::F32), k = rand_tensor({1, 1, 4, 2}, 2, -0.1, 0.1, DType::F32);
  metrics::ModelStats stats;
  stats.attention("a", q, k, spec);
  nlohmann::json j = stats.report()["attention"]["a"];
  EXPECT_EQ(j["zero_fraction"][0].get<double>(), 1.0);
  EXPECT_EQ(j["row_mass"][0].get<double>(), 0.0);
  EXPECT_EQ(j["entropy"][0].get<double>(), 0.0);
}

// Keeps what the tap shows, to check it against the model's own forward.
class RecordingTap : public nn::Tap {
 public:
  void activation(const std::string& path, const Tensor& x) override { acts[path] = x.detach(); }
  void attention(const std::string& path, const Tensor&, const Tensor&, const AttentionSpec&) override {
    attention_paths.push_back(path);
  }
  std::map<std::string, Tensor> acts;
  std::vector<std::string> attention_paths;
};

TEST(ModelStats, VitTapShowsTheForwardsActivations) {
  models::VisionTransformer vit(attn::testing::tiny_vit_config(), 5, DType::F64);
  Tensor images = rand_tensor({2, 1, 8, 8}, 9);
  RecordingTap rec;
  vit.set_tap(&rec);
  Tensor logits = vit.forward(images);
  for (const char* p : {"blocks.0.attn", "blocks.0.mlp", "blocks.0", "blocks.1.attn", "blocks.1.mlp", "blocks.1"})
    ASSERT_TRUE(rec.acts.count(p)) << p;
  EXPECT_EQ(rec.attention_paths, (std::vector<std::string>{"blocks.0.attn", "blocks.1.attn"}));
  // The last block's output is what the head reads: final norm, class token, head.
  Tensor x = vit.final_norm->forward(rec.acts["blocks.1"]);
  Tensor cls = reshape(slice(x, 1, 0, 1), {2, 16});
  EXPECT_TRUE(all_close(vit.head->forward(cls), logits, 1e-12, 1e-12));
  // Pre-norm without LayerScale: block 1 adds both its branches to block 0's output.
  Tensor block1 = add(add(rec.acts["blocks.0"], rec.acts["blocks.1.attn"]), rec.acts["blocks.1.mlp"]);
  EXPECT_TRUE(all_close(block1, rec.acts["blocks.1"], 1e-12, 1e-12));

  // ModelStats over the same forward, then the tap removed: nothing more is collected.
  metrics::ModelStats stats;
  vit.set_tap(&stats);
  {
    autograd::NoGradGuard ng;
    vit.forward(images);
  }
  vit.set_tap(nullptr);
  vit.forward(images);
  nlohmann::json r = stats.report();
  EXPECT_EQ(r["activations"]["blocks.1"]["samples"].get<int64_t>(), 2);
  metrics::ActivationStat host;
  host.add(rec.acts["blocks.1"]);
  EXPECT_NEAR(r["activations"]["blocks.1"]["inf_norm"].get<double>(), host.mean_inf_norm(), 1e-5);
  EXPECT_NEAR(r["activations"]["blocks.1"]["kurtosis"].get<double>(), host.mean_kurtosis(), 1e-4);
  EXPECT_EQ(r["attention"]["blocks.0.attn"]["rows"].get<int64_t>(), 2 * 5);  // 4 patches + class token
}

}  // namespace
