// Every differentiable op has an id here. A backward node can only be recorded under one of
// these ids, and tests/test_gradcheck.cpp fails for any id without a finite-difference case:
// adding an op without a gradient check is caught by the suite.
#pragma once

namespace attn {

#define ATTNLAB_OPS(X)                                                                       \
  X(Matmul) X(Add) X(Sub) X(Mul) X(Div) X(Neg) X(Exp) X(Log) X(Sqrt) X(Rsqrt) X(Pow) X(Tanh) \
  X(Sigmoid) X(Relu) X(Gelu) X(Silu) X(Round) X(Sum) X(Mean) X(Max) X(Softmax) X(LogSoftmax)          \
  X(CrossEntropy) X(LayerNorm) X(RmsNorm) X(Embedding) X(Reshape) X(Permute) X(Concat)        \
  X(Slice) X(Dropout) X(Where) X(MaskedFill) X(Attention) X(Rope) X(Cast) X(Linear)       \
  X(Conv2d) X(CtcLoss)

enum class OpId {
#define ATTNLAB_OP_ENUM(name) name,
  ATTNLAB_OPS(ATTNLAB_OP_ENUM)
#undef ATTNLAB_OP_ENUM
};

const char* op_name(OpId op);
int op_count();
OpId op_by_index(int i);

}  // namespace attn
