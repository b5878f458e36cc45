#include "autograd/engine.h"

#include <unordered_map>
#include <unordered_set>

#include "autograd/node.h"
#include "ops/ops.h"

namespace attn::autograd {

namespace {
thread_local bool g_grad_enabled = true;

// Post-order DFS (iterative: graphs of deep models overflow a recursive one), reversed.
// Holds strong references: releasing a node's inputs during backward may drop the last owner
// of a tensor that is still waiting in the order.
std::vector<std::shared_ptr<TensorImpl>> reverse_topological(const std::shared_ptr<TensorImpl>& root) {
  std::vector<std::shared_ptr<TensorImpl>> order;
  std::unordered_set<TensorImpl*> seen{root.get()};
  std::vector<std::pair<std::shared_ptr<TensorImpl>, size_t>> stack{{root, 0}};
  while (!stack.empty()) {
    auto& [t, next] = stack.back();
    Node* node = t->grad_fn.get();
    if (node && node->released)
      throw std::runtime_error(
          std::string("backward: the graph through op '") + op_name(node->op) +
          "' was already freed by an earlier backward(); pass retain_graph=true to the first "
          "call to run backward twice");
    if (node && next < node->inputs.size()) {
      const std::shared_ptr<TensorImpl>& in = node->inputs[next++].impl_ptr();
      if (in && in->requires_grad && seen.insert(in.get()).second) stack.push_back({in, 0});
      continue;
    }
    order.push_back(t);
    stack.pop_back();
  }
  return {order.rbegin(), order.rend()};
}

void accumulate(std::unordered_map<TensorImpl*, Tensor>& grads, TensorImpl* t, const Tensor& g) {
  if (g.shape() != t->shape)
    throw std::logic_error("backward: gradient of shape " + shape_str(g.shape()) +
                           " for a tensor of shape " + shape_str(t->shape));
  auto it = grads.find(t);
  if (it == grads.end()) grads.emplace(t, g);
  else it->second = add(it->second, g);  // never in place: g may alias another tensor
}

void finish_leaf(TensorImpl* leaf, const Tensor& g) {
  // A fresh tensor: g may share storage with another leaf's gradient (add's backward hands the
  // same g to both inputs), and optimizers and clipping update .grad() in place.
  Tensor total = leaf->grad ? add(Tensor(leaf->grad), g) : g.clone();
  leaf->grad = total.impl_ptr();
  for (auto& hook : leaf->grad_ready_hooks) hook(total);
}

}  // namespace

}  // namespace attn::autograd

namespace attn {

Node::~Node() {
  std::vector<Tensor> pending = std::move(inputs);
  while (!pending.empty()) {
    Tensor t = std::move(pending.back());
    pending.pop_back();
    const auto& impl = t.impl_ptr();
    // Only a graph nobody else holds is ours to take apart.
    if (impl && impl.use_count() == 1 && impl->grad_fn && impl->grad_fn.use_count() == 1) {
      for (Tensor& in : impl->grad_fn->inputs) pending.push_back(std::move(in));
      impl->grad_fn->inputs.clear();
    }
  }
}

}  // namespace attn

namespace attn::autograd {

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Tensor record(OpId op, Tensor out, std::vector<Tensor> inputs, BackwardFn backward) {
  if (!needs_grad(inputs)) return out;
  for (Tensor& in : inputs)
    if (in.defined() && !in.requires_grad()) in = Tensor();
  auto node = std::make_shared<Node>();
  node->op = op;
  node->inputs = std::move(inputs);
  node->backward = std::move(backward);
  out.impl().grad_fn = std::move(node);
  out.impl().requires_grad = true;
  return out;
}

void backward(const Tensor& root, const Tensor& seed, bool retain_graph) {
  if (!root.requires_grad())
    throw std::invalid_argument("backward: the tensor does not require grad (no input of the "
                                "ops that made it requires grad)");
  Tensor g0 = seed;
  if (!g0.defined()) {
    if (root.numel() != 1)
      throw std::invalid_argument("backward: the tensor has shape " + shape_str(root.shape()) +
                                  "; a non-scalar tensor needs a seed gradient of that shape");
    g0 = ones(root.shape(), {root.dtype(), root.device()});
  }
  NoGradGuard no_grad;
  std::unordered_map<TensorImpl*, Tensor> grads;
  accumulate(grads, root.impl_ptr().get(), g0);
  for (std::shared_ptr<TensorImpl>& held : reverse_topological(root.impl_ptr())) {
    // Dropped at the end of this iteration: an activation is freed once its node has run.
    std::shared_ptr<TensorImpl> owner = std::move(held);
    TensorImpl* t = owner.get();
    auto it = grads.find(t);
    if (it == grads.end()) continue;  // every path to it gave an undefined gradient
    Tensor g = std::move(it->second);
    grads.erase(it);
    Node* node = t->grad_fn.get();
    if (!node) {
      finish_leaf(t, g);
      continue;
    }
    std::vector<Tensor> in_grads = node->backward(g);
    if (in_grads.size() != node->inputs.size())
      throw std::logic_error(std::string("backward of '") + op_name(node->op) + "' returned " +
                             std::to_string(in_grads.size()) + " gradients for " +
                             std::to_string(node->inputs.size()) + " inputs");
    for (size_t i = 0; i < in_grads.size(); ++i) {
      TensorImpl* in = node->inputs[i].impl_ptr().get();
      if (in && in_grads[i].defined()) accumulate(grads, in, in_grads[i]);
    }
    if (!retain_graph) {
      node->inputs.clear();
      node->backward = nullptr;
      node->released = true;
    }
  }
}

}  // namespace attn::autograd
