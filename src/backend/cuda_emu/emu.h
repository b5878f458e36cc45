// An emulated CUDA device on the CPU, for machines without a GPU (this one, CI).
//
// The real backend sources (src/backend/cuda/*.cu, kernels/*.cuh) are compiled as C++ against
// the headers in include/ (cuda_runtime.h, cuda_bf16.h, math_constants.h, cublasLt.h), which
// come here. A launch runs the kernel's body once per CUDA thread, each thread a fiber (its own
// stack) on the calling OS thread, block after block. Fibers switch only where CUDA threads
// meet: __syncthreads (the whole block) and warp collectives (shuffles; the PTX emulation's
// ldmatrix and mma), so everything between two meeting points runs as one uninterrupted piece.
//
// What it checks, so that a kernel bug fails here rather than only on a GPU:
//  - every barrier and collective is reached by all the threads it needs (a divergent
//    __syncthreads, a shuffle in a partial warp, or threads that exited before a barrier stop
//    the program with the kernel's launch site and the threads' states);
//  - launch configurations as a device checks them (block size, grid limits, dynamic shared
//    memory over 48 KiB without cudaFuncSetAttribute, over the device's opt-in maximum);
//  - device allocations start filled with 0xff bytes (NaN in f32 and bf16) and carry guard
//    zones that every launch, memset and copy re-checks: a write past either end names the
//    kernel's launch site;
//  - copies and memsets name their device pointers' allocations (host/device mix-ups fail).
// It cannot check timing (races between fibers run in a fixed order), speed or PTX syntax.
//
// Device memory is host memory, so a test may read a device tensor's bytes directly.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>

// ---- CUDA C++ keywords ------------------------------------------------------------------------
#define __global__ inline  // kernels defined in headers may be included by several files
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// One OS thread runs the fibers of one block at a time: function-local statics are exactly
// per-block shared memory (not poisoned between blocks, unlike dynamic shared memory).
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

// ---- CUDA vector types used by the kernels ----------------------------------------------------
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }

// The current CUDA thread's coordinates (set by the emulator before each fiber runs).
inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
constexpr int warpSize = 32;

namespace attn::emu {

// Where a launch was written, and its configuration.
struct LaunchSite {
  dim3 grid, block;
  size_t smem;
  const char* file;
  int line;
};

// Runs body() once per thread of the grid (see the top of this file). A bad configuration sets
// the error that cudaGetLastError() returns and runs nothing, as a device does.
void launch_kernel(const void* kernel, const LaunchSite& site, const std::function<void()>& body);

// Stops the program: the message, the kernel's launch site and the current thread.
[[noreturn]] void fail(const std::string& what);

void sync_block();  // __syncthreads
// The 32 lanes of the calling warp each give `bytes` (at most kSlotBytes) and meet; the result
// points at 32 slots of kSlotBytes, lane l's value at l·kSlotBytes, valid until this lane's
// second-next exchange.
constexpr size_t kSlotBytes = 64;
const unsigned char* warp_exchange(const void* mine, size_t bytes);
int linear_thread();  // threadIdx.x + blockDim.x·(threadIdx.y + blockDim.y·threadIdx.z)

unsigned char* dynamic_smem();  // this block's dynamic shared memory
size_t dynamic_smem_bytes();
// Called after each thread's body returns (the PTX emulation checks its pending copies).
void add_thread_exit_check(void (*check)());

// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes); false when
// bytes is over the device's opt-in maximum.
bool set_max_dynamic_smem(const void* kernel, int bytes);
// Re-checks the guard zones of every live device allocation; `what` names the operation.
void check_guards(const std::string& what);

}  // namespace attn::emu

// ---- Device functions -------------------------------------------------------------------------
inline void __syncthreads() { attn::emu::sync_block(); }

template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= attn::emu::kSlotBytes, "shuffle of a large type");
  if (mask != 0xffffffffu || width != 32) attn::emu::fail("shuffle with a partial mask or width");
  const unsigned char* set = attn::emu::warp_exchange(&v, sizeof(T));
  const int lane = attn::emu::linear_thread() % 32;
  T r;
  std::memcpy(&r, set + static_cast<size_t>(lane ^ lane_mask) * attn::emu::kSlotBytes, sizeof(T));
  return r;
}

// Fibers switch only at barriers and collectives, so a read-modify-write is atomic here.
template <class T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}

inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}

// CUDA's min/max overloads live in the global namespace.
template <class T>
constexpr T min(T a, T b) {
  return b < a ? b : a;
}
template <class T>
constexpr T max(T a, T b) {
  return a < b ? b : a;
}
using std::isinf;
using std::isnan;

// ---- The runtime API (runtime.cpp) -------------------------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorNoDevice = 100,
  cudaErrorNotReady = 600,
};
using cudaError = cudaError_t;
struct EmuStream;
using cudaStream_t = EmuStream*;
#define cudaStreamPerThread (reinterpret_cast<cudaStream_t>(0x2))
struct EmuEvent;
using cudaEvent_t = EmuEvent*;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
enum cudaDeviceAttr {
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
  int major, minor;
  int multiProcessorCount;
  int warpSize;
  int maxThreadsPerBlock;
};

const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int* d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int d);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int d);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamQuery(cudaStream_t s);  // always done: streams are synchronous
// "emu-<pid>:<device>": each process's emulated device is a device of its own (one for all
// processes with ATTNLAB_EMU_SHARED_GPU=1).
cudaError_t cudaDeviceGetPCIBusId(char* id, int len, int device);
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t s);
cudaError_t cudaFree(void* p);
cudaError_t cudaFreeAsync(void* p, cudaStream_t s);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s);
cudaError_t cudaMemset(void* p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s);
cudaError_t cudaMemset2DAsync(void* p, size_t pitch, int value, size_t width, size_t height,
                              cudaStream_t s);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t stop);

template <class Kernel>
cudaError_t cudaFuncSetAttribute(Kernel* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0)
    return cudaErrorInvalidValue;
  return attn::emu::set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), value)
             ? cudaSuccess
             : cudaErrorInvalidValue;
}
