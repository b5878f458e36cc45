// Parity with PyTorch: one small pre-norm transformer block (layer norm, multi-head attention
// with each variant, GELU MLP, output head, cross-entropy with an ignored target) run here with
// our ops and in torch (tests/torch_parity_reference.py, Debian's python3-torch), both in f64.
// Compares the loss, the logits and the gradient of every parameter and of the input.
// Then conv2d against F.conv2d (tests/conv_parity_reference.py): forward and the gradients of x,
// w and b for a random upstream gradient, and nn::Conv2d's init against torch.nn.Conv2d's.
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
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "torch_ref.h"
#include "autograd/node.h"
#include "nn/layers.h"
#include "ops/ops.h"
#include "tensor/tensor.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace attn;

namespace {

constexpr int64_t kB = 2, kT = 5, kC = 8, kH = 2, kDh = kC / kH, kHidden = 16, kV = 7;
constexpr int64_t kIgnore = -100;
constexpr double kLnEps = 1e-5;

// Tolerance: both sides compute in f64, so the only differences are rounding and summation
// order (blocked GEMM, online softmax/LSE vs. materialised softmax, fused vs. composed
// cross-entropy). Those are a few ulps per op, amplified by at most a modest condition number
// through this shallow net: ~1e-14 relative in practice. A mixed bound
// |ours - ref| <= kAtol + kRtol * |ref| with kRtol = 1e-9 and kAtol = 1e-10 leaves five orders
// of magnitude of headroom, yet any real error (a wrong mask, a missing +1 in softmax_1, a
// missing bias, a wrong GELU constant, an f32 intermediate) is far larger than 1e-9.
constexpr double kRtol = 1e-9;
constexpr double kAtol = 1e-10;

const TensorOptions kF64{DType::F64, Device::cpu()};

json to_json(const Tensor& t) {
  return json{{"shape", t.shape()}, {"data", t.to_vector()}};
}

struct RefTensor {
  Shape shape;
  std::vector<double> data;
};

RefTensor from_json(const json& j) {
  return {j.at("shape").get<Shape>(), j.at("data").get<std::vector<double>>()};
}

// Elementwise comparison; reports the max abs diff and the worst element on failure.
struct CompareResult {
  double max_abs = 0;
  bool ok = true;
};

CompareResult compare(const std::string& name, const Tensor& ours, const RefTensor& ref,
                      double atol = kAtol, double rtol = kRtol) {
  CompareResult r;
  if (!ours.defined()) {
    ADD_FAILURE() << name << ": our tensor is undefined (no gradient?)";
    r.ok = false;
    return r;
  }
  if (ours.shape() != ref.shape) {
    ADD_FAILURE() << name << ": shape " << shape_str(ours.shape()) << " vs torch "
                  << shape_str(ref.shape);
    r.ok = false;
    return r;
  }
  std::vector<double> a = ours.to_vector();
  int64_t worst = -1, n_bad = 0;
  double worst_excess = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    double d = std::abs(a[i] - ref.data[i]);
    if (!std::isfinite(a[i]) || !std::isfinite(ref.data[i])) d = INFINITY;
    r.max_abs = std::max(r.max_abs, d);
    double excess = d - (atol + rtol * std::abs(ref.data[i]));
    if (excess > 0 || std::isnan(excess)) {
      ++n_bad;
      if (worst < 0 || excess > worst_excess) {
        worst = static_cast<int64_t>(i);
        worst_excess = excess;
      }
    }
  }
  if (n_bad > 0) {
    r.ok = false;
    ADD_FAILURE() << std::setprecision(17) << name << " " << shape_str(ours.shape()) << ": "
                  << n_bad << " of " << a.size() << " elements outside tolerance; max abs diff "
                  << r.max_abs << "; worst at flat index " << worst << ": ours " << a[worst]
                  << " vs torch " << ref.data[worst];
  }
  return r;
}

// ---- the model ----------------------------------------------------------------------------

const std::vector<std::string> kParamNames = {"ln_w",  "ln_b", "Wq", "bq", "Wk", "bk",
                                              "Wv",    "bv",   "Wo", "bo", "ln2_w", "ln2_b",
                                              "W1",    "b1",   "W2", "b2", "Wout"};

std::map<std::string, Tensor> make_params(Generator& gen) {
  auto leaf = [&](const Shape& s, double mean, double std) {
    Tensor t = randn(s, gen, kF64, mean, std);
    t.set_requires_grad(true);
    return t;
  };
  std::map<std::string, Tensor> p;
  double wc = 1.0 / std::sqrt(static_cast<double>(kC));
  p["ln_w"] = leaf({kC}, 1.0, 0.2);
  p["ln_b"] = leaf({kC}, 0.0, 0.2);
  // q and k a bit larger than 1/sqrt(C) so the attention weights are far from uniform.
  p["Wq"] = leaf({kC, kC}, 0.0, 2 * wc);
  p["bq"] = leaf({kC}, 0.0, 0.2);
  p["Wk"] = leaf({kC, kC}, 0.0, 2 * wc);
  p["bk"] = leaf({kC}, 0.0, 0.2);
  p["Wv"] = leaf({kC, kC}, 0.0, wc);
  p["bv"] = leaf({kC}, 0.0, 0.2);
  p["Wo"] = leaf({kC, kC}, 0.0, wc);
  p["bo"] = leaf({kC}, 0.0, 0.2);
  p["ln2_w"] = leaf({kC}, 1.0, 0.2);
  p["ln2_b"] = leaf({kC}, 0.0, 0.2);
  p["W1"] = leaf({kC, kHidden}, 0.0, wc);
  p["b1"] = leaf({kHidden}, 0.0, 0.2);
  p["W2"] = leaf({kHidden, kC}, 0.0, 1.0 / std::sqrt(static_cast<double>(kHidden)));
  p["b2"] = leaf({kC}, 0.0, 0.2);
  p["Wout"] = leaf({kC, kV}, 0.0, wc);
  return p;
}

struct Forward {
  Tensor loss, logits;
};

Forward run_model(std::map<std::string, Tensor>& p, const Tensor& x, const Tensor& targets,
                  const AttentionSpec& spec) {
  Tensor h = layer_norm(x, p["ln_w"], p["ln_b"], kLnEps);
  auto heads = [&](const Tensor& t) { return permute(reshape(t, {kB, kT, kH, kDh}), {0, 2, 1, 3}); };
  Tensor q = heads(add(matmul(h, p["Wq"]), p["bq"]));
  Tensor k = heads(add(matmul(h, p["Wk"]), p["bk"]));
  Tensor v = heads(add(matmul(h, p["Wv"]), p["bv"]));
  Tensor o = attention(q, k, v, spec).out;  // [B, H, T, Dh]
  o = reshape(permute(o, {0, 2, 1, 3}), {kB, kT, kC});
  Tensor x2 = add(x, add(matmul(o, p["Wo"]), p["bo"]));
  Tensor h2 = layer_norm(x2, p["ln2_w"], p["ln2_b"], kLnEps);
  Tensor m = gelu(add(matmul(h2, p["W1"]), p["b1"]));
  Tensor x3 = add(add(x2, matmul(m, p["W2"])), p["b2"]);
  Tensor logits = matmul(x3, p["Wout"]);  // [B, T, V]
  Tensor loss = cross_entropy(reshape(logits, {kB * kT, kV}), targets, kIgnore);
  return {loss, logits};
}

// ---- the parameterised test ---------------------------------------------------------------

using ParityParam = std::tuple<AttentionVariant, bool /*causal*/, bool /*key padding*/>;

std::string param_name(const ::testing::TestParamInfo<ParityParam>& info) {
  auto [variant, causal, padding] = info.param;
  return std::string(variant_name(variant)) + (causal ? "_causal" : "_full") +
         (padding ? "_padded" : "_nopad");
}

class TorchParity : public ::testing::TestWithParam<ParityParam> {};

TEST_P(TorchParity, LossLogitsAndAllGradsMatch) {
  auto [variant, causal, padding] = GetParam();
  const fs::path script = attn::testing::reference_script("torch_parity_reference.py");
  ATTNLAB_SKIP_OR_FAIL_WITHOUT_TORCH(attn::testing::torch_available());
  ASSERT_TRUE(fs::exists(script)) << "reference script not found: " << script;

  // ---- inputs ----
  Generator gen(20240611);
  std::map<std::string, Tensor> params = make_params(gen);
  Tensor x = randn({kB, kT, kC}, gen, kF64);
  x.set_requires_grad(true);
  std::vector<double> tgt = uniform({kB * kT}, gen, kF64, 0.0, static_cast<double>(kV)).to_vector();
  for (double& t : tgt) t = std::min(std::floor(t), static_cast<double>(kV - 1));
  tgt[6] = static_cast<double>(kIgnore);  // batch 1, position 1: ignored
  Tensor targets = from_vector(tgt, {kB * kT}, {DType::I64, Device::cpu()});

  AttentionSpec spec;
  spec.variant = variant;
  spec.causal = causal;
  spec.scale = 0;  // 1/sqrt(Dh)
  if (variant == AttentionVariant::Sigmoid) spec.sigmoid_bias = -std::log(static_cast<double>(kT));
  if (padding) spec.key_padding_lengths = {5, 3};

  // ---- reference: write IN.json, run torch ----
  fs::path dir = fs::temp_directory_path() /
                 ("attnlab_torch_parity_" + std::to_string(::getpid()) + "_" +
                  param_name({GetParam(), 0}));
  fs::create_directories(dir);
  json in;
  in["B"] = kB;
  in["T"] = kT;
  in["C"] = kC;
  in["H"] = kH;
  in["V"] = kV;
  in["hidden"] = kHidden;
  in["variant"] = variant_name(variant);
  in["causal"] = causal;
  in["key_padding_lengths"] = spec.key_padding_lengths;
  in["scale"] = spec.scale;
  in["sigmoid_bias"] = spec.sigmoid_bias;
  in["ln_eps"] = kLnEps;
  in["ignore_index"] = kIgnore;
  for (const auto& n : kParamNames) in["params"][n] = to_json(params[n]);
  in["x"] = to_json(x);
  in["targets"] = to_json(targets);
  {
    std::ofstream f(dir / "in.json");
    f << in.dump();  // doubles are written with round-trip precision
    ASSERT_TRUE(f.good()) << "cannot write " << dir / "in.json";
  }
  std::string cmd = attn::testing::reference_command(script, dir / "in.json", dir / "out.json");
  int rc = std::system(cmd.c_str());
  ASSERT_EQ(rc, 0) << "reference script failed: " << cmd;
  json ref;
  {
    std::ifstream f(dir / "out.json");
    ASSERT_TRUE(f.good()) << "no output from " << cmd;
    ref = json::parse(f);
  }

  // ---- ours ----
  Forward fw = run_model(params, x, targets, spec);
  fw.loss.backward();

  std::vector<std::pair<std::string, CompareResult>> results;
  results.emplace_back("loss", compare("loss", fw.loss, from_json(ref["loss"])));
  results.emplace_back("logits", compare("logits", fw.logits, from_json(ref["logits"])));
  results.emplace_back("grad x", compare("grad x", x.grad(), from_json(ref["grads"]["x"])));
  for (const auto& n : kParamNames)
    results.emplace_back("grad " + n,
                         compare("grad " + n, params[n].grad(), from_json(ref["grads"][n])));

  std::ostringstream summary;
  summary << std::setprecision(3) << "max |ours - torch " << ref.value("torch_version", "?")
          << "|:";
  bool all_ok = true;
  for (const auto& [name, r] : results) {
    summary << " " << name << "=" << r.max_abs;
    all_ok = all_ok && r.ok;
  }
  if (all_ok) {
    std::cout << "[ parity   ] " << summary.str() << "\n";
    fs::remove_all(dir);
  } else {
    ADD_FAILURE() << summary.str() << "\n(inputs and torch outputs kept in " << dir << ")";
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, TorchParity,
                         ::testing::Combine(::testing::Values(AttentionVariant::Softmax,
                                                          AttentionVariant::Sigmoid,
                                                          AttentionVariant::Softmax1),
                                          ::testing::Bool(), ::testing::Bool()),
                         param_name);

// ---- conv2d against F.conv2d ----------------------------------------------------------------

struct ConvLayer {
  Tensor w, b;  // b undefined: no bias
  int64_t stride, padding;
};

struct ConvCase {
  std::string name;
  Tensor x;
  std::vector<ConvLayer> layers;
  bool relu;  // a ReLU after every layer but the last
  Tensor grad;  // the upstream gradient of the output (f64), set by make_conv_cases
};

Tensor run_convs(const ConvCase& c) {
  Tensor h = c.x;
  for (size_t k = 0; k < c.layers.size(); ++k) {
    const ConvLayer& l = c.layers[k];
    h = conv2d(h, l.w, l.b, l.stride, l.padding);
    if (c.relu && k + 1 < c.layers.size()) h = relu(h);
  }
  return h;
}

// Random inputs in dt (f64, or f32: torch then gets the same f32 values in f64).
std::vector<ConvCase> make_conv_cases() {
  Generator gen(20250301);
  auto leaf = [&](const Shape& s, DType dt) {
    Tensor t = randn(s, gen, {dt});
    t.set_requires_grad(true);
    return t;
  };
  auto layer = [&](const Shape& w, bool bias, int64_t stride, int64_t padding, DType dt) {
    return ConvLayer{leaf(w, dt), bias ? leaf({w[0]}, dt) : Tensor(), stride, padding};
  };
  const DType d = DType::F64;
  std::vector<ConvCase> cases = {
      {"s1_p0", leaf({2, 3, 6, 7}, d), {layer({4, 3, 3, 2}, true, 1, 0, d)}, false, {}},
      {"s2_p1", leaf({3, 2, 9, 8}, d), {layer({5, 2, 3, 3}, true, 2, 1, d)}, false, {}},
      {"s2_p0_last_window_fits_no_bias", leaf({2, 3, 7, 9}, d), {layer({4, 3, 3, 3}, false, 2, 0, d)}, false, {}},
      {"s3_p2_kernel_2x4", leaf({2, 2, 7, 10}, d), {layer({3, 2, 2, 4}, true, 3, 2, d)}, false, {}},
      // The speech front end at a small size: 1 -> 8 channels, 3 x 3 stride 2 over [2, 1, 37, 80]
      // log-mel frames, ReLU, 8 -> 8 stride 2.
      {"speech_subsampling", leaf({2, 1, 37, 80}, d),
       {layer({8, 1, 3, 3}, true, 2, 0, d), layer({8, 8, 3, 3}, true, 2, 0, d)}, true, {}},
      {"speech_subsampling_f32", leaf({2, 1, 37, 80}, DType::F32),
       {layer({8, 1, 3, 3}, true, 2, 0, DType::F32), layer({8, 8, 3, 3}, true, 2, 0, DType::F32)}, true, {}},
  };
  for (ConvCase& c : cases) {
    NoGradGuard ng;
    c.grad = randn(run_convs(c).shape(), gen, kF64);
  }
  return cases;
}

json conv_case_json(const ConvCase& c) {
  json j;
  j["name"] = c.name;
  j["relu"] = c.relu;
  j["x"] = to_json(c.x);
  j["grad"] = to_json(c.grad);
  for (const ConvLayer& l : c.layers) {
    json lj{{"w", to_json(l.w)}, {"stride", l.stride}, {"padding", l.padding}};
    if (l.b.defined()) lj["b"] = to_json(l.b);
    j["layers"].push_back(lj);
  }
  return j;
}

// nn::Conv2d at the speech model's second layer's size: fan_in = 144·3·3 = 1296, bound 1/36.
constexpr int64_t kInitIn = 144, kInitOut = 144, kInitK = 3;

class TorchConv2d : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    have_torch_ = attn::testing::torch_available();
    if (!have_torch_) return;
    cases_ = make_conv_cases();
    const fs::path script = attn::testing::reference_script("conv_parity_reference.py");
    dir_ = fs::temp_directory_path() / ("attnlab_conv_parity_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    json in;
    for (const ConvCase& c : cases_) in["cases"].push_back(conv_case_json(c));
    in["init"] = {{"in", kInitIn}, {"out", kInitOut}, {"kernel", kInitK}, {"seed", 7}};
    {
      std::ofstream f(dir_ / "in.json");
      f << in.dump();
      if (!f.good()) setup_error_ = "cannot write " + (dir_ / "in.json").string();
    }
    const std::string cmd = attn::testing::reference_command(script, dir_ / "in.json", dir_ / "out.json");
    if (setup_error_.empty() && std::system(cmd.c_str()) != 0) setup_error_ = "reference script failed: " + cmd;
    std::ifstream f(dir_ / "out.json");
    if (setup_error_.empty() && !f.good()) setup_error_ = "no output from " + cmd;
    if (setup_error_.empty()) ref_ = json::parse(f);
  }
  static void TearDownTestSuite() {
    if (!dir_.empty() && !::testing::UnitTest::GetInstance()->Failed()) fs::remove_all(dir_);
  }
  void SetUp() override {
    ATTNLAB_SKIP_OR_FAIL_WITHOUT_TORCH(have_torch_);
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  }
  static inline bool have_torch_ = false;
  static inline std::vector<ConvCase> cases_;
  static inline fs::path dir_;
  static inline std::string setup_error_;
  static inline json ref_;
};

double rms_of(const RefTensor& r) {
  double ss = 0;
  for (double v : r.data) ss += v * v;
  return r.data.empty() ? 0.0 : std::sqrt(ss / static_cast<double>(r.data.size()));
}

TEST_F(TorchConv2d, ForwardAndGradientsMatchFConv2d) {
  for (const ConvCase& c : cases_) {
    SCOPED_TRACE(c.name);
    const json& r = ref_["cases"][c.name];
    Tensor y = run_convs(c);
    y.backward(c.grad.to(y.dtype()));
    // f64: the tolerance of the block above (summation order only). f32 against torch's f64 on
    // the same values: every sum here (≤ 72 products forward, ≤ 2·702 positions for dW) rounds
    // to f32 with an error ~√n·2^-24 of its terms' scale, ≲ 3e-6 of the tensor's RMS; the bound
    // 2e-5·(|ref| + rms) leaves a margin of ~7 and is far below any indexing or padding error.
    const bool f32 = c.x.dtype() == DType::F32;
    std::ostringstream summary;
    summary << std::setprecision(3) << "conv2d " << c.name << ": max |ours - torch|:";
    auto check = [&](const std::string& what, const Tensor& ours, const json& want) {
      const RefTensor ref = from_json(want);
      const CompareResult r = f32 ? compare(c.name + " " + what, ours, ref, 2e-5 * rms_of(ref), 2e-5)
                                  : compare(c.name + " " + what, ours, ref);
      summary << " " << what << "=" << r.max_abs;
    };
    check("y", y, r["y"]);
    check("dx", c.x.grad(), r["dx"]);
    for (size_t k = 0; k < c.layers.size(); ++k) {
      const std::string l = "layer " + std::to_string(k);
      check(l + " dw", c.layers[k].w.grad(), r["layers"][k]["dw"]);
      if (c.layers[k].b.defined()) check(l + " db", c.layers[k].b.grad(), r["layers"][k]["db"]);
      else EXPECT_TRUE(r["layers"][k]["db"].is_null());
    }
    std::cout << "[ parity   ] " << summary.str() << "\n";
  }
}

// Weight and bias of nn::Conv2d under FanIn against torch.nn.Conv2d's default init at the same
// size: the same bound ±1/√fan_in (both respect it, and with 186,624 weights both reach within
// 0.1% of it), means and standard deviations within 5 standard errors of the uniform's (0 and
// bound/√3) and of each other's.
TEST_F(TorchConv2d, FanInInitMatchesTorchDefault) {
  Generator gen(11);
  nn::Conv2d conv(kInitIn, kInitOut, kInitK, 2, 0, true, nn::LinearInit(nn::InitKind::FanIn, 0.02), gen, DType::F32);
  const json& t = ref_["init"];
  ASSERT_EQ(conv.weight.shape(), t["weight_shape"].get<Shape>());
  const double bound = 1.0 / std::sqrt(static_cast<double>(kInitIn * kInitK * kInitK));
  const double sd = bound / std::sqrt(3.0);
  for (const char* which : {"weight", "bias"}) {
    SCOPED_TRACE(which);
    const std::vector<double> v = (std::string(which) == "weight" ? conv.weight : conv.bias).to_vector();
    const json& ts = t[which];
    const double n = static_cast<double>(v.size());
    double mx = 0, mean = 0, ss = 0;
    for (double e : v) mx = std::max(mx, std::abs(e)), mean += e;
    mean /= n;
    for (double e : v) ss += (e - mean) * (e - mean);
    const double std_ = std::sqrt(ss / n);
    // Standard errors for U(±a): of the mean σ/√n; of the std √((μ₄ − σ⁴)/n)/(2σ) with
    // μ₄ = a⁴/5, σ⁴ = a⁴/9.
    const double se_mean = sd / std::sqrt(n);
    const double se_std = std::sqrt((std::pow(bound, 4) / 5 - std::pow(sd, 4)) / n) / (2 * sd);
    // Ours are f32 (the rounding of a draw may pass the f64 bound by half an ulp, 2^-24);
    // torch's are f64, its bound gain·√(3/fan_in) = √(1/3)·√(3/1296) within an ulp of 1/36.
    EXPECT_LE(mx, bound * (1 + 1e-7));
    EXPECT_LE(ts["max_abs"].get<double>(), bound * (1 + 1e-12));
    if (v.size() > 1000) {
      EXPECT_GT(mx, 0.999 * bound);
      EXPECT_GT(ts["max_abs"].get<double>(), 0.999 * bound);
    }
    EXPECT_NEAR(mean, 0.0, 5 * se_mean);
    EXPECT_NEAR(ts["mean"].get<double>(), 0.0, 5 * se_mean);
    EXPECT_NEAR(std_, sd, 5 * se_std);
    EXPECT_NEAR(ts["std"].get<double>(), sd, 5 * se_std);
    EXPECT_NEAR(std_, ts["std"].get<double>(), 5 * std::sqrt(2.0) * se_std);
    std::cout << "[ parity   ] nn::Conv2d " << which << " (n " << v.size() << ", bound " << bound
              << "): ours max " << mx << " mean " << mean << " std " << std_ << "; torch max "
              << ts["max_abs"].get<double>() << " mean " << ts["mean"].get<double>() << " std "
              << ts["std"].get<double>() << "; uniform std " << sd << "\n";
  }
  const ParamList p = conv.parameters();
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].name, "weight");
  EXPECT_TRUE(p[0].weight_decay);
  EXPECT_EQ(p[1].name, "bias");
  EXPECT_FALSE(p[1].weight_decay);
}

// Under InitKind::Normal: N(0, std) weights (mean and std within 5 standard errors) and a zero
// bias, as nn::Linear.
TEST(Conv2dLayer, NormalInitIsGaussianWithZeroBias) {
  Generator gen(12);
  const double sd = 0.05;
  nn::Conv2d conv(16, 32, 5, 1, 2, true, nn::LinearInit(nn::InitKind::Normal, sd), gen, DType::F32);
  ASSERT_EQ(conv.weight.shape(), (Shape{32, 16, 5, 5}));
  const std::vector<double> w = conv.weight.to_vector();
  const double n = static_cast<double>(w.size());
  double mean = 0, ss = 0;
  for (double e : w) mean += e;
  mean /= n;
  for (double e : w) ss += (e - mean) * (e - mean);
  EXPECT_NEAR(mean, 0.0, 5 * sd / std::sqrt(n));
  EXPECT_NEAR(std::sqrt(ss / n), sd, 5 * sd / std::sqrt(2 * n));  // se of a Gaussian's std
  for (double e : conv.bias.to_vector()) EXPECT_EQ(e, 0.0);
  EXPECT_EQ(conv.bias.shape(), (Shape{32}));
  EXPECT_THROW(nn::Conv2d(16, 32, 0, 1, 0, true, nn::LinearInit(sd), gen, DType::F32),
               std::invalid_argument);
}

}  // namespace
