// Shared by the whole-model parity tests against PyTorch (test_lm_parity.cpp, test_vit_parity.cpp):
// seeded weights of a useful scale, the reference's input JSON, running the reference script once
// per process, elementwise comparison (every gradient by parameter name), and the f64 check of the
// first step and of the loss before each AdamW step, with the worst differences over a suite.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "autograd/node.h"
#include "optim/adamw.h"
#include "tensor/tensor.h"
#include "torch_ref.h"

namespace attn::testing::parity {

using json = nlohmann::json;

inline json to_json(const Tensor& t) { return json{{"shape", t.shape()}, {"data", t.to_vector()}}; }

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Overwrites every f64 parameter in place with seeded values of a useful scale. A model's own init
// (std 0.02, norms at exactly 1 / 0, LayerScale constant) would make the attention nearly uniform,
// so a wrong mask, slope or variant would barely show, and constant norm weights / biases / gammas
// cannot reveal a broadcast over the wrong axis or a swapped weight and bias. Here: the params
// named in `embedding_std` N(0, that std), linear weights N(0, 1/√fan_in) with q and k ×1.5 so the
// scores spread over a few units, biases N(0, 0.1), norm weights N(1, 0.2), norm biases N(0, 0.2),
// LayerScale N(layer_scale_init, 0.1).
inline void randomise(const ParamList& params, Generator& gen, double layer_scale_init,
                      const std::map<std::string, double>& embedding_std) {
  for (const Param& p : params) {
    const std::string& n = p.name;
    double mean = 0, std = 0.1;
    if (auto it = embedding_std.find(n); it != embedding_std.end()) {
      std = it->second;
    } else if (ends_with(n, ".gamma1") || ends_with(n, ".gamma2")) {
      mean = layer_scale_init;
    } else if (ends_with(n, ".sigmoid_bias")) {  // sigmoid's learnable b: near −ln n, per head
      mean = -2.0;
      std = 0.5;
    } else if (n.find("norm") != std::string::npos) {
      mean = ends_with(n, ".weight") ? 1.0 : 0.0;
      std = 0.2;
    } else if (ends_with(n, ".weight")) {  // a Linear, [out, in]
      std = 1.0 / std::sqrt(static_cast<double>(p.value.size(1)));
      if (ends_with(n, ".wq.weight") || ends_with(n, ".wk.weight")) std *= 1.5;
    }  // else a Linear bias: N(0, 0.1)
    Tensor r = randn(p.value.shape(), gen, {DType::F64, Device::cpu()}, mean, std);
    Tensor dst = p.value;  // shares the param's storage
    std::copy_n(r.data<double>(), r.numel(), dst.data<double>());
  }
}

// The "adamw" entry of the reference's input: torch.optim.AdamW's settings and the step count.
inline json adamw_json(const AdamWConfig& a, int steps) {
  return json{{"lr", a.lr},
              {"betas", {a.beta1, a.beta2}},
              {"eps", a.eps},
              {"weight_decay", a.weight_decay},
              {"steps", steps}};
}

// One model's entry of the reference's input: its name, config and every parameter (name,
// weight-decay flag, shape, data); the caller adds the model's inputs.
inline json model_json(const std::string& name, json config, const ParamList& params) {
  json m{{"name", name}, {"config", std::move(config)}, {"params", json::array()}};
  for (const Param& p : params)
    m["params"].push_back({{"name", p.name},
                           {"weight_decay", p.weight_decay},
                           {"shape", p.value.shape()},
                           {"data", p.value.to_vector()}});
  return m;
}

struct Reference {
  bool have_torch = false;
  std::string error;  // set when the script could not be run or its output read
  std::string torch_version;
  json models;  // name -> torch's results
};

// Runs the reference script `script_name` (see torch_ref.h) once on the JSON make_input() builds
// (only called when torch is there), in the scratch directory $TMPDIR/<tag>_<pid>: removed after a
// good run, kept (and named in the error) after a failed one.
inline Reference run_reference(const std::string& script_name, const std::string& tag,
                               const std::function<json()>& make_input) {
  namespace fs = std::filesystem;
  Reference ref;
  ref.have_torch = torch_available();
  if (!ref.have_torch) return ref;
  const fs::path script = reference_script(script_name);
  if (!fs::exists(script)) {
    ref.error = "reference script not found: " + script.string();
    return ref;
  }
  const json in = make_input();
  const fs::path dir = fs::temp_directory_path() / (tag + "_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    std::ofstream f(dir / "in.json");
    f << in.dump();  // doubles are written with round-trip precision
    if (!f.good()) {
      ref.error = "cannot write " + (dir / "in.json").string();
      return ref;
    }
  }
  const std::string cmd = reference_command(script, dir / "in.json", dir / "out.json");
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

// Why `ref` holds no usable result for the model `name`; "" when it holds one.
inline std::string result_problem(const Reference& ref, const std::string& name) {
  if (!ref.error.empty()) return ref.error;
  if (!ref.models.contains(name)) return "torch has no result for " + name;
  const json& r = ref.models.at(name);
  if (r.contains("error"))
    return "torch reference for " + name + ": " + r.at("error").get<std::string>();
  return "";
}

// In a test body: skip without torch (fail under ATTNLAB_REQUIRE_TORCH, see torch_ref.h), and fail
// unless `ref` holds a usable result for the model `name`. A macro because GTEST_SKIP and ASSERT
// return from the test itself.
#define ATTNLAB_ASSERT_PARITY_RESULT(ref, name)                                                 \
  do {                                                                                          \
    ATTNLAB_SKIP_OR_FAIL_WITHOUT_TORCH((ref).have_torch);                                       \
    const std::string parity_problem_ = ::attn::testing::parity::result_problem((ref), (name)); \
    ASSERT_TRUE(parity_problem_.empty()) << parity_problem_;                                    \
  } while (0)

// ---- comparison ---------------------------------------------------------------------------

struct RefTensor {
  Shape shape;
  std::vector<double> data;
};

inline RefTensor from_json(const json& j) {
  return {j.at("shape").get<Shape>(), j.at("data").get<std::vector<double>>()};
}

// Elementwise bound |ours − ref| ≤ atol + rtol·|ref|.
struct Tolerance {
  double rtol = 0, atol = 0;
};

// Fails where the bound does not hold (NaN and ±∞ never pass); returns the max abs diff, reports
// the worst element.
inline double compare(const std::string& what, const Shape& shape, const std::vector<double>& ours,
                      const RefTensor& ref, Tolerance tol) {
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
    double excess = d - (tol.atol + tol.rtol * std::abs(ref.data[i]));
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

inline double compare(const std::string& what, const Tensor& ours, const RefTensor& ref,
                      Tolerance tol) {
  if (!ours.defined()) {
    ADD_FAILURE() << what << ": our tensor is undefined (no gradient?)";
    return INFINITY;
  }
  return compare(what, ours.shape(), ours.to_vector(), ref, tol);
}

// The worst differences over every test of a suite, printed at its end.
struct Worst {
  double logits = 0, loss = 0, grad = 0, losses = 0;
  std::string grad_at;

  // From a suite's TearDownTestSuite; `over` names the models ("all models").
  void print(const std::string& over, int steps) const {
    if (grad_at.empty()) return;
    std::cout << std::setprecision(3) << "[ parity   ] worst |ours - torch| over " << over
              << ": logits " << logits << ", loss " << loss << ", grads " << grad << " (" << grad_at
              << "), losses over " << steps << " AdamW steps " << losses << "\n";
  }
};

// The f64 check of one model against torch's result r (see result_problem): `steps` steps of
// attn::AdamW on `params`, each on loss_fn()'s loss; after the first backward the logits
// (logits_fn(), under no grad), the loss and the gradient of every parameter by name; at the end
// the loss before each step. Prints a summary line and records the worst differences in `worst`.
inline void check_adamw_steps(const std::string& name, const Reference& ref, const json& r,
                              const ParamList& params, const AdamWConfig& adamw, int steps,
                              Tolerance tol, Worst& worst, const std::function<Tensor()>& loss_fn,
                              const std::function<Tensor()>& logits_fn) {
  AdamW opt(params, adamw);
  std::ostringstream summary;
  summary << std::setprecision(3) << "[ parity   ] " << name << " vs torch " << ref.torch_version
          << ": max |diff|";
  std::vector<double> losses;
  for (int step = 0; step < steps; ++step) {
    opt.zero_grad();
    Tensor loss = loss_fn();
    losses.push_back(loss.item());
    loss.backward();
    if (step == 0) {
      Tensor logits;
      {
        NoGradGuard no_grad;
        logits = logits_fn();
      }
      const double dl = compare("logits", logits, from_json(r.at("logits")), tol);
      const double dloss = compare("loss", loss, from_json(r.at("loss")), tol);
      double dg = 0;
      std::string dg_at;
      const json& grads = r.at("grads");
      EXPECT_EQ(grads.size(), params.size())
          << "torch has gradients for " << grads.size() << " params, we have " << params.size();
      for (const Param& p : params) {
        if (!grads.contains(p.name)) {
          ADD_FAILURE() << "torch has no gradient for " << p.name;
          continue;
        }
        const double d =
            compare("grad " + p.name, p.value.grad(), from_json(grads.at(p.name)), tol);
        if (d >= dg) {
          dg = d;
          dg_at = p.name;
        }
      }
      summary << " logits " << dl << ", loss " << dloss << ", grads " << dg << " (" << dg_at << ")";
      worst.logits = std::max(worst.logits, dl);
      worst.loss = std::max(worst.loss, dloss);
      if (dg >= worst.grad) {
        worst.grad = dg;
        worst.grad_at = name + ": " + dg_at;
      }
    }
    opt.step(adamw.lr);
  }
  const std::vector<double> ref_losses = r.at("losses").get<std::vector<double>>();
  const double dlosses =
      compare("losses before each AdamW step", {static_cast<int64_t>(losses.size())}, losses,
              {{static_cast<int64_t>(ref_losses.size())}, ref_losses}, tol);
  worst.losses = std::max(worst.losses, dlosses);
  summary << ", " << steps << " losses " << dlosses << " (torch " << std::setprecision(6)
          << ref_losses.front() << " -> " << ref_losses.back() << ")";
  std::cout << summary.str() << "\n";
}

}  // namespace attn::testing::parity
