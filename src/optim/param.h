// A trainable parameter as the optimizer and the checkpoint see it.
#pragma once
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace attn {

struct Param {
  std::string name;           // dotted path, e.g. "blocks.0.attn.wq.weight"
  Tensor value;               // a leaf with requires_grad
  bool weight_decay = true;   // false for norms, biases, embeddings and LayerScale by default
};

using ParamList = std::vector<Param>;

}  // namespace attn
