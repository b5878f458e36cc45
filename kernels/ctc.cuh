// CTC loss (src/ops/ctc.cpp has the maths: α, β over the extended label l', S = 2L + 1 states,
// both including lp_t(l'_s), and ∂nll/∂lp_t(c) = −Σ_{s: l'_s = c} exp(α_t(s) + β_t(s) − lp_t(c)
// − log p)), in f32 log space with a −∞-safe log-add.
// α and β: one block per sample, threads over the states (strided), a loop over the frames with
// a __syncthreads between them; each frame reads the previous one back from global memory
// ([B, T, S], which the backward keeps). Every frame is shifted by its maximum over the states
// and the maxima are summed in f64 (log α = alpha + log_scale): the f32 values stay of the order
// of the spread within a frame instead of t·|lp| (10³ after a few hundred frames, where an f32
// ulp is 10⁻⁴ and exp(α + β − lp − log p) would lose that much relative precision).
// The gradient: a block per frame (b, t); the blank's states summed by a block reduction, each
// label's states by the thread of the label's first occurrence, along next_same: every class
// written once, in a fixed order (no atomics, deterministic).
#pragma once
#include "backend/cuda/ops_cuda.h"
#include "kernels/common.cuh"

namespace attn::kern {

__device__ __forceinline__ float log_add(float a, float b) {
  const float m = fmaxf(a, b);
  if (m == -CUDART_INF_F) return m;
  return m + log1pf(expf(-fabsf(a - b)));  // one side −∞: exp(−∞) = 0, the other side
}

// Max over a 1-D block (blockDim.x a multiple of 32), returned to every thread.
__device__ __forceinline__ float block_max_all(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_max(v);
  __syncthreads();  // a previous call's readers are done with scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float m = -CUDART_INF_F;
  for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) m = fmaxf(m, scratch[w]);
  return m;
}

// Sample b's view of the batch.
struct CtcSample {
  const int64_t* l;  // its labels
  int64_t Tb, L, S, offset;
  __device__ __forceinline__ int64_t label(int64_t s, int64_t blank) const {
    return (s & 1) ? l[s >> 1] : blank;
  }
};

__device__ __forceinline__ CtcSample ctc_sample(const cuda::CtcLabels& d, int64_t b) {
  const int64_t off = d.target_offsets[b], L = d.target_lengths[b];
  return {d.targets + off, d.input_lengths[b], L, 2 * L + 1, off};
}

// Shifts frame v[0, S) by its maximum over the block's states (not when all are −∞) and returns
// that maximum. v was written by the calling threads themselves (s = threadIdx.x + k·blockDim.x).
__device__ __forceinline__ float ctc_rescale(float* v, int64_t S, float m_local, float* scratch) {
  const float m = block_max_all(m_local, scratch);
  if (m != -CUDART_INF_F)
    for (int64_t s = threadIdx.x; s < S; s += blockDim.x) v[s] -= m;
  return m;
}

// Grid: B blocks. alpha [B, T, S_max], log_scale [B, T], nll [B] (see ops_cuda.h).
template <class T>
__global__ void ctc_alpha_kernel(const T* __restrict__ lp, cuda::CtcLabels d,
                                 float* __restrict__ alpha, double* __restrict__ log_scale,
                                 double* __restrict__ nll) {
  __shared__ float scratch[32];
  const int64_t b = blockIdx.x;
  const CtcSample x = ctc_sample(d, b);
  const T* xb = lp + b * d.T * d.C;
  float* a = alpha + b * d.T * d.S;
  double scale = 0;  // Σ of the frames' maxima so far (the same in every thread)
  for (int64_t t = 0; t < x.Tb; ++t) {
    float* at = a + t * d.S;
    const float* prev = t > 0 ? at - d.S : nullptr;
    float m = -CUDART_INF_F;
    for (int64_t s = threadIdx.x; s < x.S; s += blockDim.x) {
      float v = s < 2 ? 0.f : -CUDART_INF_F;  // t = 0: only the first blank and label
      if (t > 0) {
        v = prev[s];
        if (s >= 1) v = log_add(v, prev[s - 1]);
        if ((s & 1) && s >= 3 && x.l[s >> 1] != x.l[(s >> 1) - 1]) v = log_add(v, prev[s - 2]);
      }
      if (v != -CUDART_INF_F) v += to_f32(xb[t * d.C + x.label(s, d.blank)]);
      at[s] = v;
      m = fmaxf(m, v);
    }
    scale += ctc_rescale(at, x.S, m, scratch);
    if (threadIdx.x == 0) log_scale[b * d.T + t] = scale;
    __syncthreads();  // frame t is complete before t + 1 reads it
  }
  if (threadIdx.x == 0) {
    double log_p = x.L == 0 ? 0.0 : -CUDART_INF;  // no frames
    if (x.Tb > 0) {
      const float* last = a + (x.Tb - 1) * d.S;
      const float e = x.S > 1 ? log_add(last[x.S - 1], last[x.S - 2]) : last[0];
      log_p = e == -CUDART_INF_F ? -CUDART_INF : scale + e;
    }
    nll[b] = -log_p;
  }
}

// Grid: B blocks. beta [B, T, S_max] and beta_scale [B, T] like alpha and log_scale.
template <class T>
__global__ void ctc_beta_kernel(const T* __restrict__ lp, cuda::CtcLabels d,
                                float* __restrict__ beta, double* __restrict__ beta_scale) {
  __shared__ float scratch[32];
  const int64_t b = blockIdx.x;
  const CtcSample x = ctc_sample(d, b);
  const T* xb = lp + b * d.T * d.C;
  float* bb = beta + b * d.T * d.S;
  double scale = 0;  // Σ of the maxima of frames t..T_b − 1
  for (int64_t t = x.Tb - 1; t >= 0; --t) {
    float* bt = bb + t * d.S;
    const float* next = t + 1 < x.Tb ? bt + d.S : nullptr;
    float m = -CUDART_INF_F;
    for (int64_t s = threadIdx.x; s < x.S; s += blockDim.x) {
      float v = s >= x.S - 2 ? 0.f : -CUDART_INF_F;  // t = T_b − 1: only the last label and blank
      if (t < x.Tb - 1) {
        v = next[s];
        if (s + 1 < x.S) v = log_add(v, next[s + 1]);
        if ((s & 1) && s + 2 < x.S && x.l[(s >> 1) + 1] != x.l[s >> 1]) v = log_add(v, next[s + 2]);
      }
      if (v != -CUDART_INF_F) v += to_f32(xb[t * d.C + x.label(s, d.blank)]);
      bt[s] = v;
      m = fmaxf(m, v);
    }
    scale += ctc_rescale(bt, x.S, m, scratch);
    if (threadIdx.x == 0) beta_scale[b * d.T + t] = scale;
    __syncthreads();
  }
}

// The weight of sample b's nll in the loss, times the upstream gradient.
template <class T>
__device__ __forceinline__ float ctc_weight(const T* g, cuda::CtcReduce reduction,
                                            const cuda::CtcLabels& d, int64_t b) {
  if (reduction == cuda::CtcReduce::None) return to_f32(g[b]);
  if (reduction == cuda::CtcReduce::Sum) return to_f32(g[0]);
  const int64_t L = d.target_lengths[b];
  return static_cast<float>(static_cast<double>(to_f32(g[0])) /
                            static_cast<double>(d.B * (L > 1 ? L : 1)));
}

// Grid: rows (b, t) of B·T, block-uniform loop. grad [B, T, C].
template <class T>
__global__ void ctc_grad_kernel(
    const T* __restrict__ lp, cuda::CtcLabels d, cuda::CtcReduce reduction, bool zero_infinity,
    const float* __restrict__ alpha, const double* __restrict__ log_scale,
    const float* __restrict__ beta, const double* __restrict__ beta_scale,
    const double* __restrict__ nll, const T* __restrict__ g, T* __restrict__ grad) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < d.B * d.T; r += gridDim.x) {
    const int64_t b = r / d.T, t = r % d.T;
    const CtcSample x = ctc_sample(d, b);
    const double nb = nll[b];
    const bool impossible = isinf(nb);
    const float fill = t < x.Tb && impossible && !zero_infinity ? CUDART_NAN_F : 0.f;
    T* gr = grad + r * d.C;
    for (int64_t c = threadIdx.x; c < d.C; c += blockDim.x) gr[c] = from_f32<T>(fill);
    if (t >= x.Tb || impossible) continue;  // block-uniform
    const float w = ctc_weight(g, reduction, d, b);
    // exp(α + β − lp − log p) = exp(alpha + beta − lp + k), k = log_scale + beta_scale + nll
    const float k = static_cast<float>(log_scale[r] + beta_scale[r] + nb);
    const float *ar = alpha + r * d.S, *br = beta + r * d.S;
    const T* xr = lp + r * d.C;
    auto occupancy = [&](int64_t s) {
      const float ab = ar[s] + br[s];
      return ab == -CUDART_INF_F ? 0.f : expf(ab - to_f32(xr[x.label(s, d.blank)]) + k);
    };
    float blank_sum = 0.f;
    for (int64_t s = 2 * threadIdx.x; s < x.S; s += 2 * blockDim.x) blank_sum += occupancy(s);
    blank_sum = block_sum(blank_sum, scratch);
    __syncthreads();  // the zeros above are written before the values below replace them
    if (threadIdx.x == 0) gr[d.blank] = from_f32<T>(-w * blank_sum);
    for (int64_t j = threadIdx.x; j < x.L; j += blockDim.x) {
      if (!d.first_same[x.offset + j]) continue;
      float sum = 0.f;
      for (int64_t i = j; i >= 0; i = d.next_same[x.offset + i]) sum += occupancy(2 * i + 1);
      gr[x.l[j]] = from_f32<T>(-w * sum);
    }
  }
}

// One block: out = nll [B] (None) or its reduction, summed in f64.
template <class T>
__global__ void ctc_finish_kernel(const double* __restrict__ nll, cuda::CtcLabels d,
                                  cuda::CtcReduce reduction, bool zero_infinity,
                                  T* __restrict__ out) {
  __shared__ double scratch[32];
  double acc = 0;
  for (int64_t b = threadIdx.x; b < d.B; b += blockDim.x) {
    double v = nll[b];
    if (zero_infinity && isinf(v)) v = 0;
    if (reduction == cuda::CtcReduce::None) {
      out[b] = from_f32<T>(static_cast<float>(v));
    } else {
      const int64_t L = d.target_lengths[b];
      acc += reduction == cuda::CtcReduce::Mean ? v / static_cast<double>(L > 1 ? L : 1) : v;
    }
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0 && reduction != cuda::CtcReduce::None)
    out[0] = from_f32<T>(static_cast<float>(
        reduction == cuda::CtcReduce::Mean ? acc / static_cast<double>(d.B) : acc));
}

}  // namespace attn::kern
