// Tensor: a shape, a dtype and a device over reference-counted storage. Always contiguous and
// row-major; reshape shares storage (a view), every other op makes a new tensor.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tensor/dtype.h"
#include "tensor/storage.h"

namespace attn {

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);
// Element strides of a contiguous tensor of shape `in` seen through the broadcast shape `out`
// (0 along expanded or missing dims): the index map every broadcasting kernel uses.
std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out);

struct Node;
class Tensor;
using GradHook = std::function<void(const Tensor& grad)>;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  DType dtype = DType::F32;
  // Autograd: a leaf has requires_grad and no grad_fn; an op output has grad_fn.
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;
  std::shared_ptr<TensorImpl> grad;
  std::vector<GradHook> grad_ready_hooks;  // leaves only: run once the grad is complete
  // Mixed precision (ops/cast.cpp): a CUDA parameter's value in the compute dtype, as cast()
  // last converted it or AdamW last wrote it (fused into its update). Valid while the storage
  // is the one it was made from and that storage's version has not moved since.
  std::shared_ptr<TensorImpl> working;
  const Storage* working_of = nullptr;
  uint64_t working_version = 0;
  // Marks `working` as made from the storage as it is now.
  void stamp_working() {
    working_of = storage.get();
    working_version = storage->version();
  }
  bool working_current() const {
    return working && working_of == storage.get() && working_version == storage->version();
  }
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}
  // Uninitialised storage of the given shape.
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(shape()); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  size_t nbytes() const { return numel() * dtype_size(dtype()); }

  void* raw_data() { return impl().storage->data(); }
  // Reading: the storage's version stays (see Storage::data()).
  const void* raw_data() const { return std::as_const(*impl().storage).data(); }
  // Typed CPU access; throws on a dtype or device mismatch.
  template <class T>
  T* data();
  template <class T>
  const T* data() const;

  // Conversions (not differentiable: the result is a new leaf; ops.h's cast() is the
  // differentiable one). f32 <-> bf16 on a CUDA tensor converts on the device.
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  Tensor clone() const;
  // Shares storage, drops the graph.
  Tensor detach() const;
  // Values as f64, any dtype, any device (copies to the host).
  std::vector<double> to_vector() const;
  double item() const;  // numel must be 1

  // Autograd.
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& set_requires_grad(bool on);
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  Tensor grad() const { return Tensor(impl().grad); }
  void set_grad(const Tensor& g) { impl().grad = g.impl_; }
  void zero_grad() { impl().grad.reset(); }
  // Called with the finished gradient of this leaf during backward (DDP uses it).
  void add_grad_ready_hook(GradHook hook);
  // seed: dL/dself; may be omitted only for a one-element tensor. See autograd/engine.h.
  void backward(const Tensor& seed = Tensor(), bool retain_graph = false) const;

  std::string str(int max_per_dim = 6) const;

  TensorImpl& impl() const {
    if (!impl_) throw std::runtime_error("use of an undefined Tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::F32; }
template <>
constexpr DType dtype_of<double>() { return DType::F64; }
template <>
constexpr DType dtype_of<bf16>() { return DType::BF16; }
template <>
constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <>
constexpr DType dtype_of<int64_t>() { return DType::I64; }

void check_typed_access(const Tensor& t, DType want);

template <class T>
T* Tensor::data() {
  check_typed_access(*this, dtype_of<T>());
  return static_cast<T*>(raw_data());
}
template <class T>
const T* Tensor::data() const {
  check_typed_access(*this, dtype_of<T>());
  return static_cast<const T*>(raw_data());
}

// Calls f(T{}) with T = float or double for a floating CPU tensor's dtype; other dtypes throw.
template <class F>
decltype(auto) dispatch_float(DType dt, const char* op, F&& f) {
  if (dt == DType::F32) return f(float{});
  if (dt == DType::F64) return f(double{});
  throw std::invalid_argument(std::string(op) + ": CPU op needs f32 or f64, got " + dtype_name(dt));
}

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- factories (tensor/factory.cpp) ----------------------------------------
struct TensorOptions {
  DType dtype = DType::F32;
  Device device = Device::cpu();
};
Tensor zeros(const Shape& shape, TensorOptions o = {});
Tensor ones(const Shape& shape, TensorOptions o = {});
Tensor full(const Shape& shape, double value, TensorOptions o = {});
Tensor scalar(double value, TensorOptions o = {});  // 0-d tensor
Tensor arange(int64_t start, int64_t end, int64_t step = 1, TensorOptions o = {});
Tensor from_vector(const std::vector<double>& values, const Shape& shape, TensorOptions o = {});

// Counter-based random numbers: element i is Philox(seed, offset + i). A Generator hands out
// fresh counter ranges; the same (seed, offset) gives the same numbers on the CPU and the GPU.
struct Generator {
  uint64_t seed = 0;
  uint64_t offset = 0;
  explicit Generator(uint64_t s = 0) : seed(s) {}
  uint64_t take(uint64_t n) {
    uint64_t o = offset;
    offset += n;
    return o;
  }
};
Tensor randn(const Shape& shape, Generator& gen, TensorOptions o = {}, double mean = 0.0,
             double std = 1.0);
Tensor uniform(const Shape& shape, Generator& gen, TensorOptions o = {}, double lo = 0.0,
               double hi = 1.0);

}  // namespace attn
