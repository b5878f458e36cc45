// The emulated CUDA device itself (src/backend/cuda_emu/; label emu): that barriers wait,
// shuffles exchange, launches are refused where a GPU refuses them, and that the checks which
// make the emulated gpu suites worth running do fire: writes out of bounds, barriers or
// shuffles not reached by every thread, host pointers passed as device memory. Also the flash
// kernels with every cp.async landing at issue (the earliest a copy may land).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cuda/cuda_api.h"
#include "backend/cuda/launch.h"
#include "backend/cuda/ops_cuda.h"
#include "backend/cuda_emu/ptx_emu.h"
#include "flash_check.h"
#include "kernels/common.cuh"
#include "kernels/flash_attention.cuh"

using namespace attn;
using attn::cuda::launch;

namespace {

// out[block] = Σ in over the block's 256 values, through shared memory: thread 0 reads what the
// other threads wrote, so it needs the barrier to have waited for them.
__global__ void shared_sum_kernel(const float* in, float* out) {
  __shared__ float vals[256];
  vals[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0;
    for (int i = 0; i < 256; ++i) s += vals[i];
    out[blockIdx.x] = s;
  }
}

// Every lane gets the warp's sum (kern::warp_sum: five xor shuffles).
__global__ void warp_sum_kernel(const float* in, float* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = kern::warp_sum(in[i]);
}

__global__ void write_kernel(float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = 1.f;
}

__global__ void divergent_barrier_kernel(float* out) {
  if (threadIdx.x < 32) __syncthreads();
  out[threadIdx.x] = 0.f;
}

__global__ void early_exit_barrier_kernel(float* out) {
  if (threadIdx.x >= 64) return;
  __syncthreads();
  out[threadIdx.x] = 0.f;
}

__global__ void smem_kernel(float* out) {
  out[0] = static_cast<float>(attn::emu::dynamic_smem_bytes());
}

template <class T>
T* device_array(size_t n) {
  return static_cast<T*>(cuda::device_alloc(n * sizeof(T), 0));
}

}  // namespace

TEST(CudaEmu, BarriersWaitForTheWholeBlock) {
  constexpr int kBlocks = 3;
  float* in = device_array<float>(256 * kBlocks);
  float* out = device_array<float>(kBlocks);
  for (int i = 0; i < 256 * kBlocks; ++i) in[i] = static_cast<float>(i % 256);
  launch(shared_sum_kernel, {kBlocks, 256, 0, cudaStreamPerThread}, in, out);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  for (int b = 0; b < kBlocks; ++b) EXPECT_EQ(out[b], 255.f * 256.f / 2.f) << "block " << b;
  cuda::device_free(in, 0);
  cuda::device_free(out, 0);
}

TEST(CudaEmu, ShufflesExchangeWithinEachWarp) {
  float* in = device_array<float>(128);
  float* out = device_array<float>(128);
  for (int i = 0; i < 128; ++i) in[i] = static_cast<float>(i);
  launch(warp_sum_kernel, {2, 64, 0, cudaStreamPerThread}, in, out);
  for (int i = 0; i < 128; ++i) {
    const int w = i / 32;  // lanes 32w .. 32w + 31 sum to 32·32w + 496
    EXPECT_EQ(out[i], static_cast<float>(1024 * w + 496)) << "thread " << i;
  }
  cuda::device_free(in, 0);
  cuda::device_free(out, 0);
}

TEST(CudaEmu, FreshDeviceMemoryIsPoisoned) {
  float* p = device_array<float>(64);
  for (int i = 0; i < 64; ++i) EXPECT_TRUE(std::isnan(p[i])) << i;
  cuda::device_free(p, 0);
}

TEST(CudaEmu, BadLaunchConfigurationsAreRefusedAndRunNothing) {
  float* out = device_array<float>(4096);
  std::memset(out, 0, 4096 * sizeof(float));
  launch(write_kernel, {1, 2048, 0, cudaStreamPerThread}, out, 4096);  // > 1024 threads
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "the error is reported once";
  launch(write_kernel, {dim3(1, 70000), 32, 0, cudaStreamPerThread}, out, 4096);  // grid y
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(out[0], 0.f) << "a refused launch ran";

  // Over 48 KiB of dynamic shared memory needs the kernel's opt-in, up to the device's maximum.
  launch(smem_kernel, {1, 32, 64 * 1024, cudaStreamPerThread}, out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(
      cudaFuncSetAttribute(smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024),
      cudaErrorInvalidValue);
  ASSERT_EQ(
      cudaFuncSetAttribute(smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024),
      cudaSuccess);
  launch(smem_kernel, {1, 32, 64 * 1024, cudaStreamPerThread}, out);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(out[0], 64.f * 1024.f);
  cuda::device_free(out, 0);
}

using CudaEmuDeathTest = ::testing::Test;

TEST(CudaEmuDeathTest, AWritePastTheEndNamesTheLaunch) {
  EXPECT_DEATH(
      {
        float* out = device_array<float>(100);
        launch(write_kernel, {1, 128, 0, cudaStreamPerThread}, out, 101);  // one too many
      },
      "test_cuda_emu.cpp:[0-9]+ wrote outside a device allocation of 400 bytes");
}

TEST(CudaEmuDeathTest, ABarrierNotReachedByEveryThreadStops) {
  EXPECT_DEATH(
      {
        float* out = device_array<float>(64);
        launch(divergent_barrier_kernel, {1, 64, 0, cudaStreamPerThread}, out);
      },
      "32 wait at __syncthreads.* 32 have exited");
  EXPECT_DEATH(
      {
        float* out = device_array<float>(128);
        launch(early_exit_barrier_kernel, {1, 128, 0, cudaStreamPerThread}, out);
      },
      "64 wait at __syncthreads.* 64 have exited");
}

TEST(CudaEmuDeathTest, AShuffleInAPartialWarpStops) {
  EXPECT_DEATH(
      {
        float* p = device_array<float>(48);
        launch(warp_sum_kernel, {1, 48, 0, cudaStreamPerThread}, p, p);
      },
      "partial warp");
}

TEST(CudaEmuDeathTest, AHostPointerIsNotDeviceMemory) {
  std::vector<float> host(16);
  EXPECT_DEATH(cuda::copy(host.data(), true, host.data(), false, 64),
               "cudaMemcpy destination: 64 bytes .* not inside one device allocation");
}

// The flash kernels' tiles must never be read before their copy has landed nor overwritten while
// a warp still reads them: with every copy performed at issue (instead of at the wait), the
// results must not change.
TEST(CudaEmu, FlashKernelsWithCopiesLandingAtIssue) {
  using attn::testing::check_flash_case;
  attn::emu::ptx_state::copies_at_issue = true;
  check_flash_case({AttentionVariant::Softmax, 64, 1, 1, 130, 200, true, true, false, 31});
  check_flash_case({AttentionVariant::Sigmoid, 128, 1, 1, 70, 130, false, false, true, 32});
  check_flash_case({AttentionVariant::Softmax1, 64, 2, 1, 64, 129, true, false, false, 33});
  attn::emu::ptx_state::copies_at_issue = false;
}

// cuBLASLt's GELU_AUX_BIAS epilogue through the backend's gemm_bias_gelu: C = gelu(pre) and
// pre = X·Wᵀ + b written to the aux buffer, in one call; and "no algorithm" (here: an aux
// leading dimension that is not a multiple of 8) reported without writing anything, which is
// what sends linear_gelu to its fallback.
TEST(CudaEmu, GemmWithTheGeluEpilogueWritesBothOutputs) {
  const int64_t R = 5, in = 7;
  for (int64_t out : {24, 13}) {
    float* x = device_array<float>(R * in);
    float* w = device_array<float>(out * in);
    float* b = device_array<float>(out);
    float* y = device_array<float>(R * out);
    float* pre = device_array<float>(R * out);
    for (int64_t i = 0; i < R * in; ++i) x[i] = 0.1f * static_cast<float>(i % 11) - 0.5f;
    for (int64_t i = 0; i < out * in; ++i) w[i] = 0.05f * static_cast<float>(i % 13) - 0.3f;
    for (int64_t j = 0; j < out; ++j) b[j] = 0.01f * static_cast<float>(j);
    const bool fused =
        cuda::gemm_bias_gelu(DType::F32, false, true, R, out, in, x, in, w, in, y, pre, out, b, 0);
    EXPECT_EQ(fused, out % 8 == 0) << "out " << out;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t j = 0; j < out; ++j) {
        double p = b[j];
        for (int64_t k = 0; k < in; ++k) p += static_cast<double>(x[r * in + k]) * w[j * in + k];
        const double g = 0.5 * p * (1 + std::tanh(0.7978845608028654 * (p + 0.044715 * p * p * p)));
        if (fused) {
          EXPECT_NEAR(pre[r * out + j], p, 1e-6) << r << ", " << j;
          EXPECT_NEAR(y[r * out + j], g, 1e-6) << r << ", " << j;
        } else {
          EXPECT_TRUE(std::isnan(y[r * out + j]) && std::isnan(pre[r * out + j]))
              << "written without an algorithm";
        }
      }
    for (void* p : {static_cast<void*>(x), static_cast<void*>(w), static_cast<void*>(b),
                    static_cast<void*>(y), static_cast<void*>(pre)})
      cuda::device_free(p, 0);
  }
}

// The flash kernels' FMA-pipe reciprocal and the sigmoid built on it (ATTNLAB_SIGMOID_RCP=fma),
// as device functions: within [−1.05e-4, +1.2e-7] relative over all of [1, 2^126 + 1] (a dense
// sweep of [1, 2) and random exponents), and σ within 1.1e-4 relative where it is not clamped.
TEST(CudaEmu, FmaPipeReciprocalAndSigmoidAreAccurate) {
  double lo = 0, hi = 0;
  auto check = [&](float d) {
    const double rel = static_cast<double>(attn::flash::rcp_fma(d)) * d - 1.0;
    lo = std::min(lo, rel);
    hi = std::max(hi, rel);
  };
  for (int i = 0; i <= 200000; ++i) check(1.f + static_cast<float>(i) / 200000.f);
  Generator g(5);
  for (double e : uniform({20000}, g, {DType::F64}, 0, 126).to_vector())
    check(static_cast<float>(std::exp2(e)));
  check(std::ldexp(1.f, 126) + 1.f);
  EXPECT_GE(lo, -1.05e-4);
  EXPECT_LE(hi, 1.2e-7);
  const float c = 1.4426950408889634f;  // raw scores in natural units: t = c·r
  for (double r = -80; r <= 30; r += 0.01) {
    const double want = 1.0 / (1.0 + std::exp(-r));
    const double got = attn::flash::sigmoid_from_raw_fma(static_cast<float>(r), c);
    ASSERT_NEAR(got, want, 1.1e-4 * want + 1e-37) << "r " << r;
  }
}
