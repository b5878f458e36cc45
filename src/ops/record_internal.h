// How two ops record their nodes, for ops that compute the same outputs another way (linear_gelu
// runs linear and gelu as one cuBLASLt call but records the two ops, so that its graph and
// gradients are exactly those of gelu(linear(x, w, b))).
#pragma once
#include "ops/ops.h"

namespace attn {

// y = f(x) already computed for the unary op `op` (exponent p for pow): attaches its node.
Tensor record_unary(OpId op, Tensor y, const Tensor& x, double p = 0);

// y = x·Wᵀ + b already computed, rows of x flattened to R: attaches linear's node.
Tensor record_linear(Tensor y, const Tensor& x, const Tensor& w, const Tensor& b, int64_t R);

}  // namespace attn
