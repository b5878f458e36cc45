// Differentiable ops. Each is recorded in the autograd graph when grad mode is on and an input
// requires grad. CPU: f32 and f64. Shapes follow NumPy broadcasting where stated.
#pragma once
#include <optional>
#include <vector>

#include "tensor/tensor.h"

namespace attn {

// ---- matmul.cpp -------------------------------------------------------------------------
// op(a) · op(b), op = transpose of the last two dims when the flag is set.
// a: [..., M, K], b: [K, N] (shared across a's batch) or [..., K, N] with a's batch dims.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

// ---- linear.cpp -------------------------------------------------------------------------
// y = x·Wᵀ + b (PyTorch's F.linear): x [..., in], W [out, in], b [out] or undefined (no bias).
// On CUDA the bias is added by the GEMM's epilogue.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());
// gelu(linear(x, w, b)), the same graph and gradients (a Linear node, then a Gelu node). On CUDA
// in bf16 with a bias, one cuBLASLt GEMM whose GELU_AUX_BIAS epilogue applies the GELU as it
// writes the output and keeps its input for the backward: no separate GELU pass. In f32, where
// cuBLASLt has no algorithm for that epilogue, or with ATTNLAB_GELU_EPILOGUE=0 (to measure the
// difference): the BIAS GEMM and the GELU kernel.
Tensor linear_gelu(const Tensor& x, const Tensor& w, const Tensor& b);

// ---- conv.cpp ---------------------------------------------------------------------------
// PyTorch's F.conv2d (cross-correlation, zero padding; one stride and one padding for both
// axes): x [B, Cin, H, W], w [Cout, Cin, KH, KW], b [Cout] or undefined (no bias)
// -> [B, Cout, Ho, Wo], Ho = (H + 2·padding − KH)/stride + 1 (floor), likewise Wo.
// Differentiable in x, w and b. CPU f32/f64, CUDA f32/bf16.
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b = Tensor(), int64_t stride = 1,
              int64_t padding = 0);
// On CUDA, conv2d builds its column matrix (im2col) for a chunk of samples at a time, as many as
// fit in this many bytes (at least one sample); 256 MiB unless set. Returns the previous value.
// For tests of the chunking, and to trade memory for fewer, larger GEMMs. The CPU builds one
// column matrix per sample and thread, whatever the budget.
int64_t set_conv2d_column_budget(int64_t bytes);

// ---- elementwise.cpp --------------------------------------------------------------------
// Binary ops broadcast NumPy-style (row, column and scalar operands included).
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor pow(const Tensor& x, double exponent);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x);  // tanh approximation (GPT-2)
Tensor silu(const Tensor& x);
// Nearest integer, halves to even (torch.round); its gradient is 0 (a step function), so it is
// for evaluation (fake quantisation), not for training through.
Tensor round(const Tensor& x);

// ---- reduce.cpp -------------------------------------------------------------------------
Tensor sum(const Tensor& x);  // all elements -> 0-d
Tensor sum(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, int64_t axis, bool keepdim = false);
// Max over an axis; the gradient flows to the first maximal element.
Tensor max(const Tensor& x, int64_t axis, bool keepdim = false);

// ---- softmax.cpp (last axis) ------------------------------------------------------------
// A row whose entries are all -inf gives all zeros (not NaN), so fully masked rows are safe.
Tensor softmax(const Tensor& x);
Tensor log_softmax(const Tensor& x);

// ---- loss.cpp ---------------------------------------------------------------------------
// Mean over non-ignored rows of -log softmax(logits)[target]; logits [N, C], targets [N]
// (i32/i64). Fused and stable (log-sum-exp). Returns 0 when every row is ignored.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);

// ---- ctc.cpp ----------------------------------------------------------------------------
// Connectionist temporal classification (Graves et al., 2006) with PyTorch's F.ctc_loss
// semantics, batch first: log_probs [B, T, C] (a log_softmax's output), the B label sequences
// concatenated in `targets` (each label in [0, C) and != blank), target_lengths and
// input_lengths [B] (each input length <= T; frames t >= input_length are not read).
//   nll_b = −log Σ_{alignments π of length input_length_b that collapse to l_b} Π_t lp[b, t, π_t]
//   Mean: (1/B) Σ_b nll_b / max(target_length_b, 1);  Sum: Σ_b nll_b;  None: [B] of nll_b.
// An impossible alignment (too few frames for the labels and the blanks between repeats) has
// nll = +inf: counted as 0, with 0 gradient, under zero_infinity; otherwise the loss is +inf and
// that sample's gradient NaN (as PyTorch's). The gradient is the true ∂loss/∂log_probs (see
// ctc.cpp). CPU: f32 and f64, accumulated in f64. CUDA: f32 and bf16. The loss has log_probs'
// dtype.
enum class CtcReduction { Mean, Sum, None };
Tensor ctc_loss(const Tensor& log_probs, const std::vector<int32_t>& targets,
                const std::vector<int64_t>& target_lengths,
                const std::vector<int64_t>& input_lengths, int64_t blank = 0,
                CtcReduction reduction = CtcReduction::Mean, bool zero_infinity = true);

// ---- norm.cpp (last axis) ---------------------------------------------------------------
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6);

// ---- embedding.cpp ----------------------------------------------------------------------
// weight [V, D], ids [...] (i32/i64) -> [..., D]; gradient scatter-added into weight rows.
Tensor embedding(const Tensor& weight, const Tensor& ids);

// ---- shape.cpp --------------------------------------------------------------------------
Tensor reshape(const Tensor& x, Shape shape);  // a view; one -1 is inferred
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor concat(const std::vector<Tensor>& xs, int64_t axis);
Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis);

// ---- dropout.cpp ------------------------------------------------------------------------
// Zeroes each element with probability p and scales the rest by 1/(1-p). The keep mask is
// Philox(gen.seed, offset + i): the same on every device. Identity when !training or p == 0.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

// ---- select.cpp -------------------------------------------------------------------------
// cond, a, b of one shape; cond is any dtype, non-zero = true.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
// x with `value` where mask (same shape, non-zero = true).
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

// ---- rope.cpp ---------------------------------------------------------------------------
// Rotary embedding over the last dim of x [..., T, D] (rotate-half layout), position offset + t.
Tensor rope(const Tensor& x, double base = 10000.0, int64_t offset = 0);
// The same, applied in place to x's storage when the caller gives x up and nothing else holds
// that storage (no other handle or view, no backward closure that saved it; not a leaf that
// requires grad); otherwise as above. q = rope(std::move(q)) saves an activation-sized buffer.
Tensor rope(Tensor&& x, double base = 10000.0, int64_t offset = 0);

// ---- cast.cpp ---------------------------------------------------------------------------
// x converted to a floating dtype (f32, f64, bf16), differentiably: the gradient flows back
// converted to x's dtype. Returns x itself when it has that dtype already. Mixed precision reads
// f32 master weights through it (nn::Module::working). For a CUDA parameter (a leaf that
// requires grad) the converted value is kept as the parameter's working copy, which AdamW then
// rewrites in its update, so the next cast converts nothing (see cast.cpp).
Tensor cast(const Tensor& x, DType dtype);

// ---- attention.cpp / attention_composed.cpp ---------------------------------------------
// softmax, sigmoid, softmax_1, and the variants the outlier papers compare:
//   sink:            softmax with one extra key per head of learnable logit sink_h and value 0
//                    (gpt-oss): P = exp(S) / (exp(sink_h) + Σ exp(S)); softmax_1 is sink_h = 0.
//   clipped_softmax: clip((ζ − γ)·softmax(S) + γ, 0, 1) (Bondarenko et al., 2023), γ < 0, ζ ≥ 1:
//                    small weights become exactly 0, large ones exactly 1.
// (Gated attention multiplies the output by a gate: it is the model's, nn/attention.h.)
enum class AttentionVariant { Softmax, Sigmoid, Softmax1, Sink, ClippedSoftmax };
const char* variant_name(AttentionVariant v);
// softmax | sigmoid | softmax1 (softmax_1) | sink | clipped_softmax
AttentionVariant parse_variant(const std::string& name);

struct AttentionSpec {
  AttentionVariant variant = AttentionVariant::Softmax;
  double scale = 0;          // 0 means 1/sqrt(head_dim)
  double sigmoid_bias = 0;   // b in sigmoid(s·qk + b); use -log(n_train)
  // sigmoid, the two other forms of b (at most one; both replace sigmoid_bias):
  //   sigmoid_bias_param: a learnable b_h per head [H] (q's dtype and device), differentiable:
  //                       ∂L/∂b_h = Σ_{b,i,j visible} dS_ij, dS the gradient of the logit s·qk + b.
  //   sigmoid_bias_per_row: b_i = −ln n_i, n_i the keys query row i sees (causal and padding
  //                       counted, at least 1): Ramapuram et al.'s "dynamic n". Not learnable.
  Tensor sigmoid_bias_param;
  bool sigmoid_bias_per_row = false;
  bool causal = false;       // key j visible to query i when j <= i + (M - N)
  std::vector<int64_t> key_padding_lengths;  // per batch: keys >= length are masked; empty = none
  std::vector<double> alibi_slopes;          // per head: adds -slope·|i + (M - N) - j|; empty = none
  Tensor sink;                 // sink: the per-head logits [H] (q's dtype and device), differentiable
  double clip_gamma = -0.025;  // clipped_softmax: γ (< 0) and ζ (≥ 1); Qualcomm's BERT default
  double clip_zeta = 1.0;
  // Any additive score term [H or 1, N, M] (q's dtype and device), added to the scaled scores
  // like ALiBi (a ViT's 2-D ALiBi); undefined = none. The CPU tiles and the flash kernels take
  // no such tensor, so attention() computes a spec with one by the composed op (P materialised;
  // no lse returned): fine for a ViT's short sequences (50 tokens: P is 50 x 50 per head).
  Tensor score_bias;
};

struct AttentionOut {
  Tensor out;  // [B, H, N, D]
  Tensor lse;  // [B, H, N] f32/f64 log-sum-exp per row (softmax family; undefined for sigmoid)
};

// Fused attention. q [B, H, N, D], k and v [B, H, M, D]. The forward tiles over keys with an
// online max/sum; the backward recomputes P tile by tile: no N x M tensor is ever kept.
// A query row with no visible key gives O = 0. With a spec.score_bias, and for clipped_softmax
// (the clip needs the final normalised P, which the online form does not have until the last
// key): the composed op instead (CPU and CUDA), lse undefined. sink: fused on both (its lse
// includes the sink; ∂L/∂sink from the lse and D). sigmoid's learnable and per-row biases: fused
// on both (the backward accumulates ∂L/∂b_h without an N x M tensor).
AttentionOut attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionSpec& spec);

// The same maths from primitive ops (materialises P; for tests and small sizes).
Tensor attention_composed(const Tensor& q, const Tensor& k, const Tensor& v,
                          const AttentionSpec& spec);

// The scores and the attention weights of some query rows, from primitive ops (any device):
// what the fused kernels compute and never keep. logits [B, H, R, M] = s·q·kᵀ plus the spec's
// position terms, −inf where a key is hidden; probs [B, H, R, M] the variant's P (softmax_1's
// without its extra key, so its rows sum to less than 1; sigmoid's without normalisation).
// rows: query indices (empty: all N). attention_composed is probs·V over all rows.
struct AttentionRows {
  Tensor logits, probs;
  std::vector<int64_t> rows;
};
AttentionRows attention_rows(const Tensor& q, const Tensor& k, const AttentionSpec& spec,
                             std::vector<int64_t> rows = {});

}  // namespace attn
