// Cross-entropy with integer targets, fused with the log-softmax:
//   loss = (1/V) Σ_{valid r} (lse_r - x[r, t_r]),  V = number of rows whose target != ignore
//   dx[r, :] = g/V · (softmax(x[r]) - onehot(t_r)) for valid rows, 0 for ignored ones.
#include <cmath>
#include <limits>

#include "backend/cpu/parallel.h"
#include "ops/op_cuda.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace attn {

namespace {

std::vector<int64_t> targets_as_i64(const Tensor& t) {
  if (!is_integer(t.dtype()))
    throw std::invalid_argument(std::string("cross_entropy: targets must be i32 or i64, got ") +
                                dtype_name(t.dtype()));
  std::vector<int64_t> out(t.numel());
  Tensor h = t.device().is_cpu() ? t : t.to(Device::cpu());
  for (int64_t i = 0; i < t.numel(); ++i)
    out[i] = t.dtype() == DType::I32 ? h.data<int32_t>()[i] : h.data<int64_t>()[i];
  return out;
}

template <class T>
T row_lse(const T* x, int64_t C) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t c = 0; c < C; ++c) m = std::max(m, x[c]);
  T s = 0;
  for (int64_t c = 0; c < C; ++c) s += std::exp(x[c] - m);
  return m + std::log(s);
}

// The fused loss on the device (kernels/loss.cuh); targets were validated on the host and
// `valid` counted there. lse [N] f32 stays on the device for the backward.
Tensor cross_entropy_cuda(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                          int64_t valid) {
  check_cuda_float(logits, "cross_entropy");
  const Device dev = logits.device();
  const int64_t N = logits.size(0), C = logits.size(1);
  Tensor t = on_device(targets, dev);
  Tensor lse = Tensor::empty({N}, DType::F32, dev);
  Tensor loss = Tensor::empty({}, logits.dtype(), dev);
  cuda::cross_entropy_forward(logits.dtype(), logits.raw_data(), t.raw_data(),
                              t.dtype() == DType::I64, ignore_index, N, C, valid,
                              static_cast<float*>(lse.raw_data()), loss.raw_data(), dev.index);
  return autograd::record(OpId::CrossEntropy, loss, {logits, Tensor()},
                          [xd = logits.detach(), lse, t, ignore_index, valid](const Tensor& g) {
    check_grad_like(g, xd, "cross_entropy");
    Tensor dx = Tensor::empty(xd.shape(), xd.dtype(), xd.device());
    cuda::cross_entropy_backward(xd.dtype(), xd.raw_data(), static_cast<const float*>(lse.raw_data()),
                                 t.raw_data(), t.dtype() == DType::I64, ignore_index, xd.size(0),
                                 xd.size(1), valid, g.raw_data(), dx.raw_data(),
                                 xd.device().index);
    return std::vector<Tensor>{dx, Tensor()};
  });
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  if (logits.dim() != 2 || targets.dim() != 1 || targets.size(0) != logits.size(0))
    throw std::invalid_argument("cross_entropy: need logits [N, C] and targets [N], got " +
                                shape_str(logits.shape()) + " and " + shape_str(targets.shape()));
  int64_t N = logits.size(0), C = logits.size(1);
  std::vector<int64_t> t = targets_as_i64(targets);
  int64_t valid = 0;
  for (int64_t r = 0; r < N; ++r) {
    if (t[r] == ignore_index) continue;
    if (t[r] < 0 || t[r] >= C)
      throw std::out_of_range("cross_entropy: target " + std::to_string(t[r]) + " at row " +
                              std::to_string(r) + " outside [0, " + std::to_string(C) + ")");
    ++valid;
  }
  if (logits.device().is_cuda()) return cross_entropy_cuda(logits, targets, ignore_index, valid);
  check_cpu(logits, "cross_entropy");
  Tensor lse = Tensor::empty({N}, logits.dtype());
  Tensor loss = Tensor::empty({}, logits.dtype());
  dispatch_float(logits.dtype(), "cross_entropy", [&](auto tag) {
    using T = decltype(tag);
    const T* x = logits.data<T>();
    T* pl = lse.data<T>();
    cpu::parallel_for(N, 4 * C, [&](int64_t r) { pl[r] = row_lse(x + r * C, C); });
    double total = 0;
    for (int64_t r = 0; r < N; ++r)
      if (t[r] != ignore_index) total += static_cast<double>(pl[r] - x[r * C + t[r]]);
    loss.data<T>()[0] = static_cast<T>(valid ? total / static_cast<double>(valid) : 0.0);
  });
  return autograd::record(OpId::CrossEntropy, loss, {logits, Tensor()},
                          [xd = logits.detach(), lse, t, ignore_index, valid](const Tensor& g) {
    int64_t N = xd.size(0), C = xd.size(1);
    Tensor dx = Tensor::empty(xd.shape(), xd.dtype());
    dispatch_float(xd.dtype(), "cross_entropy backward", [&](auto tag) {
      using T = decltype(tag);
      const T *x = xd.data<T>(), *pl = lse.data<T>();
      T* pd = dx.data<T>();
      T scale = valid ? static_cast<T>(g.item()) / static_cast<T>(valid) : T(0);
      cpu::parallel_for(N, 4 * C, [&](int64_t r) {
        T* d = pd + r * C;
        if (t[r] == ignore_index) {
          for (int64_t c = 0; c < C; ++c) d[c] = T(0);
          return;
        }
        for (int64_t c = 0; c < C; ++c) d[c] = scale * std::exp(x[r * C + c] - pl[r]);
        d[t[r]] -= scale;
      });
    });
    return std::vector<Tensor>{dx, Tensor()};
  });
}

}  // namespace attn
