// cast: a differentiable dtype conversion, the seam of mixed precision. A module in a bf16 run
// reads its f32 master weight through cast(w, bf16); the gradient comes back through the cast
// in f32 and lands on the master, where AdamW updates it.
//   forward   y = round_dt(x)              (f32 -> bf16 rounds to nearest even)
//   backward  dx = g converted to x's dtype (the rounding's derivative is taken as 1: the
//             straight-through rule every framework's autocast uses)
//
// Working copies. Casting a CUDA parameter (a leaf that requires grad) keeps the result in the
// parameter's TensorImpl (`working`, stamped with its storage and that storage's version).
// AdamW's fused update writes the new bf16 value into that copy as it writes the f32 master
// (kernels/adamw.cuh) and re-stamps it, so in a training loop each step's casts convert nothing:
// the forward reads the copy the optimizer wrote. Any other write to the master goes through
// Storage::data() and moves its version, so a stale copy is never used (it is converted anew).
// The copy is rewritten in place: a graph kept across an optimizer step (retain_graph) sees the
// new weights in what it saved, as tensors saved before an in-place update do in any framework.
#include <string>

#include "autograd/node.h"
#include "ops/ops.h"

namespace attn {

namespace {

bool keeps_working_copy(const Tensor& x) {
  return x.device().is_cuda() && x.requires_grad() && !x.grad_fn();
}

}  // namespace

Tensor cast(const Tensor& x, DType dtype) {
  if (!is_floating(x.dtype()) || !is_floating(dtype))
    throw std::invalid_argument(std::string("cast: floating dtypes only (f32, f64, bf16), got ") +
                                dtype_name(x.dtype()) + " -> " + dtype_name(dtype));
  if (x.dtype() == dtype) return x;
  Tensor y;
  if (keeps_working_copy(x)) {
    TensorImpl& p = x.impl();  // a cache: x's value is unchanged
    if (p.working_current() && p.working->dtype == dtype) {
      y = Tensor(p.working).detach();
    } else {
      y = x.to(dtype);
      p.working = y.detach().impl_ptr();
      p.stamp_working();
    }
  } else {
    y = x.to(dtype);
  }
  return autograd::record(OpId::Cast, y, {x}, [src = x.dtype()](const Tensor& g) {
    return std::vector<Tensor>{g.to(src)};
  });
}

}  // namespace attn
