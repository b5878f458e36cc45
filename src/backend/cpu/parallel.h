// Thin OpenMP helper: split [0, n) across threads when the work is worth it.
#pragma once
#include <cstdint>

namespace attn::cpu {

// Below this many element-operations a loop runs on one thread (fork/join costs ~µs).
constexpr int64_t kParallelGrain = 1 << 15;

template <class F>
void parallel_for(int64_t n, int64_t work_per_item, F&& f) {
  if (n * work_per_item < kParallelGrain) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) f(i);
}

}  // namespace attn::cpu
