// Gradient clipping by global L2 norm (torch.nn.utils.clip_grad_norm_ with norm_type = 2) and a
// finiteness check. Params without a gradient are ignored. CPU f32/f64 and CUDA f32/bf16 gradients
// (CUDA: kernels/adamw.cuh; the norm needs one device-to-host copy per device).
#pragma once
#include "optim/param.h"

namespace attn {

// Returns the norm before clipping, ‖g‖ = √(Σ_params Σ_i g_i²) (accumulated in f64). When
// max_norm > 0, every gradient is scaled in place by c = max_norm / (‖g‖ + 1e-6) if c < 1 — i.e.
// whenever ‖g‖ > max_norm (and, as in torch, within 1e-6 below it); gradients are untouched
// otherwise. max_norm <= 0 disables clipping. A non-finite norm leaves gradients untouched
// (check grads_finite() and skip the step). Throws std::invalid_argument for NaN max_norm or a
// non-float gradient (or a CUDA one that is not f32/bf16).
double clip_grad_norm(const ParamList& params, double max_norm);

// The two halves of clip_grad_norm, for a norm whose gradients are spread over the ranks of a
// job (ZeRO-1, train/zero_optimizer.h): Σ g² over the params' gradients (f64), and g ← c·g in
// place for each of them.
double grad_sum_squares(const ParamList& params);
void scale_grads(const ParamList& params, double coef);

// True when every element of every gradient is finite (no NaN, no ±inf).
bool grads_finite(const ParamList& params);

}  // namespace attn
