// Shape ops. reshape is a view (shares storage); permute, concat and slice copy.
//   reshape: dx = reshape(g, x.shape);  permute: dx = permute(g, inverse);
//   concat:  dx_i = slice of g;         slice:   dx = g placed into zeros.
#include <cstring>
#include <numeric>

#include "backend/cpu/parallel.h"
#include "ops/op_cuda.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace attn {

namespace {

Shape infer_shape(Shape shape, int64_t numel, const Shape& from) {
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer_at >= 0) throw std::invalid_argument("reshape: more than one -1 in " + shape_str(shape));
      infer_at = static_cast<int64_t>(i);
    } else if (shape[i] < 0) {
      throw std::invalid_argument("reshape: negative size in " + shape_str(shape));
    } else {
      known *= shape[i];
    }
  }
  if (infer_at >= 0 && known > 0 && numel % known == 0) shape[infer_at] = numel / known;
  if (shape_numel(shape) != numel)
    throw std::invalid_argument("reshape: cannot view " + shape_str(from) + " as " + shape_str(shape));
  return shape;
}

// Copies blocks: for each of `outer` rows, `len` bytes from src + o*src_stride to dst + o*dst_stride,
// both in the memory of `dev`.
void copy_rows(Device dev, char* dst, int64_t dst_stride, const char* src, int64_t src_stride,
               int64_t outer, int64_t len) {
  if (dev.is_cuda()) return cuda::copy_rows(dst, dst_stride, src, src_stride, outer, len, dev.index);
  for (int64_t o = 0; o < outer; ++o) std::memcpy(dst + o * dst_stride, src + o * src_stride, len);
}

// dst[j] = src[j·step] for elements of type W (a same-size stand-in for the real dtype).
template <class W>
void gather_row(char* dst, const char* src, int64_t n, int64_t step) {
  auto* d = reinterpret_cast<W*>(dst);
  const auto* s = reinterpret_cast<const W*>(src);
  for (int64_t j = 0; j < n; ++j) d[j] = s[j * step];
}

Tensor permute_raw(const Tensor& x, const std::vector<int64_t>& dims) {
  if (x.device().is_cuda()) {
    Shape out_shape(dims.size());
    for (size_t i = 0; i < dims.size(); ++i) out_shape[i] = x.shape()[dims[i]];
    Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
    cuda::permute(dtype_size(x.dtype()), x.raw_data(), x.shape(), dims, out.raw_data(),
                  x.device().index);
    return out;
  }
  check_cpu(x, "permute");
  int64_t d = x.dim();
  Shape out_shape(d);
  std::vector<int64_t> in_strides(d), src_stride(d);
  for (int64_t i = d - 1, s = 1; i >= 0; --i) {
    in_strides[i] = s;
    s *= x.shape()[i];
  }
  for (int64_t i = 0; i < d; ++i) {
    out_shape[i] = x.shape()[dims[i]];
    src_stride[i] = in_strides[dims[i]];
  }
  Tensor out = Tensor::empty(out_shape, x.dtype());
  size_t es = dtype_size(x.dtype());
  const char* src = static_cast<const char*>(x.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  int64_t inner = d ? out_shape[d - 1] : 1, rows = inner ? x.numel() / inner : 0;
  cpu::parallel_for(rows, inner, [&](int64_t r) {
    int64_t off = 0, rem = r;
    for (int64_t k = d - 2; k >= 0; --k) {
      off += (rem % out_shape[k]) * src_stride[k];
      rem /= out_shape[k];
    }
    int64_t step = d ? src_stride[d - 1] : 1;
    char* out_row = dst + r * inner * es;
    if (step == 1) {  // the last dim stays last: one contiguous row
      std::memcpy(out_row, src + off * es, inner * es);
    } else if (es == 4) {
      gather_row<uint32_t>(out_row, src + off * es, inner, step);
    } else if (es == 8) {
      gather_row<uint64_t>(out_row, src + off * es, inner, step);
    } else {
      for (int64_t j = 0; j < inner; ++j) std::memcpy(out_row + j * es, src + (off + j * step) * es, es);
    }
  });
  return out;
}

}  // namespace

Tensor reshape(const Tensor& x, Shape shape) {
  Shape s = infer_shape(std::move(shape), x.numel(), x.shape());
  Tensor out = x.detach();
  out.impl().shape = s;
  return autograd::record(OpId::Reshape, out, {x}, [xs = x.shape()](const Tensor& g) {
    return std::vector<Tensor>{reshape(g, xs)};
  });
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  int64_t d = x.dim();
  std::vector<int64_t> norm(dims.size()), inverse(d);
  std::vector<bool> used(d, false);
  if (static_cast<int64_t>(dims.size()) != d)
    throw std::invalid_argument("permute: " + std::to_string(dims.size()) + " dims for a tensor of " +
                                std::to_string(d));
  for (int64_t i = 0; i < d; ++i) {
    norm[i] = normalize_axis(dims[i], d, "permute");
    if (used[norm[i]]) throw std::invalid_argument("permute: repeated dim " + std::to_string(dims[i]));
    used[norm[i]] = true;
    inverse[norm[i]] = i;
  }
  Tensor out = permute_raw(x, norm);
  return autograd::record(OpId::Permute, out, {x}, [inverse](const Tensor& g) {
    return std::vector<Tensor>{permute(g, inverse)};
  });
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  std::vector<int64_t> dims(x.dim());
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[normalize_axis(d0, x.dim(), "transpose")], dims[normalize_axis(d1, x.dim(), "transpose")]);
  return permute(x, dims);
}

Tensor concat(const std::vector<Tensor>& xs, int64_t axis) {
  if (xs.empty()) throw std::invalid_argument("concat: no tensors");
  const Tensor& x0 = xs[0];
  int64_t a = normalize_axis(axis, x0.dim(), "concat");
  Shape out_shape = x0.shape();
  out_shape[a] = 0;
  for (const Tensor& x : xs) {
    check_same_kind(x0, x, "concat");  // one device for all (CPU or CUDA)
    Shape s = x.shape();
    s[a] = 0;
    Shape ref = x0.shape();
    ref[a] = 0;
    if (s != ref)
      throw std::invalid_argument("concat: shapes " + shape_str(x0.shape()) + " and " +
                                  shape_str(x.shape()) + " differ off axis " + std::to_string(a));
    out_shape[a] += x.shape()[a];
  }
  Tensor out = Tensor::empty(out_shape, x0.dtype(), x0.device());
  int64_t outer = prod(out_shape, 0, a), inner = prod(out_shape, a + 1, out_shape.size());
  size_t es = dtype_size(x0.dtype());
  int64_t dst_row = out_shape[a] * inner * es, at = 0;
  std::vector<int64_t> sizes;
  for (const Tensor& x : xs) {
    int64_t len = x.shape()[a] * inner * es;
    copy_rows(x0.device(), static_cast<char*>(out.raw_data()) + at, dst_row,
              static_cast<const char*>(x.raw_data()), len, outer, len);
    at += len;
    sizes.push_back(x.shape()[a]);
  }
  return autograd::record(OpId::Concat, out, xs, [sizes, a](const Tensor& g) {
    return split(g, sizes, a);
  });
}

Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end) {
  int64_t a = normalize_axis(axis, x.dim(), "slice");
  int64_t n = x.shape()[a];
  if (start < 0 || end > n || start > end)
    throw std::out_of_range("slice: [" + std::to_string(start) + ", " + std::to_string(end) +
                            ") out of range for size " + std::to_string(n) + " on axis " +
                            std::to_string(a));
  Shape out_shape = x.shape();
  out_shape[a] = end - start;
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  int64_t outer = prod(x.shape(), 0, a), inner = prod(x.shape(), a + 1, x.dim());
  size_t es = dtype_size(x.dtype());
  int64_t len = (end - start) * inner * es;
  copy_rows(x.device(), static_cast<char*>(out.raw_data()), len,
            static_cast<const char*>(x.raw_data()) + start * inner * es, n * inner * es, outer, len);
  return autograd::record(OpId::Slice, out, {x},
                          [xs = x.shape(), a, start, outer, inner, n, len, es](const Tensor& g) {
    Tensor dx = g.device().is_cuda() ? cuda_zeros(xs, g.dtype(), g.device()) : zeros(xs, {g.dtype()});
    copy_rows(g.device(), static_cast<char*>(dx.raw_data()) + start * inner * es, n * inner * es,
              static_cast<const char*>(g.raw_data()), len, outer, len);
    return std::vector<Tensor>{dx};
  });
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis) {
  int64_t a = normalize_axis(axis, x.dim(), "split");
  int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  if (total != x.shape()[a])
    throw std::invalid_argument("split: sizes add to " + std::to_string(total) + ", axis " +
                                std::to_string(a) + " has " + std::to_string(x.shape()[a]));
  std::vector<Tensor> parts;
  int64_t at = 0;
  for (int64_t s : sizes) {
    parts.push_back(slice(x, a, at, at + s));
    at += s;
  }
  return parts;
}

}  // namespace attn
