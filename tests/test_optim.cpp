// The optimizer layer: AdamW against torch.optim.AdamW (tests/optim_reference.py, Debian's
// python3-torch, both sides in f64), the warm-up + cosine schedule against its closed form,
// global-norm clipping against a hand sum, and AdamW save/load.
//
// Env (set by ctest): ATTNLAB_TORCH_PYTHON (default /usr/bin/python3), ATTNLAB_TEST_DIR (the
// directory holding the script; default: this file's directory).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <limits>
#include <nlohmann/json.hpp>
#include <numbers>
#include <sstream>
#include <string>
#include <vector>

#include "torch_ref.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "tensor/serialize.h"
#include "tensor/tensor.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace attn;

namespace {

const TensorOptions kF64{DType::F64, Device::cpu()};

// ---- helpers ------------------------------------------------------------------------------

json to_json(const Tensor& t) { return json{{"shape", t.shape()}, {"data", t.to_vector()}}; }

Tensor leaf(Tensor t) {
  t.set_requires_grad(true);
  return t;
}

// Bitwise equality of two tensors' bytes (same dtype and shape).
bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// Runs f and returns the message of the std::exception it throws ("" if none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// ---- (a) AdamW vs torch.optim.AdamW ---------------------------------------------------------

// Tolerance: both sides run in f64 and adamw.cpp performs torch's _single_tensor_adamw
// operations in the same order with the same scalars, so the only differences are rounding
// (torch's vectorised kernels may fuse a·b + c into an FMA; libm pow/sqrt). That is a few ulps
// per step on values of order 1: ~1e-15 after 10 steps (the measured max is printed). The bound
// |ours - torch| <= kAtol + kRtol·|torch| with kRtol = 1e-12, kAtol = 1e-14 keeps >100x headroom,
// yet the smallest plausible bug is far larger: ε added to √v instead of √v̂ changes b (whose
// gradients are ~1e-6, so ε matters) by ~1e-4 relative and w by ~1e-9; a wrong bias
// correction, coupled weight decay, decay on the no-decay group or advancing the step count of
// a skipped param are all >= 1e-6.
constexpr double kAdamRtol = 1e-12;
constexpr double kAdamAtol = 1e-14;
constexpr int kSteps = 10;
constexpr int kSkipStep = 3;  // "b" has no gradient at this step

struct ParityProblem {
  ParamList params;
  std::vector<std::vector<Tensor>> grads;  // [step][param], undefined = no grad
  std::vector<double> lrs;
  AdamWConfig cfg;
};

ParityProblem make_parity_problem() {
  ParityProblem pb;
  Generator gen(20240612);
  pb.params = {{"w", leaf(randn({3, 4}, gen, kF64)), true},
               {"b", leaf(randn({4}, gen, kF64)), false}};
  pb.cfg = {.lr = 0.05, .beta1 = 0.85, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1};
  const LrSchedule sched{.lr = pb.cfg.lr, .warmup_steps = 3, .total_steps = kSteps};
  for (int t = 0; t < kSteps; ++t) {
    Tensor gw = randn({3, 4}, gen, kF64);
    Tensor gb = randn({4}, gen, kF64, 0.0, 1e-6);  // tiny: √v̂ ~ 1e-6, so ε = 1e-8 matters
    pb.grads.push_back({gw, t == kSkipStep ? Tensor() : gb});
    pb.lrs.push_back(sched.at(t));
  }
  return pb;
}

json parity_input(const ParityProblem& pb) {
  json in;
  in["betas"] = {pb.cfg.beta1, pb.cfg.beta2};
  in["eps"] = pb.cfg.eps;
  in["weight_decay"] = pb.cfg.weight_decay;
  in["lr"] = pb.lrs;
  for (const Param& p : pb.params) {
    json j = to_json(p.value);
    j["name"] = p.name;
    j["weight_decay"] = p.weight_decay;
    in["params"].push_back(j);
  }
  for (const auto& step : pb.grads) {
    json row = json::array();
    for (const Tensor& g : step) row.push_back(g.defined() ? to_json(g) : json(nullptr));
    in["grads"].push_back(row);
  }
  return in;
}

// Writes IN.json, runs the script, returns OUT.json; fails the test (empty json) on error.
json run_torch_reference(const json& in, const fs::path& script) {
  fs::path dir = fs::temp_directory_path() / ("attnlab_optim_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "in.json") << in.dump();  // doubles are written round-trip exact
  std::string cmd = attn::testing::reference_command(script, dir / "in.json", dir / "out.json");
  json out;
  if (std::system(cmd.c_str()) != 0) {
    ADD_FAILURE() << "reference script failed: " << cmd;
  } else {
    std::ifstream f(dir / "out.json");
    out = json::parse(f);
  }
  fs::remove_all(dir);
  return out;
}

// Max |ours - ref| over the tensor; one failure naming the worst element if any is out of bounds.
double compare_to_ref(const std::string& what, const Tensor& ours, const json& ref) {
  EXPECT_EQ(ours.shape(), ref.at("shape").get<Shape>()) << what;
  std::vector<double> a = ours.to_vector(), b = ref.at("data").get<std::vector<double>>();
  double max_abs = 0, worst_excess = 0;
  size_t worst = 0, n_bad = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double d = std::abs(a[i] - b[i]);
    const double excess =
        std::isfinite(d) ? d - (kAdamAtol + kAdamRtol * std::abs(b[i])) : INFINITY;
    max_abs = std::max(max_abs, d);
    if (excess > 0 && (n_bad++ == 0 || excess > worst_excess)) {
      worst = i;
      worst_excess = excess;
    }
  }
  EXPECT_EQ(n_bad, 0u) << std::setprecision(17) << what << ": " << n_bad
                       << " elements outside tolerance; worst [" << worst << "]: ours " << a[worst]
                       << " vs torch " << b[worst];
  return max_abs;
}

TEST(AdamWTorchParity, TenStepsTwoGroupsScheduledLrAndASkippedParam) {
  const fs::path script = attn::testing::reference_script("optim_reference.py");
  ATTNLAB_SKIP_OR_FAIL_WITHOUT_TORCH(attn::testing::torch_available());
  ASSERT_TRUE(fs::exists(script)) << "reference script not found: " << script;

  ParityProblem pb = make_parity_problem();
  json ref = run_torch_reference(parity_input(pb), script);
  ASSERT_TRUE(ref.contains("params")) << "no reference output";
  ASSERT_EQ(ref["params"].size(), static_cast<size_t>(kSteps));

  AdamW opt(pb.params, pb.cfg);
  double worst = 0;
  for (int t = 0; t < kSteps; ++t) {
    Tensor b_before = pb.params[1].value.clone();
    for (size_t i = 0; i < pb.params.size(); ++i) pb.params[i].value.set_grad(pb.grads[t][i]);
    opt.step(pb.lrs[t]);
    if (t == kSkipStep) {
      EXPECT_TRUE(same_bits(pb.params[1].value, b_before)) << "b was updated";
    }
    for (size_t i = 0; i < pb.params.size(); ++i)
      worst = std::max(worst, compare_to_ref("step " + std::to_string(t) + " " + pb.params[i].name,
                                             pb.params[i].value, ref["params"][t][i]));
    opt.zero_grad();
  }
  EXPECT_EQ(opt.steps(), kSteps);
  for (const Param& p : pb.params) EXPECT_TRUE(p.value.is_leaf()) << p.name << " got a graph";
  std::cout << "[ parity   ] AdamW vs torch " << ref.value("torch_version", "?")
            << ": max |ours - torch| over " << kSteps << " steps = " << worst << "\n";
}

// ---- AdamW argument checks ------------------------------------------------------------------

TEST(AdamW, RejectsBadConfigAndParams) {
  Tensor w = leaf(zeros({2}, kF64));
  EXPECT_TRUE(contains(error_of([&] { AdamW({{"w", w}}, {.beta1 = 1.0}); }), "beta1"));
  EXPECT_TRUE(contains(error_of([&] { AdamW({{"w", w}}, {.lr = -1}); }), "lr"));
  EXPECT_TRUE(contains(error_of([&] { AdamW({{"w", w}, {"w", w.clone()}}, {}); }), "'w'"));
  Tensor h = leaf(zeros({2}, {DType::BF16, Device::cpu()}));
  EXPECT_TRUE(contains(error_of([&] { AdamW({{"h", h}}, {}); }), "'h'"));
  AdamW opt({{"w", w}}, {});
  w.set_grad(zeros({3}, kF64));
  EXPECT_TRUE(contains(error_of([&] { opt.step(1e-3); }), "shape"));
}

TEST(AdamW, ParamsWithoutGradAreSkipped) {
  Tensor w = leaf(ones({3}, kF64)), b = leaf(ones({2}, kF64));
  AdamW opt({{"w", w}, {"b", b}}, {.weight_decay = 0.5});
  w.set_grad(ones({3}, kF64));
  opt.step(0.1);
  EXPECT_TRUE(same_bits(b, ones({2}, kF64))) << "no grad: no decay, no update";
  EXPECT_LT(w.to_vector()[0], 1.0);
  opt.zero_grad();
  EXPECT_FALSE(w.grad().defined());
}

// ---- (b) schedule ---------------------------------------------------------------------------

TEST(LrSchedule, WarmupCosineAndFloorMatchTheClosedForm) {
  const double lr = 1e-3, min_lr = 1e-4;
  const LrSchedule s{.lr = lr, .warmup_steps = 100, .total_steps = 1100, .min_lr_ratio = 0.1};
  EXPECT_DOUBLE_EQ(s.at(0), 1e-5);      // lr · 1/100
  EXPECT_DOUBLE_EQ(s.at(49), 5e-4);     // lr · 50/100
  EXPECT_DOUBLE_EQ(s.at(99), lr);       // end of warm-up
  EXPECT_DOUBLE_EQ(s.at(100), lr);      // cosine at progress 0
  EXPECT_DOUBLE_EQ(s.at(600), 5.5e-4);  // midpoint: (lr + min_lr) / 2
  EXPECT_DOUBLE_EQ(s.at(350), min_lr + 0.5 * (lr - min_lr) * (1 + std::sqrt(0.5)));  // quarter
  EXPECT_DOUBLE_EQ(s.at(1100), min_lr);                                              // total_steps
  EXPECT_DOUBLE_EQ(s.at(1101), min_lr);  // constant after
  EXPECT_DOUBLE_EQ(s.at(1000000), min_lr);
  for (int64_t t = 1; t < 1200; ++t) {
    if (t < 100) {
      EXPECT_GT(s.at(t), s.at(t - 1)) << t;
    } else if (t > 100) {
      EXPECT_LE(s.at(t), s.at(t - 1)) << t;
    }
  }
}

TEST(LrSchedule, NoWarmupAndZeroFloor) {
  const LrSchedule s{.lr = 2.0, .warmup_steps = 0, .total_steps = 10, .min_lr_ratio = 0.0};
  EXPECT_DOUBLE_EQ(s.at(0), 2.0);
  EXPECT_DOUBLE_EQ(s.at(5), 1.0);
  EXPECT_DOUBLE_EQ(s.at(10), 0.0);
}

TEST(LrSchedule, RejectsBadArguments) {
  auto msg = [](LrSchedule s, int64_t step = 0) { return error_of([&] { s.at(step); }); };
  EXPECT_TRUE(contains(msg({1e-3, -1, 10}), "warmup_steps"));
  EXPECT_TRUE(contains(msg({1e-3, 0, 0}), "total_steps"));
  EXPECT_TRUE(contains(msg({1e-3, 20, 10}), "must not exceed total_steps"));
  EXPECT_TRUE(contains(msg({1e-3, 1, 10, 1.5}), "min_lr_ratio"));
  EXPECT_TRUE(contains(msg({1e-3, 1, 10, -0.1}), "min_lr_ratio"));
  EXPECT_TRUE(contains(msg({-1.0, 1, 10}), "lr"));
  EXPECT_TRUE(contains(msg({1e-3, 1, 10}, -1), "step"));
}

// ---- (c) clipping ---------------------------------------------------------------------------

struct ClipProblem {
  ParamList params;
  std::vector<Tensor> grads;  // copies of the original grads
};

// g1 = [3, 4] (f64), g2 = [12] (f32), a third param without grad: ‖g‖ = √(9 + 16 + 144) = 13.
ClipProblem make_clip_problem() {
  ClipProblem c;
  Tensor a = leaf(zeros({2}, kF64)), b = leaf(zeros({1})), n = leaf(zeros({5}));
  a.set_grad(from_vector({3, 4}, {2}, kF64));
  b.set_grad(from_vector({12}, {1}));
  c.params = {{"a", a}, {"b", b}, {"none", n}};
  c.grads = {a.grad().clone(), b.grad().clone()};
  return c;
}

TEST(ClipGradNorm, NormIsTheHandSum) {
  ClipProblem c = make_clip_problem();
  EXPECT_EQ(clip_grad_norm(c.params, 0.0), 13.0);
  // Random grads: against Σ g² over to_vector().
  Generator gen(7);
  Tensor x = leaf(zeros({17, 3}, kF64)), y = leaf(zeros({5}));
  x.set_grad(randn({17, 3}, gen, kF64));
  y.set_grad(randn({5}, gen));
  double sum_sq = 0;
  for (const Tensor& g : {x.grad(), y.grad()})
    for (double v : g.to_vector()) sum_sq += v * v;
  EXPECT_NEAR(clip_grad_norm({{"x", x}, {"y", y}}, -1.0), std::sqrt(sum_sq), 1e-14);
}

TEST(ClipGradNorm, ScalesWhenAboveAndLeavesGradsAloneBelow) {
  ClipProblem below = make_clip_problem();
  EXPECT_EQ(clip_grad_norm(below.params, 13.5), 13.0);
  EXPECT_TRUE(same_bits(below.params[0].value.grad(), below.grads[0]));
  EXPECT_TRUE(same_bits(below.params[1].value.grad(), below.grads[1]));

  ClipProblem above = make_clip_problem();
  EXPECT_EQ(clip_grad_norm(above.params, 6.5), 13.0);
  const double coef = 6.5 / (13.0 + 1e-6);
  std::vector<double> ga = above.params[0].value.grad().to_vector();
  EXPECT_DOUBLE_EQ(ga[0], 3 * coef);
  EXPECT_DOUBLE_EQ(ga[1], 4 * coef);
  EXPECT_FLOAT_EQ(static_cast<float>(above.params[1].value.grad().to_vector()[0]),
                  12.0f * static_cast<float>(coef));
  EXPECT_NEAR(clip_grad_norm(above.params, 0.0), 6.5, 1e-5);  // the new norm
  EXPECT_FALSE(above.params[2].value.grad().defined());
}

TEST(ClipGradNorm, FiniteCheckAndBadMaxNorm) {
  ClipProblem c = make_clip_problem();
  EXPECT_TRUE(grads_finite(c.params));
  EXPECT_THROW(clip_grad_norm(c.params, std::nan("")), std::invalid_argument);
  c.params[1].value.grad().data<float>()[0] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(grads_finite(c.params));
  c.params[1].value.grad().data<float>()[0] = 1.0f;
  c.params[0].value.grad().data<double>()[1] = std::nan("");
  EXPECT_FALSE(grads_finite(c.params));
  EXPECT_TRUE(std::isnan(clip_grad_norm(c.params, 1.0)));
}

// ---- (d) save / load ------------------------------------------------------------------------

// Two params of dtype dt; grads at step t are Philox(seed + t); "b" has no grad at step 1, so
// its own step count lags the global one and must survive the round trip.
ParamList fresh_params(DType dt) {
  Generator gen(99);
  return {{"w", leaf(randn({3, 4}, gen, {dt})), true}, {"b", leaf(randn({4}, gen, {dt})), false}};
}

void train(AdamW& opt, int64_t from, int64_t to) {
  const LrSchedule sched{.lr = 0.01, .warmup_steps = 2, .total_steps = 8};
  for (int64_t t = from; t < to; ++t) {
    Generator gen(1000 + static_cast<uint64_t>(t));
    for (const Param& p : opt.params()) {
      Tensor v = p.value;
      if (p.name == "b" && t == 1) continue;
      v.set_grad(randn(p.value.shape(), gen, {p.value.dtype()}));
    }
    opt.step(sched.at(t));
    opt.zero_grad();
  }
}

ParamList copy_params(const ParamList& ps) {
  ParamList out = ps;
  for (Param& p : out) p.value = leaf(p.value.clone());
  return out;
}

class AdamWCheckpoint : public ::testing::TestWithParam<DType> {};

TEST_P(AdamWCheckpoint, SaveLoadContinueIsBitIdentical) {
  const AdamWConfig cfg{.lr = 0.01, .weight_decay = 0.1};
  AdamW straight(fresh_params(GetParam()), cfg);
  train(straight, 0, 8);

  AdamW first(fresh_params(GetParam()), cfg);
  train(first, 0, 4);
  std::stringstream state;
  first.save(state);
  AdamW resumed(copy_params(first.params()), cfg);  // fresh optimizer over the saved values
  resumed.load(state);
  EXPECT_EQ(resumed.steps(), 4);
  train(resumed, 4, 8);

  EXPECT_EQ(resumed.steps(), straight.steps());
  for (size_t i = 0; i < straight.params().size(); ++i)
    EXPECT_TRUE(same_bits(resumed.params()[i].value, straight.params()[i].value))
        << straight.params()[i].name << " differs after resuming";
}

INSTANTIATE_TEST_SUITE_P(Dtypes, AdamWCheckpoint, ::testing::Values(DType::F32, DType::F64),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// Saves the state of an optimizer over fresh_params(F64) after two steps.
std::string saved_state() {
  AdamW opt(fresh_params(DType::F64), {});
  train(opt, 0, 2);
  std::ostringstream os;
  opt.save(os);
  return os.str();
}

// The message of load() into an optimizer over these params ("" if it loads).
std::string load_error(const ParamList& params) {
  AdamW opt(params, {});
  std::istringstream is(saved_state());
  std::string msg = error_of([&] { opt.load(is); });
  if (!msg.empty()) {
    EXPECT_EQ(opt.steps(), 0) << "a failed load changed the optimizer";
  }
  return msg;
}

TEST(AdamWCheckpointErrors, MismatchesAreNamed) {
  auto p = [](const char* name, Shape s, DType dt = DType::F64) {
    return Param{name, leaf(zeros(s, {dt})), true};
  };
  EXPECT_EQ(load_error({p("w", {3, 4}), p("b", {4})}), "");
  EXPECT_EQ(load_error({p("b", {4}), p("w", {3, 4})}), "") << "matched by name, not order";

  std::string renamed = load_error({p("w", {3, 4}), p("bias", {4})});
  EXPECT_TRUE(contains(renamed, "'b'")) << renamed;
  std::string shape = load_error({p("w", {4, 3}), p("b", {4})});
  EXPECT_TRUE(contains(shape, "'w'") && contains(shape, "[3, 4]") && contains(shape, "[4, 3]"))
      << shape;
  std::string dtype = load_error({p("w", {3, 4}), p("b", {4}, DType::F32)});
  EXPECT_TRUE(contains(dtype, "'b'") && contains(dtype, "dtype")) << dtype;
  std::string extra = load_error({p("w", {3, 4}), p("b", {4}), p("gain", {2})});
  EXPECT_TRUE(contains(extra, "'gain'")) << extra;

  AdamW opt(fresh_params(DType::F64), {});
  std::istringstream junk("not a checkpoint");
  EXPECT_THROW(opt.load(junk), std::runtime_error);
}

}  // namespace
