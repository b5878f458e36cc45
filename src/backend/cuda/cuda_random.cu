// Philox fills on the device: the same per-element function as the CPU (tensor/philox.h).
#include "backend/cuda/cuda_api.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/launch.h"
#include "tensor/philox.h"

namespace attn::cuda {

__global__ void fill_uniform_kernel(float* out, int64_t n, uint64_t seed, uint64_t offset,
                                    float lo, float hi) {
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = lo + (hi - lo) * philox_uniform(offset + i, seed);
}

__global__ void fill_normal_kernel(float* out, int64_t n, uint64_t seed, uint64_t offset,
                                   float mean, float std) {
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = static_cast<float>(mean + std * philox_normal(offset + i, seed));
}

static unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + 255) / 256); }

void fill_uniform_f32(float* out, int64_t n, uint64_t seed, uint64_t offset, float lo, float hi,
                      int device) {
  if (n == 0) return;
  ATTNLAB_CUDA_CHECK(cudaSetDevice(device));
  launch(fill_uniform_kernel, {blocks_for(n), 256, 0, cudaStreamPerThread}, out, n, seed, offset,
         lo, hi);
  ATTNLAB_CUDA_CHECK(cudaGetLastError());
}

void fill_normal_f32(float* out, int64_t n, uint64_t seed, uint64_t offset, float mean, float std,
                     int device) {
  if (n == 0) return;
  ATTNLAB_CUDA_CHECK(cudaSetDevice(device));
  launch(fill_normal_kernel, {blocks_for(n), 256, 0, cudaStreamPerThread}, out, n, seed, offset,
         mean, std);
  ATTNLAB_CUDA_CHECK(cudaGetLastError());
}

}  // namespace attn::cuda
