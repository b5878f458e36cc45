// The fused attention op: shape checks and autograd around backend/cpu/attention_cpu.
#include <cmath>
#include <cstdio>
#include <mutex>

#include "backend/cpu/attention_cpu.h"
#include "backend/cuda/flash_attention.h"
#include "ops/attention_internal.h"
#include "ops/op_util.h"
#include "ops/ops.h"
#include "util/log.h"

namespace attn {

const char* variant_name(AttentionVariant v) {
  switch (v) {
    case AttentionVariant::Softmax: return "softmax";
    case AttentionVariant::Sigmoid: return "sigmoid";
    case AttentionVariant::Softmax1: return "softmax1";
    case AttentionVariant::Sink: return "sink";
    case AttentionVariant::ClippedSoftmax: return "clipped_softmax";
  }
  return "?";
}

AttentionVariant parse_variant(const std::string& name) {
  if (name == "softmax") return AttentionVariant::Softmax;
  if (name == "sigmoid") return AttentionVariant::Sigmoid;
  if (name == "softmax1" || name == "softmax_1") return AttentionVariant::Softmax1;
  if (name == "sink") return AttentionVariant::Sink;
  if (name == "clipped_softmax") return AttentionVariant::ClippedSoftmax;
  throw std::invalid_argument("unknown attention variant '" + name +
                              "' (expected softmax, sigmoid, softmax1, sink or clipped_softmax)");
}

AttnDims check_attention_args(const Tensor& q, const Tensor& k, const Tensor& v,
                              const AttentionSpec& spec) {
  check_same_kind(q, k, "attention");
  check_same_kind(q, v, "attention");
  if (q.dim() != 4 || k.dim() != 4 || k.shape() != v.shape() || q.size(0) != k.size(0) ||
      q.size(1) != k.size(1) || q.size(3) != k.size(3))
    throw std::invalid_argument("attention: need q [B, H, N, D] and k, v [B, H, M, D], got " +
                                shape_str(q.shape()) + ", " + shape_str(k.shape()) + ", " +
                                shape_str(v.shape()));
  AttnDims d{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3),
             spec.scale != 0 ? spec.scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)))};
  if (!spec.key_padding_lengths.empty() &&
      static_cast<int64_t>(spec.key_padding_lengths.size()) != d.B)
    throw std::invalid_argument("attention: key_padding_lengths has " +
                                std::to_string(spec.key_padding_lengths.size()) +
                                " entries for batch " + std::to_string(d.B));
  if (!spec.alibi_slopes.empty() && static_cast<int64_t>(spec.alibi_slopes.size()) != d.H)
    throw std::invalid_argument("attention: alibi_slopes has " +
                                std::to_string(spec.alibi_slopes.size()) + " entries for " +
                                std::to_string(d.H) + " heads");
  if (spec.variant == AttentionVariant::Sink) {
    const Tensor& s = spec.sink;
    if (!s.defined() || s.dim() != 1 || s.size(0) != d.H)
      throw std::invalid_argument("attention: the sink variant needs spec.sink [H] = [" + std::to_string(d.H) + "], got " +
                                  (s.defined() ? shape_str(s.shape()) : std::string("none")));
    if (s.dtype() != q.dtype() || !(s.device() == q.device()))
      throw std::invalid_argument("attention: spec.sink must have q's dtype and device");
  }
  if (const Tensor& b = spec.sigmoid_bias_param; b.defined()) {
    if (spec.variant != AttentionVariant::Sigmoid)
      throw std::invalid_argument(std::string("attention: spec.sigmoid_bias_param is for the sigmoid variant, not ") +
                                  variant_name(spec.variant));
    if (spec.sigmoid_bias_per_row)
      throw std::invalid_argument(
          "attention: a sigmoid bias is either learnable (sigmoid_bias_param) or per row, not both");
    if (b.dim() != 1 || b.size(0) != d.H)
      throw std::invalid_argument("attention: spec.sigmoid_bias_param must be [H] = [" +
                                  std::to_string(d.H) + "], got " + shape_str(b.shape()));
    if (b.dtype() != q.dtype() || !(b.device() == q.device()))
      throw std::invalid_argument("attention: spec.sigmoid_bias_param must have q's dtype and device");
  }
  if (spec.sigmoid_bias_per_row && spec.variant != AttentionVariant::Sigmoid)
    throw std::invalid_argument(std::string("attention: sigmoid_bias_per_row is for the sigmoid variant, not ") +
                                variant_name(spec.variant));
  if (spec.variant == AttentionVariant::ClippedSoftmax && !(spec.clip_gamma <= 0 && spec.clip_zeta >= 1))
    throw std::invalid_argument("attention: clipped_softmax needs γ <= 0 and ζ >= 1, got γ = " +
                                std::to_string(spec.clip_gamma) + ", ζ = " + std::to_string(spec.clip_zeta));
  if (const Tensor& sb = spec.score_bias; sb.defined()) {
    if (sb.dim() != 3 || (sb.size(0) != d.H && sb.size(0) != 1) || sb.size(1) != d.N || sb.size(2) != d.M)
      throw std::invalid_argument("attention: score_bias must be [H or 1, N, M] = [" + std::to_string(d.H) +
                                  " or 1, " + std::to_string(d.N) + ", " + std::to_string(d.M) + "], got " +
                                  shape_str(sb.shape()));
    if (sb.dtype() != q.dtype() || !(sb.device() == q.device()))
      throw std::invalid_argument(std::string("attention: score_bias must have q's dtype and device (") +
                                  dtype_name(q.dtype()) + " on " + q.device().str() + "), got " +
                                  dtype_name(sb.dtype()) + " on " + sb.device().str());
  }
  return d;
}

namespace {

// sink: the sink logits, bias: the learnable sigmoid biases (host copies; empty when not used).
cpu::AttnShape cpu_shape(const AttnDims& d, const AttentionSpec& spec, const std::vector<double>& sink,
                         const std::vector<double>& bias) {
  cpu::AttnKind kind = spec.variant == AttentionVariant::Softmax   ? cpu::AttnKind::Softmax
                       : spec.variant == AttentionVariant::Sigmoid ? cpu::AttnKind::Sigmoid
                       : spec.variant == AttentionVariant::Sink    ? cpu::AttnKind::Sink
                                                                   : cpu::AttnKind::Softmax1;
  return {d.B, d.H, d.N, d.M, d.D, kind, d.scale, spec.sigmoid_bias, spec.causal,
          spec.key_padding_lengths.empty() ? nullptr : spec.key_padding_lengths.data(),
          spec.alibi_slopes.empty() ? nullptr : spec.alibi_slopes.data(), sink.empty() ? nullptr : sink.data(),
          bias.empty() ? nullptr : bias.data(), spec.sigmoid_bias_per_row};
}

}  // namespace

Tensor sink_grad(const Tensor& sink, const Tensor& lse, const Tensor& o, const Tensor& g) {
  const int64_t H = sink.size(0);
  Tensor D = sum(mul(g, o), 3);                             // [B, H, N]
  Tensor p_sink = exp(sub(reshape(sink, {1, H, 1}), lse));  // [B, H, N]
  return neg(sum(sum(mul(p_sink, D), 2), 0));               // [H]
}

AttentionOut attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionSpec& spec) {
  AttnDims d = check_attention_args(q, k, v, spec);
  // An arbitrary additive score term (a ViT's 2-D ALiBi) is in neither the CPU tiles nor the
  // flash kernels: the composed op computes it on either device. It materialises P, [B, H, N, M],
  // which is tiny for the sequences that use it (a 28x28 image in 4x4 patches: 50 tokens).
  if (spec.score_bias.defined() || spec.variant == AttentionVariant::ClippedSoftmax)
    return {attention_composed(q, k, v, spec), Tensor()};
  if (q.device().is_cuda()) {
    // The flash kernels are bf16 with head dim 64 or 128 and a positive scale; the f32 CUDA
    // path (parity tests, f32 runs), other head dims and scales take the composed op, which
    // materialises P and returns no LSE.
    if (q.dtype() == DType::F32 || !(d.scale > 0))
      return {attention_composed(q, k, v, spec), Tensor()};
    if (!cuda::flash_attention_supports_head_dim(d.D)) {
      static std::once_flag told;
      std::call_once(told, [&] {
        logging::info("note: attention with head dim {} has no flash kernel (64 or 128); using the "
                      "composed op, which materialises the N x M scores\n", d.D);
      });
      return {attention_composed(q, k, v, spec), Tensor()};
    }
    return attention_cuda(q, k, v, spec, d);
  }
  check_cpu(q, "attention");
  bool has_lse = spec.variant != AttentionVariant::Sigmoid;
  const bool sink = spec.variant == AttentionVariant::Sink;
  const std::vector<double> sink_values = sink ? spec.sink.to_vector() : std::vector<double>();
  const bool learnable_bias = spec.sigmoid_bias_param.defined();
  const std::vector<double> bias_values = learnable_bias ? spec.sigmoid_bias_param.to_vector() : std::vector<double>();
  Tensor o = Tensor::empty(q.shape(), q.dtype());
  Tensor lse = has_lse ? Tensor::empty({d.B, d.H, d.N}, q.dtype()) : Tensor();
  dispatch_float(q.dtype(), "attention", [&](auto tag) {
    using T = decltype(tag);
    cpu::attention_forward<T>(cpu_shape(d, spec, sink_values, bias_values), q.data<T>(), k.data<T>(), v.data<T>(),
                              o.data<T>(), has_lse ? lse.data<T>() : nullptr);
  });
  std::vector<Tensor> inputs = {q, k, v};
  if (sink) inputs.push_back(spec.sink);
  if (learnable_bias) inputs.push_back(spec.sigmoid_bias_param);
  // The backward needs the spec's options, not its tensors (their values are in the host copies):
  // a closure must not keep an input alive (docs/architecture.md, autograd).
  AttentionSpec kept = spec;
  kept.sink = kept.sigmoid_bias_param = kept.score_bias = Tensor();
  Tensor out = autograd::record(
      OpId::Attention, o, inputs,
      [qd = q.detach(), kd = k.detach(), vd = v.detach(), od = o.detach(), sd = sink ? spec.sink.detach() : Tensor(),
       lse, d, spec = std::move(kept), sink_values, bias_values, learnable_bias](const Tensor& g) {
        Tensor dq = Tensor::empty(qd.shape(), qd.dtype()), dk = Tensor::empty(kd.shape(), kd.dtype()),
               dv = Tensor::empty(vd.shape(), vd.dtype());
        // The learnable bias: Σ dS per (batch, head) from the kernel, summed over the batch here.
        Tensor dbias = learnable_bias ? Tensor::empty({d.B, d.H}, qd.dtype()) : Tensor();
        dispatch_float(qd.dtype(), "attention backward", [&](auto tag) {
          using T = decltype(tag);
          cpu::attention_backward<T>(cpu_shape(d, spec, sink_values, bias_values), qd.data<T>(), kd.data<T>(),
                                     vd.data<T>(), od.data<T>(), lse.defined() ? lse.data<T>() : nullptr,
                                     g.data<T>(), dq.data<T>(), dk.data<T>(), dv.data<T>(),
                                     learnable_bias ? dbias.data<T>() : nullptr);
        });
        std::vector<Tensor> grads = {dq, dk, dv};
        if (sd.defined()) grads.push_back(sink_grad(sd, lse, od, g));
        if (learnable_bias) grads.push_back(sum(dbias, 0));
        return grads;
      });
  return {out, lse};
}

}  // namespace attn
