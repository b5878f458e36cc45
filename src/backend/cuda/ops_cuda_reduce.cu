// Host launchers of the row/axis families: reductions (kernels/reduce.cuh), softmax
// (kernels/softmax.cuh), the fused cross-entropy (kernels/loss.cuh) and the norms
// (kernels/norm.cuh). Instantiations: f32 and bf16 storage (plus f32 partial sums).
#include <algorithm>

#include "backend/cuda/ops_cuda_util.h"
#include "kernels/loss.cuh"
#include "kernels/norm.cuh"
#include "kernels/reduce.cuh"
#include "kernels/softmax.cuh"

namespace attn::cuda {

using detail::kThreads;
using detail::Scratch;
using detail::stream;
using kern::grid_for;

namespace {

// Enough parallel work to fill an H100 (132 SMs): row tasks (a warp each) and 32 × 8 blocks.
constexpr int64_t kWantWarps = 8192;
constexpr int64_t kWantBlocks = 264;
constexpr int64_t kMaxGridYZ = 65535;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A 1-D grid with one warp per task (grid-stride beyond the cap).
unsigned warp_grid(int64_t tasks) { return grid_for(tasks * 32, kThreads); }

template <class In, class Out>
void launch_sum_rows(const In* x, Out* y, int64_t rows, int64_t n, int64_t chunk, int64_t splits,
                     float scale) {
  launch(kern::sum_rows_kernel<In, Out>, {warp_grid(rows * splits), kThreads, 0, stream()}, x, y,
         rows, n, chunk, splits, scale);
  ATTNLAB_CUDA_LAUNCHED();
}

template <class In, class Out>
void launch_sum_cols(const In* x, Out* y, int64_t outer, int64_t n, int64_t inner, int64_t chunk,
                     int64_t splits, float scale) {
  dim3 block(kern::kColsX, kern::kColsY);
  dim3 grid(static_cast<unsigned>(ceil_div(inner, kern::kColsX)),
            static_cast<unsigned>(std::min(outer, kMaxGridYZ)), static_cast<unsigned>(splits));
  launch(kern::sum_cols_kernel<In, Out>, {grid, block, 0, stream()}, x, y, outer, n, inner, chunk,
         splits, scale);
  ATTNLAB_CUDA_LAUNCHED();
}

// y[o, i] = scale·Σ_k x[o, k, i]; splits a long axis into f32 partial sums when there are too
// few (o, i) tasks to fill the device.
template <class T>
void sum_axis_t(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, float scale) {
  if (inner == 1) {
    int64_t splits = 1;
    if (n > 4096 && outer < kWantWarps)
      splits = std::min(ceil_div(n, 2048), std::max<int64_t>(1, kWantWarps / outer));
    if (splits <= 1) return launch_sum_rows<T, T>(x, y, outer, n, n, 1, scale);
    const int64_t chunk = ceil_div(n, splits);
    splits = ceil_div(n, chunk);
    Scratch part(outer * splits * sizeof(float));
    launch_sum_rows<T, float>(x, part.as<float>(), outer, n, chunk, splits, 1.f);
    launch_sum_rows<float, T>(part.as<float>(), y, outer, splits, splits, 1, scale);
    return;
  }
  const int64_t blocks = ceil_div(inner, kern::kColsX) * std::min(outer, kMaxGridYZ);
  int64_t splits = 1;
  if (n > 256 && blocks < kWantBlocks)
    splits = std::min({ceil_div(n, 128), ceil_div(kWantBlocks, blocks), kMaxGridYZ});
  if (splits <= 1) return launch_sum_cols<T, T>(x, y, outer, n, inner, n, 1, scale);
  const int64_t chunk = ceil_div(n, splits);
  splits = ceil_div(n, chunk);
  Scratch part(outer * splits * inner * sizeof(float));
  launch_sum_cols<T, float>(x, part.as<float>(), outer, n, inner, chunk, splits, 1.f);
  launch_sum_cols<float, T>(part.as<float>(), y, outer, splits, inner, splits, 1, scale);
}

}  // namespace

// ---- reductions ------------------------------------------------------------------------------

void sum_axis(DType dt, const void* x, void* y, int64_t outer, int64_t n, int64_t inner,
              double scale, int device) {
  if (outer * inner == 0) return;
  detail::set_device(device);
  detail::dispatch_float(dt, "sum", [&](auto tag) {
    using T = decltype(tag);
    sum_axis_t<T>(static_cast<const T*>(x), static_cast<T*>(y), outer, n, inner,
                  static_cast<float>(scale));
  });
}

void broadcast_axis(DType dt, const void* g, void* dx, int64_t outer, int64_t n, int64_t inner,
                    double scale, int device) {
  const int64_t total = outer * n * inner;
  if (total == 0) return;
  detail::set_device(device);
  detail::dispatch_float(dt, "sum backward", [&](auto tag) {
    using T = decltype(tag);
    launch(kern::broadcast_axis_kernel<T>, {grid_for(total, kThreads), kThreads, 0, stream()},
           static_cast<const T*>(g), static_cast<T*>(dx), outer, n, inner,
           static_cast<float>(scale));
    ATTNLAB_CUDA_LAUNCHED();
  });
}

void max_axis(DType dt, const void* x, void* y, int64_t* arg, int64_t outer, int64_t n,
              int64_t inner, int device) {
  if (outer * inner == 0) return;
  if (n == 0) throw std::invalid_argument("max: reduction over an empty axis");
  detail::set_device(device);
  detail::dispatch_float(dt, "max", [&](auto tag) {
    using T = decltype(tag);
    if (inner == 1) {
      launch(kern::max_rows_kernel<T>, {warp_grid(outer), kThreads, 0, stream()},
             static_cast<const T*>(x), static_cast<T*>(y), arg, outer, n);
    } else {
      launch(kern::max_cols_kernel<T>, {grid_for(outer * inner, kThreads), kThreads, 0, stream()},
             static_cast<const T*>(x), static_cast<T*>(y), arg, outer, n, inner);
    }
    ATTNLAB_CUDA_LAUNCHED();
  });
}

void max_axis_backward(DType dt, const void* g, const int64_t* arg, void* dx, int64_t outer,
                       int64_t n, int64_t inner, int device) {
  const int64_t total = outer * n * inner;
  if (total == 0) return;
  detail::set_device(device);
  ATTNLAB_CUDA_CHECK(cudaMemsetAsync(dx, 0, total * dtype_size(dt), stream()));
  detail::dispatch_float(dt, "max backward", [&](auto tag) {
    using T = decltype(tag);
    launch(kern::max_backward_kernel<T>, {grid_for(outer * inner, kThreads), kThreads, 0, stream()},
           static_cast<const T*>(g), arg, static_cast<T*>(dx), outer, n, inner);
    ATTNLAB_CUDA_LAUNCHED();
  });
}

// ---- softmax ---------------------------------------------------------------------------------

void softmax_forward(DType dt, const void* x, void* y, int64_t rows, int64_t n, bool log_form,
                     int device) {
  if (rows * n == 0) return;
  detail::set_device(device);
  detail::dispatch_float(dt, log_form ? "log_softmax" : "softmax", [&](auto tag) {
    using T = decltype(tag);
    launch(kern::softmax_forward_kernel<T>, {warp_grid(rows), kThreads, 0, stream()},
           static_cast<const T*>(x), static_cast<T*>(y), rows, n, log_form);
    ATTNLAB_CUDA_LAUNCHED();
  });
}

void softmax_backward(DType dt, const void* y, const void* g, void* dx, int64_t rows, int64_t n,
                      bool log_form, int device) {
  if (rows * n == 0) return;
  detail::set_device(device);
  detail::dispatch_float(dt, log_form ? "log_softmax backward" : "softmax backward", [&](auto tag) {
    using T = decltype(tag);
    launch(kern::softmax_backward_kernel<T>, {warp_grid(rows), kThreads, 0, stream()},
           static_cast<const T*>(y), static_cast<const T*>(g), static_cast<T*>(dx), rows, n,
           log_form);
    ATTNLAB_CUDA_LAUNCHED();
  });
}

// ---- cross-entropy ---------------------------------------------------------------------------

void cross_entropy_forward(DType dt, const void* logits, const void* targets, bool targets_i64,
                           int64_t ignore_index, int64_t N, int64_t C, int64_t valid, float* lse,
                           void* loss, int device) {
  detail::set_device(device);
  detail::dispatch_float(dt, "cross_entropy", [&](auto tag) {
    using T = decltype(tag);
    Scratch row_loss(N * sizeof(float));
    if (N > 0) {
      launch(kern::ce_forward_kernel<T>, {warp_grid(N), kThreads, 0, stream()},
             static_cast<const T*>(logits), targets, targets_i64, ignore_index, N, C, lse,
             row_loss.as<float>());
      ATTNLAB_CUDA_LAUNCHED();
    }
    launch(kern::ce_finish_kernel<T>, {1, 1024, 0, stream()}, row_loss.as<float>(), N, valid,
           static_cast<T*>(loss));
    ATTNLAB_CUDA_LAUNCHED();
  });
}

void cross_entropy_backward(DType dt, const void* logits, const float* lse, const void* targets,
                            bool targets_i64, int64_t ignore_index, int64_t N, int64_t C,
                            int64_t valid, const void* g, void* dx, int device) {
  if (N * C == 0) return;
  detail::set_device(device);
  detail::dispatch_float(dt, "cross_entropy backward", [&](auto tag) {
    using T = decltype(tag);
    dim3 grid(static_cast<unsigned>(std::min<int64_t>(N, 0x7fffffff)),
              static_cast<unsigned>(std::min(ceil_div(C, kThreads * 4), kMaxGridYZ)));
    launch(kern::ce_backward_kernel<T>, {grid, kThreads, 0, stream()},
           static_cast<const T*>(logits), lse, targets, targets_i64, ignore_index, N, C,
           static_cast<float>(valid), static_cast<const T*>(g), static_cast<T*>(dx));
    ATTNLAB_CUDA_LAUNCHED();
  });
}

// ---- layer_norm / rms_norm -------------------------------------------------------------------

void norm_forward(DType dt, const void* x, const void* w, const void* b, void* y, float* mean,
                  float* rstd, int64_t rows, int64_t D, double eps, bool center, int device) {
  if (rows * D == 0) return;
  detail::set_device(device);
  detail::dispatch_float(dt, center ? "layer_norm" : "rms_norm", [&](auto tag) {
    using T = decltype(tag);
    launch(kern::norm_forward_kernel<T>, {warp_grid(rows), kThreads, 0, stream()},
           static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b),
           static_cast<T*>(y), mean, rstd, rows, D, static_cast<float>(eps), center);
    ATTNLAB_CUDA_LAUNCHED();
  });
}

void norm_backward(DType dt, const void* g, const void* x, const void* w, const float* mean,
                   const float* rstd, void* dx, void* dw, void* db, int64_t rows, int64_t D,
                   bool center, int device) {
  if (D == 0) return;
  detail::set_device(device);
  if (rows == 0) {  // no rows: the parameter gradients are sums over nothing
    ATTNLAB_CUDA_CHECK(cudaMemsetAsync(dw, 0, D * dtype_size(dt), stream()));
    if (db) ATTNLAB_CUDA_CHECK(cudaMemsetAsync(db, 0, D * dtype_size(dt), stream()));
    return;
  }
  detail::dispatch_float(dt, "norm backward", [&](auto tag) {
    using T = decltype(tag);
    const T *gt = static_cast<const T*>(g), *xt = static_cast<const T*>(x);
    launch(kern::norm_backward_dx_kernel<T>, {warp_grid(rows), kThreads, 0, stream()}, gt, xt,
           static_cast<const T*>(w), mean, rstd, static_cast<T*>(dx), rows, D, center);
    ATTNLAB_CUDA_LAUNCHED();
    // Parameter gradients: f32 partials over row chunks, then one fold per column.
    const int64_t col_blocks = ceil_div(D, kern::kColsX);
    int64_t splits = std::clamp<int64_t>(ceil_div(kWantBlocks, col_blocks), 1,
                                         std::max<int64_t>(1, ceil_div(rows, 64)));
    const int64_t chunk = ceil_div(rows, splits);
    splits = ceil_div(rows, chunk);
    Scratch dw_part(splits * D * sizeof(float)), db_part(db ? splits * D * sizeof(float) : 0);
    dim3 block(kern::kColsX, kern::kColsY);
    dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(splits));
    launch(kern::norm_param_grad_kernel<T>, {grid, block, 0, stream()}, gt, xt, mean, rstd,
           dw_part.as<float>(), db ? db_part.as<float>() : nullptr, rows, D, chunk);
    ATTNLAB_CUDA_LAUNCHED();
    launch_sum_cols<float, T>(dw_part.as<float>(), static_cast<T*>(dw), 1, splits, D, splits, 1, 1.f);
    if (db)
      launch_sum_cols<float, T>(db_part.as<float>(), static_cast<T*>(db), 1, splits, D, splits, 1,
                                1.f);
  });
}

}  // namespace attn::cuda
