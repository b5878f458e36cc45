// The CUDA flash-attention kernels (kernels/flash_attention.cuh), run on the CPU by the PTX
// emulation in flash_emulation.h and checked against the f64 CPU attention op (label unit: needs
// no GPU). This checks the kernels' indexing, fragment layouts, swizzle, masks, tails, online
// softmax and backward maths; it cannot check timing-dependent races on real hardware, the
// PTX syntax (nvcc does) or speed. Emulation is slow: small shapes, each still crossing tile
// edges (N, M not multiples of 64/128, N != M both ways).
#include "flash_emulation.h"

#include <gtest/gtest.h>

#include "flash_check.h"

using namespace attn;
using namespace attn::testing;
namespace fl = attn::flash_emu;

namespace {

struct EmuRun {
  std::vector<double> o, lse, dq, dk, dv;
};

std::vector<bf16> to_bf16(const Tensor& x) {
  std::vector<bf16> r;
  for (double d : x.to_vector()) r.push_back(float_to_bf16(static_cast<float>(d)));
  return r;
}

std::vector<double> to_double(const std::vector<bf16>& x) {
  std::vector<double> r;
  for (bf16 b : x) r.push_back(bf16_to_float(b));
  return r;
}

// Output buffers get guard zones of NaN bits that must survive: writes out of bounds show up.
template <class T>
struct Guarded {
  static constexpr size_t kGuard = 4096;
  std::vector<T> buf;
  explicit Guarded(size_t n, T fill) : buf(n + 2 * kGuard, fill) {}
  T* data() { return buf.data() + kGuard; }
  std::vector<T> body() const { return {buf.begin() + kGuard, buf.end() - kGuard}; }
  bool guards_intact(T fill) const {
    auto same = [&](const T& x) { return std::memcmp(&x, &fill, sizeof(T)) == 0; };
    return std::all_of(buf.begin(), buf.begin() + kGuard, same) &&
           std::all_of(buf.end() - kGuard, buf.end(), same);
  }
};

template <class Policy, int kD>
EmuRun run_emulated(const FlashCase& c, const FlashInputs& in) {
  const int64_t q_elems = c.B * c.H * c.N * kD, kv_elems = c.B * c.H * c.M * kD;
  const int64_t rows = c.B * c.H * c.N;
  std::vector<bf16> q = to_bf16(in.q), k = to_bf16(in.k), v = to_bf16(in.v), dout = to_bf16(in.dout);
  std::vector<int32_t> key_len(in.spec.key_padding_lengths.begin(), in.spec.key_padding_lengths.end());
  std::vector<float> slopes(in.spec.alibi_slopes.begin(), in.spec.alibi_slopes.end());
  bf16 nan_bits;
  nan_bits.bits = 0xffff;
  const float nan_f = std::nanf("");
  Guarded<bf16> o(q_elems, nan_bits), dq(q_elems, nan_bits), dk(kv_elems, nan_bits), dv(kv_elems, nan_bits);
  Guarded<float> lse(rows, nan_f), dsum(rows, nan_f), dq_accum(q_elems, nan_f);

  fl::Params p{};
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.o = o.data();
  p.lse = lse.data();
  p.dout = dout.data();
  p.dq = dq.data();
  p.dk = dk.data();
  p.dv = dv.data();
  p.dq_accum = dq_accum.data();
  p.dsum = dsum.data();
  p.B = static_cast<int>(c.B);
  p.H = static_cast<int>(c.H);
  p.N = static_cast<int>(c.N);
  p.M = static_cast<int>(c.M);
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(kD)));
  p.sigmoid_bias = static_cast<float>(in.spec.sigmoid_bias);
  p.causal = c.causal;
  p.key_len = key_len.empty() ? nullptr : key_len.data();
  p.slopes = slopes.empty() ? nullptr : slopes.data();

  // The launches of backend/cuda/flash_attention.cu.
  using Fwd = fl::FwdTiles<kD>;
  using Bwd = fl::BwdTiles<kD>;
  auto ceil_div = [](int64_t a, int64_t b) { return static_cast<unsigned>((a + b - 1) / b); };
  const unsigned H = static_cast<unsigned>(c.H), B = static_cast<unsigned>(c.B);
  fl::emu::launch({ceil_div(c.N, Fwd::kBlockM), H, B}, Fwd::kThreads, Fwd::kSmemBytes,
                  [&] { fl::flash_fwd_kernel<Policy, kD>(p); });
  std::fill(dq_accum.data(), dq_accum.data() + q_elems, 0.f);
  if constexpr (!Policy::kSigmoid)
    fl::emu::launch({ceil_div(rows * (kD / 8), 256), 1, 1}, 256, 0,
                    [&] { fl::flash_bwd_dsum_kernel<kD>(p.dout, p.o, p.dsum, rows); });
  fl::emu::launch({ceil_div(c.M, Bwd::kBlockN), H, B}, Bwd::kThreads, Bwd::kSmemBytes,
                  [&] { fl::flash_bwd_kernel<Policy, kD>(p); });
  fl::emu::launch({std::min(ceil_div(q_elems / 4, 256), 65535u), 1, 1}, 256, 0,
                  [&] { fl::flash_bwd_convert_dq_kernel(p.dq_accum, p.dq, p.scale, q_elems); });

  EXPECT_TRUE(o.guards_intact(nan_bits) && dq.guards_intact(nan_bits) &&
              dk.guards_intact(nan_bits) && dv.guards_intact(nan_bits) &&
              lse.guards_intact(nan_f) && dsum.guards_intact(nan_f) &&
              dq_accum.guards_intact(nan_f))
      << c.name() << ": a kernel wrote outside its output";
  EmuRun r{to_double(o.body()), {}, to_double(dq.body()), to_double(dk.body()), to_double(dv.body())};
  if constexpr (!Policy::kSigmoid)
    for (float x : lse.body()) r.lse.push_back(x);
  return r;
}

EmuRun run_emulated(const FlashCase& c, const FlashInputs& in) {
  auto with_dim = [&](auto policy) {
    using P = decltype(policy);
    return c.D == 64 ? run_emulated<P, 64>(c, in) : run_emulated<P, 128>(c, in);
  };
  switch (c.variant) {
    case AttentionVariant::Softmax: return with_dim(fl::SoftmaxPolicy{});
    case AttentionVariant::Sigmoid: return with_dim(fl::SigmoidPolicy{});
    case AttentionVariant::Softmax1: return with_dim(fl::Softmax1Policy{});
  }
  return {};
}

void check_case(const FlashCase& c) {
  SCOPED_TRACE(c.name());
  FlashInputs in = make_flash_inputs(c);
  FlashOutputs want = flash_reference(in);
  EmuRun got = run_emulated(c, in);
  expect_flash_matches(c, want, got.o, got.lse, got.dq, got.dk, got.dv);
}

const AttentionVariant kVariants[] = {AttentionVariant::Softmax, AttentionVariant::Sigmoid,
                                      AttentionVariant::Softmax1};

}  // namespace

// Every variant × head dim with the heaviest mask combination (causal + padding + ALiBi), on a
// shape with N < M and one with N > M (causal rows with no visible key).
TEST(FlashEmulation, EveryVariantAndHeadDimWithAllMasks) {
  for (AttentionVariant var : kVariants)
    for (int64_t D : {64, 128}) {
      check_case({var, D, 2, 1, 77, 140, true, true, true, 11});
      check_case({var, D, 1, 2, 150, 70, true, false, true, 12});
    }
}

// The unmasked fast path (no mask code at all) on exact tile multiples, and plain full /
// padding-only masks with ragged lengths.
TEST(FlashEmulation, FullAndPaddingMasks) {
  for (AttentionVariant var : kVariants) {
    check_case({var, 64, 1, 2, 128, 128, false, false, false, 21});
    check_case({var, 128, 3, 1, 33, 70, false, true, false, 22});
  }
}

// Causal boundaries where the last visible key is the first of a key tile, and the first query
// that sees a key tile is the last row of a query tile (N = M = 129; N = 64, M = 129).
TEST(FlashEmulation, CausalTileBoundaries) {
  for (AttentionVariant var : {AttentionVariant::Softmax, AttentionVariant::Sigmoid}) {
    check_case({var, 64, 1, 1, 129, 129, true, false, false, 61});
    check_case({var, 128, 1, 1, 64, 129, true, false, false, 62});
  }
}

// cp.async performed at issue instead of at the wait: the earliest the data may land. Passing
// both ways means no tile is overwritten while a warp still reads it (as far as the host's
// thread interleaving exposes it) and none is read before it landed.
TEST(FlashEmulation, CopiesLandingEarlyChangeNothing) {
  fl::emu::copy_at_issue = true;
  check_case({AttentionVariant::Softmax, 64, 1, 1, 130, 200, true, true, false, 31});
  check_case({AttentionVariant::Sigmoid, 128, 1, 1, 70, 130, false, false, true, 32});
  fl::emu::copy_at_issue = false;
}

// softmax_1 on short rows of negative logits, where the implicit +1 dominates: lse =
// ln(1 + Σ e^x) > 0 though every x < 0, and O is far below a softmax's. A kernel that drops the
// +1 gives lse < 0 here.
TEST(FlashEmulation, Softmax1ShortRowsOfNegativeLogits) {
  FlashCase c{AttentionVariant::Softmax1, 64, 1, 1, 3, 3, true, false, false, 41};
  FlashInputs in = make_flash_inputs(c);
  // q ≥ 0 and k ≤ 0 elementwise: every logit is negative.
  in.q = bf16_exact(mul(in.q, in.q));
  in.k = bf16_exact(mul(mul(in.k, in.k), -1.0));
  FlashOutputs want = flash_reference(in);
  EmuRun got = run_emulated(c, in);
  expect_flash_matches(c, want, got.o, got.lse, got.dq, got.dk, got.dv);
  for (double l : got.lse) {
    EXPECT_GT(l, 0.0);
    EXPECT_LT(l, std::log(4.0));  // at most 3 keys, each e^x < 1
  }
}

// Rows with no visible key (causal with N > M, a batch with key length 0): O = 0 exactly, lse =
// −∞ (softmax) / 0 (softmax_1), zero gradients, never NaN.
TEST(FlashEmulation, FullyMaskedRowsGiveZeros) {
  for (AttentionVariant var : kVariants) {
    FlashCase c{var, 64, 2, 1, 90, 20, true, true, false, 51};
    FlashInputs in = make_flash_inputs(c);
    in.spec.key_padding_lengths = {0, 20};  // batch 0 sees nothing at all
    FlashOutputs want = flash_reference(in);
    EmuRun got = run_emulated(c, in);
    expect_flash_matches(c, want, got.o, got.lse, got.dq, got.dk, got.dv);
    const int64_t per_batch = c.N * c.D;
    for (int64_t i = 0; i < per_batch; ++i) {
      ASSERT_EQ(got.o[i], 0.0) << c.name() << " batch 0, flat " << i;
      ASSERT_EQ(got.dq[i], 0.0) << c.name() << " batch 0, flat " << i;
    }
    // Batch 1: rows i < N − M = 70 see no key.
    for (int64_t i = 0; i < 70 * c.D; ++i) ASSERT_EQ(got.o[per_batch + i], 0.0) << c.name();
    if (var != AttentionVariant::Sigmoid) {
      for (int64_t i = 0; i < c.N; ++i)
        EXPECT_EQ(got.lse[i], var == AttentionVariant::Softmax ? -INFINITY : 0.0) << c.name();
    }
  }
}
