// The host-side face of the CUDA backend. In a CPU-only build (ATTNLAB_WITH_CUDA undefined)
// these are stubs: device_count() is 0 and everything else throws a clear error.
#pragma once
#include <cstddef>
#include <cstdint>

namespace attn::cuda {

bool built_with_cuda();
int device_count();  // 0 when no driver or no device is visible
void* device_alloc(size_t bytes, int device);
void device_free(void* p, int device);
// Waits for the work queued on this thread's stream of `device` (timers; bench train).
void synchronize(int device);
// Synchronous copy; each side is host or device memory as flagged.
void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t bytes);

// Fill n floats (f32) with Philox draws, element i from counter offset + i (see tensor/philox.h).
void fill_uniform_f32(float* out, int64_t n, uint64_t seed, uint64_t offset, float lo, float hi,
                      int device);
void fill_normal_f32(float* out, int64_t n, uint64_t seed, uint64_t offset, float mean, float std,
                     int device);

}  // namespace attn::cuda
