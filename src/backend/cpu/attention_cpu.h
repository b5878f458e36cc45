// The fused attention forward and backward on the CPU, tiled over query and key blocks.
// Every (batch, head) pair is independent and runs on its own thread; inside it, one query
// block at a time walks the key blocks with an online max/sum (softmax family) or a plain sum
// (sigmoid). Only Br x Bc score tiles exist; the backward recomputes them.
#pragma once
#include <cstdint>

namespace attn::cpu {

enum class AttnKind { Softmax, Sigmoid, Softmax1, Sink };

struct AttnShape {
  int64_t B, H, N, M, D;  // batch, heads, queries, keys, head dim
  AttnKind kind;
  double scale;           // s in s·q·k
  double sigmoid_bias;    // b in σ(s·q·k + b)
  bool causal;            // key j visible to query i iff j <= i + (M - N)
  const int64_t* key_len; // per batch, or null
  const double* slopes;   // ALiBi per head, or null: adds -slope·|i + (M - N) - j|
  const double* sink = nullptr;  // Sink: the extra key's logit per head (value 0)
  // Sigmoid: a bias per head instead of sigmoid_bias, or null; or, when sigmoid_bias_per_row,
  // b_i = −ln n_i with n_i the keys row i sees (at least 1).
  const double* sigmoid_bias_h = nullptr;
  bool sigmoid_bias_per_row = false;
};

// lse: [B, H, N] for the softmax family (ignored for sigmoid, may be null).
template <class T>
void attention_forward(const AttnShape& p, const T* q, const T* k, const T* v, T* o, T* lse);

// Fills dq, dk, dv (overwritten). o and lse are the forward's outputs. Sigmoid: dbias, if not
// null, gets [B, H] the sums Σ_{i,j} dS_ij of each (batch, head), the gradient of a per-head b.
template <class T>
void attention_backward(const AttnShape& p, const T* q, const T* k, const T* v, const T* o,
                        const T* lse, const T* dout, T* dq, T* dk, T* dv, T* dbias = nullptr);

}  // namespace attn::cpu
