// Parity with PyTorch: one small pre-norm transformer block (layer norm, multi-head attention
// with each variant, GELU MLP, output head, cross-entropy with an ignored target) run here with
// our ops and in torch (tests/torch_parity_reference.py, Debian's python3-torch), both in f64.
// Compares the loss, the logits and the gradient of every parameter and of the input.
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

CompareResult compare(const std::string& name, const Tensor& ours, const RefTensor& ref) {
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
    double excess = d - (kAtol + kRtol * std::abs(ref.data[i]));
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

}  // namespace
