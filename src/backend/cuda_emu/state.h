// What the emulator's executor, runtime and cuBLASLt share.
#pragma once
#include <cstddef>

#include "backend/cuda_emu/emu.h"

namespace attn::emu {

// The emulated device: an H100's limits.
constexpr size_t kDefaultSmemBytes = 48 * 1024;  // dynamic shared memory without opting in
constexpr size_t kOptinSmemBytes = 227 * 1024;   // cudaDevAttrMaxSharedMemoryPerBlockOptin

void set_last_error(cudaError_t e);

// The live device allocation holding [p, p + bytes), or false.
bool in_device_allocation(const void* p, size_t bytes);

}  // namespace attn::emu
