// Host-side helpers shared by the op launchers (ops_cuda_*.cu, gemm_cuda.cu); CUDA code only.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/launch.h"
#include "backend/cuda/ops_cuda.h"

// After every kernel launch: a bad configuration is reported here, with file and line.
#define ATTNLAB_CUDA_LAUNCHED() ATTNLAB_CUDA_CHECK(cudaGetLastError())

namespace attn::cuda::detail {

constexpr int kThreads = 256;  // 1-D blocks: 8 warps

inline cudaStream_t stream() { return cudaStreamPerThread; }
inline void set_device(int device) { ATTNLAB_CUDA_CHECK(cudaSetDevice(device)); }

// Calls f(float{}) or f(bf16{}) for the storage type; anything else throws naming `what`.
template <class F>
void dispatch_float(DType dt, const char* what, F&& f) {
  if (dt == DType::F32) return f(float{});
  if (dt == DType::BF16) return f(bf16{});
  throw std::invalid_argument(std::string(what) + ": CUDA kernels take f32 or bf16, got " +
                              dtype_name(dt));
}

// Stream-ordered scratch memory (the cudaMallocAsync pool the tensors use): freed on the stream
// after the kernels queued before the destructor, so it may go out of scope right after them.
// Zero bytes: no allocation, a null pointer.
class Scratch {
 public:
  explicit Scratch(size_t bytes) {
    if (bytes > 0) ATTNLAB_CUDA_CHECK(cudaMallocAsync(&p_, bytes, stream()));
  }
  ~Scratch() {
    if (p_) cudaFreeAsync(p_, stream());
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
};

}  // namespace attn::cuda::detail
