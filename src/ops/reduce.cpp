// Reductions over one axis, seen as x[outer, n, inner] -> y[outer, inner].
//   sum:  dx = broadcast(g);  mean: dx = broadcast(g) / n;  max: dx = g at the first argmax.
#include <limits>

#include "backend/cpu/parallel.h"
#include "ops/op_cuda.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace attn {

namespace {

struct AxisView {
  int64_t outer, n, inner;
  Shape out_shape;   // without the axis (or with 1 there when keepdim)
  Shape keep_shape;  // with 1 at the axis
};

AxisView view_axis(const Tensor& x, int64_t axis, bool keepdim, const char* op) {
  int64_t a = normalize_axis(axis, x.dim(), op);
  AxisView v{prod(x.shape(), 0, a), x.shape()[a], prod(x.shape(), a + 1, x.dim()), {}, x.shape()};
  v.keep_shape[a] = 1;
  v.out_shape = v.keep_shape;
  if (!keepdim) v.out_shape.erase(v.out_shape.begin() + a);
  return v;
}

// y[o, i] = scale · Σ_k x[o, k, i]
Tensor sum_axis_raw(const Tensor& x, const AxisView& v, double scale) {
  if (x.device().is_cuda()) {
    check_cuda_float(x, "sum");
    Tensor y = Tensor::empty(v.out_shape, x.dtype(), x.device());
    cuda::sum_axis(x.dtype(), x.raw_data(), y.raw_data(), v.outer, v.n, v.inner, scale,
                   x.device().index);
    return y;
  }
  check_cpu(x, "sum");
  Tensor y = Tensor::empty(v.out_shape, x.dtype());
  dispatch_float(x.dtype(), "sum", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    cpu::parallel_for(v.outer, v.n * v.inner, [&](int64_t o) {
      T* row = py + o * v.inner;
      for (int64_t i = 0; i < v.inner; ++i) row[i] = T(0);
      for (int64_t k = 0; k < v.n; ++k) {
        const T* src = px + (o * v.n + k) * v.inner;
        for (int64_t i = 0; i < v.inner; ++i) row[i] += src[i];
      }
      for (int64_t i = 0; i < v.inner; ++i) row[i] *= static_cast<T>(scale);
    });
  });
  return y;
}

// dx[o, k, i] = scale · g[o, i]
Tensor broadcast_axis_raw(const Tensor& g, const Shape& x_shape, const AxisView& v, double scale) {
  if (g.device().is_cuda()) {
    check_cuda_float(g, "sum backward");
    Tensor dx = Tensor::empty(x_shape, g.dtype(), g.device());
    cuda::broadcast_axis(g.dtype(), g.raw_data(), dx.raw_data(), v.outer, v.n, v.inner, scale,
                         g.device().index);
    return dx;
  }
  Tensor dx = Tensor::empty(x_shape, g.dtype());
  dispatch_float(g.dtype(), "sum backward", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = g.data<T>();
    T* pd = dx.data<T>();
    cpu::parallel_for(v.outer, v.n * v.inner, [&](int64_t o) {
      for (int64_t k = 0; k < v.n; ++k)
        for (int64_t i = 0; i < v.inner; ++i)
          pd[(o * v.n + k) * v.inner + i] = static_cast<T>(scale) * pg[o * v.inner + i];
    });
  });
  return dx;
}

Tensor scaled_sum(OpId op, const Tensor& x, int64_t axis, bool keepdim, bool average) {
  AxisView v = view_axis(x, axis, keepdim, op_name(op));
  double scale = average ? 1.0 / static_cast<double>(v.n) : 1.0;
  Tensor y = sum_axis_raw(x, v, scale);
  return autograd::record(op, y, {x}, [v, scale, xs = x.shape()](const Tensor& g) {
    return std::vector<Tensor>{broadcast_axis_raw(g, xs, v, scale)};
  });
}

// max on the device: values and the first argmax (i64, kept on the device for the backward).
Tensor max_cuda(const Tensor& x, const AxisView& v) {
  check_cuda_float(x, "max");
  if (v.n == 0) throw std::invalid_argument("max: reduction over an empty axis");
  const Device dev = x.device();
  Tensor y = Tensor::empty(v.out_shape, x.dtype(), dev);
  Tensor arg = Tensor::empty(v.out_shape, DType::I64, dev);
  cuda::max_axis(x.dtype(), x.raw_data(), y.raw_data(), static_cast<int64_t*>(arg.raw_data()),
                 v.outer, v.n, v.inner, dev.index);
  return autograd::record(OpId::Max, y, {x}, [v, arg, xs = x.shape(), dt = x.dtype(), dev](const Tensor& g) {
    check_grad_like(g, dt, dev, "max");
    Tensor dx = Tensor::empty(xs, g.dtype(), g.device());
    cuda::max_axis_backward(g.dtype(), g.raw_data(), static_cast<const int64_t*>(arg.raw_data()),
                            dx.raw_data(), v.outer, v.n, v.inner, g.device().index);
    return std::vector<Tensor>{dx};
  });
}

}  // namespace

Tensor sum(const Tensor& x, int64_t axis, bool keepdim) {
  return scaled_sum(OpId::Sum, x, axis, keepdim, false);
}
Tensor mean(const Tensor& x, int64_t axis, bool keepdim) {
  return scaled_sum(OpId::Mean, x, axis, keepdim, true);
}
Tensor sum(const Tensor& x) { return reshape(sum(reshape(x, {-1}), 0), {}); }
Tensor mean(const Tensor& x) { return reshape(mean(reshape(x, {-1}), 0), {}); }

Tensor max(const Tensor& x, int64_t axis, bool keepdim) {
  AxisView v = view_axis(x, axis, keepdim, "max");
  if (x.device().is_cuda()) return max_cuda(x, v);
  check_cpu(x, "max");
  if (v.n == 0) throw std::invalid_argument("max: reduction over an empty axis");
  Tensor y = Tensor::empty(v.out_shape, x.dtype());
  Tensor arg = Tensor::empty(v.out_shape, DType::I64);
  dispatch_float(x.dtype(), "max", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    int64_t* pa = arg.data<int64_t>();
    cpu::parallel_for(v.outer * v.inner, v.n, [&](int64_t r) {
      int64_t o = r / v.inner, i = r % v.inner, best = 0;
      for (int64_t k = 1; k < v.n; ++k)
        if (px[(o * v.n + k) * v.inner + i] > px[(o * v.n + best) * v.inner + i]) best = k;
      py[r] = px[(o * v.n + best) * v.inner + i];
      pa[r] = best;
    });
  });
  return autograd::record(OpId::Max, y, {x}, [v, arg, xs = x.shape()](const Tensor& g) {
    Tensor dx = zeros(xs, {g.dtype()});
    dispatch_float(g.dtype(), "max backward", [&](auto tag) {
      using T = decltype(tag);
      const T* pg = g.data<T>();
      const int64_t* pa = arg.data<int64_t>();
      T* pd = dx.data<T>();
      for (int64_t r = 0; r < v.outer * v.inner; ++r)
        pd[(r / v.inner * v.n + pa[r]) * v.inner + r % v.inner] = pg[r];
    });
    return std::vector<Tensor>{dx};
  });
}

}  // namespace attn
