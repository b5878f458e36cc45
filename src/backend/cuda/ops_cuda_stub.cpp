// CPU-only build: the op launchers of ops_cuda.h are absent. No CUDA tensor can exist in such a
// build (device_alloc throws first), so these are reached only by a direct call.
#include <stdexcept>

#include "backend/cuda/ops_cuda.h"

namespace attn::cuda {

namespace {
[[noreturn]] void no_cuda() {
  throw std::runtime_error("this attnlab was built without CUDA (configure with -DATTNLAB_CUDA=ON)");
}
}  // namespace

void fill(DType, void*, int64_t, double, int) { no_cuda(); }
void convert(DType, void*, DType, const void*, int64_t, int) { no_cuda(); }
void unary_forward(UnaryOp, DType, const void*, void*, int64_t, double, int) { no_cuda(); }
void unary_backward(UnaryOp, DType, const void*, const void*, void*, int64_t, double, int) {
  no_cuda();
}
void binary(BinaryOp, DType, const void*, const std::vector<int64_t>&, const void*,
            const std::vector<int64_t>&, void*, const std::vector<int64_t>&, int) {
  no_cuda();
}
void select(DType, const void*, DType, bool, const void*, const void*, double, void*, int64_t, int) {
  no_cuda();
}
void dropout(DType, const void*, void*, int64_t, double, uint64_t, uint64_t, int) { no_cuda(); }
void sum_axis(DType, const void*, void*, int64_t, int64_t, int64_t, double, int) { no_cuda(); }
void broadcast_axis(DType, const void*, void*, int64_t, int64_t, int64_t, double, int) { no_cuda(); }
void max_axis(DType, const void*, void*, int64_t*, int64_t, int64_t, int64_t, int) { no_cuda(); }
void max_axis_backward(DType, const void*, const int64_t*, void*, int64_t, int64_t, int64_t, int) {
  no_cuda();
}
void softmax_forward(DType, const void*, void*, int64_t, int64_t, bool, int) { no_cuda(); }
void softmax_backward(DType, const void*, const void*, void*, int64_t, int64_t, bool, int) {
  no_cuda();
}
void cross_entropy_forward(DType, const void*, const void*, bool, int64_t, int64_t, int64_t,
                           int64_t, float*, void*, int) {
  no_cuda();
}
void cross_entropy_backward(DType, const void*, const float*, const void*, bool, int64_t, int64_t,
                            int64_t, int64_t, const void*, void*, int) {
  no_cuda();
}
void ctc_loss_forward(DType, const void*, const CtcLabels&, CtcReduce, bool, float*, double*,
                      double*, void*, int) {
  no_cuda();
}
void ctc_loss_backward(DType, const void*, const CtcLabels&, CtcReduce, bool, const float*,
                       const double*, const double*, const void*, void*, int) {
  no_cuda();
}
void norm_forward(DType, const void*, const void*, const void*, void*, float*, float*, int64_t,
                  int64_t, double, bool, int) {
  no_cuda();
}
void norm_backward(DType, const void*, const void*, const void*, const float*, const float*, void*,
                   void*, void*, int64_t, int64_t, bool, int) {
  no_cuda();
}
void embedding_forward(size_t, const void*, const void*, bool, int64_t, int64_t, void*, int) {
  no_cuda();
}
void embedding_backward(DType, const void*, const void*, bool, int64_t, int64_t, int64_t, void*,
                        int) {
  no_cuda();
}
void permute(size_t, const void*, const std::vector<int64_t>&, const std::vector<int64_t>&, void*,
             int) {
  no_cuda();
}
void copy_rows(void*, int64_t, const void*, int64_t, int64_t, int64_t, int) { no_cuda(); }
void rope(DType, const void*, void*, int64_t, int64_t, int64_t, double, int64_t, bool, int) {
  no_cuda();
}
bool gemm_bias_gelu(DType, bool, bool, int64_t, int64_t, int64_t, const void*, int64_t, const void*,
                    int64_t, void*, void*, int64_t, const void*, int) {
  no_cuda();
}
void conv2d_forward(DType, const Conv2dShape&, const void*, const void*, const void*, void*,
                    int64_t, int) {
  no_cuda();
}
void conv2d_backward(DType, const Conv2dShape&, const void*, const void*, const void*, void*, void*,
                     int64_t, int) {
  no_cuda();
}
void adamw_step(float*, float*, float*, DType, const void*, bf16*, int64_t, const AdamWScalars&,
                int) {
  no_cuda();
}
double sum_squares(const std::vector<GradRef>&, int) { no_cuda(); }
void scale_inplace(DType, void*, int64_t, double, int) { no_cuda(); }
void gemm(DType, bool, bool, int64_t, int64_t, int64_t, const void*, int64_t, int64_t, const void*,
          int64_t, int64_t, void*, int64_t, int64_t, int64_t, int, const void*) {
  no_cuda();
}

}  // namespace attn::cuda
