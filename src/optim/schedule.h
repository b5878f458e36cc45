// Learning-rate schedule: linear warm-up, then cosine decay to a floor.
//
// With W = warmup_steps, T = total_steps, η = lr, η_min = min_lr_ratio · η, and step s ≥ 0
// (the 0-based index of the optimizer step about to be taken):
//
//   s < W:        η(s) = η · (s + 1) / W                    (η/W at s = 0, η at s = W − 1)
//   W ≤ s < T:    η(s) = η_min + ½ (η − η_min) (1 + cos(π (s − W) / (T − W)))
//   s ≥ T:        η(s) = η_min                              (constant after the decay)
//
// So η(W) = η, η((W + T)/2) = (η + η_min)/2 and η(T) = η_min. W = 0 means no warm-up.
#pragma once
#include <cstdint>

namespace attn {

struct LrSchedule {
  double lr;
  int64_t warmup_steps;
  int64_t total_steps;
  double min_lr_ratio = 0.1;

  // Throws std::invalid_argument unless lr is finite and >= 0, 0 <= warmup_steps <= total_steps,
  // total_steps > 0 and min_lr_ratio is in [0, 1].
  void validate() const;
  // η(step) as above; validates first, and throws for step < 0.
  double at(int64_t step) const;
};

}  // namespace attn
