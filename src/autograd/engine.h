// Reverse-mode autodiff over the recorded graph.
#pragma once
#include "tensor/tensor.h"

namespace attn::autograd {

// Runs the graph below `root` in reverse topological order. Gradients of leaves that require
// grad are accumulated (added) into their .grad(); each leaf's grad-ready hooks run as soon as
// its gradient is complete. The graph's saved tensors are freed afterwards unless retain_graph.
// Errors: root needs no grad; non-scalar root without a seed; the graph was already freed.
void backward(const Tensor& root, const Tensor& seed, bool retain_graph);

}  // namespace attn::autograd
