// A node of the define-by-run graph: the op that made a tensor, its inputs and its backward.
#pragma once
#include <functional>
#include <vector>

#include "ops/op_ids.h"
#include "tensor/tensor.h"

namespace attn {

// Maps dL/d(output) to dL/d(input) for each input (same order; an undefined Tensor for an
// input that needs no gradient). Runs with grad mode off.
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_out)>;

// Where the gradient of one input goes: the node of the op that made it, or the input itself
// when it is a leaf (a parameter, or a tensor marked requires_grad). A node holds no non-leaf
// input tensor, so an activation lives only as long as its owner or a backward closure that
// saved it: the graph alone never keeps one.
struct Edge {
  std::shared_ptr<Node> node;
  std::shared_ptr<TensorImpl> leaf;
  bool defined() const { return node || leaf; }
};

struct Node {
  OpId op;
  Shape out_shape;           // of the tensor it made: its gradient must have this shape
  std::vector<Edge> inputs;  // one per input; empty where the input needs no grad
  BackwardFn backward;
  bool released = false;  // saved tensors freed after a backward without retain_graph

  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  // Unlinks the graph below iteratively: a recursive release of a deep graph (say, 10⁵ ops never
  // run backward) would overflow the stack.
  ~Node();
};

namespace autograd {

// Grad mode is per thread; NoGradGuard turns recording off for its scope.
bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// True when an op over these inputs would be recorded.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Attaches a node to `out` when grad mode is on and some input requires grad; returns `out`.
// The backward closure must not capture `out` itself (that would be a reference cycle):
// capture out.detach() when the backward needs the output's values.
Tensor record(OpId op, Tensor out, std::vector<Tensor> inputs, BackwardFn backward);

}  // namespace autograd

using autograd::NoGradGuard;

}  // namespace attn
