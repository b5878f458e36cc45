// The CUDA CTC loss (kernels/ctc.cuh) against the CPU op (label gpu; skips without a device;
// emu_test_gpu_ctc runs it on the emulated device). The same log_probs on both sides: the CPU
// reference runs in f64 on the values the device reads (f32, or the bf16-rounded ones), so the
// difference is the device's own error. Every reduction, the loss and ∂loss/∂log_probs (the
// true gradient), on the edge cases of tests/test_ctc.cpp (blank-only targets, repeats, target
// length = input length, impossible alignments with zero_infinity on and off, ragged lengths, a
// blank that is not 0, a wide vocabulary (C = 300, one label three times)) and a long case
// (T = 400, L = 150, S = 301: more states than threads).
//
// Tolerances: |got − want| ≤ rtol·(|want| + rms(want)) elementwise (test_gpu_ops.cpp's
// measure); non-finite values must sit at the same places.
//   f32   rtol = 1e-4 for the gradient, 1e-6 for the loss. The device runs the recursions in f32
//         log space (each frame shifted by its maximum, the shifts summed in f64); every frame's
//         log-add rounds at ~6e-8 relative to values of a few units, and those errors add up
//         along the frames, so the posteriors (the gradient) drift relatively by ~√T·1e-7 to
//         T·1e-7: measured 1.3e-5 after 400 frames (the long case), ≤ 1.2e-6 on the short ones,
//         a margin of 8. The loss, Σ of T·|lp| ≈ 10³, is off by as much absolutely: measured
//         ≤ 3e-8 relative, a margin of 30.
//   bf16  rtol = 1e-2. The inputs are bf16 on both sides; the device computes in f32 and rounds
//         once on the store (half a bf16 ulp: at most 2^-8 ≈ 0.4% relative, just above a power
//         of two): measured ≤ 3.4e-3 (gradients near ±1), a margin of 2.5 over the worst case.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "ops/ops.h"
#include "test_util.h"

using namespace attn;

#define SKIP_WITHOUT_GPU() \
  if (!cuda_available_for_tests()) GTEST_SKIP() << "no CUDA device visible: GPU test skipped"

namespace {

const Device kCuda = Device::cuda(0);

::testing::AssertionResult close_to(const Tensor& got, const Tensor& want, double rtol) {
  if (got.shape() != want.shape())
    return ::testing::AssertionFailure()
           << "shapes differ: " << shape_str(got.shape()) << " vs " << shape_str(want.shape());
  std::vector<double> a = got.to_vector(), b = want.to_vector();
  double ss = 0;
  int64_t finite = 0;
  for (double v : b)
    if (std::isfinite(v)) ss += v * v, ++finite;
  const double rms = finite ? std::sqrt(ss / static_cast<double>(finite)) : 0.0;
  double worst = -1;
  size_t at = 0, bad = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) {
      const bool same = (std::isnan(a[i]) && std::isnan(b[i])) || a[i] == b[i];
      if (!same)
        return ::testing::AssertionFailure()
               << "non-finite value at flat index " << i << ": got " << a[i] << ", want " << b[i];
      continue;
    }
    const double err = std::abs(a[i] - b[i]), lim = rtol * (std::abs(b[i]) + rms);
    const double ratio = lim > 0 ? err / lim : (err > 0 ? INFINITY : 0);
    if (!(err <= lim)) ++bad;
    if (!(ratio <= worst)) worst = ratio, at = i;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << a.size() << " elements off; worst at " << at << ": got " << a[at]
         << ", want " << b[at] << " (rtol " << rtol << ", error/limit " << worst << ")";
}

struct GpuCtcCase {
  std::string name;
  int64_t T, C;
  std::vector<std::vector<int32_t>> labels;
  std::vector<int64_t> input_lengths;
  int64_t blank = 0;
  bool zero_infinity = true;
};

std::vector<GpuCtcCase> cases() {
  std::vector<GpuCtcCase> cs = {
      {"random", 12, 6, {{1, 4, 2, 5}, {3, 3}, {5, 1, 2, 2, 4}}, {12, 9, 12}},
      {"blank_only", 7, 5, {{}, {}}, {7, 4}},
      {"repeats", 8, 5, {{1, 1}, {1, 2, 2, 1}, {1, 2, 2, 1}}, {3, 5, 8}},
      {"target_eq_input", 6, 7, {{1, 2, 3, 4, 5, 6}, {6, 2, 4}}, {6, 3}},
      {"impossible_zero_inf", 6, 4, {{1, 1}, {2, 3}, {1, 2, 3}}, {2, 6, 2}},
      {"impossible_inf", 6, 4, {{1, 1}, {2, 3}, {1, 2, 3}}, {2, 6, 2}, 0, false},
      {"ragged", 15, 7, {{1, 2, 3, 4, 5}, {6, 6, 1}, {}, {2, 5, 2, 5, 3, 3}}, {15, 10, 6, 13}},
      {"blank_last", 9, 5, {{0, 1, 1, 3}, {2}}, {9, 5}, 4},
      {"wide_vocab", 20, 300, {{7, 299, 7, 7, 150}, {1}}, {20, 17}},
  };
  // Long: 150 labels (S = 301, more states than one block's threads) over 400 frames, every
  // tenth label a repeat of the one before; a second, shorter sample in the same batch.
  GpuCtcCase lng{"long", 400, 29, {{}, {}}, {400, 333}};
  for (int32_t j = 0; j < 150; ++j)
    lng.labels[0].push_back(j % 10 == 9 ? lng.labels[0].back() : 1 + (j * 5 + j / 7) % 28);
  for (int32_t j = 0; j < 100; ++j) lng.labels[1].push_back(1 + (j * 11) % 28);
  cs.push_back(lng);
  return cs;
}

void PrintTo(const GpuCtcCase& c, std::ostream* os) { *os << c.name; }

struct Flat {
  std::vector<int32_t> targets;
  std::vector<int64_t> lengths;
};
Flat flatten(const GpuCtcCase& c) {
  Flat f;
  for (const auto& l : c.labels) {
    f.targets.insert(f.targets.end(), l.begin(), l.end());
    f.lengths.push_back(static_cast<int64_t>(l.size()));
  }
  return f;
}

const char* reduction_name(CtcReduction r) {
  return r == CtcReduction::Mean ? "mean" : r == CtcReduction::Sum ? "sum" : "none";
}

void check_case(const GpuCtcCase& c, DType dt) {
  const int64_t B = static_cast<int64_t>(c.labels.size());
  const Flat f = flatten(c);
  Generator g(31 + c.T * 7 + c.C);
  // log_probs rounded to dt once: the CPU reference (f64) reads exactly what the device reads.
  Tensor lp = log_softmax(randn({B, c.T, c.C}, g, {DType::F64}, 0.0, 2.0)).to(dt);
  const double loss_rtol = dt == DType::F32 ? 1e-6 : 1e-2;
  const double grad_rtol = dt == DType::F32 ? 1e-4 : 1e-2;
  for (CtcReduction r : {CtcReduction::Mean, CtcReduction::Sum, CtcReduction::None}) {
    SCOPED_TRACE(c.name + " " + dtype_name(dt) + " " + reduction_name(r));
    Tensor host = lp.to(DType::F64).set_requires_grad(true);
    Tensor dev = lp.to(kCuda).set_requires_grad(true);
    Tensor want =
        ctc_loss(host, f.targets, f.lengths, c.input_lengths, c.blank, r, c.zero_infinity);
    Tensor got = ctc_loss(dev, f.targets, f.lengths, c.input_lengths, c.blank, r, c.zero_infinity);
    ASSERT_TRUE(got.device().is_cuda());
    ASSERT_EQ(got.dtype(), dt);
    EXPECT_TRUE(close_to(got, want, loss_rtol)) << "loss";
    // A seed with a different weight per sample for None (each sample's gradient scaled).
    Tensor seed = r == CtcReduction::None ? from_vector({0.75, -1.5, 2.0, 0.5}, {4}, {DType::F64})
                                          : scalar(1.25, {DType::F64});
    if (r == CtcReduction::None) seed = slice(seed, 0, 0, B);
    want.backward(seed);
    got.backward(seed.to(dt).to(kCuda));
    ASSERT_TRUE(dev.grad().defined());
    EXPECT_TRUE(dev.grad().device().is_cuda());
    EXPECT_EQ(dev.grad().dtype(), dt);
    EXPECT_TRUE(close_to(dev.grad(), host.grad(), grad_rtol)) << "gradient";
  }
}

class GpuCtc : public ::testing::TestWithParam<GpuCtcCase> {};

TEST_P(GpuCtc, F32MatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  check_case(GetParam(), DType::F32);
}

TEST_P(GpuCtc, Bf16MatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  check_case(GetParam(), DType::BF16);
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuCtc, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

// The impossible samples really are infinite on the device without zero_infinity, and 0 with it
// (the comparisons above accept matching infinities; this pins what they are).
TEST(GpuCtcEdges, ImpossibleAlignmentsOnTheDevice) {
  SKIP_WITHOUT_GPU();
  Generator g(5);
  Tensor lp = log_softmax(randn({2, 4, 4}, g, {DType::F32})).to(kCuda);
  for (bool zero_inf : {true, false}) {
    std::vector<double> v =
        ctc_loss(lp, {1, 1, 2}, {2, 1}, {2, 4}, 0, CtcReduction::None, zero_inf).to_vector();
    EXPECT_EQ(v[0], zero_inf ? 0.0 : std::numeric_limits<double>::infinity());
    EXPECT_TRUE(std::isfinite(v[1]) && v[1] > 0);
  }
}

}  // namespace
