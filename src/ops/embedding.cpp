// out[..., :] = weight[ids[...], :];  dweight[v, :] = Σ_{i: ids[i] = v} g[i, :]  (scatter-add)
#include <cstring>

#include "ops/op_cuda.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace attn {

namespace {

std::vector<int64_t> checked_ids(const Tensor& ids, int64_t vocab) {
  if (!is_integer(ids.dtype()))
    throw std::invalid_argument(std::string("embedding: ids must be i32 or i64, got ") +
                                dtype_name(ids.dtype()));
  Tensor h = ids.device().is_cpu() ? ids : ids.to(Device::cpu());
  std::vector<int64_t> out(ids.numel());
  for (int64_t i = 0; i < ids.numel(); ++i) {
    out[i] = ids.dtype() == DType::I32 ? h.data<int32_t>()[i] : h.data<int64_t>()[i];
    if (out[i] < 0 || out[i] >= vocab)
      throw std::out_of_range("embedding: id " + std::to_string(out[i]) + " at position " +
                              std::to_string(i) + " outside the vocabulary [0, " +
                              std::to_string(vocab) + ")");
  }
  return out;
}

// The gather and its scatter-add backward on the device (kernels/embedding.cuh). The ids were
// validated on the host; ids already on the device are used as they are (i32 or i64), host ids
// are uploaded as i64.
Tensor embedding_cuda(const Tensor& weight, const Tensor& ids, const std::vector<int64_t>& idx) {
  const Device dev = weight.device();
  const int64_t V = weight.size(0), D = weight.size(1), n = static_cast<int64_t>(idx.size());
  Tensor dids = ids;
  if (!(ids.device() == dev)) {
    dids = Tensor::empty({n}, DType::I64, dev);
    copy_bytes(dids.raw_data(), dev, idx.data(), Device::cpu(), n * sizeof(int64_t));
  }
  const bool i64 = dids.dtype() == DType::I64;
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  Tensor out = Tensor::empty(out_shape, weight.dtype(), dev);
  cuda::embedding_forward(dtype_size(weight.dtype()), weight.raw_data(), dids.raw_data(), i64, n, D,
                          out.raw_data(), dev.index);
  return autograd::record(OpId::Embedding, out, {weight, Tensor()},
                          [dids, i64, n, V, D, dt = weight.dtype(), dev](const Tensor& g) {
    check_grad_like(g, dt, dev, "embedding");
    Tensor dw = Tensor::empty({V, D}, dt, dev);
    cuda::embedding_backward(dt, g.raw_data(), dids.raw_data(), i64, n, V, D, dw.raw_data(),
                             dev.index);
    return std::vector<Tensor>{dw, Tensor()};
  });
}

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  if (weight.dim() != 2)
    throw std::invalid_argument("embedding: weight must be [V, D], got " + shape_str(weight.shape()));
  int64_t V = weight.size(0), D = weight.size(1);
  std::vector<int64_t> idx = checked_ids(ids, V);
  if (weight.device().is_cuda()) return embedding_cuda(weight, ids, idx);
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  Tensor out = Tensor::empty(out_shape, weight.dtype());
  size_t row_bytes = D * dtype_size(weight.dtype());
  auto* dst = static_cast<char*>(out.raw_data());
  const auto* src = static_cast<const char*>(weight.raw_data());
  for (size_t i = 0; i < idx.size(); ++i) std::memcpy(dst + i * row_bytes, src + idx[i] * row_bytes, row_bytes);
  return autograd::record(OpId::Embedding, out, {weight, Tensor()},
                          [idx = std::move(idx), V, D](const Tensor& g) {
    Tensor dw = zeros({V, D}, {g.dtype()});
    dispatch_float(g.dtype(), "embedding backward", [&](auto tag) {
      using T = decltype(tag);
      const T* pg = g.data<T>();
      T* pd = dw.data<T>();
      for (size_t i = 0; i < idx.size(); ++i)
        for (int64_t j = 0; j < D; ++j) pd[idx[i] * D + j] += pg[i * D + j];
    });
    return std::vector<Tensor>{dw, Tensor()};
  });
}

}  // namespace attn
