// CUDA storage: copies and the counter-based generator on the device (label gpu).
#include <gtest/gtest.h>

#include "test_util.h"

using namespace attn;

#define SKIP_WITHOUT_GPU() \
  if (!cuda_available_for_tests()) GTEST_SKIP() << "no CUDA device visible: GPU test skipped"

TEST(GpuTensor, RoundTripKeepsEveryDtype) {
  SKIP_WITHOUT_GPU();
  for (DType dt : {DType::F32, DType::F64, DType::BF16, DType::I32, DType::I64}) {
    Tensor x = arange(-50, 50, 1, {dt});
    Tensor back = x.to(Device::cuda(0)).to(Device::cpu());
    EXPECT_EQ(back.to_vector(), x.to_vector()) << dtype_name(dt);
    EXPECT_TRUE(x.to(Device::cuda(0)).device().is_cuda());
  }
}

TEST(GpuTensor, ConversionOnDeviceTensors) {
  SKIP_WITHOUT_GPU();
  Tensor x = from_vector({1.5, -2.25, 3.0}, {3}, {DType::F32, Device::cuda(0)});
  EXPECT_EQ(x.to(DType::F64).to_vector(), (std::vector<double>{1.5, -2.25, 3.0}));
  EXPECT_TRUE(x.to(DType::BF16).device().is_cuda());
}

TEST(GpuTensor, GeneratorGivesTheSameNumbersAsTheCpu) {
  SKIP_WITHOUT_GPU();
  Generator gc(123), gg(123);
  std::vector<double> cn = randn({1 << 20}, gc).to_vector();
  std::vector<double> gn = randn({1 << 20}, gg, {DType::F32, Device::cuda(0)}).to_vector();
  std::vector<double> cu = uniform({4097}, gc, {}, -2, 5).to_vector();
  std::vector<double> gu = uniform({4097}, gg, {DType::F32, Device::cuda(0)}, -2, 5).to_vector();
  EXPECT_EQ(cu, gu);
  // Normals go through f64 log/cos, which may differ by an ulp between libm and CUDA; rounded to
  // f32 they agree except where the f64 value sits on an f32 rounding boundary (~2^-29 per value).
  int64_t differ = 0;
  for (size_t i = 0; i < cn.size(); ++i) {
    if (cn[i] != gn[i]) ++differ;
    ASSERT_NEAR(cn[i], gn[i], 1e-6 * std::max(1.0, std::abs(cn[i]))) << i;
  }
  EXPECT_LE(differ, 2);
}
