// The emulator's runtime API: one device (an H100's limits), synchronous streams, device memory
// on the host heap with poisoned contents and guard zones, events on the host clock.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <string>

#include <unistd.h>

#include "backend/cuda_emu/emu.h"
#include "backend/cuda_emu/state.h"

struct EmuEvent {
  std::chrono::steady_clock::time_point at;
  bool recorded = false;
};

namespace attn::emu {

namespace {

constexpr size_t kGuardBytes = 256;  // before and after each allocation; also its alignment
constexpr unsigned char kGuardByte = 0xa5;
constexpr unsigned char kPoisonByte = 0xff;  // fresh memory: NaN in f32 and bf16

struct Allocation {
  size_t bytes;
  unsigned char* block;  // guard, bytes, guard
};

struct Runtime {
  std::mutex mutex;
  std::map<const unsigned char*, Allocation> live;  // by user pointer
  int device = 0;
};

Runtime& rt() {
  static Runtime r;
  return r;
}

thread_local cudaError_t t_last_error = cudaSuccess;

cudaError_t error(cudaError_t e) {
  if (e != cudaSuccess) t_last_error = e;
  return e;
}

bool guards_intact(const Allocation& a) {
  const unsigned char* tail = a.block + kGuardBytes + a.bytes;
  for (size_t i = 0; i < kGuardBytes; ++i)
    if (a.block[i] != kGuardByte || tail[i] != kGuardByte) return false;
  return true;
}

// The allocation holding [p, p + bytes) (called with the mutex held), or null.
const Allocation* find(const void* p, size_t bytes) {
  const auto* c = static_cast<const unsigned char*>(p);
  auto& live = rt().live;
  auto it = live.upper_bound(c);
  if (it == live.begin()) return nullptr;
  --it;
  if (c + bytes > it->first + it->second.bytes) return nullptr;
  return &it->second;
}

void require_device(const void* p, size_t bytes, const char* what) {
  std::lock_guard<std::mutex> lock(rt().mutex);
  if (!find(p, bytes))
    fail(std::string(what) + ": " + std::to_string(bytes) + " bytes at " +
         std::to_string(reinterpret_cast<uintptr_t>(p)) + " are not inside one device allocation");
}

bool device_side(cudaMemcpyKind kind, bool dst) {
  return dst ? (kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice)
             : (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice);
}

}  // namespace

void set_last_error(cudaError_t e) { error(e); }

bool in_device_allocation(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(rt().mutex);
  return find(p, bytes) != nullptr;
}

void check_guards(const std::string& what) {
  std::lock_guard<std::mutex> lock(rt().mutex);
  for (const auto& [p, a] : rt().live)
    if (!guards_intact(a))
      fail(what + " wrote outside a device allocation of " + std::to_string(a.bytes) +
           " bytes (its guard zone changed)");
}

}  // namespace attn::emu

using namespace attn::emu;

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorNoDevice:
      return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorNotReady:
      return "device not ready";
  }
  return "unknown error";
}

cudaError_t cudaGetLastError() {
  cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return t_last_error; }

cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
  if (d != 0) return error(cudaErrorInvalidDevice);
  rt().device = d;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  *d = rt().device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int d) {
  if (d != 0) return error(cudaErrorInvalidDevice);
  *prop = {};
  std::snprintf(prop->name, sizeof prop->name, "attnlab CUDA emulator (CPU; H100 limits)");
  prop->totalGlobalMem = size_t{80} << 30;
  prop->sharedMemPerBlock = kDefaultSmemBytes;
  prop->sharedMemPerBlockOptin = kOptinSmemBytes;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 132;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int d) {
  if (d != 0) return error(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = kDefaultSmemBytes;
      return cudaSuccess;
    case cudaDevAttrMultiProcessorCount:
      *value = 132;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = kOptinSmemBytes;
      return cudaSuccess;
  }
  return error(cudaErrorInvalidValue);
}

cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamQuery(cudaStream_t) { return cudaSuccess; }

cudaError_t cudaDeviceGetPCIBusId(char* id, int len, int d) {
  if (d != 0) return error(cudaErrorInvalidDevice);
  if (!id || len <= 0) return error(cudaErrorInvalidValue);
  // ATTNLAB_EMU_SHARED_GPU=1: every process's device is the same one (tests of the refusal of
  // two ranks on one GPU).
  const char* shared = std::getenv("ATTNLAB_EMU_SHARED_GPU");
  const long owner = shared && shared[0] == '1' ? 0L : static_cast<long>(::getpid());
  std::snprintf(id, static_cast<size_t>(len), "emu-%ld:%d", owner, d);
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  auto* block = static_cast<unsigned char*>(
      ::operator new (bytes + 2 * kGuardBytes, std::align_val_t{kGuardBytes}, std::nothrow));
  if (!block) return error(cudaErrorMemoryAllocation);
  std::memset(block, kGuardByte, kGuardBytes);
  std::memset(block + kGuardBytes, kPoisonByte, bytes);
  std::memset(block + kGuardBytes + bytes, kGuardByte, kGuardBytes);
  unsigned char* user = block + kGuardBytes;
  {
    std::lock_guard<std::mutex> lock(rt().mutex);
    rt().live[user] = {bytes, block};
  }
  *p = user;
  return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }

cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  Allocation a;
  {
    std::lock_guard<std::mutex> lock(rt().mutex);
    auto it = rt().live.find(static_cast<unsigned char*>(p));
    if (it == rt().live.end()) fail("cudaFree of a pointer that is not a live device allocation");
    a = it->second;
    if (!guards_intact(a))
      fail("a device allocation of " + std::to_string(a.bytes) +
           " bytes was written outside its bounds (found at its free)");
    rt().live.erase(it);
  }
  ::operator delete (a.block, std::align_val_t{kGuardBytes});
  return cudaSuccess;
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return cudaSuccess;
  if (kind == cudaMemcpyDefault) return error(cudaErrorInvalidValue);  // not used by attnlab
  if (device_side(kind, true)) require_device(dst, bytes, "cudaMemcpy destination");
  if (device_side(kind, false)) require_device(src, bytes, "cudaMemcpy source");
  std::memmove(dst, src, bytes);
  check_guards("cudaMemcpy");
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}

cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  if (bytes == 0) return cudaSuccess;
  require_device(p, bytes, "cudaMemset");
  std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  return cudaMemset(p, value, bytes);
}

cudaError_t cudaMemset2DAsync(void* p, size_t pitch, int value, size_t width, size_t height,
                              cudaStream_t) {
  if (width > pitch) return error(cudaErrorInvalidValue);
  if (width == 0 || height == 0) return cudaSuccess;
  require_device(p, pitch * (height - 1) + width, "cudaMemset2D");
  for (size_t r = 0; r < height; ++r) std::memset(static_cast<char*>(p) + r * pitch, value, width);
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new EmuEvent;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  e->at = std::chrono::steady_clock::now();
  e->recorded = true;
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t stop) {
  if (!start->recorded || !stop->recorded) return error(cudaErrorInvalidValue);
  *ms = std::chrono::duration<float, std::milli>(stop->at - start->at).count();
  return cudaSuccess;
}
