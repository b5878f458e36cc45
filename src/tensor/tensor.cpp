#include "tensor/tensor.h"

#include <numeric>

#include "autograd/engine.h"
#include "backend/cuda/ops_cuda.h"

namespace attn {

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out) {
  std::vector<int64_t> st(out.size(), 0);
  int64_t stride = 1;
  for (size_t k = 0; k < in.size(); ++k) {
    size_t i = in.size() - 1 - k, o = out.size() - 1 - k;
    st[o] = in[i] == 1 ? 0 : stride;
    stride *= in[i];
  }
  return st;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape)
    if (d < 0) throw std::invalid_argument("Tensor::empty: negative size in " + shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->storage = std::make_shared<Storage>(shape_numel(shape) * dtype_size(dtype), device);
  return Tensor(std::move(impl));
}

int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  if (d < -n || d >= n)
    throw std::out_of_range("Tensor::size: dim " + std::to_string(d) + " out of range for " +
                            shape_str(shape()));
  return shape()[d < 0 ? d + n : d];
}

void check_typed_access(const Tensor& t, DType want) {
  if (t.dtype() != want)
    throw std::invalid_argument(std::string("Tensor::data: tensor is ") + dtype_name(t.dtype()) +
                                ", accessed as " + dtype_name(want));
  if (!t.device().is_cpu())
    throw std::invalid_argument("Tensor::data: tensor is on " + t.device().str() +
                                "; copy it to the CPU first");
}

namespace {

double load_as_double(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::F64: return static_cast<const double*>(p)[i];
    case DType::BF16: return bf16_to_float(static_cast<const bf16*>(p)[i]);
    case DType::I32: return static_cast<const int32_t*>(p)[i];
    case DType::I64: return static_cast<double>(static_cast<const int64_t*>(p)[i]);
  }
  return 0;
}

template <class Dst, class Src>
void convert_loop(Dst* d, const Src* s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = static_cast<Dst>(s[i]);
}

// Element conversion on the host; f32 <-> bf16 rounds to nearest even.
void convert_host(void* dst, DType dt, const void* src, DType st, int64_t n) {
  if (dt == st) {
    std::memcpy(dst, src, n * dtype_size(dt));
    return;
  }
  if (dt == DType::BF16) {
    auto* d = static_cast<bf16*>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16(static_cast<float>(load_as_double(src, st, i)));
    return;
  }
  if (st == DType::F32 && dt == DType::F64)
    return convert_loop(static_cast<double*>(dst), static_cast<const float*>(src), n);
  if (st == DType::F64 && dt == DType::F32)
    return convert_loop(static_cast<float*>(dst), static_cast<const double*>(src), n);
  for (int64_t i = 0; i < n; ++i) {
    double v = load_as_double(src, st, i);
    switch (dt) {
      case DType::F32: static_cast<float*>(dst)[i] = static_cast<float>(v); break;
      case DType::F64: static_cast<double*>(dst)[i] = v; break;
      case DType::I32: static_cast<int32_t*>(dst)[i] = static_cast<int32_t>(v); break;
      case DType::I64: static_cast<int64_t*>(dst)[i] = static_cast<int64_t>(v); break;
      case DType::BF16: break;  // handled above
    }
  }
}

}  // namespace

Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return clone();
  auto device_kind = [](DType t) { return t == DType::F32 || t == DType::BF16; };
  if (device().is_cuda() && device_kind(dt) && device_kind(dtype())) {  // on the device
    Tensor out = Tensor::empty(shape(), dt, device());
    cuda::convert(dt, out.raw_data(), dtype(), raw_data(), numel(), device().index);
    return out;
  }
  // Other pairs (f64, integers) on a device go through the host: not on any hot path.
  Tensor host = device().is_cpu() ? *this : to(Device::cpu());
  Tensor out = Tensor::empty(shape(), dt, Device::cpu());
  convert_host(out.raw_data(), dt, host.raw_data(), dtype(), numel());
  return device().is_cpu() ? out : out.to(device());
}

Tensor Tensor::to(Device dev) const {
  Tensor out = Tensor::empty(shape(), dtype(), dev);
  copy_bytes(out.raw_data(), dev, raw_data(), device(), nbytes());
  return out;
}

Tensor Tensor::clone() const { return to(device()); }

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = this->impl().storage;
  impl->shape = shape();
  impl->dtype = dtype();
  return Tensor(std::move(impl));
}

std::vector<double> Tensor::to_vector() const {
  Tensor host = device().is_cpu() ? *this : to(Device::cpu());
  std::vector<double> v(numel());
  for (int64_t i = 0; i < numel(); ++i) v[i] = load_as_double(host.raw_data(), dtype(), i);
  return v;
}

double Tensor::item() const {
  if (numel() != 1)
    throw std::invalid_argument("Tensor::item: tensor has " + std::to_string(numel()) +
                                " elements, shape " + shape_str(shape()));
  return to_vector()[0];
}

Tensor& Tensor::set_requires_grad(bool on) {
  if (on && !is_floating(dtype()))
    throw std::invalid_argument(std::string("set_requires_grad: only floating tensors can ") +
                                "require grad, this one is " + dtype_name(dtype()));
  if (!is_leaf()) throw std::invalid_argument("set_requires_grad: only on a leaf tensor");
  impl().requires_grad = on;
  return *this;
}

void Tensor::add_grad_ready_hook(GradHook hook) {
  if (!is_leaf() || !requires_grad())
    throw std::invalid_argument("add_grad_ready_hook: only on a leaf that requires grad");
  impl().grad_ready_hooks.push_back(std::move(hook));
}

void Tensor::backward(const Tensor& seed, bool retain_graph) const {
  autograd::backward(*this, seed, retain_graph);
}

}  // namespace attn
