// Shared by the flash-attention tests (the CUDA kernels through the op, on a GPU or on the
// emulated device): test cases, inputs, the f64 CPU reference, the bf16 tolerance and the run.
//
// Tolerance. Inputs are identical on both sides (values exactly representable in bf16), so the
// only differences are the kernels' own roundings: P (and dS in the backward) rounded to bf16
// before the second MMA, outputs rounded to bf16, D = rowsum(dO∘O) from the bf16 O, f32
// accumulation, ex2.approx / rcp.approx (≤ 2 ulp f32). bf16 has unit roundoff u = 2^-9 ≈ 2e-3;
// each of those roundings is ≤ u relative to a term and they average out over the sums, so the
// error measured against the largest entry of its (batch, head) slice stays at a few u. We accept
//     max_{i in s} |got_i − want_i| ≤ 1e-2 · max_{i in s} |want_i|   for every (batch, head) s
// (normalised max error, ≈ 5u) for O, dQ, dK, dV (1e-2 is also TransformerEngine's bf16 rtol),
// and |Δlse| ≤ 2e-3 (lse is computed in f32 from exact inputs). Per slice, not per tensor: heads
// differ in scale (sigmoid with ALiBi: a steep head sums few keys, a flat one many), and a
// small head's error measured against the largest head's values would hide. A wrong mask, a
// missing rescale or an off-by-one row gives errors of order 0.1–1 on these inputs. −∞ must
// match exactly, NaN never passes.
//
// Sigmoid runs with b = −ln(number of keys), the bias training uses (−ln max_seq_len), so P is
// small (≈ e^x / M) as in training rather than near ½, where a wrong bias or a dropped term
// would be diluted.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "test_util.h"

namespace attn::testing {

constexpr double kFlashTolOut = 1e-2;  // O, dq, dk, dv: normalised max error per (batch, head)
constexpr double kFlashTolLse = 2e-3;  // lse: absolute
// A slice's scale is at least this times the whole tensor's max |want|: an all-zero slice (a
// batch with no visible key) then needs |got| ≤ 1e-5 · max |want| rather than dividing by 0, and
// a slice of near-zero values is not held to bf16 precision relative to its own noise.
constexpr double kFlashSliceFloor = 1e-3;

inline double flash_sigmoid_bias(int64_t keys) { return -std::log(static_cast<double>(keys)); }

struct FlashCase {
  AttentionVariant variant = AttentionVariant::Softmax;
  int64_t D = 64, B = 1, H = 1, N = 1, M = 1;
  bool causal = false, padding = false, alibi = false;
  uint64_t seed = 1;
  std::string name() const {
    return std::string(variant_name(variant)) + " d" + std::to_string(D) + " " +
           std::to_string(B) + "x" + std::to_string(H) + " N" + std::to_string(N) + " M" +
           std::to_string(M) + (causal ? " causal" : "") + (padding ? " padding" : "") +
           (alibi ? " alibi" : "");
  }
};

// Key lengths with a partial last tile, a tiny one (most key tiles all padding), a middle one
// and a full one.
inline std::vector<int64_t> flash_key_lengths(int64_t B, int64_t M) {
  std::vector<int64_t> len;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t pick[4] = {M - 13, 5, M / 2 + 7, M};
    len.push_back(std::clamp<int64_t>(pick[b % 4], 1, M));
  }
  return len;
}

inline std::vector<double> flash_alibi_slopes(int64_t H) {  // 2^(-8(h+1)/H), as in the paper
  std::vector<double> s;
  for (int64_t h = 0; h < H; ++h) s.push_back(std::exp2(-8.0 * static_cast<double>(h + 1) / H));
  return s;
}

struct FlashInputs {
  Tensor q, k, v, dout;  // f64 on the CPU, every value exactly a bf16
  AttentionSpec spec;
};

inline Tensor bf16_exact(const Tensor& x) { return x.to(DType::BF16).to(DType::F64); }

inline FlashInputs make_flash_inputs(const FlashCase& c) {
  FlashInputs in;
  in.q = bf16_exact(rand_tensor({c.B, c.H, c.N, c.D}, c.seed, -2, 2));
  in.k = bf16_exact(rand_tensor({c.B, c.H, c.M, c.D}, c.seed + 1, -2, 2));
  in.v = bf16_exact(rand_tensor({c.B, c.H, c.M, c.D}, c.seed + 2, -1, 1));
  in.dout = bf16_exact(rand_tensor({c.B, c.H, c.N, c.D}, c.seed + 3, -1, 1));
  in.spec.variant = c.variant;
  in.spec.causal = c.causal;
  in.spec.sigmoid_bias = flash_sigmoid_bias(c.M);
  if (c.padding) in.spec.key_padding_lengths = flash_key_lengths(c.B, c.M);
  if (c.alibi) in.spec.alibi_slopes = flash_alibi_slopes(c.H);
  return in;
}

struct FlashOutputs {
  Tensor o, lse, dq, dk, dv;  // lse undefined for sigmoid
};

// The CPU fused op in f64 and its backward with seed dout.
inline FlashOutputs flash_reference(const FlashInputs& in) {
  Tensor q = in.q.clone().set_requires_grad(true);
  Tensor k = in.k.clone().set_requires_grad(true);
  Tensor v = in.v.clone().set_requires_grad(true);
  AttentionOut r = attention(q, k, v, in.spec);
  r.out.backward(in.dout);
  return {r.out.detach(), r.lse, q.grad(), k.grad(), v.grad()};
}

// For each of `slices` equal contiguous slices (the (batch, head) pairs of a [B, H, rows, D]
// tensor): max |got − want| / max(max |want| of the slice, kFlashSliceFloor · max |want|) ≤ tol;
// −∞ must match exactly; NaN in got fails.
inline ::testing::AssertionResult close_normalised(const std::vector<double>& got,
                                                   const std::vector<double>& want, int64_t slices,
                                                   double tol, const std::string& what) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure()
           << what << ": " << got.size() << " values, want " << want.size();
  if (slices < 1 || want.size() % static_cast<size_t>(slices) != 0)
    return ::testing::AssertionFailure()
           << what << ": " << want.size() << " values do not split into " << slices << " slices";
  const size_t per = want.size() / static_cast<size_t>(slices);
  auto max_abs = [&](size_t from, size_t to) {
    double m = 0;
    for (size_t i = from; i < to; ++i)
      if (std::isfinite(want[i])) m = std::max(m, std::abs(want[i]));
    return m;
  };
  const double floor = kFlashSliceFloor * max_abs(0, want.size());
  double worst_norm = 0, worst_scale = 0;
  size_t at = 0;
  for (size_t s0 = 0; s0 < want.size(); s0 += per) {
    const double scale = std::max(max_abs(s0, s0 + per), floor);
    double worst = 0;
    size_t slice_at = s0;
    for (size_t i = s0; i < s0 + per; ++i) {
      if (std::isnan(got[i]) || std::isnan(want[i]))
        return ::testing::AssertionFailure() << what << ": NaN at flat index " << i << " (got "
                                             << got[i] << ", want " << want[i] << ")";
      if (std::isinf(want[i]) || std::isinf(got[i])) {
        if (got[i] != want[i])
          return ::testing::AssertionFailure()
                 << what << ": " << got[i] << " at flat index " << i << ", want " << want[i];
        continue;
      }
      const double err = std::abs(got[i] - want[i]);
      if (err > worst) worst = err, slice_at = i;
    }
    // An all-zero tensor has no scale at all: then the error is absolute.
    const double norm = scale > 0 ? worst / scale : worst;
    if (norm > worst_norm || s0 == 0) worst_norm = norm, worst_scale = scale, at = slice_at;
  }
  if (std::getenv("ATTNLAB_TEST_VERBOSE"))
    std::printf("  %-60s normalised max error %.2e (worst slice %zu of %lld)\n", what.c_str(),
                worst_norm, at / per, static_cast<long long>(slices));
  if (worst_norm <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": normalised max error " << worst_norm << " > " << tol << " at flat index "
         << at << " (got " << got[at] << ", want " << want[at] << ", slice " << at / per << " of "
         << slices << ", its scale " << worst_scale << ")";
}

inline ::testing::AssertionResult close_abs(const std::vector<double>& got,
                                            const std::vector<double>& want, double atol,
                                            const std::string& what) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << what << ": " << got.size() << " values, want "
                                         << want.size();
  for (size_t i = 0; i < got.size(); ++i) {
    const bool ok = (std::isinf(want[i]) || std::isinf(got[i])) ? got[i] == want[i]
                                                                  : std::abs(got[i] - want[i]) <= atol;
    if (!ok)
      return ::testing::AssertionFailure() << what << ": got " << got[i] << " at flat index " << i
                                           << ", want " << want[i] << " (atol " << atol << ")";
  }
  return ::testing::AssertionSuccess();
}

// The flash kernels through the attention op on CUDA tensors (device 0: a GPU, or the emulated
// device in an emu_ test binary): O, lse and the gradients of the recorded backward.
struct FlashRun {
  std::vector<double> o, lse, dq, dk, dv;
};

inline Tensor to_device_bf16(const Tensor& x, bool grad) {
  Tensor t = x.to(DType::BF16).to(Device::cuda(0));
  if (grad) t.set_requires_grad(true);
  return t;
}

inline FlashRun run_flash_on_device(const FlashInputs& in) {
  Tensor q = to_device_bf16(in.q, true), k = to_device_bf16(in.k, true),
         v = to_device_bf16(in.v, true);
  AttentionOut r = attention(q, k, v, in.spec);
  EXPECT_TRUE(r.out.device().is_cuda());
  EXPECT_EQ(r.out.dtype(), DType::BF16);
  FlashRun g;
  if (r.lse.defined()) {
    EXPECT_TRUE(r.lse.device().is_cuda());
    EXPECT_EQ(r.lse.dtype(), DType::F32);
    EXPECT_EQ(r.lse.shape(), (Shape{q.size(0), q.size(1), q.size(2)}));
    g.lse = r.lse.to_vector();
  }
  r.out.backward(to_device_bf16(in.dout, false));
  g.o = r.out.to_vector();
  g.dq = q.grad().to_vector();
  g.dk = k.grad().to_vector();
  g.dv = v.grad().to_vector();
  return g;
}

// Checks every output of a flash run against the reference.
inline void expect_flash_matches(const FlashCase& c, const FlashOutputs& want,
                                 const std::vector<double>& o, const std::vector<double>& lse,
                                 const std::vector<double>& dq, const std::vector<double>& dk,
                                 const std::vector<double>& dv) {
  const std::string n = c.name();
  const int64_t bh = c.B * c.H;
  EXPECT_TRUE(close_normalised(o, want.o.to_vector(), bh, kFlashTolOut, n + " O"));
  if (c.variant != AttentionVariant::Sigmoid) {
    EXPECT_TRUE(close_abs(lse, want.lse.to_vector(), kFlashTolLse, n + " lse"));
  }
  EXPECT_TRUE(close_normalised(dq, want.dq.to_vector(), bh, kFlashTolOut, n + " dq"));
  EXPECT_TRUE(close_normalised(dk, want.dk.to_vector(), bh, kFlashTolOut, n + " dk"));
  EXPECT_TRUE(close_normalised(dv, want.dv.to_vector(), bh, kFlashTolOut, n + " dv"));
}

inline void check_flash_case(const FlashCase& c) {
  SCOPED_TRACE(c.name());
  FlashInputs in = make_flash_inputs(c);
  FlashOutputs want = flash_reference(in);
  FlashRun got = run_flash_on_device(in);
  expect_flash_matches(c, want, got.o, got.lse, got.dq, got.dk, got.dv);
}

}  // namespace attn::testing
