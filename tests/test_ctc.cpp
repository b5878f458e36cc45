// The CTC loss (ops/ctc.cpp) on the CPU:
//  - parity with PyTorch's F.ctc_loss (tests/ctc_reference.py, Debian's python3-torch, f64) of
//    the loss in all three reductions and of ∂/∂x through log_softmax (torch's own backward is
//    the gradient with respect to the logits, not log_probs; see the script), on random
//    logits, blank-only targets, repeats, target length = input length, impossible alignments
//    with zero_infinity on and off, ragged lengths and a real alignment of KJV text;
//  - the loss against a brute-force sum over every alignment (tiny T, no recursion at all);
//  - the posterior occupancy: −Σ_c ∂nll/∂lp[t, c] = 1 on every frame t < input_length, 0 after;
//  - f32 inputs accumulated in f64 (the f32 result is the f64 result on the same values,
//    rounded once);
//  - bad arguments: one clear error each.
// The true gradient with respect to log_probs is checked by finite differences in
// tests/test_gradcheck.cpp (the ctc_loss cases).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "metrics/ctc_decode.h"
#include "ops/ops.h"
#include "scratch_dir.h"
#include "test_util.h"
#include "torch_ref.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace attn;
using attn::testing::all_close;
using attn::testing::NonFinite;

namespace {

const TensorOptions kF64{DType::F64, Device::cpu()};
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- the KJV character vocabulary: blank, space, apostrophe, A–Z -----------------------------

constexpr int64_t kVocab = 29;

int32_t char_id(char ch) {
  if (ch == ' ') return 1;
  if (ch == '\'') return 2;
  if (ch >= 'A' && ch <= 'Z') return 3 + (ch - 'A');
  ADD_FAILURE() << "character '" << ch << "' is not in the vocabulary";
  return 1;
}

std::vector<int32_t> encode(const std::string& s) {
  std::vector<int32_t> ids;
  for (char ch : s) ids.push_back(char_id(ch));
  return ids;
}

// A frame-level alignment of labels: blanks before, after and (1–2 frames) between equal
// neighbours and at random elsewhere; each label held 1–3 frames.
std::vector<int32_t> frame_path(const std::vector<int32_t>& labels, std::mt19937& rng) {
  std::uniform_int_distribution<int> hold(1, 3), gap(0, 2);
  std::vector<int32_t> path(2, 0);
  for (size_t j = 0; j < labels.size(); ++j) {
    int blanks = gap(rng) == 0 ? 1 : 0;
    if (j > 0 && labels[j] == labels[j - 1]) blanks = 1 + gap(rng) % 2;
    path.insert(path.end(), blanks, 0);
    path.insert(path.end(), hold(rng), labels[j]);
  }
  path.insert(path.end(), 2, 0);
  return path;
}

// ---- cases -----------------------------------------------------------------------------------

struct CtcCase {
  std::string name;
  Tensor x;  // logits [B, T, C] (f64); log_probs = log_softmax(x)
  std::vector<int32_t> targets;
  std::vector<int64_t> target_lengths, input_lengths;
  int64_t blank = 0;
  bool zero_infinity = true;
  std::vector<double> weights;  // of each sample's loss for reduction None
};

CtcCase make_case(std::string name, int64_t T, int64_t C, std::vector<std::vector<int32_t>> labels,
                  std::vector<int64_t> input_lengths, uint64_t seed, double spread = 2.0) {
  CtcCase c;
  c.name = std::move(name);
  const int64_t B = static_cast<int64_t>(labels.size());
  Generator g(seed);
  c.x = randn({B, T, C}, g, kF64, 0.0, spread);
  for (const auto& l : labels) {
    c.targets.insert(c.targets.end(), l.begin(), l.end());
    c.target_lengths.push_back(static_cast<int64_t>(l.size()));
  }
  c.input_lengths = std::move(input_lengths);
  for (int64_t b = 0; b < B; ++b) c.weights.push_back(0.5 + 0.75 * static_cast<double>(b));
  return c;
}

// Logits peaked (+6) along a real frame path of each phrase, N(0, 1) noise everywhere.
CtcCase kjv_case() {
  const std::vector<std::string> phrases = {"IN THE BEGINNING GOD CREATED",
                                            "THE EARTH IS THE LORD'S", "LET THERE BE LIGHT"};
  std::mt19937 rng(1611);
  std::vector<std::vector<int32_t>> labels, paths;
  int64_t T = 0;
  for (const auto& p : phrases) {
    labels.push_back(encode(p));
    paths.push_back(frame_path(labels.back(), rng));
    T = std::max<int64_t>(T, static_cast<int64_t>(paths.back().size()));
  }
  std::vector<int64_t> lengths;
  for (const auto& p : paths) lengths.push_back(static_cast<int64_t>(p.size()));
  CtcCase c = make_case("kjv_alignment", T, kVocab, labels, lengths, 77, 1.0);
  double* x = c.x.data<double>();
  for (size_t b = 0; b < paths.size(); ++b)
    for (size_t t = 0; t < paths[b].size(); ++t) x[(b * T + t) * kVocab + paths[b][t]] += 6.0;
  return c;
}

std::vector<CtcCase> parity_cases() {
  std::vector<CtcCase> cs;
  cs.push_back(make_case("random", 12, 6, {{1, 4, 2, 5}, {3, 3}, {5, 1, 2, 2, 4}}, {12, 9, 12}, 1));
  cs.push_back(make_case("blank_only", 7, 5, {{}, {}}, {7, 4}, 2));
  // "aa" in its minimum 3 frames (a ∅ a), "abba" in its minimum 5 and in 8.
  cs.push_back(make_case("repeats", 8, 5, {{1, 1}, {1, 2, 2, 1}, {1, 2, 2, 1}}, {3, 5, 8}, 3));
  // No repeats and as many frames as labels: exactly one alignment.
  cs.push_back(make_case("target_eq_input", 6, 7, {{1, 2, 3, 4, 5, 6}, {6, 2, 4}}, {6, 3}, 4));
  // "aa" in 2 frames and "abc" in 2: impossible; the middle sample is possible.
  CtcCase imp = make_case("impossible_zero_inf", 6, 4, {{1, 1}, {2, 3}, {1, 2, 3}}, {2, 6, 2}, 5);
  cs.push_back(imp);
  imp.name = "impossible_inf";
  imp.zero_infinity = false;
  cs.push_back(imp);
  cs.push_back(make_case("ragged", 15, 7, {{1, 2, 3, 4, 5}, {6, 6, 1}, {}, {2, 5, 2, 5, 3, 3}},
                         {15, 10, 6, 13}, 6));
  CtcCase blank_last = make_case("blank_last", 9, 5, {{0, 1, 1, 3}, {2}}, {9, 5}, 7);
  blank_last.blank = 4;
  cs.push_back(blank_last);
  cs.push_back(kjv_case());
  return cs;
}

const char* reduction_key(CtcReduction r) {
  return r == CtcReduction::Mean ? "mean" : r == CtcReduction::Sum ? "sum" : "none";
}

struct Result {
  Tensor loss, grad;  // grad: ∂/∂x (the logits)
};

// Ours: loss = ctc_loss(log_softmax(x)), and ∂/∂x of the loss (Σ_b w_b loss_b for None).
Result run_ours(const CtcCase& c, CtcReduction r) {
  Tensor x = c.x.clone().set_requires_grad(true);
  Tensor loss = ctc_loss(log_softmax(x), c.targets, c.target_lengths, c.input_lengths, c.blank, r,
                         c.zero_infinity);
  if (r == CtcReduction::None)
    sum(mul(loss, from_vector(c.weights, {x.size(0)}, kF64))).backward();
  else
    loss.backward();
  return {loss.detach(), x.grad()};
}

// ---- the reference's JSON --------------------------------------------------------------------

json tensor_json(const Tensor& t) { return json{{"shape", t.shape()}, {"data", t.to_vector()}}; }

Tensor from_ref(const json& j) {
  std::vector<double> v;
  for (const json& e : j.at("data")) {
    if (e.is_number()) {
      v.push_back(e.get<double>());
      continue;
    }
    const std::string s = e.get<std::string>();
    v.push_back(s == "nan" ? std::numeric_limits<double>::quiet_NaN() : s == "inf" ? kInf : -kInf);
  }
  return from_vector(v, j.at("shape").get<Shape>(), kF64);
}

// Runs ctc_reference.py once per process over every parity case; null when it failed (the
// failure is reported).
const json* torch_reference() {
  static const json ref = [] {
    json in;
    for (const CtcCase& c : parity_cases())
      in["cases"].push_back({{"name", c.name},
                             {"x", tensor_json(c.x)},
                             {"targets", c.targets},
                             {"target_lengths", c.target_lengths},
                             {"input_lengths", c.input_lengths},
                             {"blank", c.blank},
                             {"zero_infinity", c.zero_infinity},
                             {"weights", c.weights}});
    const fs::path dir = attn::testing::scratch_dir("attnlab_test_ctc_");
    {
      std::ofstream f(dir / "in.json");
      f << in.dump();
      if (!f.good()) return json();
    }
    const std::string cmd = attn::testing::reference_command(
        attn::testing::reference_script("ctc_reference.py"), dir / "in.json", dir / "out.json");
    if (std::system(cmd.c_str()) != 0) return json();
    std::ifstream f(dir / "out.json");
    return f.good() ? json::parse(f) : json();
  }();
  return ref.is_null() ? nullptr : &ref;
}

// Both sides in f64: ours (log-space α/β with log1p, then log_softmax's backward) and torch's
// differ only by rounding, ~1e-14 relative on losses of up to a few hundred. 1e-9 relative and
// 1e-10 absolute leave orders of magnitude of headroom; a wrong transition, a missing blank
// between repeats or a wrong normalisation is off by far more. Non-finite values (the +inf
// loss and NaN gradients without zero_infinity) must sit at the same places.
constexpr double kRtol = 1e-9, kAtol = 1e-10;

class CtcTorchParity : public ::testing::TestWithParam<std::string> {};

TEST_P(CtcTorchParity, LossAndGradientThroughLogSoftmaxMatch) {
  ATTNLAB_SKIP_OR_FAIL_WITHOUT_TORCH(attn::testing::torch_available());
  const json* ref = torch_reference();
  ASSERT_NE(ref, nullptr) << "ctc_reference.py failed (its error is above)";
  for (const CtcCase& c : parity_cases()) {
    if (c.name != GetParam()) continue;
    for (CtcReduction r : {CtcReduction::Mean, CtcReduction::Sum, CtcReduction::None}) {
      const json& want = ref->at("cases").at(c.name).at(reduction_key(r));
      Result got = run_ours(c, r);
      EXPECT_TRUE(
          all_close(got.loss, from_ref(want.at("loss")), kAtol, kRtol, NonFinite::kMustMatch))
          << c.name << " " << reduction_key(r) << ": loss " << got.loss.to_vector()[0];
      EXPECT_TRUE(
          all_close(got.grad, from_ref(want.at("grad")), kAtol, kRtol, NonFinite::kMustMatch))
          << c.name << " " << reduction_key(r) << ": gradient with respect to the logits";
    }
    return;
  }
  FAIL() << "no case " << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Cases, CtcTorchParity,
                         ::testing::Values("random", "blank_only", "repeats", "target_eq_input",
                                           "impossible_zero_inf", "impossible_inf", "ragged",
                                           "blank_last", "kjv_alignment"));

// The cases are what they claim: the impossible samples are infinite only without
// zero_infinity, and the real alignment's loss is small (the peaks carry the labels).
TEST(Ctc, CasesHaveTheIntendedAlignments) {
  for (const CtcCase& c : parity_cases()) {
    Tensor nll = ctc_loss(log_softmax(c.x), c.targets, c.target_lengths, c.input_lengths, c.blank,
                          CtcReduction::None, c.zero_infinity);
    std::vector<double> v = nll.to_vector();
    if (c.name == "impossible_inf") {
      EXPECT_EQ(v[0], kInf);
      EXPECT_TRUE(std::isfinite(v[1]) && v[1] > 0);
      EXPECT_EQ(v[2], kInf);
    } else if (c.name == "impossible_zero_inf") {
      EXPECT_EQ(v[0], 0.0);
      EXPECT_GT(v[1], 0.0);
      EXPECT_EQ(v[2], 0.0);
    } else if (c.name == "kjv_alignment") {
      // The peaked path dominates: far below log(29) ≈ 3.4 nats a frame, and the best path
      // decodes to the phrase.
      auto decoded = metrics::ctc_greedy_decode(log_softmax(c.x), c.input_lengths, c.blank);
      for (size_t b = 0; b < v.size(); ++b) {
        EXPECT_LT(v[b], 0.2 * static_cast<double>(c.input_lengths[b])) << "sample " << b;
        const auto first = c.targets.begin() + std::accumulate(c.target_lengths.begin(),
                                                               c.target_lengths.begin() + b, 0);
        EXPECT_EQ(decoded[b], std::vector<int32_t>(first, first + c.target_lengths[b]));
      }
    } else {
      for (double e : v) EXPECT_TRUE(std::isfinite(e) && e > 0) << c.name;
    }
  }
}

// ---- a brute-force reference -----------------------------------------------------------------

// −log Σ over all C^T frame sequences that collapse (repeats merged, blanks dropped) to l.
double brute_force_nll(const std::vector<double>& lp, int64_t T, int64_t C,
                       const std::vector<int32_t>& l, int64_t blank) {
  std::vector<int64_t> path(T, 0);
  double p = 0;
  while (true) {
    std::vector<int32_t> collapsed;
    double logp = 0;
    for (int64_t t = 0; t < T; ++t) {
      logp += lp[t * C + path[t]];
      if (path[t] != blank && (t == 0 || path[t] != path[t - 1]))
        collapsed.push_back(static_cast<int32_t>(path[t]));
    }
    if (collapsed == l) p += std::exp(logp);
    int64_t t = 0;
    while (t < T && ++path[t] == C) path[t++] = 0;
    if (t == T) break;
  }
  return -std::log(p);
}

TEST(Ctc, LossIsTheSumOverEveryAlignment) {
  struct Small {
    std::vector<int32_t> l;
    int64_t T;
  };
  const int64_t C = 3;
  const std::vector<Small> smalls = {{{1, 1}, 4}, {{1, 2}, 3}, {{}, 4},     {{1, 2, 1}, 5},
                                     {{2}, 1},    {{1, 1}, 3}, {{2, 2}, 6}, {{1, 1}, 2}};
  for (size_t i = 0; i < smalls.size(); ++i) {
    const Small& s = smalls[i];
    Generator g(100 + i);
    Tensor lp = log_softmax(randn({1, s.T, C}, g, kF64, 0.0, 1.5));
    const double want = brute_force_nll(lp.to_vector(), s.T, C, s.l, 0);
    for (bool zero_inf : {false, true}) {
      const double got = ctc_loss(lp, s.l, {static_cast<int64_t>(s.l.size())}, {s.T}, 0,
                                  CtcReduction::Sum, zero_inf)
                             .item();
      if (std::isinf(want))
        EXPECT_EQ(got, zero_inf ? 0.0 : kInf) << "case " << i;
      else
        EXPECT_NEAR(got, want, 1e-12 * std::abs(want)) << "case " << i;
    }
  }
}

// −∂nll/∂lp[t, :] is the posterior occupancy of the classes at frame t: it sums to 1 over the
// classes on every frame the sample has, each entry in [0, 1], and is 0 beyond input_length.
TEST(Ctc, GradientIsMinusTheOccupancyOfEachFrame) {
  CtcCase c = make_case("occupancy", 10, 6, {{1, 2, 2, 3}, {}, {5, 4}}, {10, 6, 7}, 9);
  Tensor lp = log_softmax(c.x).detach().set_requires_grad(true);
  ctc_loss(lp, c.targets, c.target_lengths, c.input_lengths, 0, CtcReduction::Sum).backward();
  std::vector<double> g = lp.grad().to_vector();
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t t = 0; t < 10; ++t) {
      double total = 0;
      for (int64_t k = 0; k < 6; ++k) {
        const double v = g[(b * 10 + t) * 6 + k];
        EXPECT_TRUE(v <= 1e-15 && v >= -1 - 1e-12) << b << " " << t << " " << k << ": " << v;
        total += v;
      }
      EXPECT_NEAR(total, t < c.input_lengths[b] ? -1.0 : 0.0, 1e-12)
          << "sample " << b << " t " << t;
    }
  // Sample 1 is blank-only: every frame is all blank.
  for (int64_t t = 0; t < 6; ++t) EXPECT_NEAR(g[(10 + t) * 6 + 0], -1.0, 1e-12);
}

// f32 log_probs are read into f64 and everything is accumulated there: the f32 loss and gradient
// are the f64 ones on the same values, rounded once (a long case, where f32 accumulation over
// 300 frames would be off by far more than one rounding).
TEST(Ctc, F32InputsAccumulateInF64) {
  CtcCase c = make_case("long", 300, 12, {std::vector<int32_t>(90, 0)}, {300}, 10);
  for (int64_t j = 0; j < 90; ++j) c.targets[j] = static_cast<int32_t>(1 + (j * 7) % 11);
  Tensor lp32 = log_softmax(c.x).detach().to(DType::F32).set_requires_grad(true);
  Tensor lp64 = lp32.detach().to(DType::F64).set_requires_grad(true);
  Tensor l32 = ctc_loss(lp32, c.targets, c.target_lengths, c.input_lengths);
  Tensor l64 = ctc_loss(lp64, c.targets, c.target_lengths, c.input_lengths);
  ASSERT_EQ(l32.dtype(), DType::F32);
  EXPECT_EQ(l32.item(), static_cast<double>(static_cast<float>(l64.item())));
  l32.backward();
  l64.backward();
  std::vector<double> g32 = lp32.grad().to_vector(), g64 = lp64.grad().to_vector();
  ASSERT_EQ(lp32.grad().dtype(), DType::F32);
  size_t differ = 0;
  for (size_t i = 0; i < g32.size(); ++i)
    if (g32[i] != static_cast<double>(static_cast<float>(g64[i]))) ++differ;
  EXPECT_EQ(differ, 0u) << "of " << g32.size() << " gradient entries";
}

// The loss is recorded as a CtcLoss node and frees nothing it still needs: a second loss on the
// same log_probs gets its own gradient, accumulated.
TEST(Ctc, GradientsAccumulateAcrossTwoLosses) {
  CtcCase c = make_case("twice", 8, 5, {{1, 2}, {3}}, {8, 6}, 11);
  Tensor lp = log_softmax(c.x).detach().set_requires_grad(true);
  Tensor once = ctc_loss(lp, c.targets, c.target_lengths, c.input_lengths);
  ASSERT_TRUE(once.grad_fn());
  EXPECT_EQ(once.grad_fn()->op, OpId::CtcLoss);
  once.backward();
  Tensor g1 = lp.grad().clone();
  ctc_loss(lp, c.targets, c.target_lengths, c.input_lengths).backward();
  EXPECT_TRUE(all_close(lp.grad(), mul(g1, 2.0), 1e-15, 1e-14));
}

// ---- bad arguments ---------------------------------------------------------------------------

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' does not mention '" << needle << "'";
    EXPECT_NE(std::string(e.what()).find("ctc_loss"), std::string::npos) << e.what();
  }
}

TEST(Ctc, BadArgumentsGiveOneClearError) {
  Tensor lp = log_softmax(zeros({2, 4, 3}, kF64));
  const std::vector<int32_t> t = {1, 2, 1};
  expect_error([&] { ctc_loss(zeros({4, 3}, kF64), t, {2, 1}, {4, 4}); }, "[B, T, C]");
  expect_error([&] { ctc_loss(lp, t, {3}, {4, 4}); }, "target and input lengths");
  expect_error([&] { ctc_loss(lp, t, {2, 1}, {4}); }, "target and input lengths");
  expect_error([&] { ctc_loss(lp, t, {2, 2}, {4, 4}); }, "sum to 4 but 3 targets");
  expect_error(
      [&] {
        ctc_loss(lp, {1, 3, 1}, {2, 1}, {4, 4});
      },
      "label 3 at position 1 (sample 0)");
  expect_error([&] { ctc_loss(lp, {1, 2, 0}, {2, 1}, {4, 4}); }, "equal to the blank 0");
  expect_error([&] { ctc_loss(lp, {1, 2, -1}, {2, 1}, {4, 4}); }, "label -1");
  expect_error(
      [&] {
        ctc_loss(lp, t, {2, 1}, {4, 5});
      },
      "input length 5 outside [0, T = 4] (sample 1)");
  expect_error([&] { ctc_loss(lp, t, {2, 1}, {-1, 4}); }, "input length -1");
  expect_error([&] { ctc_loss(lp, t, {4, -1}, {4, 4}); }, "negative target length -1");
  expect_error([&] { ctc_loss(lp, t, {2, 1}, {4, 4}, 3); }, "blank 3 outside [0, 3)");
  expect_error([&] { ctc_loss(lp.to(DType::I64), t, {2, 1}, {4, 4}); }, "f32 or f64");
}

}  // namespace
