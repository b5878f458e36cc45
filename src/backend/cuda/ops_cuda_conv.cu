// Host launchers of conv2d (kernels/conv.cuh + the cuBLASLt GEMM of gemm_cuda.cu), a chunk of
// samples at a time. With K = Cin·KH·KW, P = Ho·Wo and the chunk's column matrix col [K, nb·P]
// (sample n's block col_n = col + n·P, row length nb·P):
//   forward   y_n [Cout, P] = W [Cout, K]·col_n             one GEMM batched over the chunk
//             (with a bias: [W b] [Cout, K + 1]·[col_n; 1], so y is rounded once)
//   dx        dcol_n [K, P] = Wᵀ·dy_n, then col2im           batched likewise, into col's buffer
//   dW        dW += dyp [Cout, nb·P]·colᵀ                    one GEMM over all the chunk's
//   positions,
//             dyp = the chunk's dy [nb, Cout, P] permuted to [Cout, nb, P] (dy itself when nb = 1)
// The GEMM takes no β, so with more than one chunk each chunk's dW goes to a scratch matrix and is
// added into an f32 accumulator (dw itself in f32), in chunk order: deterministic.
#include <algorithm>
#include <cstdint>

#include "backend/cuda/ops_cuda_util.h"
#include "kernels/conv.cuh"

namespace attn::cuda {

using detail::kThreads;
using detail::Scratch;
using detail::stream;
using kern::grid_for;

namespace {

kern::ConvGeom geom_of(const Conv2dShape& s) {
  return {s.in_channels, s.height,  s.width, s.kernel_h, s.kernel_w,
          s.stride,      s.padding, s.out_h, s.out_w};
}

// Samples per chunk: as many as fit per_sample bytes each into the budget, at least one.
int64_t chunk_samples(int64_t per_sample, int64_t budget, int64_t batch) {
  return std::clamp<int64_t>(budget / std::max<int64_t>(per_sample, 1), 1,
                             std::max<int64_t>(batch, 1));
}

template <class T>
void launch_im2col(const Conv2dShape& s, const T* x, T* col, int64_t n0, int64_t nb,
                   bool ones_row) {
  const int64_t n =
      (s.in_channels * s.kernel_h * s.kernel_w + (ones_row ? 1 : 0)) * nb * s.out_h * s.out_w;
  launch(kern::im2col_kernel<T>, {grid_for(n, kThreads), kThreads, 0, stream()}, x, col, geom_of(s),
         n0, nb, ones_row);
  ATTNLAB_CUDA_LAUNCHED();
}

const char* at(const void* p, int64_t elems, int64_t es) {
  return static_cast<const char*>(p) + elems * es;
}
char* at(void* p, int64_t elems, int64_t es) { return static_cast<char*>(p) + elems * es; }

}  // namespace

void conv2d_forward(DType dt, const Conv2dShape& s, const void* x, const void* w, const void* bias,
                    void* y, int64_t column_budget, int device) {
  if (s.batch == 0) return;
  detail::set_device(device);
  const int64_t K = s.in_channels * s.kernel_h * s.kernel_w, P = s.out_h * s.out_w;
  const int64_t Co = s.out_channels, es = static_cast<int64_t>(dtype_size(dt));
  const int64_t Kb = K + (bias ? 1 : 0);  // the GEMM's inner size: the bias as one more term
  const int64_t chunk = chunk_samples(Kb * P * es, column_budget, s.batch);
  detail::dispatch_float(dt, "conv2d", [&](auto tag) {
    using T = decltype(tag);
    Scratch col(Kb * chunk * P * es), wb(bias ? Co * Kb * es : 0);
    if (bias) {
      launch(kern::weight_bias_kernel<T>, {grid_for(Co * Kb, kThreads), kThreads, 0, stream()},
             static_cast<const T*>(w), static_cast<const T*>(bias), wb.as<T>(), Co, K);
      ATTNLAB_CUDA_LAUNCHED();
    }
    const void* weights = bias ? wb.as<T>() : w;
    for (int64_t n0 = 0; n0 < s.batch; n0 += chunk) {
      const int64_t nb = std::min(chunk, s.batch - n0);
      launch_im2col(s, static_cast<const T*>(x), col.as<T>(), n0, nb, bias != nullptr);
      gemm(dt, false, false, Co, P, Kb, weights, Kb, 0, col.as<T>(), nb * P, P,
           at(y, n0 * Co * P, es), P, Co * P, nb, device);
    }
  });
}

void conv2d_backward(DType dt, const Conv2dShape& s, const void* dy, const void* x, const void* w,
                     void* dx, void* dw, int64_t column_budget, int device) {
  if (!dx && !dw) return;
  detail::set_device(device);
  const int64_t K = s.in_channels * s.kernel_h * s.kernel_w, P = s.out_h * s.out_w;
  const int64_t Co = s.out_channels, es = static_cast<int64_t>(dtype_size(dt));
  if (s.batch == 0) {  // an empty sum (dx is empty)
    if (dw) ATTNLAB_CUDA_CHECK(cudaMemsetAsync(dw, 0, Co * K * es, stream()));
    return;
  }
  const int64_t chunk = chunk_samples((K + (dw ? Co : 0)) * P * es, column_budget, s.batch);
  const int64_t chunks = (s.batch + chunk - 1) / chunk;
  const bool direct = chunks == 1;  // the one GEMM writes dw itself
  detail::dispatch_float(dt, "conv2d backward", [&](auto tag) {
    using T = decltype(tag);
    Scratch col(K * chunk * P * es), dyp(dw && chunk > 1 ? Co * chunk * P * es : 0);
    Scratch part(dw && !direct ? Co * K * es : 0);
    Scratch acc(dw && !direct && dt != DType::F32 ? Co * K * sizeof(float) : 0);
    float* total = dt == DType::F32 ? static_cast<float*>(dw) : acc.as<float>();
    for (int64_t c = 0, n0 = 0; n0 < s.batch; ++c, n0 += chunk) {
      const int64_t nb = std::min(chunk, s.batch - n0);
      const void* dy_chunk = at(dy, n0 * Co * P, es);
      if (dw) {
        launch_im2col(s, static_cast<const T*>(x), col.as<T>(), n0, nb, false);
        const void* rows = dy_chunk;  // [Cout, nb·P]
        if (nb > 1) {
          permute(es, dy_chunk, {nb, Co, P}, {1, 0, 2}, dyp.as<T>(), device);
          rows = dyp.as<T>();
        }
        gemm(dt, false, true, Co, K, nb * P, rows, nb * P, 0, col.as<T>(), nb * P, 0,
             direct ? dw : part.as<T>(), K, 0, 1, device);
        if (!direct) {
          launch(kern::accumulate_kernel<T>, {grid_for(Co * K, kThreads), kThreads, 0, stream()},
                 total, part.as<T>(), Co * K, c == 0);
          ATTNLAB_CUDA_LAUNCHED();
        }
      }
      if (dx) {
        gemm(dt, true, false, K, P, Co, w, K, 0, dy_chunk, P, Co * P, col.as<T>(), nb * P, P, nb,
             device);
        const int64_t n = nb * s.in_channels * s.height * s.width;
        launch(kern::col2im_kernel<T>, {grid_for(n, kThreads), kThreads, 0, stream()}, col.as<T>(),
               static_cast<T*>(dx), geom_of(s), n0, nb);
        ATTNLAB_CUDA_LAUNCHED();
      }
    }
    if (dw && !direct && dt != DType::F32) convert(dt, dw, DType::F32, total, Co * K, device);
  });
}

}  // namespace attn::cuda
