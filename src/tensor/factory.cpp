#include <algorithm>

#include "backend/cuda/cuda_api.h"
#include "tensor/philox.h"
#include "tensor/tensor.h"

namespace attn {

namespace {

// Builds on the host in f64, then converts and moves: factories are not on any hot path.
Tensor from_host_f64(const std::vector<double>& v, const Shape& shape, TensorOptions o) {
  Tensor t = Tensor::empty(shape, DType::F64);
  std::copy(v.begin(), v.end(), t.data<double>());
  Tensor typed = o.dtype == DType::F64 ? t : t.to(o.dtype);
  return o.device.is_cpu() ? typed : typed.to(o.device);
}

}  // namespace

Tensor from_vector(const std::vector<double>& values, const Shape& shape, TensorOptions o) {
  if (static_cast<int64_t>(values.size()) != shape_numel(shape))
    throw std::invalid_argument("from_vector: " + std::to_string(values.size()) +
                                " values for shape " + shape_str(shape));
  return from_host_f64(values, shape, o);
}

Tensor full(const Shape& shape, double value, TensorOptions o) {
  return from_host_f64(std::vector<double>(shape_numel(shape), value), shape, o);
}
Tensor zeros(const Shape& shape, TensorOptions o) { return full(shape, 0.0, o); }
Tensor ones(const Shape& shape, TensorOptions o) { return full(shape, 1.0, o); }
Tensor scalar(double value, TensorOptions o) { return full({}, value, o); }

Tensor arange(int64_t start, int64_t end, int64_t step, TensorOptions o) {
  if (step == 0) throw std::invalid_argument("arange: step must be non-zero");
  std::vector<double> v;
  for (int64_t x = start; step > 0 ? x < end : x > end; x += step) v.push_back(static_cast<double>(x));
  return from_host_f64(v, {static_cast<int64_t>(v.size())}, o);
}

Tensor randn(const Shape& shape, Generator& gen, TensorOptions o, double mean, double std) {
  int64_t n = shape_numel(shape);
  uint64_t offset = gen.take(n);
  if (o.device.is_cuda() && o.dtype == DType::F32) {
    Tensor t = Tensor::empty(shape, DType::F32, o.device);
    cuda::fill_normal_f32(static_cast<float*>(t.raw_data()), n, gen.seed, offset,
                          static_cast<float>(mean), static_cast<float>(std), o.device.index);
    return t;
  }
  // f32 draws are computed as (double)(float)mean + (double)(float)std * z, as on the device.
  bool f32 = o.dtype != DType::F64;
  double m = f32 ? static_cast<float>(mean) : mean, s = f32 ? static_cast<float>(std) : std;
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) {
    double x = m + s * philox_normal(offset + i, gen.seed);
    v[i] = f32 ? static_cast<float>(x) : x;
  }
  return from_host_f64(v, shape, o);
}

Tensor uniform(const Shape& shape, Generator& gen, TensorOptions o, double lo, double hi) {
  int64_t n = shape_numel(shape);
  uint64_t offset = gen.take(n);
  if (o.device.is_cuda() && o.dtype == DType::F32) {
    Tensor t = Tensor::empty(shape, DType::F32, o.device);
    cuda::fill_uniform_f32(static_cast<float*>(t.raw_data()), n, gen.seed, offset,
                           static_cast<float>(lo), static_cast<float>(hi), o.device.index);
    return t;
  }
  bool f32 = o.dtype != DType::F64;
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) {
    float u = philox_uniform(offset + i, gen.seed);
    v[i] = f32 ? static_cast<double>(static_cast<float>(lo) +
                                     (static_cast<float>(hi) - static_cast<float>(lo)) * u)
               : lo + (hi - lo) * u;
  }
  return from_host_f64(v, shape, o);
}

}  // namespace attn
