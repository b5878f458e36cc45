// Rotary position embedding (RoFormer; the "rotate half" layout of GPT-NeoX / LLaMA):
// for x [..., T, D] and i < D/2, with θ_i = base^(-2i/D) and angle a = (offset + t)·θ_i,
//   y[i]       = x[i] cos a - x[i + D/2] sin a
//   y[i + D/2] = x[i] sin a + x[i + D/2] cos a
// The backward is the inverse rotation (angle -a) applied to g. Neither needs x's values, so
// rope(std::move(x)) rotates x's own storage when nothing else can see it (see ops.h).
#include <cmath>

#include "backend/cpu/parallel.h"
#include "ops/op_cuda.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace attn {

namespace {

// y ← rotation of x; y may be x itself (each pair is read before it is written).
void rotate_into(const Tensor& x, Tensor& y, double base, int64_t offset, bool inverse) {
  if (x.dim() < 2 || x.size(-1) % 2 != 0)
    throw std::invalid_argument("rope: need [..., T, D] with an even D, got " + shape_str(x.shape()));
  int64_t T = x.size(-2), D = x.size(-1), half = D / 2, rows = x.numel() / D;
  if (x.device().is_cuda()) {
    check_cuda_float(x, "rope");
    cuda::rope(x.dtype(), x.raw_data(), y.raw_data(), rows, T, D, base, offset, inverse,
               x.device().index);
    return;
  }
  check_cpu(x, "rope");
  // cos/sin table [T, D/2], computed once per call in f64.
  std::vector<double> cos_t(T * half), sin_t(T * half);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i) {
      double a = static_cast<double>(offset + t) *
                 std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(D));
      cos_t[t * half + i] = std::cos(a);
      sin_t[t * half + i] = inverse ? -std::sin(a) : std::sin(a);
    }
  dispatch_float(x.dtype(), "rope", [&](auto tag) {
    using T_ = decltype(tag);
    const T_* px = x.data<T_>();
    T_* py = y.data<T_>();
    cpu::parallel_for(rows, 4 * D, [&](int64_t r) {
      const double *c = cos_t.data() + (r % T) * half, *s = sin_t.data() + (r % T) * half;
      const T_* xr = px + r * D;
      T_* yr = py + r * D;
      for (int64_t i = 0; i < half; ++i) {
        const T_ ci = static_cast<T_>(c[i]), si = static_cast<T_>(s[i]);
        const T_ a = xr[i], b = xr[i + half];
        yr[i] = a * ci - b * si;
        yr[i + half] = a * si + b * ci;
      }
    });
  });
}

Tensor rotate(const Tensor& x, double base, int64_t offset, bool inverse) {
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  rotate_into(x, y, base, offset, inverse);
  return y;
}

Tensor record_rope(Tensor y, const Tensor& x, double base, int64_t offset) {
  return autograd::record(OpId::Rope, std::move(y), {x}, [base, offset](const Tensor& g) {
    return std::vector<Tensor>{rotate(g, base, offset, true)};  // never in place: g may be shared
  });
}

}  // namespace

Tensor rope(const Tensor& x, double base, int64_t offset) {
  return record_rope(rotate(x, base, offset, false), x, base, offset);
}

Tensor rope(Tensor&& x, double base, int64_t offset) {
  // In place only when no one else can see the storage: this handle is the only one to x, x is
  // the only tensor on its storage (no view, no saved copy in a backward closure), and x is not a
  // leaf that requires grad (a parameter's value must not change).
  const bool alone = x.defined() && x.impl_ptr().use_count() == 1 &&
                     x.impl().storage.use_count() == 1 && !(x.requires_grad() && x.is_leaf());
  if (!alone) return rope(static_cast<const Tensor&>(x), base, offset);
  Tensor y = x.detach();
  rotate_into(x, y, base, offset, false);
  return record_rope(std::move(y), x, base, offset);
}

}  // namespace attn
