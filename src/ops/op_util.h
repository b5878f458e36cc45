// Small checks and helpers shared by the op files.
#pragma once
#include <string>

#include "autograd/node.h"
#include "tensor/tensor.h"

namespace attn {

// Axis in [-dim, dim) -> [0, dim); throws naming the op otherwise.
int64_t normalize_axis(int64_t axis, int64_t dim, const char* op);

// Both defined, same dtype and device.
void check_same_kind(const Tensor& a, const Tensor& b, const char* op);

// Throws unless x is on the CPU (used until the CUDA backend implements the op).
void check_cpu(const Tensor& x, const char* op);

// Product of dims [begin, end).
int64_t prod(const Shape& s, size_t begin, size_t end);

// Sums g over the dimensions that broadcasting expanded, giving a tensor of `shape`.
Tensor sum_to_shape(const Tensor& g, const Shape& shape);

// The NumPy broadcast of two shapes; throws naming the op when they don't broadcast.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace attn
