// The autograd engine: accumulation, shared subgraphs, hooks, no-grad, freeing, errors.
#include <gtest/gtest.h>

#include "autograd/node.h"
#include "test_util.h"

using namespace attn;

namespace {
Tensor leaf(std::vector<double> v, Shape s) {
  Tensor t = from_vector(v, s, {DType::F64});
  t.set_requires_grad(true);
  return t;
}
}  // namespace

TEST(Autograd, SharedSubgraphAccumulates) {
  // y = x², z = y·y + 3y  =>  dz/dx = (2y + 3)·2x = 4x³ + 6x
  Tensor x = leaf({1.5, -2.0}, {2});
  Tensor y = mul(x, x);
  Tensor z = sum(add(mul(y, y), mul(y, 3.0)));
  z.backward();
  std::vector<double> g = x.grad().to_vector();
  EXPECT_DOUBLE_EQ(g[0], 4 * 3.375 + 9.0);
  EXPECT_DOUBLE_EQ(g[1], 4 * -8.0 - 12.0);
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCallsUntilZeroed) {
  Tensor x = leaf({2.0}, {1});
  sum(mul(x, 5.0)).backward();
  sum(mul(x, 5.0)).backward();
  EXPECT_DOUBLE_EQ(x.grad().item(), 10.0);
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
  sum(mul(x, 5.0)).backward();
  EXPECT_DOUBLE_EQ(x.grad().item(), 5.0);
}

TEST(Autograd, GraphIsFreedAfterBackwardUnlessRetained) {
  Tensor x = leaf({1.0, 2.0}, {2});
  Tensor loss = sum(exp(x));
  loss.backward(Tensor(), /*retain_graph=*/true);
  loss.backward();  // allowed: the first call retained the graph
  EXPECT_NEAR(x.grad().to_vector()[1], 2 * std::exp(2.0), 1e-12);
  try {
    loss.backward();
    FAIL() << "a third backward through a freed graph must throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("retain_graph"), std::string::npos) << e.what();
  }
}

TEST(Autograd, NonScalarNeedsASeed) {
  Tensor x = leaf({1.0, 2.0}, {2});
  Tensor y = mul(x, 3.0);
  EXPECT_THROW(y.backward(), std::invalid_argument);
  y.backward(from_vector({1.0, 10.0}, {2}, {DType::F64}));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{3.0, 30.0}));
  EXPECT_THROW(y.backward(from_vector({1.0}, {1}, {DType::F64})), std::logic_error);
}

TEST(Autograd, BackwardOnATensorWithoutGradThrows) {
  Tensor x = from_vector({1.0}, {1}, {DType::F64});
  EXPECT_THROW(sum(x).backward(), std::invalid_argument);
}

TEST(Autograd, NoGradGuardRecordsNothing) {
  Tensor x = leaf({1.0}, {1});
  {
    NoGradGuard guard;
    Tensor y = mul(x, 2.0);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_TRUE(y.is_leaf());
  }
  Tensor y = mul(x, 2.0);
  EXPECT_TRUE(y.requires_grad());
  EXPECT_FALSE(y.is_leaf());
}

TEST(Autograd, OnlyInputsThatRequireGradGetGradients) {
  Tensor a = leaf({2.0}, {1});
  Tensor b = from_vector({3.0}, {1}, {DType::F64});
  sum(mul(a, b)).backward();
  EXPECT_DOUBLE_EQ(a.grad().item(), 3.0);
  EXPECT_FALSE(b.grad().defined());
}

TEST(Autograd, GradReadyHookFiresOnceWithTheFinalGradient) {
  // w is used twice; its hook must see the sum of both contributions, once.
  Tensor w = leaf({1.0, 2.0}, {2});
  Tensor other = leaf({5.0}, {1});
  std::vector<std::vector<double>> seen;
  w.add_grad_ready_hook([&](const Tensor& g) { seen.push_back(g.to_vector()); });
  Tensor loss = add(sum(mul(w, 3.0)), mul(sum(mul(w, w)), other));
  loss.backward();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], (std::vector<double>{3 + 2 * 1 * 5.0, 3 + 2 * 2 * 5.0}));
  EXPECT_THROW(mul(w, 2.0).add_grad_ready_hook([](const Tensor&) {}), std::invalid_argument);
}

TEST(Autograd, HooksFireInReverseOrderOfUse) {
  // Layers applied 1 then 2: DDP relies on layer 2's gradient being ready before layer 1's.
  Tensor w1 = leaf({0.5}, {1}), w2 = leaf({0.25}, {1});
  std::vector<int> order;
  w1.add_grad_ready_hook([&](const Tensor&) { order.push_back(1); });
  w2.add_grad_ready_hook([&](const Tensor&) { order.push_back(2); });
  Tensor x = from_vector({3.0}, {1}, {DType::F64});
  sum(tanh(mul(tanh(mul(x, w1)), w2))).backward();
  EXPECT_EQ(order, (std::vector<int>{2, 1}));
}

TEST(Autograd, DeepChainDoesNotOverflowTheStack) {
  Tensor x = leaf({1.0}, {1});
  Tensor y = x;
  for (int i = 0; i < 100000; ++i) y = add(y, 1.0);
  sum(y).backward();
  EXPECT_DOUBLE_EQ(x.grad().item(), 1.0);
}

TEST(Autograd, OnlyFloatingLeavesCanRequireGrad) {
  Tensor ids = zeros({2}, {DType::I64});
  EXPECT_THROW(ids.set_requires_grad(true), std::invalid_argument);
}

TEST(Autograd, DeepGraphWithoutBackwardIsFreedWithoutRecursion) {
  Tensor x = leaf({1.0}, {1});
  {
    Tensor y = x;
    for (int i = 0; i < 200000; ++i) y = add(y, 1.0);
  }  // destroying 2·10⁵ nodes recursively would overflow an 8 MiB stack
  EXPECT_TRUE(x.requires_grad());
}

TEST(Autograd, LeafGradientsNeverShareStorage) {
  // add's backward passes the same g to both inputs; in-place updates of one leaf's gradient
  // (clipping, optimizers) must not reach the other's.
  Tensor a = leaf({1.0, 2.0}, {2}), b = leaf({3.0, 4.0}, {2});
  sum(mul(add(a, b), 2.0)).backward();
  a.grad().data<double>()[0] = 100;
  EXPECT_EQ(b.grad().to_vector(), (std::vector<double>{2.0, 2.0}));
}

// The graph holds ops, not their inputs: an activation that no backward needs (adding a
// constant saves nothing) is freed as soon as its owner drops it, while the graph through it
// still carries the gradient. (Scalars the ops keep add a few bytes: hence the slack.)
TEST(Autograd, TheGraphDoesNotKeepActivationsAlive) {
  Tensor x = leaf(std::vector<double>(1 << 16, 0.5), {1 << 16});
  const size_t big = (size_t{1} << 16) * sizeof(double), slack = 1024;
  const size_t before = Storage::live_bytes(Device::CPU);
  Tensor y;
  {
    Tensor h = mul(x, 3.0);  // an activation of 512 KiB
    y = add(h, 1.0);         // and another
    EXPECT_GE(Storage::live_bytes(Device::CPU), before + 2 * big);
  }  // h's only owner is gone
  EXPECT_LT(Storage::live_bytes(Device::CPU), before + big + slack)
      << "h is still alive (only y should be)";
  sum(y).backward();
  for (double g : x.grad().to_vector()) ASSERT_EQ(g, 3.0);
}
