// cast: a differentiable dtype conversion, the seam of mixed precision. A module in a bf16 run
// reads its f32 master weight through cast(w, bf16); the gradient comes back through the cast
// in f32 and lands on the master, where AdamW updates it.
//   forward   y = round_dt(x)              (f32 -> bf16 rounds to nearest even)
//   backward  dx = g converted to x's dtype (the rounding's derivative is taken as 1: the
//             straight-through rule every framework's autocast uses)
#include <string>

#include "autograd/node.h"
#include "ops/ops.h"

namespace attn {

Tensor cast(const Tensor& x, DType dtype) {
  if (!is_floating(x.dtype()) || !is_floating(dtype))
    throw std::invalid_argument(std::string("cast: floating dtypes only (f32, f64, bf16), got ") +
                                dtype_name(x.dtype()) + " -> " + dtype_name(dtype));
  if (x.dtype() == dtype) return x;
  return autograd::record(OpId::Cast, x.to(dtype), {x}, [src = x.dtype()](const Tensor& g) {
    return std::vector<Tensor>{g.to(src)};
  });
}

}  // namespace attn
