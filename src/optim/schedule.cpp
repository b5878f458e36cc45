// Warm-up + cosine learning-rate schedule; the formula is in schedule.h.
#include "optim/schedule.h"

#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>

namespace attn {

void LrSchedule::validate() const {
  auto bad = [](const std::string& what) { throw std::invalid_argument("LrSchedule: " + what); };
  if (!(lr >= 0) || !std::isfinite(lr))
    bad("lr must be finite and >= 0, got " + std::to_string(lr));
  if (total_steps <= 0) bad("total_steps must be > 0, got " + std::to_string(total_steps));
  if (warmup_steps < 0) bad("warmup_steps must be >= 0, got " + std::to_string(warmup_steps));
  if (warmup_steps > total_steps)
    bad("warmup_steps (" + std::to_string(warmup_steps) + ") must not exceed total_steps (" +
        std::to_string(total_steps) + ")");
  if (!(min_lr_ratio >= 0 && min_lr_ratio <= 1))
    bad("min_lr_ratio must be in [0, 1], got " + std::to_string(min_lr_ratio));
}

double LrSchedule::at(int64_t step) const {
  validate();
  if (step < 0)
    throw std::invalid_argument("LrSchedule::at: step must be >= 0, got " + std::to_string(step));
  const double min_lr = min_lr_ratio * lr;
  if (step < warmup_steps)
    return lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  if (step >= total_steps) return min_lr;
  // progress ∈ [0, 1): 0 at the end of warm-up, → 1 at total_steps.
  const double progress =
      static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
  return min_lr + 0.5 * (lr - min_lr) * (1 + std::cos(std::numbers::pi * progress));
}

}  // namespace attn
