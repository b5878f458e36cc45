// CPU-only build: the CUDA backend is absent.
#include <stdexcept>

#include "backend/cuda/cuda_api.h"
#include "backend/cuda/flash_attention.h"

namespace attn::cuda {

[[noreturn]] static void no_cuda() {
  throw std::runtime_error("this attnlab was built without CUDA (configure with -DATTNLAB_CUDA=ON)");
}

bool built_with_cuda() { return false; }
int device_count() { return 0; }
void* device_alloc(size_t, int) { no_cuda(); }
void device_free(void*, int) {}
void synchronize(int) { no_cuda(); }
void copy(void*, bool, const void*, bool, size_t) { no_cuda(); }
void fill_uniform_f32(float*, int64_t, uint64_t, uint64_t, float, float, int) { no_cuda(); }
void fill_normal_f32(float*, int64_t, uint64_t, uint64_t, float, float, int) { no_cuda(); }
bool flash_attention_supports_head_dim(int64_t D) { return D == 64 || D == 128; }
void flash_attention_forward(const FlashAttnConfig&, const bf16*, const bf16*, const bf16*, bf16*,
                             float*) {
  no_cuda();
}
void flash_attention_backward(const FlashAttnConfig&, const bf16*, const bf16*, const bf16*,
                              const bf16*, const float*, const bf16*, bf16*, bf16*, bf16*, float*,
                              float*, float*) {
  no_cuda();
}

}  // namespace attn::cuda
