#include "bench/bench_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <stdexcept>

#include "backend/cuda/cuda_api.h"
#include "backend/cuda/flash_attention.h"
#include "ops/ops.h"
#include "tensor/tensor.h"

#if defined(ATTNLAB_WITH_CUDA)
#include "backend/cuda/cuda_check.h"
#endif

namespace attn::bench {

namespace {

int check_options(const AttentionBenchOptions& o) {
  auto bad = [](const std::string& what) {
    std::fprintf(stderr, "attnlab bench attention: %s\n", what.c_str());
    return 2;
  };
  if (o.batch < 1 || o.heads < 1 || o.seq < 1) return bad("batch, heads and seq must be >= 1");
  if (o.warmup < 0 || o.repeats < 1) return bad("need warmup >= 0 and repeats >= 1");
  for (int64_t d : o.head_dims)
    if (!cuda::flash_attention_supports_head_dim(d))
      return bad("head dim " + std::to_string(d) + " is not supported (64 or 128)");
  for (const std::string& v : o.variants) {
    AttentionVariant parsed;
    try {
      parsed = parse_variant(v);
    } catch (const std::exception& e) {
      return bad(e.what());
    }
    if (parsed == AttentionVariant::Sink || parsed == AttentionVariant::ClippedSoftmax)
      return bad("variant '" + v + "' has no flash kernel to benchmark (softmax, sigmoid or softmax1)");
  }
  for (const std::string& m : o.masks)
    if (m != "full" && m != "causal") return bad("mask '" + m + "' (expected full or causal)");
  return 0;
}

#if defined(ATTNLAB_WITH_CUDA)

// Median wall time of f() in milliseconds, each repeat bracketed by events on the stream the
// kernels use.
double median_ms(const std::function<void()>& f, int warmup, int repeats) {
  cudaStream_t s = cudaStreamPerThread;
  for (int i = 0; i < warmup; ++i) f();
  cudaEvent_t start, stop;
  ATTNLAB_CUDA_CHECK(cudaEventCreate(&start));
  ATTNLAB_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    ATTNLAB_CUDA_CHECK(cudaEventRecord(start, s));
    f();
    ATTNLAB_CUDA_CHECK(cudaEventRecord(stop, s));
    ATTNLAB_CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    ATTNLAB_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  ATTNLAB_CUDA_CHECK(cudaEventDestroy(start));
  ATTNLAB_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms.size() % 2 ? ms[ms.size() / 2] : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
}

cuda::FlashVariant to_flash(AttentionVariant v) {
  return v == AttentionVariant::Softmax   ? cuda::FlashVariant::Softmax
         : v == AttentionVariant::Sigmoid ? cuda::FlashVariant::Sigmoid
                                          : cuda::FlashVariant::Softmax1;
}

template <class T>
T* ptr(Tensor& t) {
  return static_cast<T*>(t.raw_data());
}

#endif

}  // namespace

int run_attention_bench(const AttentionBenchOptions& o) {
  if (int rc = check_options(o)) return rc;
#if !defined(ATTNLAB_WITH_CUDA)
  std::fprintf(stderr,
               "attnlab bench attention: needs a CUDA device; this attnlab was built without CUDA "
               "(configure with -DATTNLAB_CUDA=ON)\n");
  return 1;
#else
  if (cuda::device_count() == 0) {
    std::fprintf(stderr, "attnlab bench attention: needs a CUDA device (none is visible)\n");
    return 1;
  }
  const int device = 0;
  cudaDeviceProp prop{};
  ATTNLAB_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  const int64_t B = o.batch, H = o.heads, N = o.seq;
  if (o.csv)
    std::printf("variant,head_dim,mask,batch,heads,seq,fwd_ms,fwd_tflops,fwd_bwd_ms,fwd_bwd_tflops\n");
  else
    std::printf("attnlab bench attention on %s: bf16, B %lld, H %lld, N = M = %lld, %d warm-up, "
                "median of %d\n"
                "FLOPs = 4*B*H*N^2*D, halved when causal, x3.5 for fwd+bwd\n\n"
                "| variant | D | mask | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s |\n"
                "|---|---|---|---|---|---|---|\n",
                prop.name, static_cast<long long>(B), static_cast<long long>(H),
                static_cast<long long>(N), o.warmup, o.repeats);
  const Device dev = Device::cuda(device);
  for (int64_t D : o.head_dims) {
    Generator gen(1234);
    auto input = [&](double lo, double hi) {
      return uniform({B, H, N, D}, gen, {DType::F32, dev}, lo, hi).to(DType::BF16);
    };
    Tensor q = input(-2, 2), k = input(-2, 2), v = input(-1, 1), dout = input(-1, 1);
    Tensor out = Tensor::empty({B, H, N, D}, DType::BF16, dev);
    Tensor dq = Tensor::empty({B, H, N, D}, DType::BF16, dev);
    Tensor dk = Tensor::empty({B, H, N, D}, DType::BF16, dev);
    Tensor dv = Tensor::empty({B, H, N, D}, DType::BF16, dev);
    Tensor dq_accum = Tensor::empty({B, H, N, D}, DType::F32, dev);
    Tensor lse = Tensor::empty({B, H, N}, DType::F32, dev);
    Tensor dsum = Tensor::empty({B, H, N}, DType::F32, dev);
    for (const std::string& vname : o.variants)
      for (const std::string& mask : o.masks) {
        cuda::FlashAttnConfig c;
        c.B = B;
        c.H = H;
        c.N = c.M = N;
        c.D = D;
        c.variant = to_flash(parse_variant(vname));
        c.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
        c.sigmoid_bias = static_cast<float>(-std::log(static_cast<double>(N)));  // b = -ln n
        c.causal = mask == "causal";
        c.sigmoid_rcp_fma = cuda::sigmoid_rcp_fma_requested();
        c.device = device;
        auto fwd = [&] {
          cuda::flash_attention_forward(c, ptr<bf16>(q), ptr<bf16>(k), ptr<bf16>(v),
                                        ptr<bf16>(out), ptr<float>(lse));
        };
        auto fwd_bwd = [&] {
          fwd();
          cuda::flash_attention_backward(c, ptr<bf16>(q), ptr<bf16>(k), ptr<bf16>(v),
                                         ptr<bf16>(out), ptr<float>(lse), ptr<bf16>(dout),
                                         ptr<bf16>(dq), ptr<bf16>(dk), ptr<bf16>(dv),
                                         ptr<float>(dq_accum), ptr<float>(dsum));
        };
        const double t_fwd = median_ms(fwd, o.warmup, o.repeats);
        const double t_all = median_ms(fwd_bwd, o.warmup, o.repeats);
        const double flops = 4.0 * B * H * static_cast<double>(N) * N * D * (c.causal ? 0.5 : 1.0);
        const double tf_fwd = flops / (t_fwd * 1e-3) / 1e12;
        const double tf_all = 3.5 * flops / (t_all * 1e-3) / 1e12;
        if (o.csv)
          std::printf("%s,%lld,%s,%lld,%lld,%lld,%.4f,%.1f,%.4f,%.1f\n", vname.c_str(),
                      static_cast<long long>(D), mask.c_str(), static_cast<long long>(B),
                      static_cast<long long>(H), static_cast<long long>(N), t_fwd, tf_fwd, t_all,
                      tf_all);
        else
          std::printf("| %s | %lld | %s | %.3f | %.1f | %.3f | %.1f |\n", vname.c_str(),
                      static_cast<long long>(D), mask.c_str(), t_fwd, tf_fwd, t_all, tf_all);
        std::fflush(stdout);
      }
  }
  return 0;
#endif
}

}  // namespace attn::bench
