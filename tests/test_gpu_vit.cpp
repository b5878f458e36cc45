// The VisionTransformer on CUDA against the same model on the CPU (label gpu; skips without a
// device; emu_test_gpu_vit runs it on the emulated device): the 2-D positions run on the device
// from existing kernels (rope_2d: rope, permute, slice, concat; 2-D ALiBi: the score bias through
// the composed attention), to() moves the buffers (sinusoidal table, ALiBi bias), and dropout and
// drop-path draw the same Philox masks on both devices.
//   f32: every position x pooling, logits, loss and every gradient after one training step with
//        dropout and drop-path on, then 3 AdamW steps. |got − want| ≤ rtol·(|want| + rms(want)),
//        rtol 1e-4: both sides are f32 and differ by summation order (cuBLASLt vs Eigen, device
//        reductions) through 2 blocks, ~1e-6 (test_gpu_ops' f32 margin, times depth).
//   bf16: head dim 64 (the flash kernels' size) on a 28 x 28 image in 4 x 4 patches (50 tokens),
//        normwise against the CPU in f32, rtol 8e-2 as test_lm_parity's bf16 (every activation
//        rounded to 8 bits, the flash kernels round P and dS); a wrong grid or bias is O(1).
//   The routing: with a score bias, CUDA bf16 attention at head dim 64 takes the composed op (no
//        lse) and matches the CPU within 5e-2 of (|want| + rms) (the composed op stores S and P in
//        bf16: scores of a few units lose ~1e-2 absolute; measured 2.7e-2 on the emulator);
//        without one it takes the flash kernels (an lse).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>

#include "autograd/node.h"
#include "metrics/model_stats.h"
#include "metrics/param_stats.h"
#include "models/vit/vit.h"
#include "nn/positional.h"
#include "optim/adamw.h"
#include "test_util.h"

using namespace attn;
using models::VisionTransformer;
using models::VitConfig;
using nn::PositionKind;

#define SKIP_WITHOUT_GPU()                                                             \
  do {                                                                                 \
    if (!cuda_available_for_tests()) GTEST_SKIP() << "no CUDA device visible: GPU test skipped"; \
  } while (0)

namespace {

const Device kCuda = Device::cuda(0);

double rms_of(const std::vector<double>& v) {
  double ss = 0;
  for (double x : v) ss += x * x;
  return v.empty() ? 0 : std::sqrt(ss / static_cast<double>(v.size()));
}

// |got − want| ≤ rtol·(|want| + floor) everywhere, floor = rms(want) unless given.
::testing::AssertionResult close_to(const Tensor& got, const Tensor& want, double rtol, double floor = -1) {
  if (got.shape() != want.shape())
    return ::testing::AssertionFailure() << "shapes " << shape_str(got.shape()) << " vs " << shape_str(want.shape());
  std::vector<double> a = got.to_vector(), b = want.to_vector();
  const double rms = floor >= 0 ? floor : rms_of(b);
  for (size_t i = 0; i < a.size(); ++i)
    if (!std::isfinite(a[i]) || !(std::abs(a[i] - b[i]) <= rtol * (std::abs(b[i]) + rms)))
      return ::testing::AssertionFailure() << "at " << i << ": " << a[i] << " vs " << b[i] << " (rms " << rms << ")";
  return ::testing::AssertionSuccess();
}

// ‖got − want‖ ≤ rtol·(‖want‖ + √n·floor)
::testing::AssertionResult normwise(const Tensor& got, const Tensor& want, double rtol, double floor = 0) {
  std::vector<double> a = got.to_vector(), b = want.to_vector();
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes differ";
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d += (a[i] - b[i]) * (a[i] - b[i]);
    n += b[i] * b[i];
  }
  const double rel = std::sqrt(d) / (std::sqrt(n) + std::sqrt(static_cast<double>(a.size())) * floor);
  if (rel <= rtol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "normwise error " << rel << " > " << rtol;
}

VitConfig config(PositionKind pos, VitConfig::Pooling pool, int64_t image, int64_t d_model, int64_t layers) {
  VitConfig c;
  c.image_height = image;
  c.image_width = image + 4;  // not square
  c.channels = 2;
  c.patch_size = 4;
  c.n_layers = layers;
  c.n_classes = 5;
  c.d_model = d_model;
  c.n_heads = 2;
  c.pooling = pool;
  c.attention.position = pos;
  c.attention.variant = AttentionVariant::Softmax;
  c.attention.layer_scale = true;
  c.attention.layer_scale_init = 0.5;
  c.init_std = 0.2;  // scores of a few units, so a wrong bias or rotation shows
  return c;
}

// A CPU model and its copy on the device (same seed: the same weights).
struct Pair {
  std::unique_ptr<VisionTransformer> cpu, dev;
};

Pair make_pair(const VitConfig& c, uint64_t seed) {
  Pair p{std::make_unique<VisionTransformer>(c, seed), std::make_unique<VisionTransformer>(c, seed)};
  p.dev->to(kCuda);
  return p;
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<PositionKind, VitConfig::Pooling>>& info) {
  static const char* const names[] = {"none", "learned", "sinusoidal", "rope", "alibi"};
  return std::string(names[static_cast<int>(std::get<0>(info.param))]) + "_" +
         models::pooling_name(std::get<1>(info.param));
}

class GpuVit : public ::testing::TestWithParam<std::tuple<PositionKind, VitConfig::Pooling>> {};

TEST_P(GpuVit, F32TrainingStepsMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  auto [pos, pool] = GetParam();
  VitConfig c = config(pos, pool, 8, 32, 2);
  c.dropout = 0.1;
  c.drop_path = 0.3;
  Pair m = make_pair(c, 17);
  if (m.dev->sinusoidal.defined()) {
    EXPECT_TRUE(m.dev->sinusoidal.device().is_cuda()) << "sinusoidal table moved";
  }
  Generator gen(3);
  Tensor images = randn({4, c.channels, c.image_height, c.image_width}, gen);
  Tensor labels = from_vector({0, 3, 1, 4}, {4}, {DType::I32});
  ParamList pc = m.cpu->parameters(), pd = m.dev->parameters();
  AdamWConfig cfg{3e-3, 0.9, 0.95, 1e-8, 0.1};
  AdamW oc(pc, cfg), od(pd, cfg);
  for (int step = 0; step < 3; ++step) {
    Tensor lc = m.cpu->loss(images, labels), ld = m.dev->loss(images.to(kCuda), labels.to(kCuda));
    ASSERT_TRUE(ld.device().is_cuda());
    EXPECT_NEAR(ld.item(), lc.item(), 1e-4 * std::abs(lc.item())) << "step " << step;
    lc.backward();
    ld.backward();
    // The floor is the RMS over all gradients: the key bias's is rounding noise on both sides
    // without RoPE (softmax is invariant to it), which no per-tensor relative bound admits.
    std::vector<double> all;
    for (size_t i = 0; step == 0 && i < pc.size(); ++i)
      for (double g : pc[i].value.grad().to_vector()) all.push_back(g);
    for (size_t i = 0; step == 0 && i < pc.size(); ++i)
      EXPECT_TRUE(close_to(pd[i].value.grad(), pc[i].value.grad(), 1e-4, rms_of(all))) << pc[i].name;
    oc.step(cfg.lr);
    od.step(cfg.lr);
    oc.zero_grad();
    od.zero_grad();
  }
  m.cpu->set_training(false);
  m.dev->set_training(false);
  NoGradGuard no_grad;
  EXPECT_TRUE(close_to(m.dev->forward(images.to(kCuda)), m.cpu->forward(images), 1e-4)) << "eval logits";
}

INSTANTIATE_TEST_SUITE_P(AllPositions, GpuVit,
                         ::testing::Combine(::testing::Values(PositionKind::None, PositionKind::Learned,
                                                              PositionKind::Sinusoidal, PositionKind::Rope,
                                                              PositionKind::Alibi),
                                            ::testing::Values(VitConfig::Pooling::Cls, VitConfig::Pooling::Mean)),
                         case_name);

// The inside-the-model statistics computed on the device (tensor ops there, one transfer per
// report) equal the CPU's for the same model and batch: every activation, attention and weight
// statistic, over the sink variant (its row mass below 1) with 2-D ALiBi.
TEST(GpuVitStats, DeviceStatisticsMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  VitConfig c = config(PositionKind::Alibi, VitConfig::Pooling::Cls, 8, 32, 2);
  c.attention.variant = AttentionVariant::Sink;
  c.attention.sink_init = 0.5;
  Pair m = make_pair(c, 23);
  Generator gen(5);
  Tensor images = randn({3, c.channels, c.image_height, c.image_width}, gen);
  metrics::ModelStats sc(4), sd(4);
  NoGradGuard no_grad;
  m.cpu->set_tap(&sc);
  m.dev->set_tap(&sd);
  m.cpu->forward(images);
  m.dev->forward(images.to(kCuda));
  const nlohmann::json a = sc.report(), b = sd.report();
  EXPECT_LT(a["summary"]["row_mass"].get<double>(), 0.99);  // the sink took some mass
  size_t compared = 0;
  std::function<void(const nlohmann::json&, const nlohmann::json&, const std::string&)> same =
      [&](const nlohmann::json& x, const nlohmann::json& y, const std::string& at) {
        ASSERT_EQ(x.type(), y.type()) << at;
        if (x.is_object()) {
          ASSERT_EQ(x.size(), y.size()) << at;
          for (const auto& [k, v] : x.items()) same(v, y.at(k), at + "." + k);
        } else if (x.is_array()) {
          ASSERT_EQ(x.size(), y.size()) << at;
          for (size_t i = 0; i < x.size(); ++i) same(x[i], y[i], at + "[" + std::to_string(i) + "]");
        } else if (x.is_number()) {
          ++compared;
          EXPECT_NEAR(y.get<double>(), x.get<double>(), 1e-4 * (1 + std::abs(x.get<double>()))) << at;
        }
      };
  same(a, b, "report");
  // 2 blocks: 3 activations × (inf_norm, kurtosis, samples) each, 2 attentions × (6 statistics ×
  // 2 heads + rows), and the 5 summary numbers.
  EXPECT_EQ(compared, 2u * 3 * 3 + 2 * (6 * 2 + 1) + 5);
  const nlohmann::json wc = metrics::weight_kurtosis(m.cpu->parameters()), wd = metrics::weight_kurtosis(m.dev->parameters());
  same(wc, wd, "weights");
}

// bf16 mixed precision at head dim 64: learned and 2-D RoPE take the flash kernels, 2-D ALiBi the
// composed op; all against the CPU in f32.
TEST(GpuVitBf16, HeadDim64MatchesTheCpuF32) {
  SKIP_WITHOUT_GPU();
  for (PositionKind pos : {PositionKind::Learned, PositionKind::Rope, PositionKind::Alibi}) {
    SCOPED_TRACE(static_cast<int>(pos));
    VitConfig c = config(pos, VitConfig::Pooling::Cls, 28, 128, 1);
    c.image_width = 28;
    c.init_std = 0.05;
    Pair m = make_pair(c, 23);
    m.dev->set_compute_dtype(DType::BF16);
    Generator gen(4);
    Tensor images = randn({2, c.channels, 28, 28}, gen);
    Tensor labels = from_vector({2, 0}, {2}, {DType::I32});
    Tensor lc = m.cpu->loss(images, labels), ld = m.dev->loss(images.to(kCuda), labels.to(kCuda));
    ASSERT_EQ(ld.dtype(), DType::F32);
    EXPECT_NEAR(ld.item(), lc.item(), 2e-2 * std::abs(lc.item()));
    lc.backward();
    ld.backward();
    ParamList pc = m.cpu->parameters(), pd = m.dev->parameters();
    double ss = 0, n = 0;
    for (const Param& p : pc)
      for (double g : p.value.grad().to_vector()) ss += g * g, n += 1;
    for (size_t i = 0; i < pc.size(); ++i)
      EXPECT_TRUE(normwise(pd[i].value.grad(), pc[i].value.grad(), 8e-2, std::sqrt(ss / n))) << pc[i].name;
  }
}

TEST(GpuVitBf16, ScoreBiasRoutesToTheComposedOp) {
  SKIP_WITHOUT_GPU();
  const nn::PositionGrid g{7, 7, 1};
  const int64_t B = 2, H = 2, T = 50, D = 64;
  Generator gen(9);
  Tensor q = randn({B, H, T, D}, gen), k = randn({B, H, T, D}, gen), v = randn({B, H, T, D}, gen);
  auto bf16 = [](const Tensor& t) { return t.to(DType::BF16).to(kCuda); };
  AttentionSpec spec;
  spec.score_bias = nn::alibi_bias_2d({1.0, 0.5}, g, DType::F32);  // steep, so that it shows in bf16
  // The CPU reference on the bf16-rounded inputs, in f32.
  Tensor qr = q.to(DType::BF16).to(DType::F32), kr = k.to(DType::BF16).to(DType::F32), vr = v.to(DType::BF16).to(DType::F32);
  Tensor want = attention_composed(qr, kr, vr, spec);
  AttentionSpec dev_spec = spec;
  dev_spec.score_bias = bf16(spec.score_bias);
  AttentionOut got = attention(bf16(q), bf16(k), bf16(v), dev_spec);
  EXPECT_FALSE(got.lse.defined()) << "a score bias takes the composed op";
  EXPECT_TRUE(close_to(got.out.to(DType::F32).to(Device::cpu()), want, 5e-2));
  AttentionOut flash = attention(bf16(q), bf16(k), bf16(v), AttentionSpec{});
  EXPECT_TRUE(flash.lse.defined()) << "no score bias: the flash kernels";
  EXPECT_FALSE(close_to(flash.out.to(DType::F32).to(Device::cpu()), want, 5e-2)) << "the bias matters";
}

}  // namespace
