// Host side of the flash-attention kernels: argument checks, the variant × head-dim dispatch
// (the only template instantiations: 3 variants × {64, 128} × {forward, backward}), launches.
#include "backend/cuda/flash_attention.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/launch.h"
#if defined(ATTNLAB_CUDA_EMULATION)
#include "backend/cuda_emu/ptx_emu.h"  // the PTX the kernels use, on the CPU
#endif
#include "kernels/flash_attention.cuh"

namespace attn::cuda {

namespace {

namespace fl = attn::flash;

[[noreturn]] void bad(const std::string& what) {
  throw std::invalid_argument("flash attention: " + what);
}

void check_config(const FlashAttnConfig& c) {
  if (!flash_attention_supports_head_dim(c.D))
    bad("head dim " + std::to_string(c.D) + " is not supported (the CUDA kernels take 64 or 128)");
  // Grid: (tiles, H, B); y and z are limited to 65535.
  if (c.B < 1 || c.B > 65535 || c.H < 1 || c.H > 65535)
    bad("need 1 <= B, H <= 65535, got B " + std::to_string(c.B) + ", H " + std::to_string(c.H));
  constexpr int64_t kMaxLen = int64_t{1} << 30;  // row indices are int in the kernels
  if (c.N < 0 || c.M < 0 || c.N > kMaxLen || c.M > kMaxLen)
    bad("sequence lengths out of range: N " + std::to_string(c.N) + ", M " + std::to_string(c.M));
  // Positive: the kernels take the row max of unscaled scores (kernels/flash_attention.cuh).
  if (!(c.scale > 0.f && c.scale - c.scale == 0.f))
    bad("scale must be finite and > 0, got " + std::to_string(c.scale));
  if (c.variant == FlashVariant::Sink && !c.sink) bad("the sink variant needs the sink logits (config.sink)");
  if ((c.sigmoid_bias_h || c.sigmoid_bias_per_row) && c.variant != FlashVariant::Sigmoid)
    bad("a per-head or per-row bias is for the sigmoid variant only");
  if (c.sigmoid_bias_h && c.sigmoid_bias_per_row) bad("the sigmoid bias is per head or per row, not both");
}

fl::Params make_params(const FlashAttnConfig& c) {
  fl::Params p{};
  p.B = static_cast<int>(c.B);
  p.H = static_cast<int>(c.H);
  p.N = static_cast<int>(c.N);
  p.M = static_cast<int>(c.M);
  p.scale = c.scale;
  p.sigmoid_bias = c.sigmoid_bias;
  p.causal = c.causal;
  p.key_len = c.key_len;
  p.slopes = c.alibi_slopes;
  p.sink = c.variant == FlashVariant::Sink ? c.sink : nullptr;
  p.sigmoid_bias_h = c.sigmoid_bias_h;
  p.sigmoid_bias_per_row = c.sigmoid_bias_per_row;
  return p;
}

// Calls f(Policy{}, std::integral_constant<int, D>{}) for the config's variant and head dim
// (the forward takes the sigmoid policy with the reciprocal on the FMA pipe when asked for).
template <class F>
void dispatch(const FlashAttnConfig& c, bool forward, F&& f) {
  auto with_dim = [&](auto policy) {
    if (c.D == 64) f(policy, std::integral_constant<int, 64>{});
    else f(policy, std::integral_constant<int, 128>{});  // check_config allowed only 64, 128
  };
  switch (c.variant) {
    case FlashVariant::Softmax: with_dim(fl::SoftmaxPolicy{}); return;
    case FlashVariant::Sigmoid:
      if (forward && c.sigmoid_rcp_fma)
        with_dim(fl::SigmoidFmaPolicy{});
      else
        with_dim(fl::SigmoidPolicy{});
      return;
    case FlashVariant::Softmax1:
    case FlashVariant::Sink: with_dim(fl::Softmax1Policy{}); return;  // the sink rides in Params
  }
  bad("unknown variant");
}

// Opts the kernel into `bytes` of dynamic shared memory, with a clear error where the device
// has less (the backward for D = 128 needs 160 KiB: sm_80 and sm_90 have it, sm_86/89 do not).
template <class Kernel>
void set_smem(Kernel kernel, int bytes, int device, const char* what) {
  int optin = 0;
  ATTNLAB_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (optin < bytes)
    throw std::runtime_error(std::string("flash attention: the ") + what + " kernel needs " +
                             std::to_string(bytes) + " bytes of shared memory per block; device " +
                             std::to_string(device) + " allows " + std::to_string(optin) +
                             " (supported: sm_80, sm_90)");
  ATTNLAB_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

unsigned blocks_for(int64_t n, int per_block) {
  return static_cast<unsigned>((n + per_block - 1) / per_block);
}

}  // namespace

bool flash_attention_supports_head_dim(int64_t D) { return D == 64 || D == 128; }

void flash_attention_forward(const FlashAttnConfig& c, const bf16* q, const bf16* k, const bf16* v,
                             bf16* o, float* lse) {
  check_config(c);
  const bool has_lse = c.variant != FlashVariant::Sigmoid;
  if (!q || !k || !v || !o || (has_lse && !lse)) bad("null pointer argument (forward)");
  if (c.N == 0) return;
  ATTNLAB_CUDA_CHECK(cudaSetDevice(c.device));
  fl::Params p = make_params(c);
  p.q = q;
  p.k = k;
  p.v = v;
  p.o = o;
  p.lse = has_lse ? lse : nullptr;
  dispatch(c, /*forward=*/true, [&](auto policy, auto dim) {
    constexpr int kD = decltype(dim)::value;
    using Tiles = fl::FwdTiles<kD>;
    auto kernel = fl::flash_fwd_kernel<decltype(policy), kD>;
    set_smem(kernel, Tiles::kSmemBytes, c.device, "forward");
    dim3 grid(blocks_for(c.N, Tiles::kBlockM), static_cast<unsigned>(c.H),
              static_cast<unsigned>(c.B));
    launch(kernel, {grid, Tiles::kThreads, Tiles::kSmemBytes, cudaStreamPerThread}, p);
    ATTNLAB_CUDA_CHECK(cudaGetLastError());
  });
}

void flash_attention_backward(const FlashAttnConfig& c, const bf16* q, const bf16* k,
                              const bf16* v, const bf16* o, const float* lse, const bf16* dout,
                              bf16* dq, bf16* dk, bf16* dv, float* dq_accum, float* dsum,
                              float* dsigmoid_bias) {
  check_config(c);
  if (dsigmoid_bias && !c.sigmoid_bias_h)
    bad("dsigmoid_bias is the gradient of a per-head bias (config.sigmoid_bias_h)");
  const bool softmax_family = c.variant != FlashVariant::Sigmoid;
  if (!q || !k || !v || !dout || !dq || !dk || !dv || !dq_accum ||
      (softmax_family && (!o || !lse || !dsum)))
    bad("null pointer argument (backward)");
  ATTNLAB_CUDA_CHECK(cudaSetDevice(c.device));
  cudaStream_t stream = cudaStreamPerThread;
  // The kernel's CTAs add their Σ dS per head into it.
  if (dsigmoid_bias) ATTNLAB_CUDA_CHECK(cudaMemsetAsync(dsigmoid_bias, 0, c.H * sizeof(float), stream));
  if (c.N == 0 && c.M == 0) return;
  fl::Params p = make_params(c);
  p.q = q;
  p.k = k;
  p.v = v;
  p.o = const_cast<bf16*>(o);       // read only in the backward (the dsum pre-pass)
  p.lse = const_cast<float*>(lse);  // read only in the backward
  p.dout = dout;
  p.dq = dq;
  p.dk = dk;
  p.dv = dv;
  p.dq_accum = dq_accum;
  p.dsum = softmax_family ? dsum : nullptr;
  p.dsigmoid_bias = dsigmoid_bias;
  const int64_t q_rows = c.B * c.H * c.N;
  const int64_t q_elems = q_rows * c.D;

  dispatch(c, /*forward=*/false, [&](auto policy, auto dim) {
    using Policy = decltype(policy);
    constexpr int kD = decltype(dim)::value;
    using Tiles = fl::BwdTiles<kD>;
    if (q_elems > 0) {
      ATTNLAB_CUDA_CHECK(cudaMemsetAsync(dq_accum, 0, q_elems * sizeof(float), stream));
      if constexpr (!Policy::kSigmoid) {
        launch(fl::flash_bwd_dsum_kernel<kD>, {blocks_for(q_rows * (kD / 8), 256), 256, 0, stream},
               dout, o, dsum, q_rows);
        ATTNLAB_CUDA_CHECK(cudaGetLastError());
      }
    }
    if (c.M > 0) {
      auto kernel = fl::flash_bwd_kernel<Policy, kD>;
      set_smem(kernel, Tiles::kSmemBytes, c.device, "backward");
      dim3 grid(blocks_for(c.M, Tiles::kBlockN), static_cast<unsigned>(c.H),
                static_cast<unsigned>(c.B));
      // With N == 0 the kernel only writes dK = dV = 0.
      launch(kernel, {grid, Tiles::kThreads, Tiles::kSmemBytes, stream}, p);
      ATTNLAB_CUDA_CHECK(cudaGetLastError());
    }
    if (q_elems > 0) {
      const unsigned blocks = static_cast<unsigned>(
          std::min<int64_t>(blocks_for(q_elems / 4, 256), 65535));
      launch(fl::flash_bwd_convert_dq_kernel, {blocks, 256, 0, stream}, dq_accum, dq, c.scale,
             q_elems);
      ATTNLAB_CUDA_CHECK(cudaGetLastError());
    }
  });
}

}  // namespace attn::cuda
