// Every op's forward against a naive loop reference, on random shapes including odd sizes.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <random>

#include "ops/op_util.h"
#include "test_util.h"

using namespace attn;
using attn::testing::all_close;
using attn::testing::ids_tensor;
using attn::testing::rand_tensor;

namespace {

constexpr double kTol = 1e-12;  // f64 against f64 loops: only summation order differs

Shape random_shape(std::mt19937& rng, int dims, int max_size = 9) {
  Shape s(dims);
  for (auto& d : s) d = std::uniform_int_distribution<int>(1, max_size)(rng);
  return s;
}

std::vector<int64_t> strides_of(const Shape& s) {
  std::vector<int64_t> st(s.size());
  for (int64_t i = static_cast<int64_t>(s.size()) - 1, acc = 1; i >= 0; --i) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

// Multi-index of flat position i in shape s.
std::vector<int64_t> unravel(int64_t i, const Shape& s) {
  std::vector<int64_t> idx(s.size());
  for (int64_t k = static_cast<int64_t>(s.size()) - 1; k >= 0; --k) {
    idx[k] = i % s[k];
    i /= s[k];
  }
  return idx;
}

}  // namespace

TEST(Forward, MatmulAllTransposesAndBatches) {
  std::mt19937 rng(1);
  for (int trial = 0; trial < 12; ++trial) {
    int64_t B = trial % 3 + 1, M = rng() % 9 + 1, K = rng() % 9 + 1, N = rng() % 9 + 1;
    bool ta = trial & 1, tb = trial & 2;
    Tensor a = rand_tensor(ta ? Shape{B, K, M} : Shape{B, M, K}, trial);
    Tensor b = rand_tensor(tb ? Shape{B, N, K} : Shape{B, K, N}, trial + 100);
    Tensor c = matmul(a, b, ta, tb);
    std::vector<double> va = a.to_vector(), vb = b.to_vector(), ref(B * M * N, 0.0);
    for (int64_t z = 0; z < B; ++z)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j)
          for (int64_t k = 0; k < K; ++k)
            ref[(z * M + i) * N + j] += va[z * M * K + (ta ? k * M + i : i * K + k)] *
                                        vb[z * K * N + (tb ? j * K + k : k * N + j)];
    EXPECT_TRUE(all_close(c, from_vector(ref, {B, M, N}, {DType::F64}), kTol, kTol)) << trial;
  }
  // A shared 2-D B under a batched A equals the per-batch products.
  Tensor a = rand_tensor({3, 2, 5}, 7), b = rand_tensor({5, 4}, 8);
  Tensor c = matmul(a, b);
  for (int64_t z = 0; z < 3; ++z)
    EXPECT_TRUE(all_close(slice(c, 0, z, z + 1), reshape(matmul(reshape(slice(a, 0, z, z + 1), {2, 5}), b), {1, 2, 4}), kTol, kTol));
  EXPECT_THROW(matmul(rand_tensor({2, 3}, 1), rand_tensor({4, 2}, 2)), std::invalid_argument);
}

TEST(Forward, BinaryOpsBroadcast) {
  std::vector<std::pair<Shape, Shape>> cases = {{{3, 5}, {3, 5}}, {{3, 5}, {5}},  {{3, 5}, {3, 1}},
                                                {{2, 3, 5}, {}},  {{}, {2, 3}},   {{2, 1, 5}, {3, 1}},
                                                {{1}, {4, 1, 3}}, {{7, 1, 1}, {1, 2, 3}}};
  for (auto& [sa, sb] : cases) {
    Tensor a = rand_tensor(sa, 1), b = rand_tensor(sb, 2, 0.5, 2);
    std::vector<double> va = a.to_vector(), vb = b.to_vector();
    Shape so = broadcast_shapes(sa, sb, "test");
    int64_t n = shape_numel(so);
    for (int op = 0; op < 4; ++op) {
      std::vector<double> ref(n);
      for (int64_t i = 0; i < n; ++i) {
        std::vector<int64_t> idx = unravel(i, so);
        auto at = [&](const Shape& s) {  // flat index into an operand, broadcast dims pinned to 0
          int64_t f = 0;
          auto st = strides_of(s);
          for (size_t k = 0; k < s.size(); ++k) f += (s[k] == 1 ? 0 : idx[idx.size() - s.size() + k]) * st[k];
          return f;
        };
        double x = va[at(sa)], y = vb[at(sb)];
        ref[i] = op == 0 ? x + y : op == 1 ? x - y : op == 2 ? x * y : x / y;
      }
      Tensor got = op == 0 ? add(a, b) : op == 1 ? sub(a, b) : op == 2 ? mul(a, b) : div(a, b);
      EXPECT_TRUE(all_close(got, from_vector(ref, so, {DType::F64}), kTol, kTol))
          << shape_str(sa) << " op " << op << " " << shape_str(sb);
    }
  }
  EXPECT_THROW(add(rand_tensor({3, 4}, 1), rand_tensor({3}, 2)), std::invalid_argument);
  EXPECT_THROW(add(rand_tensor({3}, 1), rand_tensor({3}, 2, 0, 1, DType::F32)), std::invalid_argument);
}

TEST(Forward, UnaryOpsMatchTheScalarFormulas) {
  Tensor x = rand_tensor({5, 7}, 3, 0.1, 3);
  Tensor xs = add(x, -1.5);  // signed inputs for the activations
  std::vector<double> v = x.to_vector(), s = xs.to_vector();
  auto check = [&](const Tensor& got, const std::vector<double>& in, double (*f)(double), const char* name) {
    std::vector<double> ref(in.size());
    for (size_t i = 0; i < in.size(); ++i) ref[i] = f(in[i]);
    EXPECT_TRUE(all_close(got, from_vector(ref, x.shape(), {DType::F64}), 1e-15, 1e-14)) << name;
  };
  check(neg(x), v, [](double a) { return -a; }, "neg");
  check(exp(x), v, [](double a) { return std::exp(a); }, "exp");
  check(log(x), v, [](double a) { return std::log(a); }, "log");
  check(sqrt(x), v, [](double a) { return std::sqrt(a); }, "sqrt");
  check(rsqrt(x), v, [](double a) { return 1 / std::sqrt(a); }, "rsqrt");
  check(pow(x, 2.5), v, [](double a) { return std::pow(a, 2.5); }, "pow");
  check(tanh(xs), s, [](double a) { return std::tanh(a); }, "tanh");
  check(sigmoid(xs), s, [](double a) { return 1 / (1 + std::exp(-a)); }, "sigmoid");
  check(relu(xs), s, [](double a) { return a > 0 ? a : 0.0; }, "relu");
  check(gelu(xs), s, [](double a) { return 0.5 * a * (1 + std::tanh(std::sqrt(2 / M_PI) * (a + 0.044715 * a * a * a))); }, "gelu");
  check(silu(xs), s, [](double a) { return a / (1 + std::exp(-a)); }, "silu");
  // sigmoid saturates without NaN at huge magnitudes
  std::vector<double> big = sigmoid(from_vector({-1000, 1000}, {2}, {DType::F32})).to_vector();
  EXPECT_EQ(big, (std::vector<double>{0.0, 1.0}));
}

TEST(Forward, ReductionsOverEveryAxis) {
  std::mt19937 rng(4);
  for (int trial = 0; trial < 6; ++trial) {
    Shape s = random_shape(rng, 3);
    Tensor x = rand_tensor(s, trial);
    std::vector<double> v = x.to_vector();
    for (int64_t axis = 0; axis < 3; ++axis) {
      Shape so = s;
      so[axis] = 1;
      std::vector<double> rs(shape_numel(so), 0.0), rm(shape_numel(so), -INFINITY);
      auto st = strides_of(so);
      for (int64_t i = 0; i < x.numel(); ++i) {
        auto idx = unravel(i, s);
        idx[axis] = 0;
        int64_t o = idx[0] * st[0] + idx[1] * st[1] + idx[2] * st[2];
        rs[o] += v[i];
        rm[o] = std::max(rm[o], v[i]);
      }
      std::vector<double> rmean = rs;
      for (double& m : rmean) m /= s[axis];
      EXPECT_TRUE(all_close(sum(x, axis, true), from_vector(rs, so, {DType::F64}), kTol, kTol));
      EXPECT_TRUE(all_close(mean(x, axis, true), from_vector(rmean, so, {DType::F64}), kTol, kTol));
      EXPECT_TRUE(all_close(max(x, axis, true), from_vector(rm, so, {DType::F64}), 0, 0));
      Shape dropped = s;
      dropped.erase(dropped.begin() + axis);
      EXPECT_EQ(sum(x, axis).shape(), dropped);
    }
    double total = 0;
    for (double a : v) total += a;
    EXPECT_NEAR(sum(x).item(), total, 1e-12);
    EXPECT_NEAR(mean(x).item(), total / v.size(), 1e-12);
  }
}

TEST(Forward, SoftmaxAndLogSoftmaxRows) {
  Tensor x = mul(rand_tensor({4, 9}, 5), 20.0);  // wide range: exercises the max shift
  std::vector<double> v = x.to_vector(), p(v.size()), lp(v.size());
  for (int r = 0; r < 4; ++r) {
    double m = -INFINITY, s = 0;
    for (int j = 0; j < 9; ++j) m = std::max(m, v[r * 9 + j]);
    for (int j = 0; j < 9; ++j) s += std::exp(v[r * 9 + j] - m);
    for (int j = 0; j < 9; ++j) {
      p[r * 9 + j] = std::exp(v[r * 9 + j] - m) / s;
      lp[r * 9 + j] = v[r * 9 + j] - m - std::log(s);
    }
  }
  EXPECT_TRUE(all_close(softmax(x), from_vector(p, {4, 9}, {DType::F64}), 1e-15, 1e-13));
  EXPECT_TRUE(all_close(log_softmax(x), from_vector(lp, {4, 9}, {DType::F64}), 1e-13, 1e-13));
  // A fully masked row is all zeros, not NaN.
  double ninf = -std::numeric_limits<double>::infinity();
  EXPECT_EQ(softmax(from_vector({ninf, ninf, 0, 1}, {2, 2}, {DType::F64})).to_vector()[0], 0.0);
  EXPECT_FALSE(std::isnan(softmax(from_vector({ninf, ninf}, {1, 2}, {DType::F32})).to_vector()[1]));
}

TEST(Forward, CrossEntropyWithIgnoreIndex) {
  Tensor logits = mul(rand_tensor({6, 5}, 6), 4.0);
  std::vector<int64_t> t = {0, 4, -100, 2, 2, -100};
  std::vector<double> v = logits.to_vector();
  double total = 0;
  int valid = 0;
  for (int r = 0; r < 6; ++r) {
    if (t[r] == -100) continue;
    double s = 0;
    for (int c = 0; c < 5; ++c) s += std::exp(v[r * 5 + c]);
    total += std::log(s) - v[r * 5 + t[r]];
    ++valid;
  }
  EXPECT_NEAR(cross_entropy(logits, ids_tensor(t, {6})).item(), total / valid, 1e-12);
  EXPECT_NEAR(cross_entropy(logits, ids_tensor(t, {6}, DType::I32)).item(), total / valid, 1e-12);
  // Stable at extreme logits (a naive exp would overflow).
  Tensor huge = from_vector({1000, 0, -1000, 1000}, {2, 2}, {DType::F32});
  EXPECT_NEAR(cross_entropy(huge, ids_tensor({1, 0}, {2})).item(), (1000 + 2000) / 2.0, 1e-3);
  EXPECT_EQ(cross_entropy(logits, ids_tensor(std::vector<int64_t>(6, -100), {6})).item(), 0.0);
  EXPECT_THROW(cross_entropy(logits, ids_tensor({0, 5, 0, 0, 0, 0}, {6})), std::out_of_range);
}

TEST(Forward, LayerNormAndRmsNorm) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 4; ++trial) {
    Shape s = random_shape(rng, 2, 13);
    int64_t D = s[1];
    Tensor x = add(mul(rand_tensor(s, trial), 3.0), 2.0), w = rand_tensor({D}, 50 + trial), b = rand_tensor({D}, 80 + trial);
    std::vector<double> v = x.to_vector(), vw = w.to_vector(), vb = b.to_vector(), ln(v.size()), rms(v.size());
    for (int64_t r = 0; r < s[0]; ++r) {
      double mu = 0, var = 0, ms = 0;
      for (int64_t j = 0; j < D; ++j) mu += v[r * D + j] / D;
      for (int64_t j = 0; j < D; ++j) {
        var += (v[r * D + j] - mu) * (v[r * D + j] - mu) / D;
        ms += v[r * D + j] * v[r * D + j] / D;
      }
      for (int64_t j = 0; j < D; ++j) {
        ln[r * D + j] = (v[r * D + j] - mu) / std::sqrt(var + 1e-5) * vw[j] + vb[j];
        rms[r * D + j] = v[r * D + j] / std::sqrt(ms + 1e-6) * vw[j];
      }
    }
    EXPECT_TRUE(all_close(layer_norm(x, w, b), from_vector(ln, s, {DType::F64}), 1e-12, 1e-12));
    EXPECT_TRUE(all_close(rms_norm(x, w), from_vector(rms, s, {DType::F64}), 1e-12, 1e-12));
  }
  EXPECT_THROW(layer_norm(rand_tensor({2, 4}, 1), rand_tensor({3}, 2), rand_tensor({3}, 3)), std::invalid_argument);
}

TEST(Forward, EmbeddingGathersRows) {
  Tensor w = rand_tensor({7, 3}, 9);
  std::vector<int64_t> ids = {6, 0, 3, 3};
  Tensor out = embedding(w, ids_tensor(ids, {2, 2}, DType::I32));
  EXPECT_EQ(out.shape(), (Shape{2, 2, 3}));
  std::vector<double> vw = w.to_vector(), vo = out.to_vector();
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(vo[i * 3 + j], vw[ids[i] * 3 + j]);
  EXPECT_THROW(embedding(w, ids_tensor({7}, {1})), std::out_of_range);
  EXPECT_THROW(embedding(w, ids_tensor({-1}, {1})), std::out_of_range);
}

TEST(Forward, PermuteConcatSliceSplit) {
  std::mt19937 rng(11);
  Shape s = random_shape(rng, 4, 5);
  Tensor x = rand_tensor(s, 12);
  std::vector<int64_t> dims = {2, 0, 3, 1};
  Tensor p = permute(x, dims);
  std::vector<double> v = x.to_vector(), vp = p.to_vector();
  auto st = strides_of(s);
  for (int64_t i = 0; i < p.numel(); ++i) {
    auto idx = unravel(i, p.shape());
    int64_t src = 0;
    for (int k = 0; k < 4; ++k) src += idx[k] * st[dims[k]];
    ASSERT_EQ(vp[i], v[src]);
  }
  EXPECT_TRUE(all_close(transpose(transpose(x, 1, 3), 1, 3), x, 0, 0));
  // concat then split is the identity, on every axis
  for (int64_t axis = 0; axis < 4; ++axis) {
    Shape s2 = s;
    s2[axis] = 2;
    Tensor y = rand_tensor(s2, 13);
    Tensor c = concat({x, y}, axis);
    EXPECT_EQ(c.size(axis), s[axis] + 2);
    auto parts = split(c, {s[axis], 2}, axis);
    EXPECT_TRUE(all_close(parts[0], x, 0, 0));
    EXPECT_TRUE(all_close(parts[1], y, 0, 0));
  }
  // slice against the index definition
  Tensor m = rand_tensor({4, 6}, 14);
  std::vector<double> vm = m.to_vector(), vs = slice(m, 1, 1, 4).to_vector();
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(vs[r * 3 + c], vm[r * 6 + c + 1]);
  EXPECT_THROW(slice(m, 1, 2, 7), std::out_of_range);
  EXPECT_THROW(permute(m, {0, 0}), std::invalid_argument);
  EXPECT_THROW(split(m, {2, 3}, 1), std::invalid_argument);
}

TEST(Forward, DropoutIsSeededAndScaled) {
  Tensor x = ones({100000}, {DType::F64});
  Generator g1(5), g2(5);
  std::vector<double> a = dropout(x, 0.25, true, g1).to_vector();
  std::vector<double> b = dropout(x, 0.25, true, g2).to_vector();
  std::vector<double> c = dropout(x, 0.25, true, g1).to_vector();  // next counters: a new mask
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  int64_t zeros_seen = 0;
  for (double v : a) {
    if (v == 0) ++zeros_seen;
    else ASSERT_NEAR(v, 1 / 0.75, 1e-15);
  }
  EXPECT_NEAR(zeros_seen / 100000.0, 0.25, 0.005);  // 3.6 standard errors
  EXPECT_TRUE(dropout(x, 0.25, false, g1).same(x));
  EXPECT_THROW(dropout(x, 1.0, true, g1), std::invalid_argument);
}

TEST(Forward, WhereAndMaskedFill) {
  Tensor a = rand_tensor({2, 3}, 1), b = rand_tensor({2, 3}, 2);
  Tensor cond = ids_tensor({1, 0, 0, 1, 0, 1}, {2, 3}, DType::I32);
  std::vector<double> va = a.to_vector(), vb = b.to_vector(), vw = where(cond, a, b).to_vector(),
                      vm = masked_fill(a, cond, 9.0).to_vector(), vc = cond.to_vector();
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(vw[i], vc[i] ? va[i] : vb[i]);
    EXPECT_EQ(vm[i], vc[i] ? 9.0 : va[i]);
  }
  EXPECT_THROW(where(ids_tensor({1}, {1}), a, b), std::invalid_argument);
}

TEST(Forward, RopeRotatesPairsByPosition) {
  int64_t T = 5, D = 6;
  Tensor x = rand_tensor({2, T, D}, 21);
  std::vector<double> v = x.to_vector(), y = rope(x, 100.0, 3).to_vector();
  for (int64_t r = 0; r < 2 * T; ++r)
    for (int64_t i = 0; i < D / 2; ++i) {
      double a = double(3 + r % T) * std::pow(100.0, -2.0 * i / D);
      double x1 = v[r * D + i], x2 = v[r * D + i + D / 2];
      EXPECT_NEAR(y[r * D + i], x1 * std::cos(a) - x2 * std::sin(a), 1e-15);
      EXPECT_NEAR(y[r * D + i + D / 2], x1 * std::sin(a) + x2 * std::cos(a), 1e-15);
    }
  // A rotation keeps norms, and relative positions: <rope(q, m), rope(k, n)> depends on m - n.
  Tensor q = rand_tensor({1, 1, D}, 22), k = rand_tensor({1, 1, D}, 23);
  double d1 = sum(mul(rope(q, 10000, 7), rope(k, 10000, 4))).item();
  double d2 = sum(mul(rope(q, 10000, 13), rope(k, 10000, 10))).item();
  EXPECT_NEAR(d1, d2, 1e-12);
  EXPECT_THROW(rope(rand_tensor({2, 5}, 1), 10000, 0), std::invalid_argument);
}

// rope(std::move(x)) rotates x's storage itself when nothing else holds it, and only then; the
// values and the gradient are those of the out-of-place op.
TEST(Forward, RopeInPlaceOnlyWhenNothingElseHoldsTheStorage) {
  Tensor x = rand_tensor({2, 3, 7, 8}, 31).set_requires_grad(true);
  Tensor w = rand_tensor({2, 3, 7, 8}, 32);
  Tensor want = rope(mul(x, 1.5), 100.0, 2);
  sum(mul(want, w)).backward();
  const std::vector<double> want_grad = x.grad().to_vector();
  x.zero_grad();

  Tensor h = mul(x, 1.5);  // a fresh activation: in place
  const void* storage = h.raw_data();
  Tensor got = rope(std::move(h), 100.0, 2);
  EXPECT_EQ(got.raw_data(), storage) << "not rotated in place";
  EXPECT_EQ(got.to_vector(), want.to_vector());
  sum(mul(got, w)).backward();
  EXPECT_EQ(x.grad().to_vector(), want_grad);

  Tensor kept = mul(x, 1.5), view = reshape(kept, {6, 7, 8});  // a view shares the storage
  Tensor rotated = rope(std::move(kept), 100.0, 2);
  EXPECT_NE(rotated.raw_data(), view.raw_data());
  EXPECT_EQ(view.to_vector(), mul(x, 1.5).to_vector()) << "a view of the input changed";
  Tensor other = mul(x, 1.5), alias = other;  // a second handle: out of place
  EXPECT_NE(rope(std::move(other), 100.0, 2).raw_data(), alias.raw_data());
  // A leaf that requires grad (a parameter), even with no other handle: never in place. (rope
  // takes x by rvalue reference and leaves it valid when it does not rotate it in place.)
  Tensor param = rand_tensor({1, 4, 8}, 33).set_requires_grad(true);
  const std::vector<double> before = param.to_vector();
  Tensor from_param = rope(std::move(param), 100.0, 0);
  EXPECT_NE(from_param.raw_data(), param.raw_data());
  EXPECT_EQ(param.to_vector(), before);
}

// conv2d against the direct definition y[n, o, oh, ow] = b[o] + Σ_(c, i, j) w[o, c, i, j]·
// x[n, c, oh·s − p + i, ow·s − p + j] (0 outside), over random shapes, strides and paddings.
TEST(Forward, Conv2dMatchesTheDirectSum) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 16; ++trial) {
    const int64_t B = rng() % 3 + 1, Ci = rng() % 3 + 1, Co = rng() % 4 + 1;
    const int64_t KH = rng() % 3 + 1, KW = rng() % 4 + 1, s = rng() % 3 + 1, p = rng() % 3;
    const int64_t H = KH + rng() % 7, W = KW + rng() % 7;  // padding aside, at least one window
    const bool bias = trial % 3 != 0;
    Tensor x = rand_tensor({B, Ci, H, W}, 100 + trial), w = rand_tensor({Co, Ci, KH, KW}, 200 + trial);
    Tensor b = bias ? rand_tensor({Co}, 300 + trial) : Tensor();
    Tensor y = conv2d(x, w, b, s, p);
    const int64_t Ho = (H + 2 * p - KH) / s + 1, Wo = (W + 2 * p - KW) / s + 1;
    ASSERT_EQ(y.shape(), (Shape{B, Co, Ho, Wo}));
    std::vector<double> vx = x.to_vector(), vw = w.to_vector(), ref(B * Co * Ho * Wo);
    std::vector<double> vb = bias ? b.to_vector() : std::vector<double>(Co, 0.0);
    for (int64_t n = 0; n < B; ++n)
      for (int64_t o = 0; o < Co; ++o)
        for (int64_t oh = 0; oh < Ho; ++oh)
          for (int64_t ow = 0; ow < Wo; ++ow) {
            double acc = vb[o];
            for (int64_t c = 0; c < Ci; ++c)
              for (int64_t i = 0; i < KH; ++i)
                for (int64_t j = 0; j < KW; ++j) {
                  const int64_t h = oh * s - p + i, ww = ow * s - p + j;
                  if (h < 0 || h >= H || ww < 0 || ww >= W) continue;
                  acc += vw[((o * Ci + c) * KH + i) * KW + j] * vx[((n * Ci + c) * H + h) * W + ww];
                }
            ref[((n * Co + o) * Ho + oh) * Wo + ow] = acc;
          }
    EXPECT_TRUE(all_close(y, from_vector(ref, y.shape(), {DType::F64}), kTol, kTol))
        << "trial " << trial << ": x " << shape_str(x.shape()) << ", w " << shape_str(w.shape())
        << ", stride " << s << ", padding " << p;
  }
}

// Each bad argument gets an std::invalid_argument that names the op and the shapes.
TEST(Forward, Conv2dRejectsBadArguments) {
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  Tensor x = rand_tensor({2, 3, 5, 6}, 1), w = rand_tensor({4, 3, 3, 3}, 2), b = rand_tensor({4}, 3);
  auto expect_error = [&](const std::string& got, const std::string& part) {
    EXPECT_NE(got.find("conv2d"), std::string::npos) << got;
    EXPECT_NE(got.find(part), std::string::npos) << "expected '" << part << "' in: " << got;
  };
  expect_error(message([&] { conv2d(rand_tensor({3, 5, 6}, 1), w, b); }), "need x [B, Cin, H, W]");
  expect_error(message([&] { conv2d(x, rand_tensor({4, 3, 3}, 2), b); }), "[4, 3, 3]");
  expect_error(message([&] { conv2d(x, rand_tensor({4, 2, 3, 3}, 2), b); }), "x has 3 channels, the weight expects 2");
  expect_error(message([&] { conv2d(x, w, rand_tensor({5}, 3)); }), "bias must be [Cout] = [4]");
  expect_error(message([&] { conv2d(x, w, b, 0); }), "stride must be >= 1");
  expect_error(message([&] { conv2d(x, w, b, 1, -1); }), "padding must be >= 0");
  // 5 + 2·0 rows against a 6-row kernel; with padding 1 it fits.
  expect_error(message([&] { conv2d(x, rand_tensor({4, 3, 6, 2}, 2)); }), "padded input 5 x 6 is smaller than the kernel 6 x 2");
  EXPECT_EQ(conv2d(x, rand_tensor({4, 3, 6, 2}, 2), Tensor(), 1, 1).shape(), (Shape{2, 4, 2, 7}));
  expect_error(message([&] { conv2d(x, rand_tensor({4, 3, 3, 3}, 2, -1, 1, DType::F32)); }), "dtype");
}

// The samples run in parallel and dW's per-sample partials are summed in sample order: the
// output and all three gradients are bit for bit the same on one thread and on several.
TEST(Forward, Conv2dIsTheSameForAnyThreadCount) {
  const int saved = omp_get_max_threads();
  auto run = [](int threads) {
    omp_set_num_threads(threads);
    Tensor x = rand_tensor({5, 3, 17, 13}, 41, -1, 1, DType::F32).set_requires_grad(true);
    Tensor w = rand_tensor({6, 3, 3, 3}, 42, -1, 1, DType::F32).set_requires_grad(true);
    Tensor b = rand_tensor({6}, 43, -1, 1, DType::F32).set_requires_grad(true);
    Tensor y = conv2d(x, w, b, 2, 1);
    sum(mul(y, rand_tensor(y.shape(), 44, -1, 1, DType::F32))).backward();
    return std::vector<std::vector<double>>{y.to_vector(), x.grad().to_vector(), w.grad().to_vector(),
                                            b.grad().to_vector()};
  };
  const auto one = run(1), three = run(3);
  omp_set_num_threads(saved);
  const char* names[] = {"y", "dx", "dw", "db"};
  for (size_t i = 0; i < one.size(); ++i) EXPECT_EQ(one[i], three[i]) << names[i];
}
