// Module: a node of the model tree with named parameters and named children.
// Parameters are registered once at construction; parameters() walks the tree and returns them
// with dotted names ("blocks.0.attn.wq.weight") in registration order.
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "optim/param.h"
#include "tensor/tensor.h"

namespace attn::nn {

class Tap;
class ActivationQuantizer;

class Module {
 public:
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  ParamList parameters() const;
  int64_t parameter_count() const;
  void set_training(bool on);
  bool training() const { return training_; }
  // Moves every parameter of the tree to `device`, in place: each parameter keeps its identity
  // (the TensorImpl the module's members share) and stays a leaf that requires grad; its
  // storage is replaced by a copy on the device and its gradient dropped. Buffers that are not
  // parameters are moved by the module that owns them (DecoderLM's sinusoidal table). Build
  // optimizers afterwards.
  virtual void to(Device device);

  // Mixed precision. Parameters keep their dtype (the f32 masters AdamW updates); once a compute
  // dtype is set (whole tree), every module reads its parameters through working(p) =
  // cast(p, compute dtype), so activations are in that dtype and the gradients come back
  // through the casts to the masters, in f32. Unset: parameters are used as they are.
  void set_compute_dtype(DType dt);
  std::optional<DType> compute_dtype() const { return compute_dtype_; }

  // Shows the forward's insides to `tap` (nn/tap.h) from every module of the tree; null stops
  // it. Each module learns its dotted path ("blocks.3.attn"), which names what it reports.
  void set_tap(Tap* tap);
  Tap* tap() const { return tap_; }
  const std::string& path() const { return path_; }
  // Lets `q` (nn/quant_point.h) replace activations at the tree's quantisation points; null
  // stops it.
  void set_quantizer(ActivationQuantizer* q);

 protected:
  // p (a parameter, or any tensor) in the compute dtype, differentiably; p itself when none is
  // set or p is undefined (an absent bias).
  Tensor working(const Tensor& p) const;
  // The tensor becomes a leaf that requires grad.
  Tensor register_param(const std::string& name, Tensor value, bool weight_decay);
  // x at the quantisation point "<path>.<suffix>" ("<path>" when suffix is empty): x itself,
  // or what the quantizer makes of it when one is set.
  Tensor quant_point(const char* suffix, const Tensor& x) const;
  template <class M>
  M& register_module(const std::string& name, std::unique_ptr<M> m) {
    M& ref = *m;
    children_.push_back({name, std::move(m)});
    return ref;
  }

 private:
  void collect(const std::string& prefix, ParamList& out) const;
  // Sets every module's path, then applies f to it, down the tree.
  void walk(const std::string& path, const std::function<void(Module&)>& f);
  std::vector<Param> params_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
  bool training_ = true;
  std::optional<DType> compute_dtype_;
  Tap* tap_ = nullptr;
  ActivationQuantizer* quantizer_ = nullptr;
  std::string path_;
};

// Initialisers (in place, seeded; the same numbers on every device).
void init_normal(Tensor& t, double std, Generator& gen);
void init_constant(Tensor& t, double value);

}  // namespace attn::nn
