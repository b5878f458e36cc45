// Host launchers of the op kernels (kernels/{elementwise,reduce,softmax,norm,loss,ctc,embedding,
// shape,rope,dropout,adamw,conv}.cuh) and the cuBLASLt GEMM. Plain C++: the ops (src/ops/*.cpp),
// the optimizer and the tests include it. In a CPU-only build ops_cuda_stub.cpp defines every
// function to throw "built without CUDA".
//
// Conventions, for every function here:
// - Pointers are device memory on `device`; tensors are contiguous and row-major.
// - Floating data is f32 or bf16 (`dt`); bf16 is storage only: kernels load it as f32, compute
//   in f32 (statistics, sums, exponentials) and round once on the store (nearest even, as the
//   CPU's float_to_bf16). Any other dtype throws std::invalid_argument.
// - Work is queued on cudaStreamPerThread (the stream of the tensor allocator and the copies):
//   nothing here synchronises with the host except where a result is returned by value.
// - Sizes may be 0 (nothing is launched).
#pragma once
#include <cstdint>
#include <vector>

#include "tensor/dtype.h"

namespace attn::cuda {

// ---- fill and convert (ops_cuda_elementwise.cu) -----------------------------------------------
// out[0..n) = value converted to dt as the CPU factories convert it (any dtype).
void fill(DType dt, void* out, int64_t n, double value, int device);
// out = in converted between f32 and bf16 (either direction, or a copy when equal).
void convert(DType out_dt, void* out, DType in_dt, const void* in, int64_t n, int device);

// ---- elementwise (kernels/elementwise.cuh) ----------------------------------------------------
enum class UnaryOp : uint8_t { Neg, Exp, Log, Sqrt, Rsqrt, Pow, Tanh, Sigmoid, Relu, Gelu, Silu, Round };
enum class BinaryOp : uint8_t { Add, Sub, Mul, Div };

// y = f(x); p is pow's exponent.
void unary_forward(UnaryOp op, DType dt, const void* x, void* y, int64_t n, double p, int device);
// gx = g·f'(x). y = f(x) is recomputed in f32 from x (not read back): for bf16 storage the
// derivative then sees the exact y, not its rounding (1 − y² and y(1 − y) would lose most of
// their bits near |y| = 1), and the kernel reads one tensor less.
void unary_backward(UnaryOp op, DType dt, const void* g, const void* x, void* gx, int64_t n,
                    double p, int device);
// out[shape_out] = a[shape_a] op b[shape_b] with NumPy broadcasting (shape_out is the broadcast
// shape, checked by the caller).
void binary(BinaryOp op, DType dt, const void* a, const std::vector<int64_t>& shape_a,
            const void* b, const std::vector<int64_t>& shape_b, void* out,
            const std::vector<int64_t>& shape_out, int device);
// out_i = (cond_i != 0) != invert ? a_i : (b ? b_i : b_scalar). cond has any dtype (non-zero,
// NaN included, is true); a, b, out have dt.
void select(DType dt, const void* cond, DType cond_dt, bool invert, const void* a, const void* b,
            double b_scalar, void* out, int64_t n, int device);
// y_i = keep_i ? x_i / (1 - p) : 0, keep_i = philox_uniform(offset + i, seed) >= p (f32 p).
void dropout(DType dt, const void* x, void* y, int64_t n, double p, uint64_t seed, uint64_t offset,
             int device);

// ---- reductions over one axis, x seen as [outer, n, inner] (kernels/reduce.cuh) --------------
// y[o, i] = scale · Σ_k x[o, k, i]   (f32 accumulation; deterministic order)
void sum_axis(DType dt, const void* x, void* y, int64_t outer, int64_t n, int64_t inner,
              double scale, int device);
// dx[o, k, i] = scale · g[o, i]
void broadcast_axis(DType dt, const void* g, void* dx, int64_t outer, int64_t n, int64_t inner,
                    double scale, int device);
// y[o, i] = max_k x[o, k, i], arg[o, i] = the first k attaining it (i64), as the CPU op.
void max_axis(DType dt, const void* x, void* y, int64_t* arg, int64_t outer, int64_t n,
              int64_t inner, int device);
// dx = 0 except dx[o, arg[o, i], i] = g[o, i].
void max_axis_backward(DType dt, const void* g, const int64_t* arg, void* dx, int64_t outer,
                       int64_t n, int64_t inner, int device);

// ---- softmax over the last axis, rows × n (kernels/softmax.cuh) -------------------------------
void softmax_forward(DType dt, const void* x, void* y, int64_t rows, int64_t n, bool log_form,
                     int device);
// softmax: dx = y∘(g − Σ g∘y);  log_softmax: dx = g − exp(y)·Σ g
void softmax_backward(DType dt, const void* y, const void* g, void* dx, int64_t rows, int64_t n,
                      bool log_form, int device);

// ---- fused softmax-cross-entropy (kernels/loss.cuh) -------------------------------------------
// logits [N, C] (dt), targets [N] i32 (targets_i64 = false) or i64, already validated by the
// caller (in [0, C) or == ignore_index); `valid` = number of non-ignored rows.
// Writes lse [N] (f32, kept for the backward) and loss (one dt element):
// loss = Σ_{valid r} (lse_r − x[r, t_r]) / valid  (0 when valid = 0), summed in f64.
void cross_entropy_forward(DType dt, const void* logits, const void* targets, bool targets_i64,
                           int64_t ignore_index, int64_t N, int64_t C, int64_t valid, float* lse,
                           void* loss, int device);
// dx[r, :] = g/valid · (exp(x[r, :] − lse_r) − onehot(t_r)) for valid rows, 0 for ignored rows.
// g is the one-element upstream gradient (dt) on the device.
void cross_entropy_backward(DType dt, const void* logits, const float* lse, const void* targets,
                            bool targets_i64, int64_t ignore_index, int64_t N, int64_t C,
                            int64_t valid, const void* g, void* dx, int device);

// ---- CTC loss (kernels/ctc.cuh, ops_cuda_ctc.cu; the maths in src/ops/ctc.cpp) -------------
// A batch's labels on the device (i64), checked by the caller: sample b has input_lengths[b]
// (<= T) frames and the labels targets[target_offsets[b], + target_lengths[b]) (in [0, C),
// != blank, at most (S − 1)/2 of them). next_same[k]: the position in its sample of the next
// occurrence of label k's value, or −1; first_same[k]: 1 at a value's first occurrence.
struct CtcLabels {
  const int64_t *input_lengths, *target_lengths, *target_offsets, *targets, *next_same,
      *first_same;
  int64_t B, T, C, S, blank;  // S = 2·max target length + 1
};
enum class CtcReduce : uint8_t { Mean, Sum, None };
// log_probs [B, T, C] (dt). Writes, for the backward, alpha [B, T, S] (f32: log α_t(s) minus
// its frame's maximum over s), log_scale [B, T] (f64: the running sum of those maxima, so that
// log α = alpha + log_scale) and nll [B] (f64, +inf where no alignment exists); and out (dt):
// nll [B] (None) or one element, Σ nll (Sum) or the mean of nll_b / max(L_b, 1) (Mean), an
// infinite nll counted as 0 under zero_infinity.
void ctc_loss_forward(DType dt, const void* log_probs, const CtcLabels& labels, CtcReduce reduction,
                      bool zero_infinity, float* alpha, double* log_scale, double* nll, void* out,
                      int device);
// grad [B, T, C] (dt) = ∂out/∂log_probs times g (dt: one element, or [B] for None): 0 on frames
// t >= input_length and, under zero_infinity, for an impossible sample (NaN without it).
void ctc_loss_backward(DType dt, const void* log_probs, const CtcLabels& labels,
                       CtcReduce reduction, bool zero_infinity, const float* alpha,
                       const double* log_scale, const double* nll, const void* g, void* grad,
                       int device);

// ---- layer_norm (center = true) / rms_norm over the last axis (kernels/norm.cuh) --------------
// x [rows, D], w [D], b [D] or null. y = x̂∘w + b; saves mean [rows] (0 for rms) and rstd [rows]
// in f32 for the backward, which recomputes x̂ from x.
void norm_forward(DType dt, const void* x, const void* w, const void* b, void* y, float* mean,
                  float* rstd, int64_t rows, int64_t D, double eps, bool center, int device);
// dx (always), dw (always), db (when non-null) = Σ_rows g.
void norm_backward(DType dt, const void* g, const void* x, const void* w, const float* mean,
                   const float* rstd, void* dx, void* dw, void* db, int64_t rows, int64_t D,
                   bool center, int device);

// ---- embedding (kernels/embedding.cuh) ---------------------------------------------------------
// out[i, :] = weight[ids[i], :] for n ids (i32 or i64, validated by the caller); any element size.
void embedding_forward(size_t elem_size, const void* weight, const void* ids, bool ids_i64,
                       int64_t n, int64_t D, void* out, int device);
// dweight [V, D] = Σ_{i: ids[i] = v} g[i, :] (overwritten; atomicAdd in f32).
void embedding_backward(DType dt, const void* g, const void* ids, bool ids_i64, int64_t n,
                        int64_t V, int64_t D, void* dweight, int device);

// ---- shape (kernels/shape.cuh) -----------------------------------------------------------------
// out = x permuted: out.shape[i] = shape[dims[i]]; any element size (2, 4 or 8 bytes).
void permute(size_t elem_size, const void* x, const std::vector<int64_t>& shape,
             const std::vector<int64_t>& dims, void* out, int device);
// For o < outer: copy `len` bytes from src + o·src_stride to dst + o·dst_stride (bytes).
void copy_rows(void* dst, int64_t dst_stride, const void* src, int64_t src_stride, int64_t outer,
               int64_t len, int device);

// ---- rotary embedding (kernels/rope.cuh) -------------------------------------------------------
// x [rows, D] with row r at position offset + r % T; angles in f64 as the CPU, rotated by -a
// when inverse (the backward).
void rope(DType dt, const void* x, void* y, int64_t rows, int64_t T, int64_t D, double base,
          int64_t offset, bool inverse, int device);

// ---- 2-D convolution (kernels/conv.cuh, ops_cuda_conv.cu) --------------------------------------
// The geometry of conv2d (src/ops/conv.cpp, which validates it): x [batch, in_channels, height,
// width], w [out_channels, in_channels, kernel_h, kernel_w], y [batch, out_channels, out_h,
// out_w] with out_h = (height + 2·padding − kernel_h)/stride + 1, likewise out_w.
struct Conv2dShape {
  int64_t batch, in_channels, height, width;
  int64_t out_channels, kernel_h, kernel_w;
  int64_t stride, padding;
  int64_t out_h, out_w;
};
// y = conv2d(x, w) + bias (bias: out_channels values, or null). Per chunk of samples (as many as
// fit their column matrix in column_budget bytes, at least one): im2col into [Cin·KH·KW,
// chunk·Ho·Wo], then one strided-batched GEMM y_n = W·col_n; a bias rides in that GEMM as one
// more column of W against a row of ones in col, so y is rounded once.
void conv2d_forward(DType dt, const Conv2dShape& s, const void* x, const void* w, const void* bias,
                    void* y, int64_t column_budget, int device);
// dx = col2im(Wᵀ·dy) (a gather per x element in a fixed order: no atomics, deterministic) and
// dw = Σ_n dy_n·col_nᵀ (one GEMM per chunk over its samples' positions; with more than one chunk
// the partial sums are added in f32, then dw is rounded once). Either may be null (not wanted).
// The chunk's column matrix and its dy (permuted to [Cout, chunk·Ho·Wo]) share column_budget.
void conv2d_backward(DType dt, const Conv2dShape& s, const void* dy, const void* x, const void* w,
                     void* dx, void* dw, int64_t column_budget, int device);

// ---- optimizer (kernels/adamw.cuh) -------------------------------------------------------------
// One AdamW update of an f32 parameter with f32 moments m, v and an f32 or bf16 gradient, the
// scalars rounded to f32 exactly as optim/adamw.cpp does (see there for the maths).
struct AdamWScalars {
  double decay;     // 1 − lr·wd
  double beta1, beta2;
  double bc2_sqrt;  // √(1 − β₂ᵗ)
  double eps;
  double neg_step;  // −lr / (1 − β₁ᵗ)
};
// working: the parameter's bf16 working copy, rewritten as bf16(p) in the same pass; or null.
void adamw_step(float* p, float* m, float* v, DType grad_dt, const void* g, bf16* working,
                int64_t n, const AdamWScalars& s, int device);
// Σ_tensors Σ_i g_i² accumulated in f64 (returned to the host: synchronises).
struct GradRef {
  DType dt;
  const void* data;
  int64_t n;
};
double sum_squares(const std::vector<GradRef>& grads, int device);
// g *= c (c rounded to f32 first, as the CPU does).
void scale_inplace(DType dt, void* g, int64_t n, double c, int device);

// ---- GEMM through cuBLASLt (gemm_cuda.cu) -----------------------------------------------------
// Row-major, for b < batch:  C_b [M, N] = op(A_b) · op(B_b), op = transpose when the flag is set.
// A_b = A + b·stride_a is [M, K] (or [K, M] when trans_a) with row length lda; likewise B_b
// [K, N] / [N, K] with ldb, C_b with ldc. A stride of 0 shares the matrix across the batch.
// f32 compute (no TF32) with f32 or bf16 matrices. One cuBLASLt handle and a 32 MiB workspace per
// device, the heuristic's algorithm cached per shape. Assumes one host thread issues GEMMs per
// device (the workspace is shared). With `bias` (N values of dt; batch 1 only), C = op(A)·op(B)
// + bias broadcast over the rows, added by cuBLASLt's BIAS epilogue (no separate pass over C).
void gemm(DType dt, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A,
          int64_t lda, int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b, void* C,
          int64_t ldc, int64_t stride_c, int64_t batch, int device, const void* bias = nullptr);
// One GEMM with cuBLASLt's GELU_AUX_BIAS epilogue (batch 1): pre = op(A)·op(B) + bias, written
// to `pre`, and C = gelu(pre) (the tanh GELU), both [M, N] with row length ldc. Returns false,
// having written nothing, where cuBLASLt has no algorithm for that epilogue on this problem.
bool gemm_bias_gelu(DType dt, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                    const void* A, int64_t lda, const void* B, int64_t ldb, void* C, void* pre,
                    int64_t ldc, const void* bias, int device);

}  // namespace attn::cuda
