// Every differentiable op's gradient against central finite differences in f64.
// The suite is driven by a table of cases; OpRegistry.EveryOpHasAGradientCheck fails when an op
// id in src/ops/op_ids.h has no case here, so a new op cannot land without one.
#include <gtest/gtest.h>

#include <functional>
#include <set>

#include "autograd/node.h"
#include "test_util.h"

using namespace attn;
using attn::testing::ids_tensor;

namespace {

struct GradCase {
  std::string name;
  std::vector<OpId> covers;  // the op ids this case exercises
  std::vector<Shape> shapes;
  std::function<Tensor(const std::vector<Tensor>&)> fn;
  double lo = -1, hi = 1;  // input range (positive for log, sqrt, ...)
  // > 0: inputs, the weights R and the step h lie on this grid (a power of two), for ops that
  // round through a narrower dtype: every x ± h and every R is then exact in it (see cast).
  double grid = 0;
};

std::ostream& operator<<(std::ostream& os, const GradCase& c) { return os << c.name; }

// L = Σ f(x)∘R with a fixed random R, so every output element matters with its own weight.
double weighted_loss(const GradCase& c, const std::vector<Tensor>& in, const Tensor& R) {
  NoGradGuard ng;
  return sum(mul(c.fn(in), R)).item();
}

constexpr double kEps = 1e-6;

// x rounded to a multiple of grid (a no-op for grid 0).
Tensor snap(const Tensor& x, double grid) {
  if (grid == 0) return x;
  std::vector<double> v = x.to_vector();
  for (double& e : v) e = std::round(e / grid) * grid;
  return from_vector(v, x.shape(), {x.dtype()});
}
// Central differences in f64 with h = 1e-6: truncation error O(h²·f''') ~ 1e-12 and rounding
// ~1e-16·|L|/h ~ 1e-10; the bound below leaves a margin of ~100 over both.
constexpr double kAtol = 1e-7, kRtol = 1e-6;

void check_gradients(const GradCase& c, uint64_t seed) {
  std::vector<Tensor> in;
  for (size_t i = 0; i < c.shapes.size(); ++i) {
    Tensor t = snap(attn::testing::rand_tensor(c.shapes[i], seed + 17 * i, c.lo, c.hi), c.grid);
    t.set_requires_grad(true);
    in.push_back(t);
  }
  Tensor y = c.fn(in);
  Generator rg(seed + 1000);
  Tensor R = snap(randn(y.shape(), rg, {DType::F64}), c.grid);
  sum(mul(y, R)).backward();
  const double h = c.grid > 0 ? c.grid : kEps;
  for (size_t i = 0; i < in.size(); ++i) {
    ASSERT_TRUE(in[i].grad().defined()) << c.name << ": input " << i << " got no gradient";
    std::vector<double> analytic = in[i].grad().to_vector();
    double* x = in[i].data<double>();
    for (int64_t k = 0; k < in[i].numel(); ++k) {
      double saved = x[k];
      x[k] = saved + h;
      double up = weighted_loss(c, in, R);
      x[k] = saved - h;
      double down = weighted_loss(c, in, R);
      x[k] = saved;
      double numeric = (up - down) / (2 * h);
      ASSERT_NEAR(analytic[k], numeric, kAtol + kRtol * std::abs(numeric))
          << c.name << ": input " << i << " element " << k;
    }
  }
}

Tensor fixed_ids() { return ids_tensor({4, 0, 2, 4, 5, 0}, {2, 3}); }

AttentionSpec spec_of(AttentionVariant v, bool causal, bool padding, bool alibi) {
  AttentionSpec s;
  s.variant = v;
  s.causal = causal;
  s.sigmoid_bias = -std::log(5.0);
  if (padding) s.key_padding_lengths = {5, 2};
  if (alibi) s.alibi_slopes = {0.5, 0.125};
  return s;
}

std::vector<GradCase> all_cases() {
  using V = std::vector<Tensor>;
  std::vector<GradCase> c;
  auto add_case = [&](std::string name, std::vector<OpId> covers, std::vector<Shape> shapes,
                      std::function<Tensor(const V&)> fn, double lo = -1, double hi = 1, double grid = 0) {
    c.push_back({std::move(name), std::move(covers), std::move(shapes), std::move(fn), lo, hi, grid});
  };
  // matmul: plain, every transpose, batched, and a shared B under a batched A (via reshape).
  add_case("matmul", {OpId::Matmul}, {{3, 4}, {4, 5}}, [](const V& x) { return matmul(x[0], x[1]); });
  add_case("matmul_tA", {OpId::Matmul}, {{4, 3}, {4, 5}}, [](const V& x) { return matmul(x[0], x[1], true); });
  add_case("matmul_tB", {OpId::Matmul}, {{3, 4}, {5, 4}}, [](const V& x) { return matmul(x[0], x[1], false, true); });
  add_case("matmul_tAtB", {OpId::Matmul}, {{4, 3}, {5, 4}}, [](const V& x) { return matmul(x[0], x[1], true, true); });
  add_case("bmm", {OpId::Matmul}, {{2, 3, 4}, {2, 4, 5}}, [](const V& x) { return matmul(x[0], x[1]); });
  add_case("bmm_tB", {OpId::Matmul}, {{2, 3, 4}, {2, 5, 4}}, [](const V& x) { return matmul(x[0], x[1], false, true); });
  add_case("matmul_shared_b", {OpId::Matmul, OpId::Reshape}, {{2, 3, 4}, {4, 5}}, [](const V& x) { return matmul(x[0], x[1]); });
  // linear: batched rows with a bias, and 2-D without
  add_case("linear", {OpId::Linear}, {{2, 3, 4}, {5, 4}, {5}}, [](const V& x) { return linear(x[0], x[1], x[2]); });
  add_case("linear_no_bias", {OpId::Linear}, {{3, 4}, {5, 4}}, [](const V& x) { return linear(x[0], x[1]); });
  // conv2d: x, w, b all checked. Non-square inputs and kernels, Cin and Cout > 1, batch > 1.
  auto conv = [](int64_t stride, int64_t padding) {
    return [=](const V& x) { return conv2d(x[0], x[1], x.size() > 2 ? x[2] : Tensor(), stride, padding); };
  };
  add_case("conv2d_s1_p0", {OpId::Conv2d}, {{2, 3, 5, 6}, {4, 3, 3, 2}, {4}}, conv(1, 0));
  add_case("conv2d_s2_p1", {OpId::Conv2d}, {{2, 2, 7, 6}, {3, 2, 3, 3}, {3}}, conv(2, 1));
  add_case("conv2d_s1_p1_no_bias", {OpId::Conv2d}, {{2, 2, 4, 5}, {3, 2, 2, 3}}, conv(1, 1));
  // The last window just fits: (7 − 3)/2 + 1 = 3 rows of windows end on row 6, (9 − 3)/2 + 1 = 4
  // columns on column 8; and a size where floor drops the last row and column (never read: dx 0).
  add_case("conv2d_last_window_fits", {OpId::Conv2d}, {{2, 2, 7, 9}, {2, 2, 3, 3}, {2}}, conv(2, 0));
  add_case("conv2d_floor_drops_edge", {OpId::Conv2d}, {{1, 2, 8, 6}, {3, 2, 3, 3}, {3}}, conv(2, 0));
  // Stride larger than the kernel (inputs between windows unread) with padding 2 (whole padded rows).
  add_case("conv2d_s3_p2", {OpId::Conv2d}, {{2, 2, 6, 5}, {2, 2, 2, 3}, {2}}, conv(3, 2));
  // The speech front end's pattern: one input channel, 3 × 3 stride 2, twice, ReLU between.
  add_case("conv2d_subsampling", {OpId::Conv2d, OpId::Relu}, {{2, 1, 9, 11}, {3, 1, 3, 3}, {3}, {3, 3, 3, 3}, {3}},
           [](const V& x) { return conv2d(relu(conv2d(x[0], x[1], x[2], 2)), x[3], x[4], 2); });
  // broadcasting binary ops: same shape, row, column, scalar
  add_case("add_row", {OpId::Add}, {{3, 5}, {5}}, [](const V& x) { return add(x[0], x[1]); });
  add_case("add_col", {OpId::Add}, {{3, 5}, {3, 1}}, [](const V& x) { return add(x[0], x[1]); });
  add_case("sub_same", {OpId::Sub}, {{2, 3, 3}, {2, 3, 3}}, [](const V& x) { return sub(x[0], x[1]); });
  add_case("sub_scalar_lhs", {OpId::Sub}, {{}, {3, 2}}, [](const V& x) { return sub(x[0], x[1]); });
  add_case("mul_row", {OpId::Mul}, {{2, 3, 5}, {5}}, [](const V& x) { return mul(x[0], x[1]); });
  add_case("mul_mid", {OpId::Mul}, {{2, 3, 5}, {2, 1, 5}}, [](const V& x) { return mul(x[0], x[1]); });
  add_case("div_col", {OpId::Div}, {{3, 4}, {3, 1}}, [](const V& x) { return div(x[0], x[1]); }, 0.5, 2);
  add_case("div_scalar", {OpId::Div}, {{3, 4}, {}}, [](const V& x) { return div(x[0], x[1]); }, 0.5, 2);
  // unary
  add_case("neg", {OpId::Neg}, {{7}}, [](const V& x) { return neg(x[0]); });
  add_case("exp", {OpId::Exp}, {{7}}, [](const V& x) { return exp(x[0]); });
  add_case("log", {OpId::Log}, {{7}}, [](const V& x) { return log(x[0]); }, 0.2, 3);
  add_case("sqrt", {OpId::Sqrt}, {{7}}, [](const V& x) { return sqrt(x[0]); }, 0.2, 3);
  add_case("rsqrt", {OpId::Rsqrt}, {{7}}, [](const V& x) { return rsqrt(x[0]); }, 0.2, 3);
  add_case("pow", {OpId::Pow}, {{7}}, [](const V& x) { return pow(x[0], 2.5); }, 0.2, 3);
  add_case("tanh", {OpId::Tanh}, {{7}}, [](const V& x) { return tanh(x[0]); }, -3, 3);
  add_case("sigmoid", {OpId::Sigmoid}, {{7}}, [](const V& x) { return sigmoid(x[0]); }, -4, 4);
  add_case("relu", {OpId::Relu}, {{9}}, [](const V& x) { return relu(x[0]); });
  add_case("gelu", {OpId::Gelu}, {{9}}, [](const V& x) { return gelu(x[0]); }, -4, 4);
  add_case("silu", {OpId::Silu}, {{9}}, [](const V& x) { return silu(x[0]); }, -4, 4);
  // round: 0 almost everywhere; the random points are never within the step h of a half.
  add_case("round", {OpId::Round}, {{9}}, [](const V& x) { return round(x[0]); }, -3, 3);
  // reductions
  add_case("sum_axis", {OpId::Sum}, {{2, 3, 5}}, [](const V& x) { return sum(x[0], 1); });
  add_case("sum_all", {OpId::Sum, OpId::Reshape}, {{3, 5}}, [](const V& x) { return sum(x[0]); });
  add_case("mean_axis_keep", {OpId::Mean}, {{3, 5}}, [](const V& x) { return mean(x[0], 0, true); });
  add_case("max_last", {OpId::Max}, {{3, 7}}, [](const V& x) { return max(x[0], -1); });
  add_case("max_first", {OpId::Max}, {{5, 3}}, [](const V& x) { return max(x[0], 0, true); });
  // softmax family and the loss
  add_case("softmax", {OpId::Softmax}, {{3, 7}}, [](const V& x) { return softmax(mul(x[0], 3.0)); });
  add_case("log_softmax", {OpId::LogSoftmax}, {{3, 7}}, [](const V& x) { return log_softmax(mul(x[0], 3.0)); });
  add_case("cross_entropy", {OpId::CrossEntropy}, {{5, 7}}, [](const V& x) {
    return cross_entropy(mul(x[0], 3.0), ids_tensor({1, -100, 6, 0, 3}, {5}));
  });
  // CTC on raw inputs as log_probs (no log_softmax: the true gradient with respect to them),
  // values in [−2, 0]. None: a repeat ("11", needing a blank between), a blank-only target, and
  // three labels in 4 of the 6 frames (frames 4 and 5 get 0). Mean with blank = 2 (not 0) and an
  // impossible sample ("11" in 2 frames), which zero_infinity holds at 0 with a 0 gradient.
  add_case("ctc_loss_none", {OpId::CtcLoss}, {{3, 6, 4}}, [](const V& x) {
    return ctc_loss(x[0], {1, 1, 1, 2, 3}, {2, 0, 3}, {6, 5, 4}, 0, CtcReduction::None);
  }, -2, 0);
  add_case("ctc_loss_mean", {OpId::CtcLoss}, {{3, 5, 3}}, [](const V& x) {
    return ctc_loss(x[0], {0, 1, 1, 1, 1}, {1, 2, 2}, {5, 4, 2}, 2, CtcReduction::Mean);
  }, -2, 0);
  // norms (odd widths)
  add_case("layer_norm", {OpId::LayerNorm}, {{3, 7}, {7}, {7}}, [](const V& x) { return layer_norm(x[0], x[1], x[2]); });
  add_case("rms_norm", {OpId::RmsNorm}, {{2, 3, 5}, {5}}, [](const V& x) { return rms_norm(x[0], x[1]); });
  // embedding with repeated ids (the scatter-add must sum them)
  add_case("embedding", {OpId::Embedding}, {{6, 3}}, [](const V& x) { return embedding(x[0], fixed_ids()); });
  // shape ops
  add_case("reshape", {OpId::Reshape}, {{2, 6}}, [](const V& x) { return exp(reshape(x[0], {3, -1})); });
  add_case("permute", {OpId::Permute}, {{2, 3, 5}}, [](const V& x) { return permute(x[0], {2, 0, 1}); });
  add_case("transpose", {OpId::Permute}, {{2, 3, 5}}, [](const V& x) { return transpose(x[0], 0, 2); });
  add_case("concat", {OpId::Concat}, {{2, 3}, {2, 1}, {2, 4}}, [](const V& x) { return concat({x[0], x[1], x[2]}, 1); });
  add_case("slice", {OpId::Slice}, {{3, 7}}, [](const V& x) { return slice(x[0], 1, 2, 5); });
  add_case("split", {OpId::Slice}, {{7, 2}}, [](const V& x) {
    auto p = split(x[0], {3, 4}, 0);
    return add(sum(mul(p[0], p[0])), sum(p[1]));
  });
  add_case("dropout", {OpId::Dropout}, {{4, 9}}, [](const V& x) {
    Generator g(99);  // same seed each evaluation: the same mask
    return dropout(x[0], 0.3, true, g);
  });
  add_case("where", {OpId::Where}, {{2, 3}, {2, 3}}, [](const V& x) {
    return where(ids_tensor({1, 0, 0, 1, 1, 0}, {2, 3}, DType::I32), x[0], x[1]);
  });
  add_case("masked_fill", {OpId::MaskedFill}, {{2, 3}}, [](const V& x) {
    return masked_fill(x[0], ids_tensor({0, 1, 0, 0, 0, 1}, {2, 3}, DType::I32), -5.0);
  });
  add_case("rope", {OpId::Rope}, {{2, 3, 5, 6}}, [](const V& x) { return rope(x[0], 100.0, 2); });
  // cast: f64 -> f32 -> f64 around a product, and f64 -> bf16 -> f64. Rounding to f32 or bf16
  // would swamp a 1e-6 step, so inputs, R and h sit on a grid the narrow dtype holds exactly:
  // for f32, x = k·2^-12 with |x| < 0.9, so x ± h and x² (≤ 24 significant bits) are exact; for
  // bf16, x and R are multiples of 2^-4 below 8 (≤ 8 bits). L is then exactly quadratic
  // (linear) in x, central differences are exact, and what is checked is the backward: the
  // gradient converted back through each cast. The f32 case's backward rounds R·2y to f32
  // (~6e-8 relative, inside kRtol).
  add_case("cast_f32", {OpId::Cast, OpId::Mul}, {{3, 4}}, [](const V& x) {
    Tensor y = cast(x[0], DType::F32);
    return cast(mul(y, y), DType::F64);
  }, -0.9, 0.9, 1.0 / 4096);
  add_case("cast_bf16", {OpId::Cast}, {{3, 4}}, [](const V& x) {
    return cast(cast(x[0], DType::BF16), DType::F64);
  }, -2, 2, 1.0 / 16);
  // the fused attention: every variant × {full, causal+padding+ALiBi}; N != M on one.
  for (auto v : {AttentionVariant::Softmax, AttentionVariant::Sigmoid, AttentionVariant::Softmax1}) {
    std::string n = std::string("attention_") + variant_name(v);
    add_case(n + "_full", {OpId::Attention}, {{2, 2, 3, 4}, {2, 2, 5, 4}, {2, 2, 5, 4}},
             [v](const V& x) { return attention(x[0], x[1], x[2], spec_of(v, false, false, false)).out; });
    add_case(n + "_masked_alibi", {OpId::Attention}, {{2, 2, 5, 3}, {2, 2, 5, 3}, {2, 2, 5, 3}},
             [v](const V& x) { return attention(x[0], x[1], x[2], spec_of(v, true, true, true)).out; });
  }
  // sink: the gradient of the per-head logit too (a fourth input); clipped_softmax (composed).
  auto sink_spec = [](bool masked, const Tensor& sink) {
    AttentionSpec s = spec_of(AttentionVariant::Sink, masked, masked, masked);
    s.sink = sink;
    return s;
  };
  add_case("attention_sink_full", {OpId::Attention}, {{2, 2, 3, 4}, {2, 2, 5, 4}, {2, 2, 5, 4}, {2}},
           [=](const V& x) { return attention(x[0], x[1], x[2], sink_spec(false, x[3])).out; });
  add_case("attention_sink_masked_alibi", {OpId::Attention}, {{2, 2, 5, 3}, {2, 2, 5, 3}, {2, 2, 5, 3}, {2}},
           [=](const V& x) { return attention(x[0], x[1], x[2], sink_spec(true, x[3])).out; });
  // sigmoid's learnable bias b_h (a fourth input, [H]) and per-row bias −ln n_i: full, causal with
  // N > M (rows that see nothing), key padding, and causal + padding + ALiBi.
  auto bias_spec = [](bool causal, bool padding, bool alibi, const Tensor& bias) {
    AttentionSpec s = spec_of(AttentionVariant::Sigmoid, causal, padding, alibi);
    if (bias.defined()) s.sigmoid_bias_param = bias;
    else s.sigmoid_bias_per_row = true;
    return s;
  };
  add_case("attention_sigmoid_learnable_bias_full", {OpId::Attention}, {{2, 2, 3, 4}, {2, 2, 5, 4}, {2, 2, 5, 4}, {2}},
           [=](const V& x) { return attention(x[0], x[1], x[2], bias_spec(false, false, false, x[3])).out; });
  add_case("attention_sigmoid_learnable_bias_masked_alibi", {OpId::Attention},
           {{2, 2, 5, 3}, {2, 2, 5, 3}, {2, 2, 5, 3}, {2}},
           [=](const V& x) { return attention(x[0], x[1], x[2], bias_spec(true, true, true, x[3])).out; });
  add_case("attention_sigmoid_per_row_bias_full", {OpId::Attention}, {{2, 2, 3, 4}, {2, 2, 5, 4}, {2, 2, 5, 4}},
           [=](const V& x) { return attention(x[0], x[1], x[2], bias_spec(false, false, false, Tensor())).out; });
  add_case("attention_sigmoid_per_row_bias_causal", {OpId::Attention}, {{2, 2, 6, 3}, {2, 2, 4, 3}, {2, 2, 4, 3}},
           [=](const V& x) { return attention(x[0], x[1], x[2], bias_spec(true, false, false, Tensor())).out; });
  add_case("attention_sigmoid_per_row_bias_padding", {OpId::Attention}, {{2, 2, 4, 3}, {2, 2, 5, 3}, {2, 2, 5, 3}},
           [=](const V& x) { return attention(x[0], x[1], x[2], bias_spec(false, true, false, Tensor())).out; });
  add_case("attention_sigmoid_per_row_bias_masked_alibi", {OpId::Attention},
           {{2, 2, 5, 3}, {2, 2, 5, 3}, {2, 2, 5, 3}},
           [=](const V& x) { return attention(x[0], x[1], x[2], bias_spec(true, true, true, Tensor())).out; });
  add_case("attention_clipped_softmax", {OpId::Softmax, OpId::Relu}, {{2, 2, 5, 3}, {2, 2, 5, 3}, {2, 2, 5, 3}},
           [](const V& x) {
             AttentionSpec s = spec_of(AttentionVariant::ClippedSoftmax, true, true, false);
             s.clip_gamma = -0.03;
             return attention(x[0], x[1], x[2], s).out;
           }, -2, 2);
  return c;
}

class GradCheck : public ::testing::TestWithParam<GradCase> {};

TEST_P(GradCheck, MatchesCentralDifferences) { check_gradients(GetParam(), 1234); }

INSTANTIATE_TEST_SUITE_P(AllOps, GradCheck, ::testing::ValuesIn(all_cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace

TEST(OpRegistry, EveryOpHasAGradientCheck) {
  std::set<OpId> covered;
  for (const GradCase& c : all_cases()) covered.insert(c.covers.begin(), c.covers.end());
  for (int i = 0; i < op_count(); ++i)
    EXPECT_TRUE(covered.count(op_by_index(i)))
        << "op '" << op_name(op_by_index(i)) << "' has no finite-difference case in test_gradcheck.cpp";
}

// A case must really record the ops it claims to cover (so the registry check can't be gamed).
TEST(OpRegistry, CasesRecordTheOpsTheyClaim) {
  for (const GradCase& c : all_cases()) {
    std::vector<Tensor> in;
    for (const Shape& s : c.shapes) in.push_back(attn::testing::rand_tensor(s, 5, c.lo, c.hi).set_requires_grad(true));
    Tensor y = c.fn(in);
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
    for (OpId op : c.covers) EXPECT_TRUE(seen.count(op)) << c.name << " does not record " << op_name(op);
  }
}
