#include "autograd/engine.h"

#include <unordered_map>
#include <unordered_set>

#include "autograd/node.h"
#include "ops/ops.h"

namespace attn::autograd {

namespace {
thread_local bool g_grad_enabled = true;

// A vertex of the graph: the node of an op, or a leaf.
const void* key(const Edge& e) {
  return e.node ? static_cast<const void*>(e.node.get()) : e.leaf.get();
}
const Shape& shape_of(const Edge& e) { return e.node ? e.node->out_shape : e.leaf->shape; }

// Post-order DFS (iterative: graphs of deep models overflow a recursive one), reversed.
// Holds strong references: releasing a node's inputs during backward may drop the last owner
// of a vertex that is still waiting in the order.
std::vector<Edge> reverse_topological(const Edge& root) {
  std::vector<Edge> order;
  std::unordered_set<const void*> seen{key(root)};
  std::vector<std::pair<Edge, size_t>> stack{{root, 0}};
  while (!stack.empty()) {
    auto& [e, next] = stack.back();
    Node* node = e.node.get();
    if (node && node->released)
      throw std::runtime_error(
          std::string("backward: the graph through op '") + op_name(node->op) +
          "' was already freed by an earlier backward(); pass retain_graph=true to the first "
          "call to run backward twice");
    if (node && next < node->inputs.size()) {
      const Edge& in = node->inputs[next++];
      if (in.defined() && seen.insert(key(in)).second) stack.push_back({in, 0});
      continue;
    }
    order.push_back(e);
    stack.pop_back();
  }
  return {order.rbegin(), order.rend()};
}

void accumulate(std::unordered_map<const void*, Tensor>& grads, const Edge& to, const Tensor& g) {
  if (g.shape() != shape_of(to))
    throw std::logic_error("backward: gradient of shape " + shape_str(g.shape()) +
                           " for a tensor of shape " + shape_str(shape_of(to)));
  auto it = grads.find(key(to));
  if (it == grads.end())
    grads.emplace(key(to), g);
  else it->second = add(it->second, g);  // never in place: g may alias another tensor
}

void finish_leaf(TensorImpl* leaf, const Tensor& g) {
  // A fresh tensor: g may share storage with another leaf's gradient (add's backward hands the
  // same g to both inputs), and optimizers and clipping update .grad() in place.
  Tensor total = leaf->grad ? add(Tensor(leaf->grad), g) : g.clone();
  leaf->grad = total.impl_ptr();
  for (auto& hook : leaf->grad_ready_hooks) hook(total);
}

Edge edge_to(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  if (t.grad_fn()) return {t.grad_fn(), nullptr};
  return {nullptr, t.impl_ptr()};
}

}  // namespace

}  // namespace attn::autograd

namespace attn {

Node::~Node() {
  // Only a graph nobody else holds is ours to take apart, one node at a time.
  std::vector<std::shared_ptr<Node>> pending;
  for (Edge& e : inputs)
    if (e.node) pending.push_back(std::move(e.node));
  inputs.clear();
  while (!pending.empty()) {
    std::shared_ptr<Node> n = std::move(pending.back());
    pending.pop_back();
    if (n.use_count() != 1) continue;
    for (Edge& e : n->inputs)
      if (e.node) pending.push_back(std::move(e.node));
    n->inputs.clear();
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
  auto node = std::make_shared<Node>();
  node->op = op;
  node->out_shape = out.shape();
  for (const Tensor& in : inputs) node->inputs.push_back(edge_to(in));
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
  const Edge start = edge_to(root);
  std::unordered_map<const void*, Tensor> grads;
  accumulate(grads, start, g0);
  for (Edge& held : reverse_topological(start)) {
    // Dropped at the end of this iteration: a node's saved tensors go once it has run.
    const Edge e = std::move(held);
    auto it = grads.find(key(e));
    if (it == grads.end()) continue;  // every path to it gave an undefined gradient
    Tensor g = std::move(it->second);
    grads.erase(it);
    if (!e.node) {
      finish_leaf(e.leaf.get(), g);
      continue;
    }
    Node* node = e.node.get();
    std::vector<Tensor> in_grads = node->backward(g);
    if (in_grads.size() != node->inputs.size())
      throw std::logic_error(std::string("backward of '") + op_name(node->op) + "' returned " +
                             std::to_string(in_grads.size()) + " gradients for " +
                             std::to_string(node->inputs.size()) + " inputs");
    for (size_t i = 0; i < in_grads.size(); ++i)
      if (node->inputs[i].defined() && in_grads[i].defined())
        accumulate(grads, node->inputs[i], in_grads[i]);
    if (!retain_graph) {
      node->inputs.clear();
      node->backward = nullptr;
      node->released = true;
    }
  }
}

}  // namespace attn::autograd
