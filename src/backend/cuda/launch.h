// One way to start a kernel: launch(kernel, {grid, block, smem, stream}, args...) is
// kernel<<<grid, block, smem, stream>>>(args...). In an emulated build (ATTNLAB_CUDA_EMULATION,
// src/backend/cuda_emu/) the same kernel source runs instead on the CPU emulator of a CUDA device,
// which also learns where the launch was written (file and line) for its error messages.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

namespace attn::cuda {

struct LaunchConfig {
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
#if defined(ATTNLAB_CUDA_EMULATION)
  const char* file;
  int line;
  LaunchConfig(dim3 g, dim3 b, size_t s, cudaStream_t st, const char* f = __builtin_FILE(),
               int l = __builtin_LINE())
      : grid(g), block(b), smem(s), stream(st), file(f), line(l) {}
#else
  LaunchConfig(dim3 g, dim3 b, size_t s, cudaStream_t st)
      : grid(g), block(b), smem(s), stream(st) {}
#endif
};

template <class... Params, class... Args>
void launch(void (*kernel)(Params...), const LaunchConfig& c, Args&&... args) {
#if defined(ATTNLAB_CUDA_EMULATION)
  emu::launch_kernel(reinterpret_cast<const void*>(kernel),
                     {c.grid, c.block, c.smem, c.file, c.line}, [&] { kernel(args...); });
#else
  // clang-format does not know the launch syntax outside .cu files.
  // clang-format off
  kernel<<<c.grid, c.block, c.smem, c.stream>>>(std::forward<Args>(args)...);
  // clang-format on
#endif
}

}  // namespace attn::cuda
