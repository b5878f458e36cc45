// Device memory: a stream-ordered pool (cudaMallocAsync) on the default stream, and copies.
#include "backend/cuda/cuda_api.h"
#include "backend/cuda/cuda_check.h"

namespace attn::cuda {

bool built_with_cuda() { return true; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return n;
}

void* device_alloc(size_t bytes, int device) {
  ATTNLAB_CUDA_CHECK(cudaSetDevice(device));
  void* p = nullptr;
  ATTNLAB_CUDA_CHECK(cudaMallocAsync(&p, bytes == 0 ? 1 : bytes, cudaStreamPerThread));
  return p;
}

void device_free(void* p, int device) {
  if (!p) return;
  // Never throw from a destructor path: a failed free at exit is not worth a terminate().
  if (cudaSetDevice(device) == cudaSuccess) cudaFreeAsync(p, cudaStreamPerThread);
}

void synchronize(int device) {
  ATTNLAB_CUDA_CHECK(cudaSetDevice(device));
  ATTNLAB_CUDA_CHECK(cudaStreamSynchronize(cudaStreamPerThread));
}

void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t bytes) {
  cudaMemcpyKind kind = dst_on_device ? (src_on_device ? cudaMemcpyDeviceToDevice
                                                       : cudaMemcpyHostToDevice)
                                      : (src_on_device ? cudaMemcpyDeviceToHost
                                                       : cudaMemcpyHostToHost);
  ATTNLAB_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, cudaStreamPerThread));
  ATTNLAB_CUDA_CHECK(cudaStreamSynchronize(cudaStreamPerThread));
}

}  // namespace attn::cuda
