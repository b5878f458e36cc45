// Host launchers of the optimizer kernels (kernels/adamw.cuh): fused AdamW, the f64 sum of
// squares behind clip_grad_norm / grads_finite, and the in-place gradient scale.
#include <algorithm>

#include "backend/cuda/ops_cuda_util.h"
#include "kernels/adamw.cuh"

namespace attn::cuda {

using detail::kThreads;
using detail::Scratch;
using detail::stream;
using kern::grid_for;

void adamw_step(float* p, float* m, float* v, DType grad_dt, const void* g, bf16* working,
                int64_t n, const AdamWScalars& s, int device) {
  if (n == 0) return;
  detail::set_device(device);
  // The CPU rounds each scalar to the parameter type once (static_cast<T>); so do we.
  const kern::AdamWCoeffs c{static_cast<float>(s.decay),       static_cast<float>(s.beta1),
                            static_cast<float>(s.beta2),       static_cast<float>(1 - s.beta1),
                            static_cast<float>(1 - s.beta2),   static_cast<float>(s.bc2_sqrt),
                            static_cast<float>(s.eps),         static_cast<float>(s.neg_step)};
  detail::dispatch_float(grad_dt, "AdamW::step (gradient)", [&](auto tag) {
    using G = decltype(tag);
    launch(kern::adamw_kernel<G>, {grid_for(n, kThreads), kThreads, 0, stream()}, p, m, v,
           static_cast<const G*>(g), working, n, c);
    ATTNLAB_CUDA_LAUNCHED();
  });
}

double sum_squares(const std::vector<GradRef>& grads, int device) {
  constexpr int64_t kMaxBlocks = 256;  // partial sums per tensor
  std::vector<unsigned> blocks;
  int64_t total = 0;
  for (const GradRef& r : grads) {
    blocks.push_back(r.n == 0 ? 0u : grid_for(r.n, kThreads, kMaxBlocks));
    total += blocks.back();
  }
  if (total == 0) return 0.0;
  detail::set_device(device);
  Scratch partial(total * sizeof(double)), result(sizeof(double));
  int64_t at = 0;
  for (size_t i = 0; i < grads.size(); ++i) {
    if (blocks[i] == 0) continue;
    detail::dispatch_float(grads[i].dt, "clip_grad_norm", [&](auto tag) {
      using T = decltype(tag);
      launch(kern::sumsq_kernel<T>, {blocks[i], kThreads, 0, stream()},
             static_cast<const T*>(grads[i].data), grads[i].n, partial.as<double>() + at);
      ATTNLAB_CUDA_LAUNCHED();
    });
    at += blocks[i];
  }
  launch(kern::sum_doubles_kernel, {1, 1024, 0, stream()}, partial.as<double>(), total,
         result.as<double>());
  ATTNLAB_CUDA_LAUNCHED();
  double host = 0;
  ATTNLAB_CUDA_CHECK(cudaMemcpyAsync(&host, result.as<double>(), sizeof(double),
                                     cudaMemcpyDeviceToHost, stream()));
  ATTNLAB_CUDA_CHECK(cudaStreamSynchronize(stream()));
  return host;
}

void scale_inplace(DType dt, void* g, int64_t n, double c, int device) {
  if (n == 0) return;
  detail::set_device(device);
  detail::dispatch_float(dt, "clip_grad_norm (scale)", [&](auto tag) {
    using T = decltype(tag);
    launch(kern::scale_kernel<T>, {grid_for(n, kThreads), kThreads, 0, stream()},
           static_cast<T*>(g), n, static_cast<float>(c));
    ATTNLAB_CUDA_LAUNCHED();
  });
}

}  // namespace attn::cuda
