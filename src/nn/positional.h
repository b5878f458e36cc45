// Positional encodings that are not a layer of their own: ALiBi slopes and the sinusoidal table.
// (Learned positions are an Embedding; RoPE is the `rope` op applied to q and k.)
#pragma once
#include <vector>

#include "tensor/tensor.h"

namespace attn::nn {

// The ALiBi paper's geometric slopes: for n a power of two, 2^(-8i/n), i = 1..n; otherwise the
// slopes of the closest lower power of two m, then every other slope of 2m (Press et al., 2022).
std::vector<double> alibi_slopes(int64_t n_heads);

// [T, D] with sin at even and cos at odd columns, frequency 10000^(-2i/D) (Vaswani et al.).
Tensor sinusoidal_table(int64_t T, int64_t D, DType dt);

}  // namespace attn::nn
