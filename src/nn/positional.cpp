#include "nn/positional.h"

#include <cmath>

namespace attn::nn {

namespace {
std::vector<double> power_of_two_slopes(int64_t n) {
  std::vector<double> s(n);
  for (int64_t i = 0; i < n; ++i) s[i] = std::pow(2.0, -8.0 * static_cast<double>(i + 1) / static_cast<double>(n));
  return s;
}
}  // namespace

std::vector<double> alibi_slopes(int64_t n_heads) {
  if (n_heads <= 0) throw std::invalid_argument("alibi_slopes: need at least one head");
  int64_t m = 1;
  while (m * 2 <= n_heads) m *= 2;
  std::vector<double> s = power_of_two_slopes(m);
  std::vector<double> extra = power_of_two_slopes(2 * m);
  for (int64_t i = 0; static_cast<int64_t>(s.size()) < n_heads; i += 2) s.push_back(extra[i]);
  return s;
}

Tensor sinusoidal_table(int64_t T, int64_t D, DType dt) {
  std::vector<double> v(T * D);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < D; ++j) {
      double freq = std::pow(10000.0, -static_cast<double>(j / 2 * 2) / static_cast<double>(D));
      v[t * D + j] = j % 2 == 0 ? std::sin(t * freq) : std::cos(t * freq);
    }
  return from_vector(v, {T, D}, {dt});
}

}  // namespace attn::nn
