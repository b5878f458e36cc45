// The VisionTransformer's parts against naive loops (tests/test_vit_parity.cpp checks the whole
// model against torch): the patch embedding and token layout, the image-size error, the 2-D
// positions (sinusoidal table, ALiBi bias, axial RoPE and its gradient), drop-path and its
// schedule, the loss with label smoothing.
#include <gtest/gtest.h>

#include <cmath>

#include "test_util.h"
#include "models/vit/vit.h"
#include "nn/positional.h"

using namespace attn;
using attn::testing::all_close;
using attn::testing::rand_tensor;
using models::VisionTransformer;
using models::VitConfig;
using nn::PositionGrid;
using nn::PositionKind;

namespace {

// 2 channels, 8 x 12 pixels in 4 x 4 patches: a 2 x 3 grid (not square, so rows and columns
// cannot be swapped unnoticed).
VitConfig small_config(PositionKind pos, VitConfig::Pooling pool) {
  VitConfig c;
  c.image_height = 8;
  c.image_width = 12;
  c.channels = 2;
  c.patch_size = 4;
  c.n_layers = 2;
  c.n_classes = 5;
  c.d_model = 16;
  c.n_heads = 2;
  c.pooling = pool;
  c.attention.position = pos;
  return c;
}

Tensor images_for(const VitConfig& c, int64_t B, uint64_t seed) {
  return rand_tensor({B, c.channels, c.image_height, c.image_width}, seed);
}

}  // namespace

// embed(): token 0 is cls + pos[0]; token 1 + r·cols + q is W·patch(r, q) + b + pos[1 + r·cols + q],
// with patch(r, q)[c·p·p + i·p + j] = image[c, r·p + i, q·p + j].
TEST(Vit, PatchEmbeddingAndTokenLayoutMatchANaiveLoop) {
  for (auto pool : {VitConfig::Pooling::Cls, VitConfig::Pooling::Mean}) {
    VitConfig c = small_config(PositionKind::Learned, pool);
    VisionTransformer m(c, 7, DType::F64);
    const int64_t B = 2, p = c.patch_size, R = m.grid_rows(), Q = m.grid_cols(), D = c.d_model, P = m.prefix();
    ASSERT_EQ(m.tokens(), P + R * Q);
    Tensor img = images_for(c, B, 3);
    Tensor got = m.embed(img);
    ASSERT_EQ(got.shape(), (Shape{B, m.tokens(), D}));
    std::vector<double> x = img.to_vector(), w = m.patch_embed->weight.to_vector(),
                        bias = m.patch_embed->bias.to_vector(), pos = m.pos_emb.to_vector(), want(B * m.tokens() * D);
    for (int64_t b = 0; b < B; ++b) {
      if (P) {
        std::vector<double> cls = m.cls_token.to_vector();
        for (int64_t d = 0; d < D; ++d) want[(b * m.tokens()) * D + d] = cls[d] + pos[d];
      }
      for (int64_t r = 0; r < R; ++r)
        for (int64_t q = 0; q < Q; ++q) {
          const int64_t t = P + r * Q + q;
          for (int64_t d = 0; d < D; ++d) {
            double acc = bias[d] + pos[t * D + d];
            for (int64_t ch = 0; ch < c.channels; ++ch)
              for (int64_t i = 0; i < p; ++i)
                for (int64_t j = 0; j < p; ++j)
                  acc += w[d * c.channels * p * p + (ch * p + i) * p + j] *
                         x[((b * c.channels + ch) * c.image_height + r * p + i) * c.image_width + q * p + j];
            want[(b * m.tokens() + t) * D + d] = acc;
          }
        }
    }
    EXPECT_TRUE(all_close(got, from_vector(want, got.shape(), {DType::F64}), 1e-13, 1e-12))
        << models::pooling_name(pool);
    EXPECT_EQ(m.forward(img).shape(), (Shape{B, c.n_classes}));
  }
}

TEST(Vit, ImageSizeNotDivisibleByPatchSizeIsAClearError) {
  VitConfig c = small_config(PositionKind::None, VitConfig::Pooling::Cls);
  c.image_height = 28;
  c.image_width = 28;
  c.patch_size = 5;
  try {
    VisionTransformer m(c, 1);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("model.image size 28x28"), std::string::npos) << msg;
    EXPECT_NE(msg.find("model.patch_size 5"), std::string::npos) << msg;
  }
  c.patch_size = 4;
  VisionTransformer ok(c, 1);
  EXPECT_THROW(ok.forward(zeros({1, 1, 28, 27})), std::invalid_argument) << "wrong image shape";
}

// Channel j < D/2 of patch (r, c): sin(r·ω) (j even) or cos(r·ω) (j odd), ω = 10000^(−2⌊j/2⌋/(D/2));
// channels j ≥ D/2 the same with c and j − D/2; the class token's row is 0. The model adds it.
TEST(Vit, SinusoidalTable2DMatchesTheFormula) {
  const PositionGrid g{2, 3, 1};
  const int64_t D = 8, half = D / 2, T = 7;
  std::vector<double> t = nn::sinusoidal_table_2d(g, D, DType::F64).to_vector();
  ASSERT_EQ(t.size(), static_cast<size_t>(T * D));
  for (int64_t d = 0; d < D; ++d) EXPECT_EQ(t[d], 0.0) << "class token, channel " << d;
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t j = 0; j < D; ++j) {
        const double pos = j < half ? r : c;
        const int64_t k = j % half;
        const double w = std::pow(10000.0, -2.0 * static_cast<double>(k / 2) / static_cast<double>(half));
        const double want = k % 2 == 0 ? std::sin(pos * w) : std::cos(pos * w);
        EXPECT_NEAR(t[(1 + r * 3 + c) * D + j], want, 1e-15) << "patch (" << r << ", " << c << ") channel " << j;
      }
  EXPECT_THROW(nn::sinusoidal_table_2d(g, 6, DType::F64), std::invalid_argument) << "D not divisible by 4";

  // The model: embed() with sinusoidal positions = embed() without positions + the table (the
  // same seed gives the same weights: the table is no parameter).
  VitConfig c = small_config(PositionKind::Sinusoidal, VitConfig::Pooling::Cls);
  VitConfig none = small_config(PositionKind::None, VitConfig::Pooling::Cls);
  VisionTransformer ms(c, 5, DType::F64), mn(none, 5, DType::F64);
  Tensor img = images_for(c, 2, 9);
  Tensor table = nn::sinusoidal_table_2d({2, 3, 1}, c.d_model, DType::F64);
  EXPECT_TRUE(all_close(ms.embed(img), add(mn.embed(img), table), 1e-15, 1e-14));
}

// bias[h, i, j] = −slope_h·√(Δrow² + Δcol²) between patches; 0 in the class token's row and column.
TEST(Vit, AlibiBias2DIsTheEuclideanDistance) {
  const PositionGrid g{2, 3, 1};
  const std::vector<double> slopes{0.5, 0.25};
  std::vector<double> b = nn::alibi_bias_2d(slopes, g, DType::F64).to_vector();
  const int64_t T = 7;
  ASSERT_EQ(b.size(), static_cast<size_t>(2 * T * T));
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j < T; ++j) {
        double want = 0;
        if (i > 0 && j > 0) {
          const double dr = (i - 1) / 3 - (j - 1) / 3, dc = (i - 1) % 3 - (j - 1) % 3;
          want = -slopes[h] * std::hypot(dr, dc);
        }
        EXPECT_NEAR(b[(h * T + i) * T + j], want, 1e-15) << "h " << h << " i " << i << " j " << j;
      }
  // Spot values: patch (0, 0) to patch (1, 2) is √5 away; (0, 1) to (1, 1) is 1.
  EXPECT_NEAR(b[1 * T + 6], -0.5 * std::sqrt(5.0), 1e-15);
  EXPECT_NEAR(b[(T + 2) * T + 5], -0.25, 1e-15);
}

// For patch (r, c), with h = Dh/2 and pairs (k, k + h/2) inside each half, k < h/2:
// angle r·base^(−2k/h) on the first half, c·base^(−2k/h) on the second; the class token unchanged.
// The gradient of Σ R∘rope_2d(x) is R rotated back (angle −a).
TEST(Vit, Rope2DRotatesEachHalfByRowAndColumn) {
  const PositionGrid g{2, 3, 1};
  const int64_t B = 2, H = 2, T = 7, Dh = 8, h = Dh / 2;
  const double base = 100.0;
  auto naive = [&](const std::vector<double>& x, double sign) {
    std::vector<double> y = x;
    for (int64_t row = 0; row < B * H; ++row)
      for (int64_t t = 1; t < T; ++t)
        for (int64_t half = 0; half < 2; ++half) {
          const double pos = half == 0 ? (t - 1) / 3 : (t - 1) % 3;
          for (int64_t k = 0; k < h / 2; ++k) {
            const double a = sign * pos * std::pow(base, -2.0 * static_cast<double>(k) / static_cast<double>(h));
            const int64_t i0 = (row * T + t) * Dh + half * h + k, i1 = i0 + h / 2;
            y[i0] = x[i0] * std::cos(a) - x[i1] * std::sin(a);
            y[i1] = x[i0] * std::sin(a) + x[i1] * std::cos(a);
          }
        }
    return y;
  };
  Tensor x = rand_tensor({B, H, T, Dh}, 21).set_requires_grad(true);
  Tensor R = rand_tensor({B, H, T, Dh}, 22);
  Tensor y = nn::rope_2d(x, g, base);
  EXPECT_TRUE(all_close(y, from_vector(naive(x.to_vector(), 1.0), x.shape(), {DType::F64}), 1e-15, 1e-14));
  sum(mul(y, R)).backward();
  EXPECT_TRUE(all_close(x.grad(), from_vector(naive(R.to_vector(), -1.0), x.shape(), {DType::F64}), 1e-15, 1e-14));
  // Without a prefix (mean pooling) the first token is patch (0, 0).
  Tensor x2 = rand_tensor({B, H, 6, Dh}, 23);
  Tensor y2 = nn::rope_2d(x2, {2, 3, 0}, base);
  Tensor padded = concat({zeros({B, H, 1, Dh}, {DType::F64}), x2}, 2);
  EXPECT_TRUE(all_close(y2, slice(nn::rope_2d(padded, g, base), 2, 1, T), 1e-15, 1e-14));
  EXPECT_THROW(nn::rope_2d(rand_tensor({B, H, T, 6}, 1), g, base), std::invalid_argument) << "Dh % 4 != 0";
  EXPECT_THROW(nn::rope_2d(rand_tensor({B, H, 6, 8}, 1), g, base), std::invalid_argument) << "T != grid";
}

// Per sample: all 0 or x/(1 − p); identity when not training; the gradient is the same mask.
TEST(Vit, DropPathDropsWholeSamples) {
  const int64_t B = 64;
  const double p = 0.25;
  Generator gen(11);
  Tensor x = add(rand_tensor({B, 3, 4}, 5), 2.0).set_requires_grad(true);  // no zero entries
  EXPECT_EQ(nn::drop_path(x, p, false, gen).to_vector(), x.to_vector());
  Tensor y = nn::drop_path(x, p, true, gen);
  sum(y).backward();
  std::vector<double> xv = x.to_vector(), yv = y.to_vector(), gv = x.grad().to_vector();
  int64_t dropped = 0;
  for (int64_t b = 0; b < B; ++b) {
    const double scale = yv[b * 12] / xv[b * 12];
    if (scale == 0) ++dropped;
    else EXPECT_NEAR(scale, 1 / (1 - p), 1e-15) << "sample " << b;
    for (int64_t k = 0; k < 12; ++k) {
      EXPECT_NEAR(yv[b * 12 + k], scale * xv[b * 12 + k], 1e-14) << "sample " << b;
      EXPECT_NEAR(gv[b * 12 + k], scale, 1e-15) << "sample " << b;
    }
  }
  EXPECT_GT(dropped, 4);
  EXPECT_LT(dropped, 28);
}

// Rates drop_path·i/(L − 1); with a rate near 1 every branch is dropped in training, so each
// block is the identity and the tokens reach the final norm unchanged; in eval nothing is dropped.
TEST(Vit, DropPathScheduleAndWiring) {
  VitConfig c = small_config(PositionKind::Learned, VitConfig::Pooling::Mean);
  c.n_layers = 3;
  c.drop_path = 0.3;
  VisionTransformer m(c, 3, DType::F64);
  ASSERT_EQ(m.blocks.size(), 3u);
  EXPECT_EQ(m.blocks[0]->drop_path_rate, 0.0);
  EXPECT_NEAR(m.blocks[1]->drop_path_rate, 0.15, 1e-15);
  EXPECT_NEAR(m.blocks[2]->drop_path_rate, 0.3, 1e-15);

  for (auto* b : m.blocks) b->drop_path_rate = 1 - 1e-12;
  Tensor img = images_for(c, 4, 8);
  Tensor tokens = m.embed(img);
  Tensor want = m.head->forward(mean(m.final_norm->forward(tokens), 1));
  EXPECT_TRUE(all_close(m.forward(img), want, 0, 0)) << "training: every branch dropped";
  m.set_training(false);
  EXPECT_FALSE(all_close(m.forward(img), want, 1e-6, 1e-6)) << "eval: nothing dropped";
  c.drop_path = 1.0;
  EXPECT_THROW(VisionTransformer(c, 1), std::invalid_argument);
}

// (1 − ε)·CE + ε·mean_c(−log softmax), by hand from the logits.
TEST(Vit, LossWithLabelSmoothing) {
  VitConfig c = small_config(PositionKind::Rope, VitConfig::Pooling::Cls);
  c.label_smoothing = 0.2;
  VisionTransformer m(c, 4, DType::F64);
  Tensor img = images_for(c, 3, 2);
  Tensor labels = from_vector({1, 4, 0}, {3}, {DType::I32});
  std::vector<double> z = m.forward(img).to_vector();
  double want = 0;
  for (int64_t b = 0; b < 3; ++b) {
    double lse = 0;
    for (int64_t k = 0; k < 5; ++k) lse += std::exp(z[b * 5 + k]);
    lse = std::log(lse);
    const int64_t y = static_cast<int64_t>(labels.to_vector()[b]);
    double mean_nll = 0;
    for (int64_t k = 0; k < 5; ++k) mean_nll += (lse - z[b * 5 + k]) / 5;
    want += (0.8 * (lse - z[b * 5 + y]) + 0.2 * mean_nll) / 3;
  }
  EXPECT_NEAR(m.loss(img, labels).item(), want, 1e-14);
}
