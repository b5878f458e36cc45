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
// All 60 models go to one python run, made by the first test that needs it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "torch_ref.h"
#include "autograd/node.h"
#include "models/vit/vit.h"
#include "optim/adamw.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace attn;
using models::VitConfig;
using nn::NormPlacement;
using nn::PositionKind;

namespace {

constexpr int64_t kChannels = 2, kHeight = 8, kWidth = 12, kPatch = 4, kD = 16, kHeads = 2, kLayers = 2,
                  kClasses = 5, kBatch = 3;
constexpr int kSteps = 5;
constexpr double kLr = 1e-2, kBeta1 = 0.9, kBeta2 = 0.95, kAdamEps = 1e-8, kWeightDecay = 0.1;
constexpr double kLayerScaleInit = 0.5;  // as in test_lm_parity: branches as heavy as the stream
// f64 on both sides: rounding and summation order only (~1e-15..1e-14 relative, see the summary
// lines); any real difference (a transposed grid, a wrong distance, an unrotated half) is ≥ 1e-6.
constexpr double kRtol = 1e-9, kAtol = 1e-10;
const TensorOptions kF64{DType::F64, Device::cpu()};

struct Combo {
  int index = 0;
  AttentionVariant variant = AttentionVariant::Softmax;
  PositionKind position = PositionKind::None;
  VitConfig::Pooling pooling = VitConfig::Pooling::Cls;
  bool layer_scale = false;
  NormPlacement placement = NormPlacement::Pre;
  bool qk_norm = false, qk_rms = false, rms_norm = false, swiglu = false, smoothing = false;
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
              {"label_smoothing", m.label_smoothing}};
}

json to_json(const Tensor& t) { return json{{"shape", t.shape()}, {"data", t.to_vector()}}; }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Seeded values of a useful scale in place of the init (see test_lm_parity's randomise): class
// token N(0, 1), learned positions N(0, 0.5), Linear weights N(0, 1/√fan_in) (q, k ×1.5), biases
// N(0, 0.1), norm weights N(1, 0.2) and biases N(0, 0.2), LayerScale N(0.5, 0.1).
void randomise(const ParamList& params, Generator& gen) {
  for (const Param& p : params) {
    const std::string& n = p.name;
    double mean = 0, std = 0.1;
    if (n == "cls_token") {
      std = 1.0;
    } else if (n == "pos_emb") {
      std = 0.5;
    } else if (ends_with(n, ".gamma1") || ends_with(n, ".gamma2")) {
      mean = kLayerScaleInit;
    } else if (n.find("norm") != std::string::npos) {
      mean = ends_with(n, ".weight") ? 1.0 : 0.0;
      std = 0.2;
    } else if (ends_with(n, ".weight")) {
      std = 1.0 / std::sqrt(static_cast<double>(p.value.size(1)));
      if (ends_with(n, ".wq.weight") || ends_with(n, ".wk.weight")) std *= 1.5;
    }
    Tensor r = randn(p.value.shape(), gen, kF64, mean, std);
    Tensor dst = p.value;
    std::copy_n(r.data<double>(), r.numel(), dst.data<double>());
  }
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
  randomise(b.model->parameters(), gen);
  b.images = randn({kBatch, kChannels, kHeight, kWidth}, gen, kF64);
  std::vector<double> u = uniform({kBatch}, gen, kF64, 0.0, static_cast<double>(kClasses)).to_vector();
  for (double& x : u) x = std::min(std::floor(x), static_cast<double>(kClasses - 1));
  b.labels = from_vector(u, {kBatch}, {DType::I32, Device::cpu()});
  return b;
}

struct Reference {
  bool have_torch = false;
  std::string error, torch_version;
  json models;
};

Reference compute_reference() {
  Reference ref;
  ref.have_torch = attn::testing::torch_available();
  if (!ref.have_torch) return ref;
  const fs::path script = attn::testing::reference_script("vit_parity_reference.py");
  if (!fs::exists(script)) {
    ref.error = "reference script not found: " + script.string();
    return ref;
  }
  json in;
  in["adamw"] = {{"lr", kLr}, {"betas", {kBeta1, kBeta2}}, {"eps", kAdamEps}, {"weight_decay", kWeightDecay},
                 {"steps", kSteps}};
  in["models"] = json::array();
  for (const Combo& c : make_combos()) {
    Built b = build(c);
    json m{{"name", combo_name(c)}, {"config", config_json(c, b.model->config)}, {"params", json::array()},
           {"images", to_json(b.images)}, {"labels", to_json(b.labels)}};
    for (const Param& p : b.model->parameters())
      m["params"].push_back({{"name", p.name}, {"weight_decay", p.weight_decay}, {"shape", p.value.shape()},
                             {"data", p.value.to_vector()}});
    in["models"].push_back(std::move(m));
  }
  const fs::path dir = fs::temp_directory_path() / ("attnlab_vit_parity_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "in.json") << in.dump();
  const std::string cmd = attn::testing::reference_command(script, dir / "in.json", dir / "out.json");
  if (std::system(cmd.c_str()) != 0) {
    ref.error = "reference script failed: " + cmd + " (inputs kept in " + dir.string() + ")";
    return ref;
  }
  std::ifstream f(dir / "out.json");
  if (!f.good()) {
    ref.error = "no output from " + cmd;
    return ref;
  }
  json out = json::parse(f);
  ref.torch_version = out.value("torch_version", "?");
  ref.models = std::move(out["models"]);
  fs::remove_all(dir);
  return ref;
}

const Reference& reference() {
  static const Reference ref = compute_reference();
  return ref;
}

// Elementwise |ours − torch| ≤ kAtol + kRtol·|torch|; returns the max abs diff, reports the worst.
double compare(const std::string& what, const Shape& shape, const std::vector<double>& ours, const json& j) {
  const Shape ref_shape = j.at("shape").get<Shape>();
  const std::vector<double> ref = j.at("data").get<std::vector<double>>();
  if (shape != ref_shape) {
    ADD_FAILURE() << what << ": shape " << shape_str(shape) << " vs torch " << shape_str(ref_shape);
    return INFINITY;
  }
  double max_abs = 0;
  int64_t n_bad = 0, worst = -1;
  for (size_t i = 0; i < ours.size(); ++i) {
    const double d = std::isfinite(ours[i]) && std::isfinite(ref[i]) ? std::abs(ours[i] - ref[i]) : INFINITY;
    if (d > max_abs) {
      max_abs = d;
      worst = static_cast<int64_t>(i);
    }
    if (d > kAtol + kRtol * std::abs(ref[i])) ++n_bad;
  }
  if (n_bad > 0)
    ADD_FAILURE() << std::setprecision(17) << what << " " << shape_str(shape) << ": " << n_bad << " of "
                  << ours.size() << " elements outside tolerance; max abs diff " << max_abs << " at " << worst
                  << ": ours " << ours[worst] << " vs torch " << ref[worst];
  return max_abs;
}

double compare(const std::string& what, const Tensor& ours, const json& j) {
  if (!ours.defined()) {
    ADD_FAILURE() << what << ": our tensor is undefined (no gradient?)";
    return INFINITY;
  }
  return compare(what, ours.shape(), ours.to_vector(), j);
}

struct Worst {
  double logits = 0, loss = 0, grad = 0, losses = 0;
  std::string grad_at;
};
Worst g_worst;

class VitParity : public ::testing::TestWithParam<Combo> {
 public:
  static void TearDownTestSuite() {
    if (g_worst.grad_at.empty()) return;
    std::cout << std::setprecision(3) << "[ parity   ] worst |ours - torch| over all ViTs: logits " << g_worst.logits
              << ", loss " << g_worst.loss << ", grads " << g_worst.grad << " (" << g_worst.grad_at << "), losses over "
              << kSteps << " AdamW steps " << g_worst.losses << "\n";
  }
};

// Logits, loss and every gradient after the first forward; returns nothing, records the worst.
void compare_first_step(const std::string& name, const Built& b, const ParamList& params, const Tensor& loss,
                        const json& r, std::ostringstream& summary) {
  Tensor logits;
  {
    NoGradGuard no_grad;
    logits = b.model->forward(b.images);
  }
  const double dl = compare("logits", logits, r.at("logits")), dloss = compare("loss", loss, r.at("loss"));
  double dg = 0;
  std::string dg_at;
  const json& grads = r.at("grads");
  EXPECT_EQ(grads.size(), params.size()) << "torch has gradients for " << grads.size() << " params, we have "
                                         << params.size();
  for (const Param& p : params) {
    if (!grads.contains(p.name)) {
      ADD_FAILURE() << "torch has no gradient for " << p.name;
      continue;
    }
    const double d = compare("grad " + p.name, p.value.grad(), grads.at(p.name));
    if (d >= dg) {
      dg = d;
      dg_at = p.name;
    }
  }
  summary << " logits " << dl << ", loss " << dloss << ", grads " << dg << " (" << dg_at << ")";
  g_worst.logits = std::max(g_worst.logits, dl);
  g_worst.loss = std::max(g_worst.loss, dloss);
  if (dg >= g_worst.grad) {
    g_worst.grad = dg;
    g_worst.grad_at = name + ": " + dg_at;
  }
}

TEST_P(VitParity, LogitsLossGradsAndAdamWStepsMatchTorch) {
  const Combo& c = GetParam();
  const std::string name = combo_name(c);
  const Reference& ref = reference();
  ATTNLAB_SKIP_OR_FAIL_WITHOUT_TORCH(ref.have_torch);
  ASSERT_TRUE(ref.error.empty()) << ref.error;
  ASSERT_TRUE(ref.models.contains(name)) << "torch has no result for " << name;
  const json& r = ref.models.at(name);
  ASSERT_FALSE(r.contains("error")) << "torch reference for " << name << ": " << r.at("error").get<std::string>();

  Built b = build(c);
  ParamList params = b.model->parameters();
  AdamW opt(params, {.lr = kLr, .beta1 = kBeta1, .beta2 = kBeta2, .eps = kAdamEps, .weight_decay = kWeightDecay});
  std::ostringstream summary;
  summary << std::setprecision(3) << "[ parity   ] " << name << " vs torch " << ref.torch_version << ": max |diff|";
  std::vector<double> losses;
  for (int step = 0; step < kSteps; ++step) {
    opt.zero_grad();
    Tensor loss = b.model->loss(b.images, b.labels);
    losses.push_back(loss.item());
    loss.backward();
    if (step == 0) compare_first_step(name, b, params, loss, r, summary);
    opt.step(kLr);
  }
  json ref_losses;
  ref_losses["shape"] = json::array({kSteps});
  ref_losses["data"] = r.at("losses");
  const double dlosses = compare("losses before each AdamW step", {kSteps}, losses, ref_losses);
  g_worst.losses = std::max(g_worst.losses, dlosses);
  summary << ", " << kSteps << " losses " << dlosses << " (torch " << std::setprecision(6)
          << r.at("losses").front().get<double>() << " -> " << r.at("losses").back().get<double>() << ")";
  std::cout << summary.str() << "\n";
}

INSTANTIATE_TEST_SUITE_P(AllCombos, VitParity, ::testing::ValuesIn(make_combos()),
                         [](const ::testing::TestParamInfo<Combo>& info) { return combo_name(info.param); });

}  // namespace
