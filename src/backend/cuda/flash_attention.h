// Host launchers of the flash-attention kernels (kernels/flash_attention.cuh): bf16 q, k, v, o,
// f32 lse, raw device pointers, all work on cudaStreamPerThread (the stream the tensor allocator
// and copies use). Plain C++: included by CPU code too. In a CPU-only build cuda_stub.cpp
// defines these to throw.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "tensor/dtype.h"

namespace attn::cuda {

// Sink: softmax_1's kernels with the extra key's logit sink_h (natural log, not scaled by s)
// instead of 0; its own gradient is the caller's (−Σ_i e^{sink − lse_i}·D_i).
enum class FlashVariant { Softmax, Sigmoid, Softmax1, Sink };

// One call's shapes and options. All pointers are device memory.
struct FlashAttnConfig {
  int64_t B = 0, H = 0;  // batch, heads
  int64_t N = 0, M = 0;  // queries, keys
  int64_t D = 0;         // head dim: 64 or 128
  FlashVariant variant = FlashVariant::Softmax;
  float scale = 0;         // s in s·q·k; must be finite and > 0 (the op passes 1/sqrt(D))
  float sigmoid_bias = 0;  // b in σ(s·q·k + b)
  bool causal = false;     // key j visible to query i iff j <= i + (M - N)
  const int32_t* key_len = nullptr;      // [B]: keys >= key_len[b] masked; null: no padding
  const float* alibi_slopes = nullptr;   // [H]: adds -slope·|i + (M - N) - j|; null: no ALiBi
  const float* sink = nullptr;           // [H] f32, Sink only: the sink logit per head
  // Sigmoid only, at most one: b per head [H] f32 instead of sigmoid_bias (learnable; null: none),
  // or b_i = −ln n_i per query row, n_i the keys row i sees (causal and padding), at least 1.
  const float* sigmoid_bias_h = nullptr;
  bool sigmoid_bias_per_row = false;
  // Sigmoid forward only: the reciprocal in σ = 1/(1 + e) by Newton steps on the FMA pipe
  // instead of the special-function unit (relative error ≤ 1.05e-4; kernels/NOTES.md).
  bool sigmoid_rcp_fma = false;
  int device = 0;
};

bool flash_attention_supports_head_dim(int64_t D);

// ATTNLAB_SIGMOID_RCP: "mufu" (or unset) keeps the special-function unit's rcp in the sigmoid
// forward, "fma" asks for sigmoid_rcp_fma (to time both on one GPU). Read at each call, so that
// a test or a benchmark can switch it; anything else throws.
inline bool sigmoid_rcp_fma_requested() {
  const char* v = std::getenv("ATTNLAB_SIGMOID_RCP");
  if (!v || std::string(v) == "mufu") return false;
  if (std::string(v) == "fma") return true;
  throw std::invalid_argument(std::string("ATTNLAB_SIGMOID_RCP: expected mufu or fma, got '") + v +
                              "'");
}

// q [B, H, N, D], k, v [B, H, M, D] -> o [B, H, N, D]; lse [B, H, N] (natural log, f32) for the
// softmax family (ignored for sigmoid, may be null). Rows that see no key: o = 0; lse = -inf
// (softmax), 0 (softmax_1) or sink_h (sink).
void flash_attention_forward(const FlashAttnConfig& c, const bf16* q, const bf16* k, const bf16* v,
                             bf16* o, float* lse);

// Gradients dq, dk, dv (overwritten) from dout = dL/do. o and lse are the forward's outputs (both
// unused for sigmoid, may be null). Scratch: dq_accum [B, H, N, D] f32 always; dsum [B, H, N] f32
// for the softmax family (may be null for sigmoid). dsigmoid_bias: null, or (sigmoid with
// sigmoid_bias_h) [H] f32 overwritten with ∂L/∂b_h = Σ_{b,i,j} dS_ij.
void flash_attention_backward(const FlashAttnConfig& c, const bf16* q, const bf16* k,
                              const bf16* v, const bf16* o, const float* lse, const bf16* dout,
                              bf16* dq, bf16* dk, bf16* dv, float* dq_accum, float* dsum,
                              float* dsigmoid_bias = nullptr);

}  // namespace attn::cuda
