#include "nn/positional.h"

#include <algorithm>
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

int64_t grid_tokens(const PositionGrid& g) {
  if (g.rows <= 0 || g.cols <= 0 || g.prefix < 0)
    throw std::invalid_argument("position grid: need rows, cols > 0 and prefix >= 0, got " + std::to_string(g.rows) +
                                " x " + std::to_string(g.cols) + " + " + std::to_string(g.prefix));
  return g.prefix + g.rows * g.cols;
}

Tensor sinusoidal_table_2d(const PositionGrid& g, int64_t D, DType dt) {
  const int64_t T = grid_tokens(g), half = D / 2;
  if (D % 4 != 0)
    throw std::invalid_argument("2-D sinusoidal positions need model.d_model divisible by 4, got " + std::to_string(D));
  const std::vector<double> rows = sinusoidal_table(g.rows, half, DType::F64).to_vector(),
                            cols = sinusoidal_table(g.cols, half, DType::F64).to_vector();
  std::vector<double> v(T * D, 0.0);  // prefix rows stay 0
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t c = 0; c < g.cols; ++c) {
      double* out = v.data() + (g.prefix + r * g.cols + c) * D;
      std::copy_n(rows.data() + r * half, half, out);
      std::copy_n(cols.data() + c * half, half, out + half);
    }
  return from_vector(v, {T, D}, {dt});
}

Tensor rope_2d(const Tensor& x, const PositionGrid& g, double base) {
  const int64_t T = grid_tokens(g);
  if (x.dim() != 4 || x.size(2) != T || x.size(3) % 4 != 0)
    throw std::invalid_argument("rope_2d: need x [B, H, " + std::to_string(T) +
                                ", Dh] with Dh divisible by 4 (model.d_model / model.n_heads), got " +
                                shape_str(x.shape()));
  const int64_t B = x.size(0), H = x.size(1), Dh = x.size(3), h = Dh / 2, R = g.rows, C = g.cols;
  const Tensor patches = slice(x, 2, g.prefix, T);  // [B, H, R·C, Dh], row-major (r, c)
  // rope() rotates by the index along its second-to-last dim: the row half is laid out
  // [B, H, C, R, h] (index r there), the column half [B, H, R, C, h] (index c).
  Tensor by_row = permute(reshape(slice(patches, 3, 0, h), {B, H, R, C, h}), {0, 1, 3, 2, 4});
  by_row = reshape(permute(rope(std::move(by_row), base), {0, 1, 3, 2, 4}), {B, H, R * C, h});
  Tensor by_col = rope(reshape(slice(patches, 3, h, Dh), {B, H, R, C, h}), base);
  Tensor rotated = concat({by_row, reshape(by_col, {B, H, R * C, h})}, 3);
  return g.prefix > 0 ? concat({slice(x, 2, 0, g.prefix), rotated}, 2) : rotated;
}

Tensor alibi_bias_2d(const std::vector<double>& slopes, const PositionGrid& g, DType dt) {
  const int64_t T = grid_tokens(g), H = static_cast<int64_t>(slopes.size());
  std::vector<double> dist(T * T, 0.0);  // 0 wherever a prefix token is involved
  for (int64_t i = g.prefix; i < T; ++i)
    for (int64_t j = g.prefix; j < T; ++j) {
      const double dr = static_cast<double>((i - g.prefix) / g.cols - (j - g.prefix) / g.cols),
                   dc = static_cast<double>((i - g.prefix) % g.cols - (j - g.prefix) % g.cols);
      dist[i * T + j] = std::sqrt(dr * dr + dc * dc);
    }
  std::vector<double> v(H * T * T);
  for (int64_t hh = 0; hh < H; ++hh)
    for (int64_t k = 0; k < T * T; ++k) v[hh * T * T + k] = -slopes[hh] * dist[k];
  return from_vector(v, {H, T, T}, {dt});
}

}  // namespace attn::nn
