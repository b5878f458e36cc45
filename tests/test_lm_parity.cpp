// Parity with PyTorch for the whole DecoderLM (src/models/lm): a 2-layer LM in f64 for every
// combination of attention variant {softmax, sigmoid, softmax1} x position {rope, alibi, learned}
// x norm placement {pre, post, hybrid} x QK-norm {off, on} x LayerScale {off, on} (108 models),
// against an independent torch implementation of the same model (tests/lm_parity_reference.py,
// Debian's python3-torch) built from our parameters by their dotted names.
//
// Per model it compares the logits, the mean cross-entropy, the gradient of every parameter (by
// name; torch also checks that the set of names, their shapes and weight-decay flags are the
// ones the model should have), and the loss before each of 5 AdamW steps (attn::AdamW here,
// torch.optim.AdamW there: lr 1e-2, betas (0.9, 0.95), weight decay 0.1 on flagged params only).
//
// Sizes: vocab 11, d_model 16, 2 heads, seq_len 7, batch 2, GELU MLP, LayerNorm, tied head.
// So that the other paths are covered too, a deterministic spread of the combos (see
// `make_combos`) switches to RMSNorm (22 models), SwiGLU (15), an untied head (12) and RMS
// QK-norm (12 of the 54 with QK-norm on); each of these appears with every variant, position
// and placement and both LayerScale settings.
//
// All 108 models go to ONE python invocation (one JSON in, one out; torch starts once), made
// lazily by the first test that needs it and shared by the others; each combo is its own test.
//
// Env (set by ctest): ATTNLAB_TORCH_PYTHON (default /usr/bin/python3), ATTNLAB_TEST_DIR (the
// directory holding the script; default: this file's directory).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "torch_ref.h"
#include "autograd/node.h"
#include "models/lm/lm.h"
#include "optim/adamw.h"
#include "tensor/tensor.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace attn;
using nn::MlpKind;
using nn::NormKind;
using nn::NormPlacement;
using nn::PositionKind;

namespace {

constexpr int64_t kV = 11, kD = 16, kH = 2, kLayers = 2, kT = 7, kB = 2;
constexpr int kSteps = 5;
constexpr double kLr = 1e-2, kBeta1 = 0.9, kBeta2 = 0.95, kAdamEps = 1e-8, kWeightDecay = 0.1;
// LayerScale's default init (1e-4) would scale every attention and MLP branch, and with it any
// error inside the branches and their parameters' gradients, down by 1e-4: a wrong branch could
// then hide under the tolerance. At 0.5 the branches weigh as much as the residual stream.
constexpr double kLayerScaleInit = 0.5;

// Tolerance: both sides compute in f64, so the only differences are rounding and summation order
// (blocked GEMM vs. BLAS, the fused online-softmax attention vs. the explicit one, fused vs. torch
// cross-entropy, libm vs. torch's exp/tanh/pow). Those are a few ulps per op, amplified by the
// modest conditioning of this 2-layer net: ~1e-15..1e-14 relative in practice (see the summary
// lines). The 5 AdamW steps keep that: Adam's update m̂/(√v̂ + ε) has the relative error of the
// gradients, and a parameter whose gradient is ~0 (rounding noise, e.g. the key bias under
// softmax without RoPE or QK-norm, to which the loss is invariant) barely moves the loss. A mixed
// bound |ours − torch| ≤ kAtol + kRtol·|torch| with kRtol = 1e-9, kAtol = 1e-10 leaves ≥ 4 orders
// of magnitude of headroom, while any real difference (a wrong mask or slope, a missing +1 in
// softmax_1, a missing norm, a wrong GELU constant, LayerScale on the wrong side of a norm, weight
// decay on the wrong params) is ≥ 1e-6.
constexpr double kRtol = 1e-9;
constexpr double kAtol = 1e-10;

const TensorOptions kF64{DType::F64, Device::cpu()};

json to_json(const Tensor& t) { return json{{"shape", t.shape()}, {"data", t.to_vector()}}; }

// ---- the combos ---------------------------------------------------------------------------

struct Combo {
  int index = 0;
  AttentionVariant variant = AttentionVariant::Softmax;
  PositionKind position = PositionKind::Rope;
  NormPlacement placement = NormPlacement::Pre;
  bool qk_norm = false, layer_scale = false;
  // The less common paths, switched on for a spread of the combos.
  bool rms_norm = false, swiglu = false, untied = false, qk_rms = false;
};

const char* position_name(PositionKind p) {
  switch (p) {
    case PositionKind::Rope: return "rope";
    case PositionKind::Alibi: return "alibi";
    case PositionKind::Learned: return "learned";
    default: return "?";
  }
}

const char* placement_name(NormPlacement p) {
  switch (p) {
    case NormPlacement::Pre: return "pre";
    case NormPlacement::Post: return "post";
    case NormPlacement::Hybrid: return "hybrid";
  }
  return "?";
}

std::string combo_name(const Combo& c) {
  std::string n = std::string(variant_name(c.variant)) + "_" + position_name(c.position) + "_" +
                  placement_name(c.placement) + (c.qk_norm ? "_qknorm" : "_noqk") +
                  (c.layer_scale ? "_ls" : "_nols");
  if (c.rms_norm) n += "_rmsnorm";
  if (c.swiglu) n += "_swiglu";
  if (c.untied) n += "_untied";
  if (c.qk_rms) n += "_qkrms";
  return n;
}

void PrintTo(const Combo& c, std::ostream* os) { *os << combo_name(c); }

std::vector<Combo> make_combos() {
  std::vector<Combo> out;
  for (AttentionVariant v :
       {AttentionVariant::Softmax, AttentionVariant::Sigmoid, AttentionVariant::Softmax1})
    for (PositionKind p : {PositionKind::Rope, PositionKind::Alibi, PositionKind::Learned})
      for (NormPlacement pl : {NormPlacement::Pre, NormPlacement::Post, NormPlacement::Hybrid})
        for (bool qk : {false, true})
          for (bool ls : {false, true}) {
            Combo c;
            c.index = static_cast<int>(out.size());
            c.variant = v;
            c.position = p;
            c.placement = pl;
            c.qk_norm = qk;
            c.layer_scale = ls;
            // Residues chosen so that each extra meets every variant, position and placement
            // and both LayerScale settings (index = (((v·3 + p)·3 + pl)·2 + qk)·2 + ls).
            c.rms_norm = c.index % 5 == 1;
            c.swiglu = c.index % 7 == 3;
            c.untied = c.index % 9 == 4;
            c.qk_rms = qk && c.index % 5 == 2;
            out.push_back(c);
          }
  return out;
}

nn::ModelConfig make_config(const Combo& c) {
  nn::ModelConfig m;
  m.vocab_size = kV;
  m.d_model = kD;
  m.n_layers = kLayers;
  m.n_heads = kH;
  m.max_seq_len = kT;
  m.mlp = c.swiglu ? MlpKind::SwiGlu : MlpKind::Gelu;
  m.norm = c.rms_norm ? NormKind::Rms : NormKind::Layer;
  m.placement = c.placement;
  m.position = c.position;
  m.variant = c.variant;
  m.causal = true;
  m.sigmoid_bias = -std::log(static_cast<double>(kT));
  m.qk_norm = c.qk_norm;
  m.qk_norm_kind = c.qk_rms ? NormKind::Rms : NormKind::Layer;
  m.layer_scale = c.layer_scale;
  m.layer_scale_init = kLayerScaleInit;
  m.tied_head = !c.untied;
  m.dropout = 0.0;
  return m;
}

json config_json(const Combo& c, const nn::ModelConfig& m) {
  return json{{"vocab_size", m.vocab_size},
              {"d_model", m.d_model},
              {"n_layers", m.n_layers},
              {"n_heads", m.n_heads},
              {"seq_len", m.max_seq_len},
              {"variant", variant_name(c.variant)},
              {"position", position_name(c.position)},
              {"placement", placement_name(c.placement)},
              {"norm", c.rms_norm ? "rms" : "layer"},
              {"qk_norm", c.qk_norm},
              {"qk_norm_kind", c.qk_rms ? "rms" : "layer"},
              {"layer_scale", c.layer_scale},
              {"mlp", c.swiglu ? "swiglu" : "gelu"},
              {"tied_head", !c.untied},
              {"norm_eps", m.norm_eps},
              {"rope_base", m.rope_base}};
}

// ---- one model, deterministically -----------------------------------------------------------

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Overwrites every parameter in place with seeded values of a useful scale. The model's own
// init (std 0.02, norms at exactly 1 / 0, LayerScale constant) would make the attention nearly
// uniform, so a wrong mask, slope or variant would barely show, and constant norm weights / biases
// / gammas cannot reveal a broadcast over the wrong axis or a swapped weight and bias. Here:
// embeddings N(0, 1) (positions N(0, 0.5)), linear weights N(0, 1/√fan_in) with q and k ×1.5 so
// the scores spread over a few units, biases N(0, 0.1), norm weights N(1, 0.2), norm biases
// N(0, 0.2), LayerScale N(0.5, 0.1) around kLayerScaleInit.
void randomise(const ParamList& params, Generator& gen) {
  for (const Param& p : params) {
    const std::string& n = p.name;
    double mean = 0, std = 0.1;
    if (n == "tok_emb.weight") {
      std = 1.0;
    } else if (n == "pos_emb.weight") {
      std = 0.5;
    } else if (ends_with(n, ".gamma1") || ends_with(n, ".gamma2")) {
      mean = kLayerScaleInit;
      std = 0.1;
    } else if (n.find("norm") != std::string::npos) {
      mean = ends_with(n, ".weight") ? 1.0 : 0.0;
      std = 0.2;
    } else if (ends_with(n, ".weight")) {  // a Linear, [out, in]
      std = 1.0 / std::sqrt(static_cast<double>(p.value.size(1)));
      if (ends_with(n, ".wq.weight") || ends_with(n, ".wk.weight")) std *= 1.5;
    }  // else a Linear bias: N(0, 0.1)
    Tensor r = randn(p.value.shape(), gen, kF64, mean, std);
    Tensor dst = p.value;  // shares the param's storage
    std::copy_n(r.data<double>(), r.numel(), dst.data<double>());
  }
}

struct Built {
  std::unique_ptr<models::DecoderLM> model;
  Tensor ids, targets;  // [B, T] each
};

// The same model, weights and tokens every time it is called for a combo.
Built build(const Combo& c) {
  Built b;
  uint64_t seed = 1000 + static_cast<uint64_t>(c.index);
  b.model = std::make_unique<models::DecoderLM>(make_config(c), seed, DType::F64);
  Generator gen(seed * 7919);
  randomise(b.model->parameters(), gen);
  // A random token stream [B, T+1]: inputs are its first T tokens, targets the next ones.
  std::vector<double> u = uniform({kB * (kT + 1)}, gen, kF64, 0.0, static_cast<double>(kV)).to_vector();
  std::vector<double> ids, tgt;
  for (int64_t bi = 0; bi < kB; ++bi)
    for (int64_t t = 0; t < kT; ++t) {
      auto tok = [&](int64_t k) { return std::min(std::floor(u[bi * (kT + 1) + k]), static_cast<double>(kV - 1)); };
      ids.push_back(tok(t));
      tgt.push_back(tok(t + 1));
    }
  b.ids = from_vector(ids, {kB, kT}, {DType::I64, Device::cpu()});
  b.targets = from_vector(tgt, {kB, kT}, {DType::I64, Device::cpu()});
  return b;
}

// ---- the shared torch reference ---------------------------------------------------------------

struct Reference {
  bool have_torch = false;
  std::string error;  // set when the script could not be run or its output read
  std::string torch_version;
  json models;        // name -> torch's results
};

Reference compute_reference() {
  Reference ref;
  ref.have_torch = attn::testing::torch_available();
  if (!ref.have_torch) return ref;
  const fs::path script = attn::testing::reference_script("lm_parity_reference.py");
  if (!fs::exists(script)) {
    ref.error = "reference script not found: " + script.string();
    return ref;
  }

  json in;
  in["adamw"] = {{"lr", kLr}, {"betas", {kBeta1, kBeta2}}, {"eps", kAdamEps},
                 {"weight_decay", kWeightDecay}, {"steps", kSteps}};
  in["models"] = json::array();
  for (const Combo& c : make_combos()) {
    Built b = build(c);
    json m;
    m["name"] = combo_name(c);
    m["config"] = config_json(c, b.model->config);
    m["params"] = json::array();
    for (const Param& p : b.model->parameters())
      m["params"].push_back({{"name", p.name},
                             {"weight_decay", p.weight_decay},
                             {"shape", p.value.shape()},
                             {"data", p.value.to_vector()}});
    m["ids"] = to_json(b.ids);
    m["targets"] = to_json(b.targets);
    in["models"].push_back(std::move(m));
  }

  fs::path dir = fs::temp_directory_path() / ("attnlab_lm_parity_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    std::ofstream f(dir / "in.json");
    f << in.dump();  // doubles are written with round-trip precision
    if (!f.good()) {
      ref.error = "cannot write " + (dir / "in.json").string();
      return ref;
    }
  }
  std::string cmd = attn::testing::reference_command(script, dir / "in.json", dir / "out.json");
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
  static const Reference ref = compute_reference();  // built once, by the first test to ask
  return ref;
}

// ---- comparison ---------------------------------------------------------------------------

struct RefTensor {
  Shape shape;
  std::vector<double> data;
};

RefTensor from_json(const json& j) {
  return {j.at("shape").get<Shape>(), j.at("data").get<std::vector<double>>()};
}

// Elementwise |ours − ref| ≤ kAtol + kRtol·|ref|; returns the max abs diff, reports the worst.
double compare(const std::string& what, const Shape& shape, const std::vector<double>& ours,
               const RefTensor& ref) {
  if (shape != ref.shape) {
    ADD_FAILURE() << what << ": shape " << shape_str(shape) << " vs torch " << shape_str(ref.shape);
    return INFINITY;
  }
  double max_abs = 0, worst_excess = 0;
  int64_t worst = -1, n_bad = 0;
  for (size_t i = 0; i < ours.size(); ++i) {
    double d = std::abs(ours[i] - ref.data[i]);
    if (!std::isfinite(ours[i]) || !std::isfinite(ref.data[i])) d = INFINITY;
    max_abs = std::max(max_abs, d);
    double excess = d - (kAtol + kRtol * std::abs(ref.data[i]));
    if (excess > 0) {
      ++n_bad;
      if (worst < 0 || excess > worst_excess) {
        worst = static_cast<int64_t>(i);
        worst_excess = excess;
      }
    }
  }
  if (n_bad > 0)
    ADD_FAILURE() << std::setprecision(17) << what << " " << shape_str(shape) << ": " << n_bad
                  << " of " << ours.size() << " elements outside tolerance; max abs diff "
                  << max_abs << "; worst at flat index " << worst << ": ours " << ours[worst]
                  << " vs torch " << ref.data[worst];
  return max_abs;
}

double compare(const std::string& what, const Tensor& ours, const RefTensor& ref) {
  if (!ours.defined()) {
    ADD_FAILURE() << what << ": our tensor is undefined (no gradient?)";
    return INFINITY;
  }
  return compare(what, ours.shape(), ours.to_vector(), ref);
}

// The worst differences over every test of the suite, printed at its end.
struct Worst {
  double logits = 0, loss = 0, grad = 0, losses = 0;
  std::string grad_at;
};
Worst g_worst;

// ---- the parameterised test ---------------------------------------------------------------

class LmParity : public ::testing::TestWithParam<Combo> {
 public:
  static void TearDownTestSuite() {
    if (g_worst.grad_at.empty()) return;
    std::cout << std::setprecision(3) << "[ parity   ] worst |ours - torch| over all models: logits "
              << g_worst.logits << ", loss " << g_worst.loss << ", grads " << g_worst.grad << " ("
              << g_worst.grad_at << "), losses over " << kSteps << " AdamW steps "
              << g_worst.losses << "\n";
  }
};

TEST_P(LmParity, LogitsLossGradsAndAdamWStepsMatchTorch) {
  const Combo& c = GetParam();
  const std::string name = combo_name(c);
  const Reference& ref = reference();
  if (!ref.have_torch)
    GTEST_SKIP() << attn::testing::torch_missing_message();
  ASSERT_TRUE(ref.error.empty()) << ref.error;
  ASSERT_TRUE(ref.models.contains(name)) << "torch has no result for " << name;
  const json& r = ref.models.at(name);
  ASSERT_FALSE(r.contains("error")) << "torch reference for " << name << ": "
                                    << r.at("error").get<std::string>();

  Built b = build(c);
  models::DecoderLM& model = *b.model;
  ParamList params = model.parameters();
  AdamW opt(params, {.lr = kLr, .beta1 = kBeta1, .beta2 = kBeta2, .eps = kAdamEps,
                     .weight_decay = kWeightDecay});

  std::ostringstream summary;
  summary << std::setprecision(3) << "[ parity   ] " << name << " vs torch " << ref.torch_version
          << ": max |diff|";
  std::vector<double> losses;
  for (int step = 0; step < kSteps; ++step) {
    opt.zero_grad();
    Tensor loss = model.loss(b.ids, b.targets);
    losses.push_back(loss.item());
    loss.backward();
    if (step == 0) {
      Tensor logits;
      {
        NoGradGuard no_grad;
        logits = model.forward(b.ids);
      }
      double dl = compare("logits", logits, from_json(r.at("logits")));
      double dloss = compare("loss", loss, from_json(r.at("loss")));
      double dg = 0;
      std::string dg_at;
      const json& grads = r.at("grads");
      EXPECT_EQ(grads.size(), params.size()) << "torch has gradients for " << grads.size()
                                             << " params, we have " << params.size();
      for (const Param& p : params) {
        if (!grads.contains(p.name)) {
          ADD_FAILURE() << "torch has no gradient for " << p.name;
          continue;
        }
        double d = compare("grad " + p.name, p.value.grad(), from_json(grads.at(p.name)));
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
    opt.step(kLr);
  }
  std::vector<double> ref_losses = r.at("losses").get<std::vector<double>>();
  double dlosses = compare("losses before each AdamW step", {static_cast<int64_t>(losses.size())},
                           losses, {{static_cast<int64_t>(ref_losses.size())}, ref_losses});
  g_worst.losses = std::max(g_worst.losses, dlosses);
  summary << ", " << kSteps << " losses " << dlosses << " (torch " << std::setprecision(6)
          << ref_losses.front() << " -> " << ref_losses.back() << ")";
  std::cout << summary.str() << "\n";
}

INSTANTIATE_TEST_SUITE_P(AllCombos, LmParity, ::testing::ValuesIn(make_combos()),
                         [](const ::testing::TestParamInfo<Combo>& info) { return combo_name(info.param); });

}  // namespace
