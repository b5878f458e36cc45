// Host launchers of the CTC loss (kernels/ctc.cuh): the forward recursion α and the loss, then
// for the backward β and the gradient. f32 and bf16 log-probabilities; labels already on the
// device and checked by src/ops/ctc.cpp.
#include <algorithm>

#include "backend/cuda/ops_cuda_util.h"
#include "kernels/ctc.cuh"

namespace attn::cuda {

using detail::stream;

namespace {

// Threads of an α/β block: the states rounded up to whole warps, at most 256 (each thread then
// takes every 256th state: S = 2·200 + 1 is two per thread).
unsigned state_threads(int64_t S) {
  return static_cast<unsigned>(std::clamp<int64_t>((S + 31) / 32 * 32, 32, 256));
}

constexpr unsigned kGradThreads = 128;

}  // namespace

void ctc_loss_forward(DType dt, const void* log_probs, const CtcLabels& labels, CtcReduce reduction,
                      bool zero_infinity, float* alpha, double* log_scale, double* nll, void* out,
                      int device) {
  if (labels.B == 0) return;
  detail::set_device(device);
  detail::dispatch_float(dt, "ctc_loss", [&](auto tag) {
    using T = decltype(tag);
    launch(kern::ctc_alpha_kernel<T>,
           {static_cast<unsigned>(labels.B), state_threads(labels.S), 0, stream()},
           static_cast<const T*>(log_probs), labels, alpha, log_scale, nll);
    ATTNLAB_CUDA_LAUNCHED();
    launch(kern::ctc_finish_kernel<T>, {1, 256, 0, stream()}, static_cast<const double*>(nll),
           labels, reduction, zero_infinity, static_cast<T*>(out));
    ATTNLAB_CUDA_LAUNCHED();
  });
}

void ctc_loss_backward(DType dt, const void* log_probs, const CtcLabels& labels,
                       CtcReduce reduction, bool zero_infinity, const float* alpha,
                       const double* log_scale, const double* nll, const void* g, void* grad,
                       int device) {
  const int64_t rows = labels.B * labels.T;
  if (rows * labels.C == 0) return;
  detail::set_device(device);
  detail::dispatch_float(dt, "ctc_loss backward", [&](auto tag) {
    using T = decltype(tag);
    const T* lp = static_cast<const T*>(log_probs);
    detail::Scratch beta(rows * labels.S * sizeof(float)), beta_scale(rows * sizeof(double));
    launch(kern::ctc_beta_kernel<T>,
           {static_cast<unsigned>(labels.B), state_threads(labels.S), 0, stream()}, lp, labels,
           beta.as<float>(), beta_scale.as<double>());
    ATTNLAB_CUDA_LAUNCHED();
    launch(kern::ctc_grad_kernel<T>, {kern::grid_for(rows, 1), kGradThreads, 0, stream()}, lp,
           labels, reduction, zero_infinity, alpha, log_scale,
           static_cast<const float*>(beta.as<float>()),
           static_cast<const double*>(beta_scale.as<double>()), nll, static_cast<const T*>(g),
           static_cast<T*>(grad));
    ATTNLAB_CUDA_LAUNCHED();
  });
}

}  // namespace attn::cuda
