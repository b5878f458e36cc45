// Parity with PyTorch for the VisionTransformer (src/models/vit): a 2-layer ViT in f64 for every
// attention variant {softmax, sigmoid, softmax1} x position {none, learned, sinusoidal, rope,
// alibi} (2-D: the patch grid) x pooling {cls, mean} x LayerScale {off, on} (60 models), against
// an independent torch implementation (tests/vit_parity_reference.py, Debian's python3-torch)
// built from our parameters by their dotted names. The pattern is tests/test_lm_parity.cpp's.
//
// Per model: the logits, the loss, the gradient of every parameter by name (torch checks the set
// of names, shapes and weight-decay flags), and the loss before each of 5 AdamW steps (lr 1e-2,
// betas (0.9, 0.95), weight decay 0.1 on the flagged params).
//
// Sizes: images 2 x 8 x 12 (channels x height x width) in 4 x 4 patches, so a 2 x 3 grid (not
// square: a row/column swap shows), d_model 16, 2 heads (head dim 8: 2-D RoPE rotates 4 dims by
// the row and 4 by the column), 5 classes, batch 3, rope_base 100 (so that both RoPE frequencies
// turn by a visible angle over 3 positions). A spread of the combos (see make_combos) switches to
// post- or hybrid-norm (40), QK-norm (17, RMS for some), RMSNorm (9), SwiGLU (7) and label
// smoothing 0.1 (11); each meets every variant and both poolings and LayerScale settings.
//
// All 60 models go to one python run, made by the first test that needs it. The machinery (seeded
// weights, the reference run, the comparisons) is tests/parity_util.h's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "parity_util.h"
#include "torch_ref.h"
#include "models/vit/vit.h"
#include "optim/adamw.h"

namespace parity = attn::testing::parity;
using json = nlohmann::json;
using namespace attn;
using models::VitConfig;
using nn::NormPlacement;
using nn::PositionKind;

namespace {

constexpr int64_t kChannels = 2, kHeight = 8, kWidth = 12, kPatch = 4, kD = 16, kHeads = 2, kLayers = 2,
                  kClasses = 5, kBatch = 3;
constexpr int kSteps = 5;
constexpr AdamWConfig kAdamW{.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
constexpr double kLayerScaleInit = 0.5;  // as in test_lm_parity: branches as heavy as the stream
// f64 on both sides: rounding and summation order only (~1e-15..1e-14 relative, see the summary
// lines); any real difference (a transposed grid, a wrong distance, an unrotated half) is ≥ 1e-6.
constexpr parity::Tolerance kTol{.rtol = 1e-9, .atol = 1e-10};
const TensorOptions kF64{DType::F64, Device::cpu()};

struct Combo {
  int index = 0;
  AttentionVariant variant = AttentionVariant::Softmax;
  PositionKind position = PositionKind::None;
  VitConfig::Pooling pooling = VitConfig::Pooling::Cls;
  bool layer_scale = false;
  NormPlacement placement = NormPlacement::Pre;
  bool qk_norm = false, qk_rms = false, rms_norm = false, swiglu = false, smoothing = false;
  bool gated = false;  // gated attention over `variant`
};

const char* position_name(PositionKind p) {
  switch (p) {
    case PositionKind::None: return "none";
    case PositionKind::Learned: return "learned";
    case PositionKind::Sinusoidal: return "sinusoidal";
    case PositionKind::Rope: return "rope";
    case PositionKind::Alibi: return "alibi";
  }
  return "?";
}

const char* placement_name(NormPlacement p) {
  return p == NormPlacement::Pre ? "pre" : p == NormPlacement::Post ? "post" : "hybrid";
}

std::string combo_name(const Combo& c) {
  std::string n = std::string(variant_name(c.variant)) + "_" + position_name(c.position) + "_" +
                  models::pooling_name(c.pooling) + (c.layer_scale ? "_ls" : "_nols") + "_" +
                  placement_name(c.placement);
  if (c.qk_norm) n += c.qk_rms ? "_qkrms" : "_qknorm";
  if (c.rms_norm) n += "_rmsnorm";
  if (c.swiglu) n += "_swiglu";
  if (c.smoothing) n += "_smooth";
  if (c.gated) n += "_gated";
  return n;
}

void PrintTo(const Combo& c, std::ostream* os) { *os << combo_name(c); }

std::vector<Combo> make_combos() {
  std::vector<Combo> out;
  for (AttentionVariant v : {AttentionVariant::Softmax, AttentionVariant::Sigmoid, AttentionVariant::Softmax1})
    for (PositionKind p : {PositionKind::None, PositionKind::Learned, PositionKind::Sinusoidal, PositionKind::Rope,
                           PositionKind::Alibi})
      for (VitConfig::Pooling pool : {VitConfig::Pooling::Cls, VitConfig::Pooling::Mean})
        for (bool ls : {false, true}) {
          Combo c;
          c.index = static_cast<int>(out.size());  // ((v·5 + p)·2 + pool)·2 + ls
          c.variant = v;
          c.position = p;
          c.pooling = pool;
          c.layer_scale = ls;
          // Residues chosen so that each extra meets every variant and both poolings and LayerScale
          // settings (placement: every variant x position, too).
          const int i = c.index;
          c.placement = i % 3 == 0 ? NormPlacement::Pre : i % 3 == 1 ? NormPlacement::Post : NormPlacement::Hybrid;
          c.qk_norm = i % 7 == 1 || i % 7 == 4;
          c.qk_rms = c.qk_norm && i % 2 == 0;
          c.rms_norm = i % 7 == 3;
          c.swiglu = i % 9 == 4;
          c.smoothing = i % 11 == 2 || i % 11 == 7;
          out.push_back(c);
        }
  // The variants of the outlier papers: sink, clipped_softmax, and the gate over softmax and over
  // sigmoid, each with learned positions and class-token pooling, and with 2-D ALiBi, mean
  // pooling, hybrid norm, QK-norm and LayerScale.
  const std::pair<AttentionVariant, bool> extra[] = {{AttentionVariant::Sink, false},
                                                     {AttentionVariant::ClippedSoftmax, false},
                                                     {AttentionVariant::Softmax, true},
                                                     {AttentionVariant::Sigmoid, true}};
  for (auto [v, gated] : extra)
    for (bool rich : {false, true}) {
      Combo c;
      c.index = static_cast<int>(out.size());
      c.variant = v;
      c.gated = gated;
      c.position = rich ? PositionKind::Alibi : PositionKind::Learned;
      c.pooling = rich ? VitConfig::Pooling::Mean : VitConfig::Pooling::Cls;
      c.placement = rich ? NormPlacement::Hybrid : NormPlacement::Pre;
      c.qk_norm = c.layer_scale = rich;
      out.push_back(c);
    }
  return out;
}

VitConfig make_config(const Combo& c) {
  VitConfig m;
  m.image_height = kHeight;
  m.image_width = kWidth;
  m.channels = kChannels;
  m.patch_size = kPatch;
  m.n_classes = kClasses;
  m.n_layers = kLayers;
  m.d_model = kD;
  m.n_heads = kHeads;
  m.pooling = c.pooling;
  m.placement = c.placement;
  m.norm = c.rms_norm ? nn::NormKind::Rms : nn::NormKind::Layer;
  m.mlp = c.swiglu ? nn::MlpKind::SwiGlu : nn::MlpKind::Gelu;
  m.label_smoothing = c.smoothing ? 0.1 : 0.0;
  nn::AttentionConfig& a = m.attention;
  a.variant = c.variant;
  a.position = c.position;
  a.rope_base = 100.0;
  const int64_t tokens = (c.pooling == VitConfig::Pooling::Cls ? 1 : 0) + (kHeight / kPatch) * (kWidth / kPatch);
  a.sigmoid_bias = -std::log(static_cast<double>(tokens));
  a.qk_norm = c.qk_norm;
  a.qk_norm_kind = c.qk_rms ? nn::NormKind::Rms : nn::NormKind::Layer;
  a.layer_scale = c.layer_scale;
  a.layer_scale_init = kLayerScaleInit;
  a.gated = c.gated;
  a.clip_gamma = -0.05;  // clips at both ends on these rows of 6 to 7 keys
  a.clip_zeta = 1.02;
  return m;
}

json config_json(const Combo& c, const VitConfig& m) {
  return json{{"image_height", m.image_height}, {"image_width", m.image_width}, {"channels", m.channels},
              {"patch_size", m.patch_size},     {"n_classes", m.n_classes},     {"d_model", m.d_model},
              {"n_layers", m.n_layers},         {"n_heads", m.n_heads},         {"variant", variant_name(c.variant)},
              {"position", position_name(c.position)}, {"pooling", models::pooling_name(c.pooling)},
              {"placement", placement_name(c.placement)}, {"norm", c.rms_norm ? "rms" : "layer"},
              {"qk_norm", c.qk_norm}, {"qk_norm_kind", c.qk_rms ? "rms" : "layer"}, {"layer_scale", c.layer_scale},
              {"mlp", c.swiglu ? "swiglu" : "gelu"}, {"norm_eps", m.norm_eps}, {"rope_base", m.attention.rope_base},
              {"label_smoothing", m.label_smoothing}, {"gated", c.gated},
              {"clip_gamma", m.attention.clip_gamma}, {"clip_zeta", m.attention.clip_zeta}};
}

struct Built {
  std::unique_ptr<models::VisionTransformer> model;
  Tensor images, labels;
};

Built build(const Combo& c) {
  Built b;
  const uint64_t seed = 2000 + static_cast<uint64_t>(c.index);
  b.model = std::make_unique<models::VisionTransformer>(make_config(c), seed, DType::F64);
  Generator gen(seed * 7919);
  // Seeded weights of a useful scale (see parity::randomise): class token N(0, 1), learned
  // positions N(0, 0.5), LayerScale N(0.5, 0.1).
  parity::randomise(b.model->parameters(), gen, kLayerScaleInit, {{"cls_token", 1.0}, {"pos_emb", 0.5}});
  b.images = randn({kBatch, kChannels, kHeight, kWidth}, gen, kF64);
  std::vector<double> u = uniform({kBatch}, gen, kF64, 0.0, static_cast<double>(kClasses)).to_vector();
  for (double& x : u) x = std::min(std::floor(x), static_cast<double>(kClasses - 1));
  b.labels = from_vector(u, {kBatch}, {DType::I32, Device::cpu()});
  return b;
}

parity::Reference compute_reference() {
  return parity::run_reference("vit_parity_reference.py", "attnlab_vit_parity", [] {
    json in{{"adamw", parity::adamw_json(kAdamW, kSteps)}, {"models", json::array()}};
    for (const Combo& c : make_combos()) {
      Built b = build(c);
      json m = parity::model_json(combo_name(c), config_json(c, b.model->config), b.model->parameters());
      m["images"] = parity::to_json(b.images);
      m["labels"] = parity::to_json(b.labels);
      in["models"].push_back(std::move(m));
    }
    return in;
  });
}

const parity::Reference& reference() {
  static const parity::Reference ref = compute_reference();
  return ref;
}

parity::Worst g_worst;  // over every test of the suite, printed at its end

class VitParity : public ::testing::TestWithParam<Combo> {
 public:
  static void TearDownTestSuite() { g_worst.print("all ViTs", kSteps); }
};

TEST_P(VitParity, LogitsLossGradsAndAdamWStepsMatchTorch) {
  const Combo& c = GetParam();
  const std::string name = combo_name(c);
  const parity::Reference& ref = reference();
  ATTNLAB_ASSERT_PARITY_RESULT(ref, name);
  Built b = build(c);
  models::VisionTransformer& model = *b.model;
  parity::check_adamw_steps(
      name, ref, ref.models.at(name), model.parameters(), kAdamW, kSteps, kTol, g_worst,
      [&] { return model.loss(b.images, b.labels); }, [&] { return model.forward(b.images); });
}

INSTANTIATE_TEST_SUITE_P(AllCombos, VitParity, ::testing::ValuesIn(make_combos()),
                         [](const ::testing::TestParamInfo<Combo>& info) { return combo_name(info.param); });

}  // namespace
