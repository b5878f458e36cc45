// The fused attention op on CUDA tensors: bf16 flash kernels (backend/cuda/flash_attention,
// kernels/flash_attention.cuh) with the same semantics as the CPU path (ops/attention.cpp).
// Forward returns O (bf16) and, for the softmax family, lse [B, H, N] f32 on the device; the
// recorded backward recomputes P in the kernels from q, k (and lse), never an N x M tensor.
#include <algorithm>
#include <string>

#include "autograd/node.h"
#include "backend/cuda/flash_attention.h"
#include "ops/attention_internal.h"
#include "ops/op_util.h"

namespace attn {

namespace {

cuda::FlashVariant flash_variant(AttentionVariant v) {
  switch (v) {
    case AttentionVariant::Softmax: return cuda::FlashVariant::Softmax;
    case AttentionVariant::Sigmoid: return cuda::FlashVariant::Sigmoid;
    case AttentionVariant::Softmax1: return cuda::FlashVariant::Softmax1;
    case AttentionVariant::Sink: return cuda::FlashVariant::Sink;
    case AttentionVariant::ClippedSoftmax: break;  // attention() sends it to the composed op
  }
  throw std::invalid_argument(std::string("attention: no flash kernel for the ") + variant_name(v) + " variant");
}

template <class T>
const T* cptr(const Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.raw_data()) : nullptr;
}
template <class T>
T* mptr(Tensor& t) {
  return t.defined() ? static_cast<T*>(t.raw_data()) : nullptr;
}

}  // namespace

AttentionOut attention_cuda(const Tensor& q, const Tensor& k, const Tensor& v,
                            const AttentionSpec& spec, const AttnDims& d) {
  if (q.dtype() != DType::BF16)
    throw std::invalid_argument(std::string("attention: CUDA tensors must be bf16, got ") +
                                dtype_name(q.dtype()));
  if (!cuda::flash_attention_supports_head_dim(d.D))
    throw std::invalid_argument("attention: head dim " + std::to_string(d.D) +
                                " is not supported on CUDA (the flash kernels take 64 or 128)");
  const Device dev = q.device();
  // Per-batch key lengths (clamped to [0, M], as the CPU path treats them) and ALiBi slopes,
  // copied to the device; the backward keeps them alive.
  Tensor key_len, slopes;
  if (!spec.key_padding_lengths.empty()) {
    std::vector<double> len;
    for (int64_t l : spec.key_padding_lengths)
      len.push_back(static_cast<double>(std::clamp<int64_t>(l, 0, d.M)));
    key_len = from_vector(len, {d.B}, {DType::I32, dev});
  }
  if (!spec.alibi_slopes.empty()) slopes = from_vector(spec.alibi_slopes, {d.H}, {DType::F32, dev});
  const bool with_sink = spec.variant == AttentionVariant::Sink;
  Tensor sink32 = with_sink ? cast(spec.sink.detach(), DType::F32) : Tensor();
  // The learnable sigmoid bias in f32 for the kernels, which also give its gradient.
  const bool learnable_bias = spec.sigmoid_bias_param.defined();
  Tensor bias32 = learnable_bias ? cast(spec.sigmoid_bias_param.detach(), DType::F32) : Tensor();

  cuda::FlashAttnConfig cfg;
  cfg.B = d.B;
  cfg.H = d.H;
  cfg.N = d.N;
  cfg.M = d.M;
  cfg.D = d.D;
  cfg.variant = flash_variant(spec.variant);
  cfg.scale = static_cast<float>(d.scale);
  cfg.sigmoid_bias = static_cast<float>(spec.sigmoid_bias);
  cfg.causal = spec.causal;
  cfg.key_len = cptr<int32_t>(key_len);
  cfg.alibi_slopes = cptr<float>(slopes);
  cfg.sink = cptr<float>(sink32);
  cfg.sigmoid_bias_h = cptr<float>(bias32);
  cfg.sigmoid_bias_per_row = spec.sigmoid_bias_per_row;
  cfg.sigmoid_rcp_fma = cuda::sigmoid_rcp_fma_requested();
  cfg.device = dev.index;

  const bool has_lse = spec.variant != AttentionVariant::Sigmoid;
  Tensor o = Tensor::empty(q.shape(), DType::BF16, dev);
  Tensor lse = has_lse ? Tensor::empty({d.B, d.H, d.N}, DType::F32, dev) : Tensor();
  cuda::flash_attention_forward(cfg, cptr<bf16>(q), cptr<bf16>(k), cptr<bf16>(v), mptr<bf16>(o),
                                mptr<float>(lse));

  std::vector<Tensor> inputs = {q, k, v};
  if (with_sink) inputs.push_back(spec.sink);
  if (learnable_bias) inputs.push_back(spec.sigmoid_bias_param);
  Tensor out = autograd::record(
      OpId::Attention, o, inputs,
      [qd = q.detach(), kd = k.detach(), vd = v.detach(), od = o.detach(), lse, key_len, slopes, sink32, bias32,
       sink_dtype = with_sink ? spec.sink.dtype() : DType::F32,
       bias_dtype = learnable_bias ? spec.sigmoid_bias_param.dtype() : DType::F32, cfg, dev](const Tensor& g) {
        Tensor gd = g.device() == dev ? g : g.to(dev);
        if (gd.dtype() != DType::BF16) gd = gd.to(DType::BF16);
        Tensor dq = Tensor::empty(qd.shape(), DType::BF16, dev);
        Tensor dk = Tensor::empty(kd.shape(), DType::BF16, dev);
        Tensor dv = Tensor::empty(vd.shape(), DType::BF16, dev);
        Tensor dq_accum = Tensor::empty(qd.shape(), DType::F32, dev);
        Tensor dsum = lse.defined() ? Tensor::empty(lse.shape(), DType::F32, dev) : Tensor();
        Tensor dbias = bias32.defined() ? Tensor::empty(bias32.shape(), DType::F32, dev) : Tensor();
        cuda::flash_attention_backward(cfg, cptr<bf16>(qd), cptr<bf16>(kd), cptr<bf16>(vd),
                                       cptr<bf16>(od), cptr<float>(lse), cptr<bf16>(gd),
                                       mptr<bf16>(dq), mptr<bf16>(dk), mptr<bf16>(dv),
                                       mptr<float>(dq_accum), mptr<float>(dsum), mptr<float>(dbias));
        if (dbias.defined()) return std::vector<Tensor>{dq, dk, dv, cast(dbias, bias_dtype)};
        if (!sink32.defined()) return std::vector<Tensor>{dq, dk, dv};
        // The sink's gradient from the lse and D in f32 (od and gd are bf16).
        Tensor dsink = sink_grad(sink32, lse, cast(od, DType::F32), cast(gd, DType::F32));
        return std::vector<Tensor>{dq, dk, dv, cast(dsink, sink_dtype)};
      });
  return {out, lse};
}

}  // namespace attn
