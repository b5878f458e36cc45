// where(c, a, b) = c ? a : b   -> da = g∘c, db = g∘(1-c)
// masked_fill(x, m, v) = m ? v : x  -> dx = g∘(1-m)
#include "ops/op_cuda.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace attn {

namespace {

std::vector<uint8_t> truth(const Tensor& cond, const Shape& shape, const char* op) {
  if (cond.shape() != shape)
    throw std::invalid_argument(std::string(op) + ": condition shape " + shape_str(cond.shape()) +
                                " differs from " + shape_str(shape));
  std::vector<double> v = cond.to_vector();
  std::vector<uint8_t> t(v.size());
  for (size_t i = 0; i < v.size(); ++i) t[i] = v[i] != 0;
  return t;
}

// out_i = pick_i ? a_i : b_i, with b a scalar when b_is_scalar.
Tensor choose(const std::vector<uint8_t>& pick, const Tensor& a, const Tensor& b, bool b_is_scalar,
              double b_scalar) {
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  dispatch_float(a.dtype(), "where", [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    const T* pb = b_is_scalar ? nullptr : b.data<T>();
    T* po = out.data<T>();
    for (size_t i = 0; i < pick.size(); ++i)
      po[i] = pick[i] ? pa[i] : (b_is_scalar ? static_cast<T>(b_scalar) : pb[i]);
  });
  return out;
}

std::vector<uint8_t> negate(std::vector<uint8_t> t) {
  for (auto& x : t) x = !x;
  return t;
}

// On the device: out_i = (cond_i != 0) != invert ? a_i : (b defined ? b_i : b_scalar); cond
// stays in its own dtype (moved to a's device when it lives elsewhere).
Tensor choose_cuda(const Tensor& cond, bool invert, const Tensor& a, const Tensor& b,
                   double b_scalar) {
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  cuda::select(a.dtype(), cond.raw_data(), cond.dtype(), invert, a.raw_data(),
               b.defined() ? b.raw_data() : nullptr, b_scalar, out.raw_data(), a.numel(),
               a.device().index);
  return out;
}

Tensor device_condition(const Tensor& cond, const Shape& shape, Device dev, const char* op) {
  if (cond.shape() != shape)
    throw std::invalid_argument(std::string(op) + ": condition shape " + shape_str(cond.shape()) +
                                " differs from " + shape_str(shape));
  return on_device(cond, dev);
}

}  // namespace

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_same_kind(a, b, "where");
  if (a.device().is_cuda()) {
    check_cuda_float(a, "where");
    if (a.shape() != b.shape())
      throw std::invalid_argument("where: shapes " + shape_str(a.shape()) + " and " + shape_str(b.shape()) + " differ");
    Tensor c = device_condition(cond, a.shape(), a.device(), "where");
    Tensor out = choose_cuda(c, false, a, b, 0);
    return autograd::record(OpId::Where, out, {Tensor(), a, b}, [c](const Tensor& g) {
      return std::vector<Tensor>{Tensor(), choose_cuda(c, false, g, Tensor(), 0),
                                 choose_cuda(c, true, g, Tensor(), 0)};
    });
  }
  check_cpu(a, "where");
  if (a.shape() != b.shape())
    throw std::invalid_argument("where: shapes " + shape_str(a.shape()) + " and " + shape_str(b.shape()) + " differ");
  std::vector<uint8_t> t = truth(cond, a.shape(), "where");
  Tensor out = choose(t, a, b, false, 0);
  return autograd::record(OpId::Where, out, {Tensor(), a, b}, [t](const Tensor& g) {
    return std::vector<Tensor>{Tensor(), choose(t, g, Tensor(), true, 0),
                               choose(negate(t), g, Tensor(), true, 0)};
  });
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  if (x.device().is_cuda()) {
    check_cuda_float(x, "masked_fill");
    Tensor m = device_condition(mask, x.shape(), x.device(), "masked_fill");
    Tensor out = choose_cuda(m, true, x, Tensor(), value);  // kept where the mask is 0
    return autograd::record(OpId::MaskedFill, out, {x, Tensor()}, [m](const Tensor& g) {
      return std::vector<Tensor>{choose_cuda(m, true, g, Tensor(), 0), Tensor()};
    });
  }
  check_cpu(x, "masked_fill");
  std::vector<uint8_t> keep = negate(truth(mask, x.shape(), "masked_fill"));
  Tensor out = choose(keep, x, Tensor(), true, value);
  return autograd::record(OpId::MaskedFill, out, {x, Tensor()}, [keep](const Tensor& g) {
    return std::vector<Tensor>{choose(keep, g, Tensor(), true, 0), Tensor()};
  });
}

}  // namespace attn
