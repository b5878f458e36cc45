// y = x ∘ keep / (1 - p), keep_i = [Philox_uniform(seed, offset + i) >= p];  dx = g ∘ keep / (1 - p)
#include "backend/cpu/parallel.h"
#include "ops/op_cuda.h"
#include "ops/op_util.h"
#include "ops/ops.h"
#include "tensor/philox.h"

namespace attn {

namespace {

Tensor apply_mask(const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  if (x.device().is_cuda()) {
    check_cuda_float(x, "dropout");
    Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
    cuda::dropout(x.dtype(), x.raw_data(), y.raw_data(), x.numel(), p, seed, offset, x.device().index);
    return y;
  }
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), "dropout", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    T scale = static_cast<T>(1.0 / (1.0 - p));
    float pf = static_cast<float>(p);
    cpu::parallel_for(x.numel(), 16, [&](int64_t i) {
      py[i] = philox_uniform(offset + i, seed) >= pf ? px[i] * scale : T(0);
    });
  });
  return y;
}

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  if (p < 0 || p >= 1) throw std::invalid_argument("dropout: p must be in [0, 1), got " + std::to_string(p));
  if (!training || p == 0) return x;
  if (x.device().is_cuda()) check_cuda_float(x, "dropout");
  else check_cpu(x, "dropout");
  uint64_t seed = gen.seed, offset = gen.take(x.numel());
  Tensor y = apply_mask(x, p, seed, offset);
  return autograd::record(OpId::Dropout, y, {x}, [p, seed, offset](const Tensor& g) {
    return std::vector<Tensor>{apply_mask(g, p, seed, offset)};
  });
}

}  // namespace attn
