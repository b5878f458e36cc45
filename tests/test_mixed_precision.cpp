// Mixed precision's plumbing, checked on the CPU with f64 masters computing in f32 (the CPU has
// no bf16 maths; the CUDA bf16 runs are checked against PyTorch in test_lm_parity's Cuda/* suite).
//
// A DecoderLM with f64 parameters and compute dtype f32 must be exactly an f32 model holding the
// same weights rounded to f32: every module reads its parameters through cast(p, f32), so the
// forward is the same f32 arithmetic op for op (logits and loss bit-identical), and each
// master's gradient is the f32 model's gradient converted to f64 (exact), except where f32
// contributions meet in a master (embedding rows of repeated tokens, a tied head: the f32 model
// adds them in f32, the masters in f64). A module that read a parameter without the cast would mix f64 into the f32 forward
// and throw; one that cast twice or dropped a cast's gradient would change the numbers.
#include <gtest/gtest.h>

#include "autograd/node.h"
#include "models/lm/lm.h"
#include "test_util.h"

using namespace attn;

namespace {

nn::ModelConfig config(nn::PositionKind pos, bool tied) {
  nn::ModelConfig c;
  c.vocab_size = 17;
  c.d_model = 24;
  c.n_layers = 2;
  c.n_heads = 3;
  c.max_seq_len = 9;
  c.attention.position = pos;
  c.tied_head = tied;
  c.attention.qk_norm = true;
  c.attention.layer_scale = true;
  c.attention.layer_scale_init = 0.5;
  c.placement = nn::NormPlacement::Hybrid;  // the most norms: pre and post in every block
  c.mlp = nn::MlpKind::SwiGlu;
  c.attention.variant = AttentionVariant::Softmax1;
  c.init_std = 0.3;  // scores of a few units, so the attention is far from uniform
  return c;
}

struct Case {
  const char* name;
  nn::PositionKind pos;
  bool tied;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class MixedPrecision : public ::testing::TestWithParam<Case> {};

TEST_P(MixedPrecision, F64MastersComputingInF32AreAnF32Model) {
  const nn::ModelConfig c = config(GetParam().pos, GetParam().tied);
  models::DecoderLM mixed(c, 3, DType::F64), plain(c, 3, DType::F32);
  ParamList pm = mixed.parameters(), pp = plain.parameters();
  ASSERT_EQ(pm.size(), pp.size());
  for (size_t i = 0; i < pm.size(); ++i) {  // the f32 model holds the masters rounded to f32
    Tensor r = pm[i].value.to(DType::F32);
    copy_bytes(pp[i].value.raw_data(), Device::cpu(), r.raw_data(), Device::cpu(), r.nbytes());
  }
  if (mixed.sinusoidal.defined()) plain.sinusoidal = mixed.sinusoidal.to(DType::F32);
  mixed.set_compute_dtype(DType::F32);

  Tensor ids = attn::testing::ids_tensor({3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3}, {2, 8});
  Tensor targets = attn::testing::ids_tensor({1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2}, {2, 8});
  Tensor lm = mixed.loss(ids, targets), lp = plain.loss(ids, targets);
  ASSERT_EQ(lm.dtype(), DType::F32) << "the forward runs in the compute dtype";
  EXPECT_EQ(lm.item(), lp.item());
  {
    NoGradGuard ng;
    EXPECT_EQ(mixed.forward(ids).to_vector(), plain.forward(ids).to_vector());
  }
  lm.backward();
  lp.backward();
  for (size_t i = 0; i < pm.size(); ++i) {
    const Tensor gm = pm[i].value.grad(), gp = pp[i].value.grad();
    ASSERT_TRUE(gm.defined()) << pm[i].name << ": the master got no gradient";
    EXPECT_EQ(gm.dtype(), DType::F64) << pm[i].name << ": the master's gradient is in its dtype";
    if (pm[i].name == "tok_emb.weight" || pm[i].name == "pos_emb.weight") {
      // Embedding gathers from the master table and casts the rows, so the gradients of a
      // repeated token (or position, once per batch row; and the tied head's) are summed in f64
      // here and in f32 there: they differ by the f32 rounding of the sums, ≤ ~2^-24 of the
      // largest term.
      double scale = 0;
      for (double v : gp.to_vector()) scale = std::max(scale, std::abs(v));
      EXPECT_TRUE(attn::testing::all_close(gm, gp.to(DType::F64), 1.2e-7 * scale, 0)) << pm[i].name;
    } else {
      EXPECT_EQ(gm.to_vector(), gp.to_vector()) << pm[i].name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, MixedPrecision,
                         ::testing::Values(Case{"rope_untied", nn::PositionKind::Rope, false},
                                           Case{"learned_tied", nn::PositionKind::Learned, true},
                                           Case{"sinusoidal_untied", nn::PositionKind::Sinusoidal, false},
                                           Case{"alibi_tied", nn::PositionKind::Alibi, true}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(MixedPrecision, ComputeDtypeMustBeFloating) {
  models::DecoderLM m(config(nn::PositionKind::Rope, true), 1, DType::F32);
  EXPECT_THROW(m.set_compute_dtype(DType::I32), std::invalid_argument);
}

}  // namespace
