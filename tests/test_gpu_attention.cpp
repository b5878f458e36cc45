// The flash-attention kernels through the attention op on CUDA tensors (label gpu), against the
// f64 CPU op on the same bf16-rounded inputs: forward O and lse, and dq, dk, dv from the recorded
// backward. Every variant × mask {full, causal, key padding, causal + padding} × ALiBi {off, on}
// × head dim {64, 128}, on ragged shapes (N, M not multiples of the tiles, N < M and N > M, small
// and large batch × heads) and on exact tile multiples. Tolerances: tests/flash_check.h.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "flash_check.h"

using namespace attn;
using namespace attn::testing;

#define SKIP_WITHOUT_GPU() \
  if (!cuda_available_for_tests()) GTEST_SKIP() << "no CUDA device visible: GPU test skipped"

namespace {

enum class Mask { Full, Causal, Padding, CausalPadding };

struct MatrixParam {
  AttentionVariant variant;
  Mask mask;
  bool alibi;
  int64_t D;
};

std::string param_str(const MatrixParam& p) {
  const char* masks[] = {"full", "causal", "padding", "causal_padding"};
  return std::string(variant_name(p.variant)) + "_" + masks[static_cast<int>(p.mask)] +
         (p.alibi ? "_alibi" : "") + "_d" + std::to_string(p.D);
}
std::string param_name(const ::testing::TestParamInfo<MatrixParam>& info) {
  return param_str(info.param);
}
void PrintTo(const MatrixParam& p, std::ostream* os) { *os << param_str(p); }

std::vector<MatrixParam> all_params() {
  std::vector<MatrixParam> ps;
  for (AttentionVariant v :
       {AttentionVariant::Softmax, AttentionVariant::Sigmoid, AttentionVariant::Softmax1})
    for (Mask m : {Mask::Full, Mask::Causal, Mask::Padding, Mask::CausalPadding})
      for (bool alibi : {false, true})
        for (int64_t D : {64, 128}) ps.push_back({v, m, alibi, D});
  return ps;
}

class GpuAttention : public ::testing::TestWithParam<MatrixParam> {};

}  // namespace

TEST_P(GpuAttention, MatchesTheCpuOp) {
  SKIP_WITHOUT_GPU();
  const MatrixParam& p = GetParam();
  const bool causal = p.mask == Mask::Causal || p.mask == Mask::CausalPadding;
  const bool padding = p.mask == Mask::Padding || p.mask == Mask::CausalPadding;
  struct Shape4 {
    int64_t B, H, N, M;
  };
  // Small batch × heads with N < M and N > M (causal: rows with no visible key), large
  // batch × heads, exact tile multiples (the unmasked fast path when full), and
  // N = M = 129 and N = 64, M = 129 (causal: the last visible key, the first query that sees
  // a key tile, right at tile edges).
  for (Shape4 s : {Shape4{1, 2, 77, 200}, Shape4{2, 1, 200, 77}, Shape4{3, 16, 136, 100},
                   Shape4{2, 2, 256, 256}, Shape4{1, 3, 129, 129}, Shape4{1, 1, 64, 129}})
    check_flash_case({p.variant, p.D, s.B, s.H, s.N, s.M, causal, padding, p.alibi,
                      static_cast<uint64_t>(s.N * 7 + s.M)});
}

INSTANTIATE_TEST_SUITE_P(Matrix, GpuAttention, ::testing::ValuesIn(all_params()), param_name);

// Many K/V and query tiles per CTA (the pipelines' steady state), every variant, d = 128.
TEST(GpuAttentionLong, ThousandTokensCausalAlibi) {
  SKIP_WITHOUT_GPU();
  for (AttentionVariant v :
       {AttentionVariant::Softmax, AttentionVariant::Sigmoid, AttentionVariant::Softmax1})
    check_flash_case({v, 128, 1, 2, 1000, 1000, true, false, true, 7});
}

// softmax_1 on short rows of negative logits: lse = ln(1 + Σ e^x) ≥ 0 though every x < 0; a
// kernel without the +1 gives lse = ln Σ e^x < 0 here (about −10 at d 64, −20 at d 128). Not > 0:
// at d 128 the logits reach −20, e^−20 ≈ 2e-9 vanishes beside the 1 in f32, and lse is exactly
// 0 (the f64 reference, 2e-9, is within the lse tolerance). Found by the emulated device.
TEST(GpuAttentionSoftmax1, ShortRowsOfNegativeLogits) {
  SKIP_WITHOUT_GPU();
  for (int64_t D : {64, 128}) {
    FlashCase c{AttentionVariant::Softmax1, D, 1, 2, 3, 3, true, false, false, 41};
    FlashInputs in = make_flash_inputs(c);
    in.q = bf16_exact(mul(in.q, in.q));               // q >= 0
    in.k = bf16_exact(mul(mul(in.k, in.k), -1.0));    // k <= 0: every logit < 0
    FlashOutputs want = flash_reference(in);
    FlashRun got = run_flash_on_device(in);
    expect_flash_matches(c, want, got.o, got.lse, got.dq, got.dk, got.dv);
    for (double l : got.lse) {
      EXPECT_GE(l, 0.0);
      EXPECT_LT(l, std::log(4.0));
    }
  }
}

// The sink variant on the flash kernels (softmax_1's, starting each row at the head's sink logit):
// O, lse and dq, dk, dv within the flash tolerances of the f64 CPU op, and the sink's own
// gradient (from the lse and D in f32) to 1e-2 of its largest entry. Causal with padding, so
// some rows see few keys and the sink takes most of their mass; one head's sink is negative.
TEST(GpuAttentionSink, ForwardAndSinkGradient) {
  SKIP_WITHOUT_GPU();
  for (int64_t D : {64, 128}) {
    FlashCase c{AttentionVariant::Sink, D, 2, 3, 70, 133, true, true, false, 51};
    SCOPED_TRACE(c.name());
    FlashInputs in = make_flash_inputs(c);
    const Tensor sink = from_vector({2.0, -1.0, 0.25}, {3}, {DType::F64});  // exact in bf16
    // The f64 CPU reference, with the sink a leaf.
    Tensor q = in.q.clone().set_requires_grad(true), k = in.k.clone().set_requires_grad(true),
           v = in.v.clone().set_requires_grad(true), s = sink.clone().set_requires_grad(true);
    AttentionSpec spec = in.spec;
    spec.sink = s;
    AttentionOut r = attention(q, k, v, spec);
    r.out.backward(in.dout);
    // The device run: bf16 q, k, v and sink (a bf16 model's working copy of its f32 parameter).
    Tensor qd = to_device_bf16(in.q, true), kd = to_device_bf16(in.k, true), vd = to_device_bf16(in.v, true),
           sd = to_device_bf16(sink, true);
    AttentionSpec dspec = in.spec;
    dspec.sink = sd;
    AttentionOut g = attention(qd, kd, vd, dspec);
    ASSERT_TRUE(g.lse.defined());
    g.out.backward(to_device_bf16(in.dout, false));
    FlashOutputs want{r.out.detach(), r.lse, q.grad(), k.grad(), v.grad()};
    expect_flash_matches(c, want, g.out.to_vector(), g.lse.to_vector(), qd.grad().to_vector(), kd.grad().to_vector(),
                         vd.grad().to_vector());
    EXPECT_TRUE(close_normalised(sd.grad().to_vector(), s.grad().to_vector(), 1, kFlashTolOut, c.name() + " dsink"));
  }
}

// Sigmoid's two other biases on the flash kernels against the f64 CPU op: the learnable b_h (read
// per CTA; its gradient Σ dS reduced per warp and added per head with one atomic) and the per-row
// b_i = −ln n_i (computed per row in both kernels). O, dq, dk, dv within the flash tolerances,
// and ∂L/∂b_h to 1e-2 of its largest entry, as the sink's. Causal with padding (rows of few keys,
// where −ln n_i is far from −ln M), padding alone, and causal with N > M (rows that see nothing).
// spec.sigmoid_bias is 7 so that a kernel reading the fixed b gives P ≈ 1, an O(1) error.
TEST(GpuAttentionSigmoidBias, LearnableAndPerRowMatchTheCpuOp) {
  SKIP_WITHOUT_GPU();
  struct Shape {
    bool causal, padding;
    int64_t N, M;
  };
  for (int64_t D : {64, 128})
    for (bool learnable : {true, false})
      for (Shape sh : {Shape{true, true, 70, 133}, Shape{false, true, 77, 200}, Shape{true, false, 150, 90}}) {
        FlashCase c{AttentionVariant::Sigmoid, D, 2, 3, sh.N, sh.M, sh.causal, sh.padding, false, 81};
        SCOPED_TRACE(c.name() + (learnable ? " learnable bias" : " per-row bias"));
        FlashInputs in = make_flash_inputs(c);
        in.spec.sigmoid_bias = 7.0;
        in.spec.sigmoid_bias_per_row = !learnable;
        const Tensor bias = from_vector({-4.5, -3.25, -5.75}, {3}, {DType::F64});  // exact in bf16
        Tensor q = in.q.clone().set_requires_grad(true), k = in.k.clone().set_requires_grad(true),
               v = in.v.clone().set_requires_grad(true), b = bias.clone().set_requires_grad(true);
        AttentionSpec spec = in.spec;
        if (learnable) spec.sigmoid_bias_param = b;
        AttentionOut r = attention(q, k, v, spec);
        r.out.backward(in.dout);
        Tensor qd = to_device_bf16(in.q, true), kd = to_device_bf16(in.k, true), vd = to_device_bf16(in.v, true),
               bd = to_device_bf16(bias, true);
        AttentionSpec dspec = in.spec;
        if (learnable) dspec.sigmoid_bias_param = bd;
        AttentionOut g = attention(qd, kd, vd, dspec);
        g.out.backward(to_device_bf16(in.dout, false));
        FlashOutputs want{r.out.detach(), r.lse, q.grad(), k.grad(), v.grad()};
        expect_flash_matches(c, want, g.out.to_vector(), {}, qd.grad().to_vector(), kd.grad().to_vector(),
                             vd.grad().to_vector());
        if (learnable) {
          ASSERT_TRUE(bd.grad().defined());
          EXPECT_EQ(bd.grad().dtype(), DType::BF16);
          EXPECT_TRUE(close_normalised(bd.grad().to_vector(), b.grad().to_vector(), 1, kFlashTolOut,
                                       c.name() + " dbias"));
        }
      }
}

// The sigmoid forward with its reciprocal on the FMA pipe (ATTNLAB_SIGMOID_RCP=fma; relative
// error ≤ 1.05e-4 on P, far inside the bf16 tolerance): the matrix's hardest masks at both head
// dims, and fully masked rows, which must still give O = 0 exactly.
TEST(GpuAttentionSigmoid, ReciprocalOnTheFmaPipe) {
  SKIP_WITHOUT_GPU();
  struct Env {
    Env() { setenv("ATTNLAB_SIGMOID_RCP", "fma", 1); }
    ~Env() { unsetenv("ATTNLAB_SIGMOID_RCP"); }
  } env;
  for (int64_t D : {64, 128}) {
    check_flash_case({AttentionVariant::Sigmoid, D, 2, 3, 77, 200, true, true, true, 71});
    check_flash_case({AttentionVariant::Sigmoid, D, 1, 2, 256, 256, false, false, false, 72});
    FlashCase c{AttentionVariant::Sigmoid, D, 2, 1, 90, 20, true, true, false, 73};
    FlashInputs in = make_flash_inputs(c);
    in.spec.key_padding_lengths = {0, 20};  // batch 0 sees nothing
    FlashOutputs want = flash_reference(in);
    FlashRun got = run_flash_on_device(in);
    expect_flash_matches(c, want, got.o, got.lse, got.dq, got.dk, got.dv);
    for (int64_t i = 0; i < c.N * D; ++i)
      ASSERT_EQ(got.o[i], 0.0) << c.name() << " batch 0, flat " << i;
    // Batch 1: rows i < N − M = 70 see no key but share their tiles with rows that do, so their
    // (masked) entries go through the FMA-pipe sigmoid and must come out exactly 0.
    for (int64_t i = 0; i < 70 * D; ++i)
      ASSERT_EQ(got.o[c.N * D + i], 0.0) << c.name() << " batch 1, flat " << i;
  }
}

// Rows with no visible key (causal with N > M; a batch whose key length is 0): O = 0 exactly,
// lse = −∞ (softmax) or 0 (softmax_1), no NaN anywhere, zero gradients for those rows.
TEST(GpuAttentionMasks, FullyMaskedRowsGiveZerosNotNaN) {
  SKIP_WITHOUT_GPU();
  for (AttentionVariant var :
       {AttentionVariant::Softmax, AttentionVariant::Sigmoid, AttentionVariant::Softmax1})
    for (int64_t D : {64, 128}) {
      FlashCase c{var, D, 2, 1, 90, 20, true, true, false, 51};
      FlashInputs in = make_flash_inputs(c);
      in.spec.key_padding_lengths = {0, 20};
      FlashOutputs want = flash_reference(in);
      FlashRun got = run_flash_on_device(in);
      expect_flash_matches(c, want, got.o, got.lse, got.dq, got.dk, got.dv);
      const int64_t per_batch = c.N * D;
      for (int64_t i = 0; i < per_batch; ++i) {
        ASSERT_EQ(got.o[i], 0.0) << c.name() << " batch 0, flat " << i;
        ASSERT_EQ(got.dq[i], 0.0) << c.name() << " batch 0, flat " << i;
      }
      for (int64_t i = 0; i < 70 * D; ++i) ASSERT_EQ(got.o[per_batch + i], 0.0) << c.name();
      if (var != AttentionVariant::Sigmoid) {
        for (int64_t i = 0; i < c.N; ++i)
          EXPECT_EQ(got.lse[i], var == AttentionVariant::Softmax ? -INFINITY : 0.0) << c.name();
      }
    }
}

// Head dims the flash kernels do not take (here 32) fall back to the composed op in bf16, which
// returns no LSE; f32 on CUDA always takes the composed op. bf16 bound: the composed op stores the
// scores (|s| up to ~3 here) and P in bf16, ~2^-9 relative each, so the output is off by ~1%
// normwise; 3e-2 leaves a margin of ~3 while a wrong mask is an O(1) error.
TEST(GpuAttentionFallback, OtherHeadDimsAndF32UseTheComposedOp) {
  SKIP_WITHOUT_GPU();
  AttentionSpec causal;
  causal.causal = true;
  Tensor q = rand_tensor({2, 2, 40, 32}, 1), k = rand_tensor({2, 2, 40, 32}, 2), v = rand_tensor({2, 2, 40, 32}, 3);
  AttentionOut got = attention(to_device_bf16(q, false), to_device_bf16(k, false),
                               to_device_bf16(v, false), causal);
  EXPECT_FALSE(got.lse.defined()) << "head dim 32 went to a flash kernel";
  ASSERT_EQ(got.out.dtype(), DType::BF16);
  auto rounded = [](const Tensor& t) { return t.to(DType::BF16).to(DType::F64); };  // what the GPU saw
  std::vector<double> g = got.out.to_vector(), w = attention(rounded(q), rounded(k), rounded(v), causal).out.to_vector();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    diff += (g[i] - w[i]) * (g[i] - w[i]);
    norm += w[i] * w[i];
  }
  EXPECT_LE(std::sqrt(diff / norm), 3e-2);
  // f32 on CUDA goes through the composed op: the same numbers as the CPU's fused op.
  Tensor f32 = rand_tensor({1, 2, 8, 64}, 1, -1, 1, DType::F32);
  Tensor gf = attention(f32.to(Device::cuda(0)), f32.to(Device::cuda(0)), f32.to(Device::cuda(0)), causal).out;
  Tensor wf = attention(f32, f32, f32, causal).out;
  std::vector<double> a = gf.to_vector(), b = wf.to_vector();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5 * (1 + std::abs(b[i])));
}
