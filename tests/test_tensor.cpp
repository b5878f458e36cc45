// Tensor: factories, conversions, views, the counter-based generator, printing.
#include <gtest/gtest.h>

#include "tensor/philox.h"
#include "test_util.h"

using namespace attn;
using attn::testing::all_close;

TEST(Tensor, FactoriesFillValues) {
  EXPECT_EQ(zeros({2, 3}).to_vector(), std::vector<double>(6, 0.0));
  EXPECT_EQ(ones({4}, {DType::I32}).to_vector(), std::vector<double>(4, 1.0));
  EXPECT_EQ(full({2}, 2.5, {DType::F64}).to_vector(), (std::vector<double>{2.5, 2.5}));
  EXPECT_EQ(arange(3, 10, 3, {DType::I64}).to_vector(), (std::vector<double>{3, 6, 9}));
  EXPECT_EQ(arange(2, -1, -1).to_vector(), (std::vector<double>{2, 1, 0}));
  EXPECT_EQ(scalar(7.0).dim(), 0);
  EXPECT_EQ(scalar(7.0).item(), 7.0);
  EXPECT_THROW(arange(0, 3, 0), std::invalid_argument);
  EXPECT_THROW(Tensor::empty({2, -1}), std::invalid_argument);
}

TEST(Tensor, ShapeUtilities) {
  Tensor t = zeros({2, 3, 5});
  EXPECT_EQ(t.numel(), 30);
  EXPECT_EQ(t.size(-1), 5);
  EXPECT_EQ(t.size(0), 2);
  EXPECT_THROW(t.size(3), std::out_of_range);
  EXPECT_EQ(shape_str(t.shape()), "[2, 3, 5]");
  EXPECT_EQ(t.nbytes(), 120u);
}

TEST(Tensor, TypedAccessChecksDtype) {
  Tensor t = zeros({2}, {DType::F64});
  EXPECT_NO_THROW(t.data<double>());
  EXPECT_THROW(t.data<float>(), std::invalid_argument);
}

TEST(Tensor, DtypeConversionsRoundTrip) {
  Tensor x = from_vector({-2.75, 0.0, 1.5, 3.0}, {4}, {DType::F64});
  EXPECT_EQ(x.to(DType::F32).to(DType::F64).to_vector(), x.to_vector());
  EXPECT_EQ(x.to(DType::I32).to_vector(), (std::vector<double>{-2, 0, 1, 3}));  // truncation
  EXPECT_EQ(x.to(DType::I64).to(DType::F32).to_vector(), (std::vector<double>{-2, 0, 1, 3}));
  EXPECT_EQ(x.to(DType::BF16).to_vector(), x.to_vector());  // exactly representable
}

TEST(Tensor, Bf16RoundsToNearestEven) {
  // 1 + 2^-8 lies halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to the even (1).
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 0x1p-8f)), 1.0f);
  // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 3 * 0x1p-8f)), 1.0f + 0x1p-6f);
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 0x1p-8f + 0x1p-12f)), 1.0f + 0x1p-7f);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
  EXPECT_TRUE(std::isinf(bf16_to_float(float_to_bf16(INFINITY))));
}

TEST(Tensor, ReshapeIsAViewAndCloneIsNot) {
  Tensor x = arange(0, 6, 1, {DType::F64});
  Tensor v = reshape(x, {2, -1});
  EXPECT_EQ(v.shape(), (Shape{2, 3}));
  Tensor c = x.clone();
  x.data<double>()[4] = 42;
  EXPECT_EQ(v.to_vector()[4], 42);
  EXPECT_EQ(c.to_vector()[4], 4);
  EXPECT_THROW(reshape(x, {4, -1}), std::invalid_argument);
  EXPECT_THROW(reshape(x, {-1, -1}), std::invalid_argument);
}

// Known-answer test for Philox4x32-10 (Random123's kat_vectors: counter = key = 0).
TEST(Random, PhiloxKnownAnswer) {
  Philox4 r = philox4x32_10(0, 0);
  EXPECT_EQ(r.x[0], 0x6627e8d5u);
  EXPECT_EQ(r.x[1], 0xe169c58du);
  EXPECT_EQ(r.x[2], 0xbc57ac4cu);
  EXPECT_EQ(r.x[3], 0x9b00dbd8u);
}

TEST(Random, SameSeedSameNumbersAndOffsetsAdvance) {
  Generator a(42), b(42);
  Tensor x1 = randn({1000}, a), x2 = randn({1000}, a);
  Tensor y1 = randn({1000}, b);
  EXPECT_EQ(x1.to_vector(), y1.to_vector());
  EXPECT_NE(x1.to_vector(), x2.to_vector());
  EXPECT_EQ(a.offset, 2000u);
  // Counter-based: drawing 2000 at once gives the concatenation of two draws of 1000.
  Generator c(42);
  std::vector<double> both = randn({2000}, c).to_vector();
  std::vector<double> x2v = x2.to_vector();
  EXPECT_TRUE(std::equal(x2v.begin(), x2v.end(), both.begin() + 1000));
}

TEST(Random, MomentsMatchTheDistributions) {
  Generator g(7);
  std::vector<double> n = randn({200000}, g, {DType::F64}, 1.0, 2.0).to_vector();
  std::vector<double> u = uniform({200000}, g, {DType::F64}, -1.0, 3.0).to_vector();
  auto moments = [](const std::vector<double>& v, double& mean, double& var) {
    mean = 0, var = 0;
    for (double x : v) mean += x;
    mean /= v.size();
    for (double x : v) var += (x - mean) * (x - mean);
    var /= v.size();
  };
  double m, v;
  moments(n, m, v);
  EXPECT_NEAR(m, 1.0, 0.02);   // standard error 2/sqrt(2e5) = 0.0045
  EXPECT_NEAR(v, 4.0, 0.05);
  moments(u, m, v);
  EXPECT_NEAR(m, 1.0, 0.01);
  EXPECT_NEAR(v, 16.0 / 12.0, 0.02);
  for (double x : u) ASSERT_TRUE(x >= -1.0 && x < 3.0);
}

TEST(Tensor, PrintingShowsValuesShapeAndElides) {
  std::string s = arange(0, 3, 1, {DType::I64}).str();
  EXPECT_NE(s.find("[0, 1, 2]"), std::string::npos) << s;
  EXPECT_NE(s.find("dtype=i64"), std::string::npos) << s;
  std::string big = arange(0, 100).str(6);
  EXPECT_NE(big.find("..."), std::string::npos) << big;
  EXPECT_NE(big.find("99"), std::string::npos) << big;
}

TEST(Tensor, CudaWithoutDeviceGivesAClearError) {
  if (cuda_available_for_tests()) GTEST_SKIP() << "a CUDA device is visible";
  try {
    zeros({2}).to(Device::cuda(0));
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos) << e.what();
  }
}
