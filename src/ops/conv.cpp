// 2-D convolution, PyTorch's F.conv2d: x [B, Cin, H, W], W [Cout, Cin, KH, KW], b [Cout]
// -> y [B, Cout, Ho, Wo], Ho = (H + 2p − KH)/s + 1 (floor), likewise Wo. Per sample n, with the
// column matrix col_n = im2col(x_n) [Cin·KH·KW, Ho·Wo],
//   col_n[(c, i, j), (oh, ow)] = x_n[c, oh·s − p + i, ow·s − p + j]   (0 in the padding)
// and W seen as [Cout, Cin·KH·KW]:
//   y_n  = W·col_n + b
//   dx_n = col2im(Wᵀ·dy_n)      each x element sums the column entries that read it
//   dW   = Σ_n dy_n·col_nᵀ       db = Σ_n Σ_(oh, ow) dy_n
// The column matrix exists per sample (CPU: one per thread at a time) or per chunk of samples
// within a byte budget (CUDA), never for the whole batch: for x [64, 144, 400, 40] and a 3×3
// kernel it would be 64·1296·4000 values, 1.3 GB in f32.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>

#include "backend/cpu/gemm.h"
#include "backend/cpu/parallel.h"
#include "ops/op_cuda.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace attn {

namespace {

std::atomic<int64_t> g_column_budget{int64_t{256} << 20};

cuda::Conv2dShape conv_shape(const Tensor& x, const Tensor& w, const Tensor& b, int64_t stride,
                             int64_t padding) {
  auto args = [&] {
    return "x " + shape_str(x.shape()) + ", weight " + shape_str(w.shape()) +
           (b.defined() ? ", bias " + shape_str(b.shape()) : "") + ", stride " +
           std::to_string(stride) + ", padding " + std::to_string(padding);
  };
  check_same_kind(x, w, "conv2d");
  if (b.defined()) check_same_kind(x, b, "conv2d");
  if (x.dim() != 4 || w.dim() != 4)
    throw std::invalid_argument(
        "conv2d: need x [B, Cin, H, W] and weight [Cout, Cin, KH, KW], got " + args());
  if (w.size(0) < 1 || w.size(1) < 1 || w.size(2) < 1 || w.size(3) < 1)
    throw std::invalid_argument(
        "conv2d: the weight needs at least one channel and a kernel of at least 1 x 1, got " +
        args());
  if (x.size(1) != w.size(1))
    throw std::invalid_argument("conv2d: x has " + std::to_string(x.size(1)) +
                                " channels, the weight expects " + std::to_string(w.size(1)) +
                                ": " + args());
  if (b.defined() && (b.dim() != 1 || b.size(0) != w.size(0)))
    throw std::invalid_argument("conv2d: the bias must be [Cout] = [" + std::to_string(w.size(0)) +
                                "]: " + args());
  if (stride < 1) throw std::invalid_argument("conv2d: the stride must be >= 1: " + args());
  if (padding < 0) throw std::invalid_argument("conv2d: the padding must be >= 0: " + args());
  const int64_t hp = x.size(2) + 2 * padding, wp = x.size(3) + 2 * padding;
  if (hp < w.size(2) || wp < w.size(3))
    throw std::invalid_argument("conv2d: the padded input " + std::to_string(hp) + " x " +
                                std::to_string(wp) + " is smaller than the kernel " +
                                std::to_string(w.size(2)) + " x " + std::to_string(w.size(3)) +
                                ": " + args());
  const int64_t kh = w.size(2), kw = w.size(3);
  return {.batch = x.size(0),
          .in_channels = x.size(1),
          .height = x.size(2),
          .width = x.size(3),
          .out_channels = w.size(0),
          .kernel_h = kh,
          .kernel_w = kw,
          .stride = stride,
          .padding = padding,
          .out_h = (hp - kh) / stride + 1,
          .out_w = (wp - kw) / stride + 1};
}

int64_t kernel_size(const cuda::Conv2dShape& s) { return s.in_channels * s.kernel_h * s.kernel_w; }
int64_t positions(const cuda::Conv2dShape& s) { return s.out_h * s.out_w; }

// col [Cin·KH·KW, Ho·Wo] of one sample x [Cin, H, W].
template <class T>
void im2col(const cuda::Conv2dShape& s, const T* x, T* col) {
  const int64_t P = positions(s);
  for (int64_t c = 0; c < s.in_channels; ++c)
    for (int64_t i = 0; i < s.kernel_h; ++i)
      for (int64_t j = 0; j < s.kernel_w; ++j) {
        T* row = col + ((c * s.kernel_h + i) * s.kernel_w + j) * P;
        for (int64_t oh = 0; oh < s.out_h; ++oh) {
          T* out = row + oh * s.out_w;
          const int64_t h = oh * s.stride - s.padding + i;
          if (h < 0 || h >= s.height) {
            std::fill(out, out + s.out_w, T(0));
            continue;
          }
          const T* xr = x + (c * s.height + h) * s.width;
          for (int64_t ow = 0; ow < s.out_w; ++ow) {
            const int64_t w = ow * s.stride - s.padding + j;
            out[ow] = w >= 0 && w < s.width ? xr[w] : T(0);
          }
        }
      }
}

// dx [Cin, H, W] of one sample = col2im(dcol): every x element sums, in (i, j) order, the column
// entries that read it (the CUDA kernel gathers in the same order).
template <class T>
void col2im(const cuda::Conv2dShape& s, const T* dcol, T* dx) {
  const int64_t P = positions(s);
  std::fill(dx, dx + s.in_channels * s.height * s.width, T(0));
  for (int64_t c = 0; c < s.in_channels; ++c)
    for (int64_t i = 0; i < s.kernel_h; ++i)
      for (int64_t j = 0; j < s.kernel_w; ++j) {
        const T* row = dcol + ((c * s.kernel_h + i) * s.kernel_w + j) * P;
        for (int64_t oh = 0; oh < s.out_h; ++oh) {
          const int64_t h = oh * s.stride - s.padding + i;
          if (h < 0 || h >= s.height) continue;
          T* dr = dx + (c * s.height + h) * s.width;
          for (int64_t ow = 0; ow < s.out_w; ++ow) {
            const int64_t w = ow * s.stride - s.padding + j;
            if (w >= 0 && w < s.width) dr[w] += row[oh * s.out_w + ow];
          }
        }
      }
}

template <class T>
std::unique_ptr<T[]> buffer(int64_t n) {
  return std::unique_ptr<T[]>(new T[static_cast<size_t>(n)]);
}

// Samples run in parallel, each GEMM on its own thread (Eigen does not thread inside an OpenMP
// region), so every sample's numbers are the same for any thread count.
template <class T>
void forward_cpu(const cuda::Conv2dShape& s, const T* x, const T* w, const T* b, T* y) {
  const int64_t K = kernel_size(s), P = positions(s), Co = s.out_channels;
  cpu::parallel_for(s.batch, Co * K * P, [&](int64_t n) {
    auto col = buffer<T>(K * P);
    im2col(s, x + n * s.in_channels * s.height * s.width, col.get());
    T* yn = y + n * Co * P;
    cpu::gemm<T>(false, false, Co, P, K, T(1), w, K, col.get(), P, T(0), yn, P);
    if (b)
      for (int64_t o = 0; o < Co; ++o)
        for (int64_t p = 0; p < P; ++p) yn[o * P + p] += b[o];
  });
}

template <class T>
void input_grad_cpu(const cuda::Conv2dShape& s, const T* g, const T* w, T* dx) {
  const int64_t K = kernel_size(s), P = positions(s), Co = s.out_channels;
  cpu::parallel_for(s.batch, Co * K * P, [&](int64_t n) {
    auto dcol = buffer<T>(K * P);
    cpu::gemm<T>(true, false, K, P, Co, T(1), w, K, g + n * Co * P, P, T(0), dcol.get(), P);
    col2im(s, dcol.get(), dx + n * s.in_channels * s.height * s.width);
  });
}

// dW = Σ_n dy_n·col_nᵀ: rounds of as many samples as there are threads compute one partial each,
// then the partials are added in sample order, so the sum does not depend on the thread count.
template <class T>
void weight_grad_cpu(const cuda::Conv2dShape& s, const T* g, const T* x, T* dw) {
  const int64_t K = kernel_size(s), P = positions(s), Co = s.out_channels, nw = Co * K;
  const int64_t round = std::max<int64_t>(1, std::min<int64_t>(s.batch, omp_get_max_threads()));
  auto parts = buffer<T>(round * nw);
  std::fill(dw, dw + nw, T(0));
  for (int64_t n0 = 0; n0 < s.batch; n0 += round) {
    const int64_t nr = std::min(round, s.batch - n0);
    cpu::parallel_for(nr, Co * K * P, [&](int64_t k) {
      const int64_t n = n0 + k;
      auto col = buffer<T>(K * P);
      im2col(s, x + n * s.in_channels * s.height * s.width, col.get());
      cpu::gemm<T>(false, true, Co, K, P, T(1), g + n * Co * P, P, col.get(), P, T(0),
                   parts.get() + k * nw, K);
    });
    const T* pp = parts.get();
    cpu::parallel_for(nw, nr, [&](int64_t e) {
      for (int64_t k = 0; k < nr; ++k) dw[e] += pp[k * nw + e];
    });
  }
}

Tensor conv2d_cpu(const cuda::Conv2dShape& s, const Tensor& x, const Tensor& w, const Tensor& b) {
  Tensor y = Tensor::empty({s.batch, s.out_channels, s.out_h, s.out_w}, x.dtype());
  dispatch_float(x.dtype(), "conv2d", [&](auto tag) {
    using T = decltype(tag);
    forward_cpu<T>(s, x.data<T>(), w.data<T>(), b.defined() ? b.data<T>() : nullptr, y.data<T>());
  });
  return y;
}

// dx and dW where wanted (undefined otherwise); db is the caller's (tensor ops on either device).
std::vector<Tensor> conv2d_grads(const cuda::Conv2dShape& s, const Tensor& g, const Tensor& x,
                                 const Tensor& w, bool want_dx, bool want_dw) {
  Tensor dx = want_dx ? Tensor::empty(x.shape(), x.dtype(), x.device()) : Tensor();
  Tensor dw = want_dw ? Tensor::empty(w.shape(), w.dtype(), w.device()) : Tensor();
  if (x.device().is_cuda()) {
    check_grad_like(g, x, "conv2d");
    cuda::conv2d_backward(x.dtype(), s, g.raw_data(), x.raw_data(), w.raw_data(),
                          want_dx ? dx.raw_data() : nullptr, want_dw ? dw.raw_data() : nullptr,
                          g_column_budget.load(), x.device().index);
    return {dx, dw};
  }
  dispatch_float(x.dtype(), "conv2d backward", [&](auto tag) {
    using T = decltype(tag);
    if (want_dx) input_grad_cpu<T>(s, g.data<T>(), w.data<T>(), dx.data<T>());
    if (want_dw) weight_grad_cpu<T>(s, g.data<T>(), x.data<T>(), dw.data<T>());
  });
  return {dx, dw};
}

}  // namespace

int64_t set_conv2d_column_budget(int64_t bytes) {
  if (bytes < 1)
    throw std::invalid_argument("set_conv2d_column_budget: need a positive byte count, got " +
                                std::to_string(bytes));
  return g_column_budget.exchange(bytes);
}

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, int64_t stride, int64_t padding) {
  const cuda::Conv2dShape s = conv_shape(x, w, b, stride, padding);
  Tensor y;
  if (x.device().is_cuda()) {
    check_cuda_float(x, "conv2d");
    y = Tensor::empty({s.batch, s.out_channels, s.out_h, s.out_w}, x.dtype(), x.device());
    cuda::conv2d_forward(x.dtype(), s, x.raw_data(), w.raw_data(),
                         b.defined() ? b.raw_data() : nullptr, y.raw_data(), g_column_budget.load(),
                         x.device().index);
  } else {
    y = conv2d_cpu(s, x, w, b);
  }
  const bool want_dx = x.requires_grad(), want_dw = w.requires_grad();
  const bool want_db = b.defined() && b.requires_grad();
  return autograd::record(
      OpId::Conv2d, y, {x, w, b},
      [s, xd = x.detach(), wd = w.detach(), want_dx, want_dw, want_db](const Tensor& g) {
        std::vector<Tensor> grads = conv2d_grads(s, g, xd, wd, want_dx, want_dw);
        grads.push_back(want_db
                            ? sum(sum(reshape(g, {s.batch, s.out_channels, positions(s)}), 2), 0)
                            : Tensor());
        return grads;
      });
}

}  // namespace attn
