// Every CUDA op against the CPU op on the same inputs (label gpu; each test skips without a
// device), in the style of ggml's test-backend-ops: for every op id of src/ops/op_ids.h except
// Attention (tests/test_gpu_attention.cpp), a table of cases runs forward and backward on the
// CPU in f32 and on CUDA in f32 and in bf16, with the same Philox inputs (the device fills give
// the CPU's numbers), a random seed gradient R, and compares the output and every input
// gradient. Then AdamW and clip_grad_norm on CUDA against the CPU, and a tiny DecoderLM trained
// 5 steps on each.
//
// Tolerances: |got − want| ≤ rtol·(|want| + rms(want)) for every element, where want is the CPU
// f32 result and rms its root mean square. NaN or ±inf on either side fails: no case here
// expects one (a masked softmax row must give 0), and two NaNs agreeing prove nothing.
//   f32   rtol = 1e-5. Both sides evaluate the same formulas in f32; they differ by summation
//         order (trees and splits on the device, serial loops on the CPU), FMA contraction and
//         1–2 ulp between libm's and CUDA's exp/log/tanh/pow. A sum's rounding error scales with
//         its terms, not with its result (which may cancel towards 0): hence the floor at the
//         tensor's RMS. For the sums here (≤ 5000 terms, random signs) the error is ~√n·2^-24
//         relative to the terms, ≤ 1e-6: a margin of 10.
//   bf16  rtol = 1e-2. The inputs (and R) are rounded to bf16 once and the CPU reference runs
//         in f32 on those same rounded values, so the device's error is only its own bf16
//         roundings: one per stored result (2^-9 ≈ 0.2% relative) plus one per bf16
//         intermediate the op's backward reads (e.g. softmax's y). Every case here has at most
//         three such roundings on any path (≤ 0.6%), except where widened below with the reason.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <set>
#include <sstream>

#include "autograd/node.h"
#include "models/lm/lm.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "test_util.h"

using namespace attn;

#define SKIP_WITHOUT_GPU() \
  if (!cuda_available_for_tests()) GTEST_SKIP() << "no CUDA device visible: GPU test skipped"

namespace {

constexpr double kF32Rtol = 1e-5;
constexpr double kBf16Rtol = 1e-2;

const Device kCuda = Device::cuda(0);

// |got − want| ≤ rtol·(|want| + rms(want)) everywhere, all finite; names the worst element.
::testing::AssertionResult close_to(const Tensor& got, const Tensor& want, double rtol) {
  if (got.shape() != want.shape())
    return ::testing::AssertionFailure() << "shapes differ: " << shape_str(got.shape()) << " vs "
                                         << shape_str(want.shape());
  std::vector<double> a = got.to_vector(), b = want.to_vector();
  double ss = 0;
  int64_t finite = 0;
  for (double v : b) {
    if (!std::isfinite(v)) continue;
    ss += v * v;
    ++finite;
  }
  const double rms = finite ? std::sqrt(ss / static_cast<double>(finite)) : 0.0;
  double worst = -1;
  size_t at = 0, bad = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i]))
      return ::testing::AssertionFailure() << "non-finite value at flat index " << i << ": got "
                                           << a[i] << ", want " << b[i];
    const double err = std::abs(a[i] - b[i]), lim = rtol * (std::abs(b[i]) + rms);
    const double ratio = lim > 0 ? err / lim : (err > 0 ? INFINITY : 0);
    if (!(err <= lim)) ++bad;
    if (!(ratio <= worst)) {
      worst = ratio;
      at = i;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << a.size() << " elements off; worst at flat index " << at
         << ": got " << a[at] << ", want " << b[at] << " (rtol " << rtol << ", rms " << rms
         << ", error/limit " << worst << ")";
}

// An integer tensor (ids, targets, masks) on `like`'s device.
Tensor ints_like(const Tensor& like, const std::vector<int64_t>& v, const Shape& s,
                 DType dt = DType::I64) {
  Tensor t = attn::testing::ids_tensor(v, s, dt);
  return like.device().is_cuda() ? t.to(like.device()) : t;
}

struct OpCase {
  std::string name;
  std::vector<OpId> covers;
  std::vector<Shape> shapes;
  std::function<Tensor(const std::vector<Tensor>&)> fn;
  double lo = -1, hi = 1;
  double bf16_rtol = kBf16Rtol;
};

std::vector<OpCase> all_cases() {
  using V = std::vector<Tensor>;
  std::vector<OpCase> c;
  auto add_case = [&](std::string name, std::vector<OpId> covers, std::vector<Shape> shapes,
                      std::function<Tensor(const V&)> fn, double lo = -1, double hi = 1,
                      double bf16_rtol = kBf16Rtol) {
    c.push_back({std::move(name), std::move(covers), std::move(shapes), std::move(fn), lo, hi,
                 bf16_rtol});
  };
  // ---- matmul (cuBLASLt): every transpose, batched, a shared B, the Linear layout
  add_case("matmul", {OpId::Matmul}, {{13, 37}, {37, 19}}, [](const V& x) { return matmul(x[0], x[1]); });
  add_case("matmul_tA", {OpId::Matmul}, {{37, 13}, {37, 19}}, [](const V& x) { return matmul(x[0], x[1], true); });
  add_case("matmul_tB", {OpId::Matmul}, {{13, 37}, {19, 37}}, [](const V& x) { return matmul(x[0], x[1], false, true); });
  add_case("matmul_tAtB", {OpId::Matmul}, {{37, 13}, {19, 37}}, [](const V& x) { return matmul(x[0], x[1], true, true); });
  add_case("bmm", {OpId::Matmul}, {{3, 13, 37}, {3, 37, 19}}, [](const V& x) { return matmul(x[0], x[1]); });
  add_case("bmm_tAtB", {OpId::Matmul}, {{2, 3, 37, 13}, {2, 3, 19, 37}}, [](const V& x) { return matmul(x[0], x[1], true, true); });
  add_case("matmul_shared_b", {OpId::Matmul, OpId::Reshape}, {{2, 5, 37}, {37, 19}}, [](const V& x) { return matmul(x[0], x[1]); });
  add_case("matmul_plus_bias", {OpId::Matmul, OpId::Reshape, OpId::Add}, {{4, 6, 64}, {48, 64}, {48}},
           [](const V& x) { return add(matmul(x[0], x[1], false, true), x[2]); });
  // ---- linear: the bias added by cuBLASLt's epilogue; without a bias; a ragged width
  add_case("linear", {OpId::Linear}, {{4, 6, 64}, {48, 64}, {48}}, [](const V& x) { return linear(x[0], x[1], x[2]); });
  add_case("linear_no_bias", {OpId::Linear}, {{13, 37}, {19, 37}}, [](const V& x) { return linear(x[0], x[1]); });
  add_case("linear_ragged", {OpId::Linear}, {{3, 5, 33}, {65, 33}, {65}}, [](const V& x) { return linear(x[0], x[1], x[2]); });
  // The GELU in cuBLASLt's epilogue (bf16, 48 outputs); the BIAS GEMM and the GELU kernel in f32
  // and with 65 outputs, a width the emulated device has no epilogue algorithm for.
  add_case("linear_gelu", {OpId::Linear, OpId::Gelu}, {{4, 6, 64}, {48, 64}, {48}},
           [](const V& x) { return linear_gelu(x[0], x[1], x[2]); });
  add_case("linear_gelu_ragged", {OpId::Linear, OpId::Gelu}, {{3, 5, 33}, {65, 33}, {65}},
           [](const V& x) { return linear_gelu(x[0], x[1], x[2]); });
  // ---- conv2d: im2col + cuBLASLt + col2im; stride 1 and 2, padding, no bias, a kernel wider than
  // the stride, batch > 1. bf16: y has one rounding (the bias is a term of the GEMM), dx two
  // (each GEMM product Wᵀ·dy, then the col2im sum), dW one, db two (the sum over positions, then
  // over the batch): inside the default rtol. The chunked path: GpuOps.Conv2dInChunksMatchesTheCpu.
  auto conv = [](int64_t stride, int64_t padding) {
    return [=](const V& x) { return conv2d(x[0], x[1], x.size() > 2 ? x[2] : Tensor(), stride, padding); };
  };
  add_case("conv2d_s1_p0", {OpId::Conv2d}, {{2, 3, 6, 7}, {4, 3, 3, 2}, {4}}, conv(1, 0));
  add_case("conv2d_s2_p1", {OpId::Conv2d}, {{3, 2, 9, 8}, {5, 2, 3, 3}, {5}}, conv(2, 1));
  add_case("conv2d_s3_p2_no_bias", {OpId::Conv2d}, {{2, 2, 7, 10}, {3, 2, 2, 4}}, conv(3, 2));
  // The speech front end at a small size: [2, 1, 37, 80] -> 8 channels, 3 × 3 stride 2, then
  // 8 -> 8 on its output [2, 8, 18, 39]; each layer alone, then the two with a ReLU between.
  add_case("conv2d_speech_layer1", {OpId::Conv2d}, {{2, 1, 37, 80}, {8, 1, 3, 3}, {8}}, conv(2, 0));
  add_case("conv2d_speech_layer2", {OpId::Conv2d}, {{2, 8, 18, 39}, {8, 8, 3, 3}, {8}}, conv(2, 0));
  // bf16 through both layers: the input's gradient passes four bf16 roundings (layer 2's Wᵀ·dy,
  // its col2im sum, layer 1's Wᵀ·dy, its col2im sum), each relative to the terms of sums that
  // cancel (8 channels × up to 4 taps at stride 2: Σ|terms| ≈ 4.5·rms of the result), so a few
  // elements of 5,920 reach ~1.3e-2 of (|want| + rms) (measured on the emulated device); 3e-2.
  add_case("conv2d_speech_subsampling", {OpId::Conv2d, OpId::Relu},
           {{2, 1, 37, 80}, {8, 1, 3, 3}, {8}, {8, 8, 3, 3}, {8}},
           [](const V& x) { return conv2d(relu(conv2d(x[0], x[1], x[2], 2)), x[3], x[4], 2); }, -1, 1, 3e-2);
  // ---- broadcasting binary ops (and sum_to_shape in their backward)
  add_case("add_same", {OpId::Add}, {{4, 33}, {4, 33}}, [](const V& x) { return add(x[0], x[1]); });
  add_case("add_row", {OpId::Add}, {{256, 64}, {64}}, [](const V& x) { return add(x[0], x[1]); });
  add_case("add_row_split", {OpId::Add}, {{1100, 40}, {40}}, [](const V& x) { return add(x[0], x[1]); });
  add_case("add_col", {OpId::Add}, {{17, 5}, {17, 1}}, [](const V& x) { return add(x[0], x[1]); });
  add_case("add_0d", {OpId::Add}, {{3, 4}, {}}, [](const V& x) { return add(x[0], x[1]); });
  add_case("sub_both_broadcast", {OpId::Sub}, {{4, 1, 5}, {1, 3, 5}}, [](const V& x) { return sub(x[0], x[1]); });
  add_case("sub_scalar_lhs", {OpId::Sub}, {{}, {3, 2}}, [](const V& x) { return sub(x[0], x[1]); });
  add_case("mul_mid", {OpId::Mul}, {{2, 3, 5}, {2, 1, 5}}, [](const V& x) { return mul(x[0], x[1]); });
  add_case("mul_row", {OpId::Mul}, {{2, 3, 5}, {5}}, [](const V& x) { return mul(x[0], x[1]); });
  add_case("mul_outer", {OpId::Mul}, {{2, 1, 3, 1}, {1, 4, 1, 6}}, [](const V& x) { return mul(x[0], x[1]); });
  // db = sum(−(g/b)·(a/b)): four bf16 roundings on the path (g/b, a/b, the product, the sum).
  add_case("div_col", {OpId::Div}, {{3, 4}, {3, 1}}, [](const V& x) { return div(x[0], x[1]); }, 0.5, 2, 2e-2);
  add_case("div_0d", {OpId::Div}, {{3, 4}, {}}, [](const V& x) { return div(x[0], x[1]); }, 0.5, 2, 2e-2);
  add_case("scalar_overloads", {OpId::Add, OpId::Mul}, {{5, 7}}, [](const V& x) { return mul(add(x[0], 2.5), -1.5); });
  // x used twice: the engine accumulates the device gradients with add(). x > 0: no
  // cancellation in x² + x or in its gradient g·(2x + 1) for the bf16 roundings to be large against.
  add_case("accumulate", {OpId::Mul, OpId::Add}, {{6, 5}}, [](const V& x) { return add(mul(x[0], x[0]), x[0]); }, 0.2, 1);
  // ---- unary
  add_case("neg", {OpId::Neg}, {{1031}}, [](const V& x) { return neg(x[0]); });
  add_case("exp", {OpId::Exp}, {{1031}}, [](const V& x) { return exp(x[0]); });
  add_case("log", {OpId::Log}, {{1031}}, [](const V& x) { return log(x[0]); }, 0.2, 3);
  add_case("sqrt", {OpId::Sqrt}, {{1031}}, [](const V& x) { return sqrt(x[0]); }, 0.2, 3);
  add_case("rsqrt", {OpId::Rsqrt}, {{1031}}, [](const V& x) { return rsqrt(x[0]); }, 0.2, 3);
  add_case("pow", {OpId::Pow}, {{1031}}, [](const V& x) { return pow(x[0], 2.5); }, 0.2, 3);
  add_case("tanh", {OpId::Tanh}, {{1031}}, [](const V& x) { return tanh(x[0]); }, -3, 3);
  add_case("sigmoid", {OpId::Sigmoid}, {{1031}}, [](const V& x) { return sigmoid(x[0]); }, -4, 4);
  add_case("relu", {OpId::Relu}, {{1031}}, [](const V& x) { return relu(x[0]); });
  add_case("gelu", {OpId::Gelu}, {{33, 31}}, [](const V& x) { return gelu(x[0]); }, -4, 4);
  add_case("silu", {OpId::Silu}, {{33, 31}}, [](const V& x) { return silu(x[0]); }, -4, 4);
  add_case("round", {OpId::Round}, {{1031}}, [](const V& x) { return round(x[0]); }, -3, 3);
  // ---- reductions: both layouts, with and without the split into partial sums
  add_case("sum_axis", {OpId::Sum}, {{2, 3, 5}}, [](const V& x) { return sum(x[0], 1); });
  add_case("sum_last_split", {OpId::Sum}, {{3, 5000}}, [](const V& x) { return sum(x[0], -1); });
  add_case("sum_first_split", {OpId::Sum}, {{3000, 40}}, [](const V& x) { return sum(x[0], 0); });
  add_case("sum_all", {OpId::Sum, OpId::Reshape}, {{37, 29}}, [](const V& x) { return sum(x[0]); });
  add_case("mean_axis_keep", {OpId::Mean}, {{3, 5}}, [](const V& x) { return mean(x[0], 0, true); });
  add_case("mean_all_split", {OpId::Mean, OpId::Reshape}, {{9000}}, [](const V& x) { return mean(x[0]); });
  add_case("max_last", {OpId::Max}, {{3, 7}}, [](const V& x) { return max(x[0], -1); });
  add_case("max_last_long", {OpId::Max}, {{4, 1000}}, [](const V& x) { return max(x[0], -1); });
  add_case("max_first", {OpId::Max}, {{5, 3}}, [](const V& x) { return max(x[0], 0, true); });
  add_case("max_mid", {OpId::Max}, {{4, 6, 5}}, [](const V& x) { return max(x[0], 1); });
  // ---- softmax family
  add_case("softmax", {OpId::Softmax}, {{3, 7}}, [](const V& x) { return softmax(x[0]); }, -3, 3);
  add_case("softmax_long", {OpId::Softmax}, {{5, 3000}}, [](const V& x) { return softmax(x[0]); }, -3, 3);
  // The backward reads exp(y) of bf16 log-probabilities: y's rounding |y|·2^-9 (≈ 0.01 at
  // |y| ≈ 5) is a relative error of exp(y); bounded by max p·|log p|·2^-9·|Σg| ≈ 0.6% of rms(dx).
  add_case("log_softmax", {OpId::LogSoftmax}, {{3, 7}}, [](const V& x) { return log_softmax(x[0]); }, -3, 3, 2e-2);
  // A fully masked row gives zeros (not NaN), with a zero gradient.
  add_case("softmax_masked_rows", {OpId::Softmax, OpId::MaskedFill}, {{3, 6}}, [](const V& x) {
    Tensor m = ints_like(x[0], {1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1}, {3, 6}, DType::I32);
    return softmax(masked_fill(x[0], m, -std::numeric_limits<double>::infinity()));
  }, -3, 3);
  // ---- fused cross-entropy: device and host targets, i64 and i32, ignored rows, a wide row
  add_case("cross_entropy", {OpId::CrossEntropy}, {{5, 7}}, [](const V& x) {
    return cross_entropy(x[0], ints_like(x[0], {1, -100, 6, 0, 3}, {5}));
  }, -3, 3);
  add_case("cross_entropy_wide_host_i32", {OpId::CrossEntropy}, {{37, 2500}}, [](const V& x) {
    std::vector<int64_t> t(37);
    for (int64_t i = 0; i < 37; ++i) t[i] = i % 5 == 3 ? -100 : (i * 7919) % 2500;
    return cross_entropy(x[0], attn::testing::ids_tensor(t, {37}, DType::I32));
  }, -3, 3);
  add_case("cross_entropy_all_ignored", {OpId::CrossEntropy}, {{3, 4}}, [](const V& x) {
    return cross_entropy(x[0], ints_like(x[0], {-1, -1, -1}, {3}), -1);
  });
  // ---- CTC on raw log-probability-like inputs (tests/test_gpu_ctc.cpp has the edge cases)
  add_case("ctc_loss", {OpId::CtcLoss}, {{2, 6, 5}}, [](const V& x) {
    return ctc_loss(x[0], {1, 2, 2, 3}, {3, 1}, {6, 4});
  }, -3, 0);
  // ---- norms: odd widths, and enough rows for the split parameter-gradient sums
  add_case("layer_norm", {OpId::LayerNorm}, {{3, 7}, {7}, {7}}, [](const V& x) { return layer_norm(x[0], x[1], x[2]); });
  add_case("layer_norm_wide", {OpId::LayerNorm}, {{300, 96}, {96}, {96}}, [](const V& x) { return layer_norm(x[0], x[1], x[2]); });
  add_case("rms_norm", {OpId::RmsNorm}, {{2, 3, 5}, {5}}, [](const V& x) { return rms_norm(x[0], x[1]); });
  add_case("rms_norm_wide", {OpId::RmsNorm}, {{1000, 160}, {160}}, [](const V& x) { return rms_norm(x[0], x[1]); });
  // ---- embedding: repeated ids (the scatter-add must sum them); device i64 and host i32 ids
  add_case("embedding", {OpId::Embedding}, {{6, 3}}, [](const V& x) {
    return embedding(x[0], ints_like(x[0], {4, 0, 2, 4, 5, 0}, {2, 3}));
  });
  add_case("embedding_host_i32", {OpId::Embedding}, {{50, 24}}, [](const V& x) {
    std::vector<int64_t> ids(200);
    for (int64_t i = 0; i < 200; ++i) ids[i] = (i * i + 3 * i) % 50;
    return embedding(x[0], attn::testing::ids_tensor(ids, {4, 50}, DType::I32));
  });
  // ---- shape ops
  add_case("reshape", {OpId::Reshape}, {{2, 6}}, [](const V& x) { return exp(reshape(x[0], {3, -1})); });
  add_case("permute", {OpId::Permute}, {{2, 3, 5}}, [](const V& x) { return permute(x[0], {2, 0, 1}); });
  add_case("permute_heads", {OpId::Permute}, {{2, 7, 4, 16}}, [](const V& x) { return permute(x[0], {0, 2, 1, 3}); });
  add_case("transpose", {OpId::Permute}, {{2, 3, 5}}, [](const V& x) { return transpose(x[0], 0, 2); });
  // concat's backward slices g without recording Slice nodes: the cases claim only Concat.
  add_case("concat", {OpId::Concat}, {{2, 3}, {2, 1}, {2, 4}}, [](const V& x) {
    return concat({x[0], x[1], x[2]}, 1);
  });
  add_case("concat_rows", {OpId::Concat}, {{4, 8}, {2, 8}}, [](const V& x) {
    return concat({x[0], x[1]}, 0);
  });
  add_case("slice", {OpId::Slice}, {{3, 7}}, [](const V& x) { return slice(x[0], 1, 2, 5); });
  // A scalar result: both terms positive, so bf16 roundings are relative to the result.
  add_case("split", {OpId::Slice, OpId::Sum, OpId::Mul, OpId::Exp}, {{7, 2}}, [](const V& x) {
    auto p = split(x[0], {3, 4}, 0);
    return add(sum(mul(p[0], p[0])), sum(exp(p[1])));
  });
  // ---- dropout: the same Philox mask on both devices
  add_case("dropout", {OpId::Dropout}, {{4, 9}}, [](const V& x) {
    Generator g(99);
    return dropout(x[0], 0.3, true, g);
  });
  add_case("dropout_large", {OpId::Dropout}, {{64, 1000}}, [](const V& x) {
    Generator g(7);
    g.take(12345);  // a non-zero counter offset
    return dropout(x[0], 0.1, true, g);
  });
  // ---- select
  add_case("where", {OpId::Where}, {{2, 3}, {2, 3}}, [](const V& x) {
    return where(ints_like(x[0], {1, 0, 0, 1, 1, 0}, {2, 3}, DType::I32), x[0], x[1]);
  });
  add_case("where_host_f32_cond", {OpId::Where}, {{2, 3}, {2, 3}}, [](const V& x) {
    return where(from_vector({0.5, 0, -0.0, 2, 0, -1}, {2, 3}), x[0], x[1]);
  });
  add_case("masked_fill", {OpId::MaskedFill}, {{2, 3}}, [](const V& x) {
    return masked_fill(x[0], ints_like(x[0], {0, 1, 0, 0, 0, 1}, {2, 3}, DType::I32), -5.0);
  });
  // ---- rope
  add_case("rope", {OpId::Rope}, {{2, 3, 5, 6}}, [](const V& x) { return rope(x[0], 100.0, 2); });
  add_case("rope_heads", {OpId::Rope}, {{2, 4, 9, 64}}, [](const V& x) { return rope(x[0]); });
  // ---- cast: through bf16 and f32 and back to the input's dtype. An f32 input rounds to bf16
  // on both sides (round to nearest even on the host and on the device: equal, so the f32
  // tolerance holds); a bf16 input widens to f32 exactly and rounds 2x back once. The gradient
  // comes back through the same casts, converted on the device.
  add_case("cast_round_trip", {OpId::Cast, OpId::Mul}, {{7, 33}}, [](const V& x) {
    Tensor wide = cast(cast(x[0], DType::BF16), DType::F32);
    return cast(mul(wide, 2.0), x[0].dtype());
  });
  return c;
}

struct GpuCase {
  OpCase c;
  DType dt;
};
void PrintTo(const GpuCase& g, std::ostream* os) { *os << g.c.name << " " << dtype_name(g.dt); }

std::vector<GpuCase> gpu_cases() {
  std::vector<GpuCase> out;
  for (const OpCase& c : all_cases()) {
    out.push_back({c, DType::F32});
    out.push_back({c, DType::BF16});
  }
  return out;
}

void run_case(const OpCase& c, DType dt, uint64_t seed) {
  const double rtol = dt == DType::F32 ? kF32Rtol : c.bf16_rtol;
  std::vector<Tensor> cpu_in, dev_in;
  for (size_t i = 0; i < c.shapes.size(); ++i) {
    Generator gc(seed + 17 * i), gd(seed + 17 * i);
    Tensor h = uniform(c.shapes[i], gc, {DType::F32}, c.lo, c.hi);
    Tensor d = uniform(c.shapes[i], gd, {DType::F32, kCuda}, c.lo, c.hi);  // device Philox fill
    ASSERT_EQ(h.to_vector(), d.to_vector()) << c.name << ": input " << i << " differs";
    if (dt == DType::BF16) {  // both sides see the same rounded values
      h = h.to(DType::BF16).to(DType::F32);
      d = d.to(DType::BF16);
    }
    cpu_in.push_back(h.set_requires_grad(true));
    dev_in.push_back(d.set_requires_grad(true));
  }
  Tensor want = c.fn(cpu_in);
  Tensor got = c.fn(dev_in);
  ASSERT_TRUE(got.device().is_cuda()) << c.name << ": output not on the device";
  ASSERT_EQ(got.dtype(), dt) << c.name;
  EXPECT_TRUE(close_to(got, want, rtol)) << c.name << " (" << dtype_name(dt) << "): forward";

  Generator rg(seed + 1000);
  Tensor R = randn(want.shape(), rg, {DType::F32});
  if (dt == DType::BF16) R = R.to(DType::BF16).to(DType::F32);
  want.backward(R);
  got.backward(R.to(dt).to(kCuda));
  for (size_t i = 0; i < cpu_in.size(); ++i) {
    Tensor gw = cpu_in[i].grad(), gg = dev_in[i].grad();
    ASSERT_TRUE(gw.defined()) << c.name << ": input " << i << " got no CPU gradient";
    ASSERT_TRUE(gg.defined()) << c.name << ": input " << i << " got no CUDA gradient";
    EXPECT_TRUE(gg.device().is_cuda()) << c.name << ": gradient " << i << " not on the device";
    EXPECT_EQ(gg.dtype(), dt) << c.name << ": gradient " << i;
    EXPECT_TRUE(close_to(gg, gw, rtol)) << c.name << " (" << dtype_name(dt) << "): gradient of input " << i;
  }
}

class GpuOp : public ::testing::TestWithParam<GpuCase> {};

TEST_P(GpuOp, MatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  run_case(GetParam().c, GetParam().dt, 4321);
}

INSTANTIATE_TEST_SUITE_P(AllOps, GpuOp, ::testing::ValuesIn(gpu_cases()), [](const auto& info) {
  return info.param.c.name + "_" + dtype_name(info.param.dt);
});

std::set<OpId> recorded_ops(const Tensor& y) {
  std::set<OpId> seen;
  std::vector<std::shared_ptr<Node>> stack{y.grad_fn()};
  while (!stack.empty()) {
    auto n = stack.back();
    stack.pop_back();
    if (!n) continue;
    seen.insert(n->op);
    for (const Edge& e : n->inputs)
      if (e.node) stack.push_back(e.node);
  }
  return seen;
}

}  // namespace

// Every op id except Attention has a case here, and every case records the ops it claims.
TEST(GpuOpRegistry, EveryOpHasACudaCase) {
  SKIP_WITHOUT_GPU();
  std::set<OpId> covered;
  for (const OpCase& c : all_cases()) {
    std::vector<Tensor> in;
    for (size_t i = 0; i < c.shapes.size(); ++i)
      in.push_back(attn::testing::rand_tensor(c.shapes[i], 5 + i, c.lo, c.hi, DType::F32)
                       .to(kCuda)
                       .set_requires_grad(true));
    std::set<OpId> seen = recorded_ops(c.fn(in));
    for (OpId op : c.covers) {
      EXPECT_TRUE(seen.count(op)) << c.name << " does not record " << op_name(op) << " on CUDA";
      covered.insert(op);
    }
  }
  for (int i = 0; i < op_count(); ++i) {
    OpId op = op_by_index(i);
    if (op == OpId::Attention) continue;  // tests/test_gpu_attention.cpp
    EXPECT_TRUE(covered.count(op)) << "op '" << op_name(op) << "' has no case in test_gpu_ops.cpp";
  }
}

// conv2d with a column budget that fits two samples (f32; four in bf16) of a batch of five: the
// forward's batched GEMM over a chunk, dy permuted for a chunk's dW and used as it is for a
// chunk of one, dW's partial sums added in f32 across chunks (then rounded once in bf16).
TEST(GpuOps, Conv2dInChunksMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  // K = 2·3·3 = 18, P = 5·4 = 20: the backward needs (K + Cout)·P = 420 values per sample.
  const OpCase c{"conv2d_chunked", {OpId::Conv2d}, {{5, 2, 9, 8}, {3, 2, 3, 3}, {3}},
                 [](const std::vector<Tensor>& x) { return conv2d(x[0], x[1], x[2], 2, 1); }};
  struct Budget {  // restored however the test ends
    int64_t saved = set_conv2d_column_budget(2 * 420 * 4);
    ~Budget() { set_conv2d_column_budget(saved); }
  } budget;
  for (DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    run_case(c, dt, 99);
  }
}

// The composed attention (primitive ops only) on CUDA in f32, every variant, with causal +
// padding + ALiBi and N != M: an end-to-end check of the primitives chained as a model does.
TEST(GpuOps, ComposedAttentionMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  for (auto v : {AttentionVariant::Softmax, AttentionVariant::Sigmoid, AttentionVariant::Softmax1}) {
    for (bool masked : {false, true}) {
      AttentionSpec spec;
      spec.variant = v;
      spec.sigmoid_bias = -std::log(7.0);
      if (masked) {
        spec.causal = true;
        spec.key_padding_lengths = {7, 3};
        spec.alibi_slopes = {0.5, 0.125};
      }
      OpCase c{std::string("attention_composed_") + variant_name(v) + (masked ? "_masked" : ""),
               {},
               {{2, 2, 5, 8}, {2, 2, 7, 8}, {2, 2, 7, 8}},
               [spec](const std::vector<Tensor>& x) { return attention_composed(x[0], x[1], x[2], spec); }};
      run_case(c, DType::F32, 99);
    }
  }
}

// ---- optimizer ----------------------------------------------------------------------------

namespace {

ParamList make_params(Device dev) {
  Generator g(11);
  ParamList ps;
  const std::vector<std::pair<std::string, Shape>> specs = {{"w", {7, 5}}, {"b", {5}}, {"k", {3, 4, 6}}};
  for (const auto& [name, shape] : specs) {
    Tensor t = randn(shape, g, {DType::F32}, 0.0, 0.5);
    if (dev.is_cuda()) t = t.to(dev);
    ps.push_back({name, t.set_requires_grad(true), name != "b"});
  }
  return ps;
}

// Gives every param (or every one but `skip`) the same fresh random gradient on both lists.
void set_grads(ParamList& cpu, ParamList& dev, uint64_t seed, const std::string& skip = "") {
  Generator g(seed);
  for (size_t i = 0; i < cpu.size(); ++i) {
    cpu[i].value.zero_grad();
    dev[i].value.zero_grad();
    if (cpu[i].name == skip) continue;
    Tensor gr = randn(cpu[i].value.shape(), g, {DType::F32});
    cpu[i].value.set_grad(gr);
    dev[i].value.set_grad(gr.to(dev[i].value.device()));
  }
}

}  // namespace

TEST(GpuOptim, AdamWFiveStepsMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  ParamList cpu = make_params(Device::cpu()), dev = make_params(kCuda);
  AdamWConfig cfg{1e-2, 0.9, 0.95, 1e-8, 0.1};
  AdamW oc(cpu, cfg), od(dev, cfg);
  for (int step = 0; step < 5; ++step) {
    set_grads(cpu, dev, 100 + step, step == 2 ? "k" : "");  // a param without grad is skipped
    const double lr = 1e-2 * (1.0 - 0.1 * step);
    oc.step(lr);
    od.step(lr);
    for (size_t i = 0; i < cpu.size(); ++i) {
      EXPECT_TRUE(dev[i].value.device().is_cuda());
      EXPECT_TRUE(close_to(dev[i].value, cpu[i].value, kF32Rtol))
          << "step " << step << ", param " << cpu[i].name;
    }
  }
  // Save on the device, load into a fresh device optimizer: the next step is the same.
  std::stringstream ss;
  od.save(ss);
  ParamList dev2 = make_params(kCuda);
  for (size_t i = 0; i < dev.size(); ++i) dev2[i].value = dev[i].value.clone().set_requires_grad(true);
  AdamW od2(dev2, cfg);
  od2.load(ss);
  set_grads(cpu, dev, 200);
  for (size_t i = 0; i < dev.size(); ++i) dev2[i].value.set_grad(dev[i].value.grad().clone());
  oc.step(1e-3);
  od.step(1e-3);
  od2.step(1e-3);
  for (size_t i = 0; i < cpu.size(); ++i) {
    EXPECT_TRUE(close_to(dev[i].value, cpu[i].value, kF32Rtol)) << "step 6, param " << cpu[i].name;
    EXPECT_EQ(dev2[i].value.to_vector(), dev[i].value.to_vector()) << "after load, " << cpu[i].name;
  }
}

// Mixed precision's bf16 working copies (ops/cast.cpp): the first cast of a CUDA parameter keeps
// its result; AdamW rewrites that copy as bf16(new master) in its own pass, so the next cast
// returns it without converting (same storage) and bit-identical to converting the master; any
// other write to the master makes the copy stale, and the cast converts again.
TEST(GpuOptim, AdamWWritesTheBf16WorkingCopy) {
  SKIP_WITHOUT_GPU();
  ParamList cpu = make_params(Device::cpu()), dev = make_params(kCuda);
  AdamW opt(dev, {1e-2, 0.9, 0.95, 1e-8, 0.1});
  std::vector<const void*> copies;
  for (const Param& p : dev) copies.push_back(cast(p.value, DType::BF16).raw_data());
  for (int step = 0; step < 3; ++step) {
    set_grads(cpu, dev, 300 + step, step == 1 ? "k" : "");  // a skipped param keeps its copy
    opt.step(1e-2);
    for (size_t i = 0; i < dev.size(); ++i) {
      Tensor w = cast(dev[i].value, DType::BF16);
      EXPECT_EQ(w.raw_data(), copies[i]) << dev[i].name << ": the cast converted again";
      const Tensor want = dev[i].value.detach().to(DType::BF16);  // a fresh conversion
      EXPECT_EQ(w.to_vector(), want.to_vector()) << "step " << step << ", " << dev[i].name;
    }
  }
  // A write that is not AdamW's: the copy is stale and the cast converts the new value.
  nn::init_constant(dev[0].value, 0.375);
  Tensor w = cast(dev[0].value, DType::BF16);
  EXPECT_NE(w.raw_data(), copies[0]);
  for (double x : w.to_vector()) EXPECT_EQ(x, 0.375);
  // The gradient still reaches the f32 master through the cast.
  dev[0].value.zero_grad();
  sum(mul(w, w)).backward();
  ASSERT_TRUE(dev[0].value.grad().defined());
  EXPECT_EQ(dev[0].value.grad().dtype(), DType::F32);
  for (double g : dev[0].value.grad().to_vector()) EXPECT_EQ(g, 0.75);
}

TEST(GpuOptim, ClipGradNormMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  for (DType dt : {DType::F32, DType::BF16}) {
    ParamList cpu = make_params(Device::cpu()), dev = make_params(kCuda);
    set_grads(cpu, dev, 7);
    if (dt == DType::BF16)
      for (size_t i = 0; i < cpu.size(); ++i) {  // the CPU reference sees the rounded values
        cpu[i].value.set_grad(cpu[i].value.grad().to(DType::BF16).to(DType::F32));
        dev[i].value.set_grad(dev[i].value.grad().to(DType::BF16));
      }
    EXPECT_TRUE(grads_finite(dev));
    // Squares of f32 values are exact in f64: only the f64 summation order differs.
    const double nc = clip_grad_norm(cpu, 0.5), nd = clip_grad_norm(dev, 0.5);
    EXPECT_NEAR(nd, nc, 1e-12 * nc) << dtype_name(dt);
    for (size_t i = 0; i < cpu.size(); ++i)
      EXPECT_TRUE(close_to(dev[i].value.grad(), cpu[i].value.grad(),
                           dt == DType::F32 ? kF32Rtol : kBf16Rtol))
          << dtype_name(dt) << ", clipped gradient of " << cpu[i].name;
    // Below the threshold nothing changes; a NaN makes grads_finite false and the norm NaN.
    std::vector<double> before = dev[0].value.grad().to_vector();
    clip_grad_norm(dev, 1e9);
    EXPECT_EQ(dev[0].value.grad().to_vector(), before);
    std::vector<double> v = cpu[1].value.grad().to_vector();
    v[2] = std::nan("");
    dev[1].value.set_grad(from_vector(v, {5}, {dt, kCuda}));
    EXPECT_FALSE(grads_finite(dev));
    EXPECT_TRUE(std::isnan(clip_grad_norm(dev, 0.5)));
  }
}

// ---- a tiny LM, 5 training steps ----------------------------------------------------------

TEST(GpuModel, TinyDecoderLmTrainsLikeTheCpu) {
  SKIP_WITHOUT_GPU();
  nn::ModelConfig c;
  c.vocab_size = 13;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 2;
  c.max_seq_len = 8;
  c.attention.position = nn::PositionKind::Rope;
  c.mlp = nn::MlpKind::Gelu;
  c.norm = nn::NormKind::Layer;
  models::DecoderLM cpu_model(c, 5), dev_model(c, 5);
  dev_model.to(kCuda);
  ParamList pc = cpu_model.parameters(), pd = dev_model.parameters();
  ASSERT_EQ(pc.size(), pd.size());
  for (size_t i = 0; i < pc.size(); ++i) {
    ASSERT_TRUE(pd[i].value.device().is_cuda()) << pd[i].name;
    ASSERT_TRUE(pd[i].value.requires_grad() && pd[i].value.is_leaf()) << pd[i].name;
    ASSERT_EQ(pd[i].value.to_vector(), pc[i].value.to_vector()) << pd[i].name;
  }
  AdamWConfig cfg{3e-3, 0.9, 0.95, 1e-8, 0.1};
  AdamW oc(pc, cfg), od(pd, cfg);
  const int64_t B = 3, T = c.max_seq_len;
  for (int step = 0; step < 5; ++step) {
    std::vector<int64_t> ids(B * T), targets(B * T);
    for (int64_t i = 0; i < B * T; ++i) {
      ids[i] = (i * 5 + step * 3 + i / T) % c.vocab_size;
      targets[i] = (ids[i] * 7 + 1) % c.vocab_size;
    }
    Tensor id_c = attn::testing::ids_tensor(ids, {B, T}), tg_c = attn::testing::ids_tensor(targets, {B, T});
    Tensor loss_c = cpu_model.loss(id_c, tg_c);
    Tensor loss_d = dev_model.loss(id_c.to(kCuda), tg_c.to(kCuda));
    ASSERT_TRUE(loss_d.device().is_cuda());
    EXPECT_NEAR(loss_d.item(), loss_c.item(), kF32Rtol * std::abs(loss_c.item())) << "step " << step;
    loss_c.backward();
    loss_d.backward();
    const double nc = clip_grad_norm(pc, 1.0), nd = clip_grad_norm(pd, 1.0);
    EXPECT_NEAR(nd, nc, kF32Rtol * nc) << "gradient norm, step " << step;
    oc.step(cfg.lr);
    od.step(cfg.lr);
    oc.zero_grad();
    od.zero_grad();
  }
}
