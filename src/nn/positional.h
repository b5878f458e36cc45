// Positional encodings that are not a layer of their own: ALiBi slopes and the sinusoidal table,
// and their 2-D forms for tokens on a grid (a ViT's patches; nn::PositionGrid: `prefix` tokens
// such as a class token, then rows x cols patches in row-major order).
// (Learned positions are an Embedding; RoPE is the `rope` op applied to q and k.)
#pragma once
#include <vector>

#include "nn/config.h"
#include "tensor/tensor.h"

namespace attn::nn {

// The ALiBi paper's geometric slopes: for n a power of two, 2^(-8i/n), i = 1..n; otherwise the
// slopes of the closest lower power of two m, then every other slope of 2m (Press et al., 2022).
std::vector<double> alibi_slopes(int64_t n_heads);

// [T, D] with sin at even and cos at odd columns, frequency 10000^(-2i/D) (Vaswani et al.).
Tensor sinusoidal_table(int64_t T, int64_t D, DType dt);

// ---- 2-D, for a PositionGrid g (T = g.prefix + g.rows·g.cols tokens) ---------------------------

// [T, D]: patch (r, c) gets [sinusoidal_table(rows, D/2)[r], sinusoidal_table(cols, D/2)[c]]
// (the first half of the channels encodes the row, the second half the column, each the 1-D table
// above at width D/2); prefix tokens get zeros: a class token has no place on the grid and is told
// apart by its own learned vector. D must be divisible by 4 (each half of sin/cos pairs).
Tensor sinusoidal_table_2d(const PositionGrid& g, int64_t D, DType dt);

// 2-D axial RoPE on x [B, H, T, Dh]: for a patch at (r, c), the first Dh/2 dims of each head are
// rope()'d (rotate-half, width Dh/2, base) by position r, the last Dh/2 by position c. Prefix
// tokens are not rotated (rotation by (0, 0) would be the identity anyway), so q·k between the
// class token and a patch depends on the content only. Built from rope, slice, reshape, permute
// and concat: runs wherever those run (CPU, CUDA). Dh must be divisible by 4.
Tensor rope_2d(const Tensor& x, const PositionGrid& g, double base);

// 2-D ALiBi: bias [H, T, T] with bias[h, i, j] = −slopes[h]·‖p_i − p_j‖₂, p = (row, col) of a
// patch centre. Euclidean rather than Manhattan: the penalty then depends on how far apart two
// patches are and not on the direction (a diagonal neighbour is √2 away, not 2), i.e. it is
// isotropic, as an image's content is. Every distance involving a prefix (class) token is 0: the
// class token sees all patches, and is seen by them, without a penalty.
Tensor alibi_bias_2d(const std::vector<double>& slopes, const PositionGrid& g, DType dt);

// The grid's token count, checked (rows, cols > 0, prefix >= 0).
int64_t grid_tokens(const PositionGrid& g);

}  // namespace attn::nn
