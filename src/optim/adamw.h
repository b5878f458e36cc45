// AdamW (Loshchilov & Hutter), exactly torch.optim.AdamW (amsgrad=False, maximize=False).
//
// Per parameter p with gradient g, its own step count t (incremented before use, so the first
// update has t = 1), learning rate lr, and wd = cfg.weight_decay if the param's weight_decay
// flag is set, else 0:
//
//   p ← p · (1 − lr·wd)                      decoupled decay, before the Adam step
//   m ← β₁·m + (1 − β₁)·g                    first moment
//   v ← β₂·v + (1 − β₂)·g²                   second moment
//   m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)      bias corrections
//   p ← p − lr · m̂ / (√v̂ + ε)
//
// Like torch, the last line is evaluated as  p + (−lr/(1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε),
// so ε is added to √v̂ (not to √v, not under the root). A param without a gradient is skipped
// entirely: no decay, no moment update, and its step count t does not advance (torch's
// per-param state["step"]). m and v have the param's dtype and start at zero.
//
// CPU f32/f64 params, or CUDA f32 params (one fused kernel per param, kernels/adamw.cuh; the
// gradient may be f32 or bf16 there). m and v live on the param's device. Updates are in place on
// the param's storage, under no graph.
#pragma once
#include <cstdint>
#include <istream>
#include <ostream>
#include <vector>

#include "optim/param.h"

namespace attn {

struct AdamWConfig {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

class AdamW {
 public:
  // Throws std::invalid_argument for a bad config (lr < 0, β outside [0, 1), eps < 0,
  // weight_decay < 0), a duplicate or empty name, or a param that is neither a CPU f32/f64 nor a CUDA f32 tensor.
  AdamW(ParamList params, AdamWConfig cfg);

  // One update with this learning rate (cfg.lr is only a default for callers). Uses each
  // param's .grad(); params without a grad are skipped.
  void step(double lr);
  void zero_grad();                         // drops every param's .grad()
  int64_t steps() const { return steps_; }  // calls to step()

  // State: step() count, and per param (by name) its own step count, m and v. load() matches
  // params by name, checks that the sets of names, the dtypes and the shapes agree, and throws
  // std::runtime_error naming the mismatch; on a throw the optimizer is left unchanged.
  void save(std::ostream& os) const;
  void load(std::istream& is);
  // Every m and v is finite (a loaded state that is not was corrupted).
  bool state_is_finite() const;

  const ParamList& params() const { return params_; }
  const AdamWConfig& config() const { return cfg_; }

  // Per param (parallel to params()): its own step count and moments, the optimizer's own
  // tensors (writing into m or v changes the state). For an optimizer sharded across the ranks
  // of a job (train/zero_optimizer.h), which gathers and scatters it around save() and load().
  struct State {
    int64_t step = 0;
    Tensor m, v;
  };
  std::vector<State>& state() { return state_; }
  const std::vector<State>& state() const { return state_; }
  void set_steps(int64_t n) { steps_ = n; }

 private:
  void update(Param& p, State& s, double lr);

  ParamList params_;
  AdamWConfig cfg_;
  std::vector<State> state_;  // parallel to params_
  int64_t steps_ = 0;
};

}  // namespace attn
