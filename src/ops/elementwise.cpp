// Elementwise ops: broadcasting binary arithmetic and the unary maths functions.
#include <Eigen/Core>
#include <cmath>

#include "backend/cpu/parallel.h"
#include "ops/op_cuda.h"
#include "ops/op_util.h"
#include "ops/ops.h"
#include "ops/record_internal.h"

namespace attn {

// ---- shared helpers ------------------------------------------------------------------------

int64_t normalize_axis(int64_t axis, int64_t dim, const char* op) {
  if (axis < -dim || axis >= std::max<int64_t>(dim, 1))
    throw std::out_of_range(std::string(op) + ": axis " + std::to_string(axis) +
                            " out of range for a tensor of " + std::to_string(dim) + " dims");
  return axis < 0 ? axis + dim : axis;
}

void check_same_kind(const Tensor& a, const Tensor& b, const char* op) {
  if (!a.defined() || !b.defined()) throw std::invalid_argument(std::string(op) + ": undefined input");
  if (a.dtype() != b.dtype())
    throw std::invalid_argument(std::string(op) + ": dtype mismatch " + dtype_name(a.dtype()) +
                                " vs " + dtype_name(b.dtype()));
  if (!(a.device() == b.device()))
    throw std::invalid_argument(std::string(op) + ": device mismatch " + a.device().str() + " vs " +
                                b.device().str());
}

void check_cpu(const Tensor& x, const char* op) {
  if (!x.device().is_cpu())
    throw std::runtime_error(std::string(op) + ": no CUDA implementation yet (tensor on " +
                             x.device().str() + ")");
}

int64_t prod(const Shape& s, size_t begin, size_t end) {
  int64_t n = 1;
  for (size_t i = begin; i < end; ++i) n *= s[i];
  return n;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      throw std::invalid_argument(std::string(op) + ": shapes " + shape_str(a) + " and " +
                                  shape_str(b) + " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

namespace {

// Visits every output index with the matching offsets into a and b; the innermost dim runs as
// a plain strided loop. f(out_index, a_offset, b_offset).
template <class F>
void for_each_broadcast(const Shape& out, const std::vector<int64_t>& sa,
                        const std::vector<int64_t>& sb, F&& f) {
  int64_t n = shape_numel(out);
  if (n == 0) return;
  size_t d = out.size();
  int64_t inner = d ? out[d - 1] : 1, ia = d ? sa[d - 1] : 0, ib = d ? sb[d - 1] : 0;
  int64_t rows = n / inner;
  cpu::parallel_for(rows, inner, [&](int64_t r) {
    int64_t oa = 0, ob = 0, rem = r;
    for (size_t k = d - 1; k-- > 0;) {
      int64_t idx = rem % out[k];
      rem /= out[k];
      oa += idx * sa[k];
      ob += idx * sb[k];
    }
    for (int64_t j = 0; j < inner; ++j) f(r * inner + j, oa + j * ia, ob + j * ib);
  });
}

enum class BinOp { Add, Sub, Mul, Div };

cuda::BinaryOp cuda_binop(BinOp op) {
  switch (op) {
    case BinOp::Add: return cuda::BinaryOp::Add;
    case BinOp::Sub: return cuda::BinaryOp::Sub;
    case BinOp::Mul: return cuda::BinaryOp::Mul;
    case BinOp::Div: return cuda::BinaryOp::Div;
  }
  throw std::logic_error("binary op: bad op");
}

Tensor binary_forward(BinOp op, const Tensor& a, const Tensor& b, const char* name) {
  check_same_kind(a, b, name);
  if (a.device().is_cuda()) {
    check_cuda_float(a, name);
    Shape out_shape = broadcast_shapes(a.shape(), b.shape(), name);
    Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
    cuda::binary(cuda_binop(op), a.dtype(), a.raw_data(), a.shape(), b.raw_data(), b.shape(),
                 out.raw_data(), out_shape, a.device().index);
    return out;
  }
  check_cpu(a, name);
  Shape out_shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(out_shape, a.dtype());
  dispatch_float(a.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    const T *pa = a.data<T>(), *pb = b.data<T>();
    T* po = out.data<T>();
    auto apply = [op](T x, T y) {
      switch (op) {
        case BinOp::Add: return x + y;
        case BinOp::Sub: return x - y;
        case BinOp::Mul: return x * y;
        case BinOp::Div: return x / y;
      }
      return T(0);
    };
    if (a.shape() == b.shape()) {
      cpu::parallel_for(out.numel(), 1, [&](int64_t i) { po[i] = apply(pa[i], pb[i]); });
    } else {
      for_each_broadcast(out_shape, broadcast_strides(a.shape(), out_shape),
                         broadcast_strides(b.shape(), out_shape),
                         [&](int64_t i, int64_t ia, int64_t ib) { po[i] = apply(pa[ia], pb[ib]); });
    }
  });
  return out;
}

// sum_to_shape on the device: each run of neighbouring dims that broadcasting expanded is one
// axis reduction (x [outer, n, inner] -> [outer, inner]); [B, T, D] -> [D] is a single one.
Tensor sum_to_shape_cuda(const Tensor& g, const Shape& shape) {
  check_cuda_float(g, "sum_to_shape");
  const Shape& gs = g.shape();
  const size_t d = gs.size();
  if (shape.size() > d) throw std::invalid_argument("sum_to_shape: " + shape_str(shape) +
                                                    " has more dims than " + shape_str(gs));
  Shape target(d - shape.size(), 1);  // shape, left-padded with 1s to g's rank
  target.insert(target.end(), shape.begin(), shape.end());
  Tensor cur = g;
  Shape cur_shape = gs;
  for (size_t k = 0; k < d;) {
    if (target[k] != 1 || cur_shape[k] == 1) {
      ++k;
      continue;
    }
    size_t e = k;
    while (e < d && target[e] == 1) ++e;
    Shape next = cur_shape;
    for (size_t j = k; j < e; ++j) next[j] = 1;
    Tensor out = Tensor::empty(next, g.dtype(), g.device());
    cuda::sum_axis(g.dtype(), cur.raw_data(), out.raw_data(), prod(cur_shape, 0, k),
                   prod(cur_shape, k, e), prod(cur_shape, e, d), 1.0, g.device().index);
    cur = out;
    cur_shape = next;
    k = e;
  }
  if (shape_numel(cur_shape) != shape_numel(shape))
    throw std::invalid_argument("sum_to_shape: " + shape_str(gs) + " does not reduce to " +
                                shape_str(shape));
  Tensor view = cur.detach();  // same elements in the same order: only the shape changes
  view.impl().shape = shape;
  return view;
}

}  // namespace

Tensor sum_to_shape(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  if (g.device().is_cuda()) return sum_to_shape_cuda(g, shape);
  check_cpu(g, "sum_to_shape");
  Tensor out = zeros(shape, {g.dtype()});
  dispatch_float(g.dtype(), "sum_to_shape", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = g.data<T>();
    T* po = out.data<T>();
    std::vector<int64_t> so = broadcast_strides(shape, g.shape());
    // Serial: several output indices may map to one reduced element.
    int64_t n = g.numel(), d = g.dim(), inner = d ? g.shape()[d - 1] : 1;
    for (int64_t r = 0; r < n / std::max<int64_t>(inner, 1); ++r) {
      int64_t oo = 0, rem = r;
      for (int64_t k = d - 2; k >= 0; --k) {
        oo += (rem % g.shape()[k]) * so[k];
        rem /= g.shape()[k];
      }
      int64_t io = d ? so[d - 1] : 0;
      for (int64_t j = 0; j < inner; ++j) po[oo + j * io] += pg[r * inner + j];
    }
  });
  return out;
}

// ---- binary ops ----------------------------------------------------------------------------
// d(a+b) = (g, g); d(a-b) = (g, -g); d(ab) = (g b, g a); d(a/b) = (g/b, -g a/b²),
// each summed back over the broadcast dims.

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinOp::Add, a, b, "add");
  return autograd::record(OpId::Add, out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g) {
    return std::vector<Tensor>{sum_to_shape(g, sa), sum_to_shape(g, sb)};
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinOp::Sub, a, b, "sub");
  return autograd::record(OpId::Sub, out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g) {
    return std::vector<Tensor>{sum_to_shape(g, sa), sum_to_shape(neg(g), sb)};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinOp::Mul, a, b, "mul");
  bool ga = a.requires_grad(), gb = b.requires_grad();
  return autograd::record(OpId::Mul, out, {a, b}, [ad = a.detach(), bd = b.detach(), ga, gb](const Tensor& g) {
    return std::vector<Tensor>{ga ? sum_to_shape(mul(g, bd), ad.shape()) : Tensor(),
                               gb ? sum_to_shape(mul(g, ad), bd.shape()) : Tensor()};
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinOp::Div, a, b, "div");
  bool gb = b.requires_grad();
  return autograd::record(OpId::Div, out, {a, b},
                          [ad = a.detach(), bd = b.detach(), od = out.detach(), gb](const Tensor& g) {
    Tensor g_over_b = div(g, bd);
    return std::vector<Tensor>{sum_to_shape(g_over_b, ad.shape()),
                               gb ? sum_to_shape(neg(mul(g_over_b, od)), bd.shape()) : Tensor()};
  });
}

namespace {
// A 0-d operand for the scalar overloads; on CUDA filled on the device (no host round trip).
Tensor scalar_like(double s, const Tensor& a) {
  return a.device().is_cuda() ? cuda_full({}, s, a.dtype(), a.device())
                              : scalar(s, {a.dtype(), a.device()});
}
}  // namespace

Tensor add(const Tensor& a, double s) { return add(a, scalar_like(s, a)); }
Tensor mul(const Tensor& a, double s) { return mul(a, scalar_like(s, a)); }

// ---- unary ops -----------------------------------------------------------------------------

namespace {

constexpr double kGeluC = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kGeluA = 0.044715;

template <class T>
T unary_value(OpId op, T x, double p) {
  switch (op) {
    case OpId::Neg: return -x;
    case OpId::Exp: return std::exp(x);
    case OpId::Log: return std::log(x);
    case OpId::Sqrt: return std::sqrt(x);
    case OpId::Rsqrt: return T(1) / std::sqrt(x);
    case OpId::Pow: return std::pow(x, static_cast<T>(p));
    case OpId::Tanh: return std::tanh(x);
    case OpId::Sigmoid: return T(1) / (T(1) + std::exp(-x));
    case OpId::Relu: return x > T(0) ? x : T(0);
    case OpId::Gelu: return T(0.5) * x * (T(1) + std::tanh(T(kGeluC) * (x + T(kGeluA) * x * x * x)));
    case OpId::Silu: return x / (T(1) + std::exp(-x));
    case OpId::Round: return std::nearbyint(x);  // half to even (the default rounding mode), as torch.round
    default: throw std::logic_error("unary_value: not a unary op");
  }
}

// dy/dx from x and y = f(x).
template <class T>
T unary_derivative(OpId op, T x, T y, double p) {
  switch (op) {
    case OpId::Neg: return T(-1);
    case OpId::Exp: return y;
    case OpId::Log: return T(1) / x;
    case OpId::Sqrt: return T(0.5) / y;
    case OpId::Rsqrt: return T(-0.5) * y * y * y;
    case OpId::Pow: return static_cast<T>(p) * std::pow(x, static_cast<T>(p - 1));
    case OpId::Tanh: return T(1) - y * y;
    case OpId::Sigmoid: return y * (T(1) - y);
    case OpId::Relu: return x > T(0) ? T(1) : T(0);
    case OpId::Gelu: {
      // y = x/2 (1 + tanh u), u = c (x + a x³): y' = (1 + t)/2 + x/2 (1 - t²) c (1 + 3a x²)
      T t = std::tanh(T(kGeluC) * (x + T(kGeluA) * x * x * x));
      return T(0.5) * (T(1) + t) +
             T(0.5) * x * (T(1) - t * t) * T(kGeluC) * (T(1) + T(3 * kGeluA) * x * x);
    }
    case OpId::Silu: {
      T s = T(1) / (T(1) + std::exp(-x));  // y' = s (1 + x (1 - s))
      return s * (T(1) + x * (T(1) - s));
    }
    case OpId::Round: return T(0);  // a step function: 0 almost everywhere
    default: throw std::logic_error("unary_derivative: not a unary op");
  }
}

template <class T>
using ArrayMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstArrayMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// The transcendental activations go through Eigen's vectorised exp/tanh (libm's scalar tanh
// and expm1 were a quarter of a training step); the rest use the scalar formulas.
// gelu: 1 + tanh(u) = 2σ(2u), so y = x·σ(2u).
template <class T>
void unary_block(OpId op, const T* x, T* y, int64_t n, double p) {
  ConstArrayMap<T> X(x, n);
  ArrayMap<T> Y(y, n);
  switch (op) {
    case OpId::Exp: Y = X.exp(); return;
    case OpId::Sigmoid: Y = T(1) / (T(1) + (-X).exp()); return;
    case OpId::Tanh: Y = X.tanh(); return;
    case OpId::Silu: Y = X / (T(1) + (-X).exp()); return;
    case OpId::Gelu: {
      auto u2 = T(2 * kGeluC) * (X + T(kGeluA) * X.cube());
      Y = X / (T(1) + (-u2).exp());
      return;
    }
    default:
      for (int64_t i = 0; i < n; ++i) y[i] = unary_value<T>(op, x[i], p);
  }
}

// gx = g·f'(x), with the same vectorised forms as unary_block.
template <class T>
void unary_grad_block(OpId op, const T* g, const T* x, const T* y, T* gx, int64_t n, double p) {
  ConstArrayMap<T> G(g, n), X(x, n), Y(y, n);
  ArrayMap<T> GX(gx, n);
  switch (op) {
    case OpId::Exp: GX = G * Y; return;
    case OpId::Sigmoid: GX = G * Y * (T(1) - Y); return;
    case OpId::Tanh: GX = G * (T(1) - Y * Y); return;
    case OpId::Silu: {
      auto s = T(1) / (T(1) + (-X).exp());
      GX = G * s * (T(1) + X * (T(1) - s));
      return;
    }
    case OpId::Gelu: {
      // t = tanh u = 2σ(2u) - 1;  y' = (1 + t)/2 + x/2 (1 - t²) c (1 + 3a x²)
      auto u2 = T(2 * kGeluC) * (X + T(kGeluA) * X.cube());
      Eigen::Array<T, Eigen::Dynamic, 1> t = T(2) / (T(1) + (-u2).exp()) - T(1);
      GX = G * (T(0.5) * (T(1) + t) +
                T(0.5) * X * (T(1) - t * t) * T(kGeluC) * (T(1) + T(3 * kGeluA) * X.square()));
      return;
    }
    default:
      for (int64_t i = 0; i < n; ++i) gx[i] = g[i] * unary_derivative<T>(op, x[i], y[i], p);
  }
}

constexpr int64_t kBlock = 4096;  // elements per parallel work item

cuda::UnaryOp cuda_unop(OpId op) {
  switch (op) {
    case OpId::Neg: return cuda::UnaryOp::Neg;
    case OpId::Exp: return cuda::UnaryOp::Exp;
    case OpId::Log: return cuda::UnaryOp::Log;
    case OpId::Sqrt: return cuda::UnaryOp::Sqrt;
    case OpId::Rsqrt: return cuda::UnaryOp::Rsqrt;
    case OpId::Pow: return cuda::UnaryOp::Pow;
    case OpId::Tanh: return cuda::UnaryOp::Tanh;
    case OpId::Sigmoid: return cuda::UnaryOp::Sigmoid;
    case OpId::Relu: return cuda::UnaryOp::Relu;
    case OpId::Gelu: return cuda::UnaryOp::Gelu;
    case OpId::Silu: return cuda::UnaryOp::Silu;
    case OpId::Round: return cuda::UnaryOp::Round;
    default: throw std::logic_error("cuda_unop: not a unary op");
  }
}

Tensor unary_map(OpId op, const Tensor& x, double p) {
  if (x.device().is_cuda()) {
    check_cuda_float(x, op_name(op));
    Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
    cuda::unary_forward(cuda_unop(op), x.dtype(), x.raw_data(), y.raw_data(), x.numel(), p,
                        x.device().index);
    return y;
  }
  check_cpu(x, op_name(op));
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), op_name(op), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    int64_t n = x.numel();
    cpu::parallel_for((n + kBlock - 1) / kBlock, kBlock * 8, [&](int64_t b) {
      int64_t i0 = b * kBlock;
      unary_block<T>(op, px + i0, py + i0, std::min(kBlock, n - i0), p);
    });
  });
  return y;
}

// g * f'(x), elementwise.
Tensor unary_grad(OpId op, const Tensor& g, const Tensor& x, const Tensor& y, double p) {
  if (x.device().is_cuda()) {
    check_grad_like(g, x, op_name(op));
    Tensor gx = Tensor::empty(x.shape(), x.dtype(), x.device());
    cuda::unary_backward(cuda_unop(op), x.dtype(), g.raw_data(), x.raw_data(), gx.raw_data(),
                         x.numel(), p, x.device().index);
    return gx;
  }
  Tensor gx = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), op_name(op), [&](auto tag) {
    using T = decltype(tag);
    const T *pg = g.data<T>(), *px = x.data<T>(), *py = y.data<T>();
    T* out = gx.data<T>();
    int64_t n = x.numel();
    cpu::parallel_for((n + kBlock - 1) / kBlock, kBlock * 8, [&](int64_t b) {
      int64_t i0 = b * kBlock;
      unary_grad_block<T>(op, pg + i0, px + i0, py + i0, out + i0, std::min(kBlock, n - i0), p);
    });
  });
  return gx;
}

Tensor unary(OpId op, const Tensor& x, double p = 0) {
  return record_unary(op, unary_map(op, x, p), x, p);
}

}  // namespace

Tensor record_unary(OpId op, Tensor y, const Tensor& x, double p) {
  // CUDA recomputes y from x in the backward: keep y only for the CPU.
  Tensor keep_y = x.device().is_cuda() ? Tensor() : y.detach();
  return autograd::record(op, std::move(y), {x},
                          [op, xd = x.detach(), yd = keep_y, p](const Tensor& g) {
                            return std::vector<Tensor>{unary_grad(op, g, xd, yd, p)};
                          });
}

Tensor neg(const Tensor& x) { return unary(OpId::Neg, x); }
Tensor exp(const Tensor& x) { return unary(OpId::Exp, x); }
Tensor log(const Tensor& x) { return unary(OpId::Log, x); }
Tensor sqrt(const Tensor& x) { return unary(OpId::Sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary(OpId::Rsqrt, x); }
Tensor pow(const Tensor& x, double exponent) { return unary(OpId::Pow, x, exponent); }
Tensor tanh(const Tensor& x) { return unary(OpId::Tanh, x); }
Tensor sigmoid(const Tensor& x) { return unary(OpId::Sigmoid, x); }
Tensor relu(const Tensor& x) { return unary(OpId::Relu, x); }
Tensor gelu(const Tensor& x) { return unary(OpId::Gelu, x); }
Tensor silu(const Tensor& x) { return unary(OpId::Silu, x); }
Tensor round(const Tensor& x) { return unary(OpId::Round, x); }

}  // namespace attn
