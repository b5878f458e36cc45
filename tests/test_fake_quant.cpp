// Fake quantisation (src/metrics/fake_quant.h) against hand-computed grids and torch's
// fake_quantize_per_tensor_affine / fake_quantize_per_channel_affine; the activation quantiser's
// running min-max; weights quantised in place except the output head; the model's quantisation
// points (each Linear's input and output, the residual stream) are the ones the quantiser sees.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "metrics/fake_quant.h"
#include "models/vit/vit.h"
#include "scratch_dir.h"
#include "test_util.h"
#include "tiny_vit.h"
#include "torch_ref.h"

using namespace attn;
using attn::testing::all_close;
using attn::testing::rand_tensor;

namespace {

Tensor f32(const std::vector<double>& v) { return from_vector(v, {static_cast<int64_t>(v.size())}, {DType::F32}); }

TEST(FakeQuant, AffineGridByHand) {
  // scale 0.5, zero point 4, grid 0..10: x/s + z rounded half to even, clamped, mapped back.
  //   -3 -> -6+4 = -2 -> 0 -> -2;  -1.25 -> -2.5 -> -2 (even) +4 = 2 -> -1;  0 -> 0;
  //   1.25 -> 2.5 -> 2 -> 1;  1.75 -> 3.5 -> 4 -> 2;  2.6 -> 5.2 -> 5 -> 2.5;  9 -> 18+4 -> 10 -> 3.
  Tensor x = f32({-3, -1.25, 0, 1.25, 1.75, 2.6, 9});
  EXPECT_TRUE(all_close(metrics::fake_quant_affine(x, 0.5, 4, 10), f32({-2, -1, 0, 1, 2, 2.5, 3}), 0, 0));
}

TEST(FakeQuant, WeightGridByHand) {
  // 3 bits: grid ±3·s. Per tensor s = 6/3 = 2: {-6, -1, 0.9, 3, 5} -> {-6, -0 (-0.5 -> -0), 0, 4 (1.5 -> 2), 6 (2.5 -> 2 -> 4)}.
  Tensor w = from_vector({-6, -1, 0.9, 3, 5, 0}, {2, 3}, {DType::F32});
  EXPECT_TRUE(all_close(metrics::fake_quant_weight(w, 3, false), from_vector({-6, 0, 0, 4, 4, 0}, {2, 3}, {DType::F32}), 0, 0));
  // Per row: row 0 s = 2 -> {-6, 0, 0}; row 1 s = 5/3: 3/s = 1.8 -> 2 -> 10/3, 5 -> 5, 0 -> 0.
  Tensor pc = metrics::fake_quant_weight(w, 3, true);
  EXPECT_TRUE(all_close(pc, from_vector({-6, 0, 0, 10.0 / 3, 5, 0}, {2, 3}, {DType::F32}), 1e-6, 0));
  // A zero row stays zero (scale 0 would divide by zero).
  Tensor z = zeros({2, 2}, {DType::F32});
  EXPECT_TRUE(all_close(metrics::fake_quant_weight(z, 8, true), z, 0, 0));
}

TEST(FakeQuant, MatchesTorch) {
  ATTNLAB_SKIP_OR_FAIL_WITHOUT_TORCH(attn::testing::torch_available());
  const std::filesystem::path dir = attn::testing::scratch_dir("attnlab_fake_quant_");
  nlohmann::json in = {{"cases", nlohmann::json::array()}, {"weights", nlohmann::json::array()}};
  struct Case {
    double scale, zero_point;
    int64_t quant_max;
  };
  const std::vector<Case> cases = {{0.02, 128, 255}, {0.37, 3, 255}, {1e-3, 0, 65535}, {0.1, 7, 15}};
  std::vector<Tensor> xs;
  for (size_t i = 0; i < cases.size(); ++i) {
    xs.push_back(rand_tensor({257}, 100 + i, -4, 4, DType::F32));
    in["cases"].push_back({{"x", xs.back().to_vector()}, {"scale", cases[i].scale},
                           {"zero_point", cases[i].zero_point}, {"quant_max", cases[i].quant_max}});
  }
  std::vector<Tensor> ws;
  for (int bits : {8, 4}) {
    ws.push_back(rand_tensor({7, 19}, 200 + bits, -0.3, 0.3, DType::F32));
    in["weights"].push_back({{"w", ws.back().to_vector()}, {"shape", {7, 19}}, {"bits", bits}});
  }
  const auto in_path = dir / "in.json", out_path = dir / "out.json";
  std::ofstream(in_path) << in.dump();
  ASSERT_EQ(std::system(attn::testing::reference_command(attn::testing::reference_script("fake_quant_reference.py"),
                                                         in_path, out_path)
                            .c_str()),
            0);
  nlohmann::json ref = nlohmann::json::parse(std::ifstream(out_path));
  // torch computes x·(1/s) in f32 like this code: the grids agree exactly except where x/s
  // sits within an f32 rounding of a half, which random inputs do not hit.
  for (size_t i = 0; i < cases.size(); ++i)
    EXPECT_TRUE(all_close(metrics::fake_quant_affine(xs[i], cases[i].scale, cases[i].zero_point, cases[i].quant_max),
                          f32(ref["affine"][i].get<std::vector<double>>()), 1e-7, 0))
        << "case " << i;
  for (size_t i = 0; i < ws.size(); ++i) {
    const int bits = in["weights"][i]["bits"];
    EXPECT_TRUE(all_close(reshape(metrics::fake_quant_weight(ws[i], bits, false), {-1}),
                          f32(ref["weight_tensor"][i].get<std::vector<double>>()), 1e-7, 0))
        << bits << " bits per tensor";
    EXPECT_TRUE(all_close(reshape(metrics::fake_quant_weight(ws[i], bits, true), {-1}),
                          f32(ref["weight_channel"][i].get<std::vector<double>>()), 1e-7, 0))
        << bits << " bits per channel";
  }
}

TEST(FakeQuant, SchemeParsing) {
  EXPECT_EQ(metrics::parse_quant_scheme("w8a16").act_bits, 16);
  EXPECT_EQ(metrics::parse_quant_scheme("w4a8").weight_bits, 4);
  EXPECT_THROW(metrics::parse_quant_scheme("int8"), std::invalid_argument);
  EXPECT_THROW(metrics::parse_quant_scheme("w1a8"), std::invalid_argument);
}

TEST(FakeQuant, RunningMinMaxAndError) {
  metrics::ActivationFakeQuant q(8, {"head"});
  q.at("a", f32({-1, 0, 3}));   // first batch sets [-1, 3]
  q.at("a", f32({-2, 0, 1}));   // 0.9·[-1, 3] + 0.1·[-2, 1] = [-1.1, 2.8]
  nlohmann::json r = q.report();
  EXPECT_NEAR(r["a"]["min"].get<double>(), -1.1, 1e-12);
  EXPECT_NEAR(r["a"]["max"].get<double>(), 2.8, 1e-12);
  const double scale = 3.9 / 255;
  EXPECT_NEAR(r["a"]["scale"].get<double>(), scale, 1e-12);
  EXPECT_EQ(r["a"]["zero_point"].get<double>(), std::nearbyint(1.1 / scale));
  // Calibration passes values through; quantisation maps onto the grid and measures the error.
  q.set_mode(metrics::ActivationFakeQuant::Mode::Quantize);
  Tensor x = f32({-5, 0.3, 2.0});
  Tensor y = q.at("a", x);
  Tensor expect = metrics::fake_quant_affine(x, scale, std::nearbyint(1.1 / scale), 255);
  EXPECT_TRUE(all_close(y, expect, 0, 0));
  EXPECT_NEAR(y.to_vector()[0], (0 - std::nearbyint(1.1 / scale)) * scale, 1e-6);  // clamped at the grid's low end
  const std::vector<double> xv = x.to_vector(), yv = y.to_vector();
  double e = 0, n = 0;
  for (size_t i = 0; i < xv.size(); ++i) e += (yv[i] - xv[i]) * (yv[i] - xv[i]), n += xv[i] * xv[i];
  EXPECT_NEAR(q.report()["a"]["rel_error"].get<double>(), std::sqrt(e / n), 1e-6);
  // The head passes untouched; an uncalibrated point is an error, not a silent identity.
  EXPECT_TRUE(all_close(q.at("head.in", x), x, 0, 0));
  EXPECT_THROW(q.at("b", x), std::logic_error);
}

// Records the points a model's forward passes through, as an identity quantiser.
class PointLog : public nn::ActivationQuantizer {
 public:
  Tensor at(const std::string& point, const Tensor& x) override {
    points.push_back(point);
    return x;
  }
  std::vector<std::string> points;
};

models::VitConfig tiny_vit() { return attn::testing::tiny_vit_config(); }

TEST(FakeQuant, VitQuantisationPoints) {
  models::VisionTransformer vit(tiny_vit(), 3, DType::F32);
  PointLog log;
  vit.set_quantizer(&log);
  vit.forward(rand_tensor({2, 1, 8, 8}, 4, -1, 1, DType::F32));
  auto has = [&](const std::string& p) { return std::find(log.points.begin(), log.points.end(), p) != log.points.end(); };
  for (const char* p : {"patch_embed.in", "patch_embed.out", "blocks.0.attn.wq.in", "blocks.0.attn.wo.out",
                        "blocks.0.mlp.fc1.out", "blocks.0.mlp.fc2.in", "blocks.0.residual", "blocks.0", "blocks.1",
                        "head.in", "head.out"})
    EXPECT_TRUE(has(p)) << p;
  // 14 Linears (patch embedding, 6 per block, head) x 2 points, and 2 residual points per block.
  EXPECT_EQ(log.points.size(), 2u * (1 + 2 * 6 + 1) + 2 * 2);
}

TEST(FakeQuant, WeightsInPlaceExceptTheHead) {
  models::VisionTransformer vit(tiny_vit(), 3, DType::F32);
  ParamList params = vit.parameters();
  std::map<std::string, Tensor> before;
  for (const Param& p : params) before[p.name] = from_vector(p.value.to_vector(), p.value.shape(), {DType::F32});
  metrics::QuantScheme s;
  nlohmann::json err = metrics::quantize_weights(params, s, {"head"});
  EXPECT_FALSE(err.contains("head.weight"));
  EXPECT_TRUE(err.contains("blocks.0.attn.wq.weight"));
  for (const Param& p : params) {
    const bool matrix = p.value.dim() >= 2 && p.name.rfind("head.", 0) != 0;
    if (!matrix) {
      EXPECT_TRUE(all_close(p.value, before[p.name], 0, 0)) << p.name << " must be untouched";
      continue;
    }
    EXPECT_TRUE(all_close(p.value, metrics::fake_quant_weight(before[p.name], 8, false), 0, 0)) << p.name;
    EXPECT_GT(err[p.name].get<double>(), 0) << p.name;
    EXPECT_LT(err[p.name].get<double>(), 0.02) << p.name;  // 8 bits: about 1/(2·127·√3) of the max
  }
}

}  // namespace
