// Host launchers of the data-movement families: permute and row copies (kernels/shape.cuh),
// embedding gather / scatter-add (kernels/embedding.cuh), RoPE (kernels/rope.cuh).
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "backend/cuda/ops_cuda_util.h"
#include "kernels/embedding.cuh"
#include "kernels/rope.cuh"
#include "kernels/shape.cuh"

namespace attn::cuda {

using detail::kThreads;
using detail::Scratch;
using detail::stream;
using kern::grid_for;

namespace {

// Calls f(W{}) with W an unsigned type of the element size (2, 4 or 8 bytes).
template <class F>
void dispatch_size(size_t elem_size, const char* what, F&& f) {
  switch (elem_size) {
    case 2: return f(uint16_t{});
    case 4: return f(uint32_t{});
    case 8: return f(uint64_t{});
  }
  throw std::invalid_argument(std::string(what) + ": unsupported element size " +
                              std::to_string(elem_size));
}

}  // namespace

void permute(size_t elem_size, const void* x, const std::vector<int64_t>& shape,
             const std::vector<int64_t>& dims, void* out, int device) {
  const size_t d = shape.size();
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  if (n == 0) return;
  std::vector<int64_t> in_stride(d);
  for (size_t i = d, s = 1; i-- > 0;) {
    in_stride[i] = static_cast<int64_t>(s);
    s *= static_cast<size_t>(shape[i]);
  }
  // Output dims innermost first, size-1 dims dropped, neighbours that are also neighbours in the
  // source (stride of the outer = stride·size of the inner) merged.
  struct Dim {
    int64_t size, stride;
  };
  std::vector<Dim> dl;
  for (size_t k = d; k-- > 0;) {
    const int64_t size = shape[dims[k]], stride = in_stride[dims[k]];
    if (size == 1) continue;
    if (!dl.empty() && stride == dl.back().stride * dl.back().size) {
      dl.back().size *= size;
      continue;
    }
    dl.push_back({size, stride});
  }
  if (dl.empty()) dl.push_back({1, 0});
  if (dl.size() > static_cast<size_t>(kern::kMaxPermuteDims))
    throw std::invalid_argument("permute: more than " + std::to_string(kern::kMaxPermuteDims) +
                                " dims after merging; not supported on CUDA");
  kern::PermuteIndex ix{};
  ix.nd = static_cast<int>(dl.size());
  for (int k = 0; k < ix.nd; ++k) {
    ix.size[k] = dl[dl.size() - 1 - k].size;
    ix.src_stride[k] = dl[dl.size() - 1 - k].stride;
  }
  detail::set_device(device);
  dispatch_size(elem_size, "permute", [&](auto tag) {
    using W = decltype(tag);
    launch(kern::permute_kernel<W>, {grid_for(n, kThreads), kThreads, 0, stream()},
           static_cast<const W*>(x), static_cast<W*>(out), n, ix);
    ATTNLAB_CUDA_LAUNCHED();
  });
}

void copy_rows(void* dst, int64_t dst_stride, const void* src, int64_t src_stride, int64_t outer,
               int64_t len, int device) {
  if (outer == 0 || len == 0) return;
  detail::set_device(device);
  // The widest word that divides both addresses, both strides and the length.
  const uint64_t bits = reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src) |
                        static_cast<uint64_t>(dst_stride) | static_cast<uint64_t>(src_stride) |
                        static_cast<uint64_t>(len);
  auto copy_words = [&](auto tag) {
    using W = decltype(tag);
    constexpr int64_t w = sizeof(W);
    const int64_t units = len / w;
    launch(kern::copy_rows_kernel<W>, {grid_for(outer * units, kThreads), kThreads, 0, stream()},
           static_cast<W*>(dst), dst_stride / w, static_cast<const W*>(src), src_stride / w, outer,
           units);
    ATTNLAB_CUDA_LAUNCHED();
  };
  if (bits % 16 == 0)
    copy_words(uint4{});
  else if (bits % 8 == 0)
    copy_words(uint2{});
  else if (bits % 4 == 0)
    copy_words(uint32_t{});
  else if (bits % 2 == 0)
    copy_words(uint16_t{});
  else
    copy_words(uint8_t{});
}

void embedding_forward(size_t elem_size, const void* weight, const void* ids, bool ids_i64,
                       int64_t n, int64_t D, void* out, int device) {
  if (n * D == 0) return;
  detail::set_device(device);
  dispatch_size(elem_size, "embedding", [&](auto tag) {
    using W = decltype(tag);
    launch(kern::embedding_gather_kernel<W>, {grid_for(n * D, kThreads), kThreads, 0, stream()},
           static_cast<const W*>(weight), ids, ids_i64, n, D, static_cast<W*>(out));
    ATTNLAB_CUDA_LAUNCHED();
  });
}

void embedding_backward(DType dt, const void* g, const void* ids, bool ids_i64, int64_t n,
                        int64_t V, int64_t D, void* dweight, int device) {
  if (V * D == 0) return;
  detail::set_device(device);
  detail::dispatch_float(dt, "embedding backward", [&](auto tag) {
    using T = decltype(tag);
    const bool direct = std::is_same_v<T, float>;  // f32 accumulates in place
    Scratch acc(direct ? 0 : V * D * sizeof(float));
    float* target = direct ? static_cast<float*>(dweight) : acc.as<float>();
    ATTNLAB_CUDA_CHECK(cudaMemsetAsync(target, 0, V * D * sizeof(float), stream()));
    if (n > 0) {
      launch(kern::embedding_scatter_kernel<T>, {grid_for(n * D, kThreads), kThreads, 0, stream()},
             static_cast<const T*>(g), ids, ids_i64, n, D, target);
      ATTNLAB_CUDA_LAUNCHED();
    }
    if (!direct) convert(dt, dweight, DType::F32, target, V * D, device);
  });
}

void rope(DType dt, const void* x, void* y, int64_t rows, int64_t T_len, int64_t D, double base,
          int64_t offset, bool inverse, int device) {
  const int64_t half = D / 2;
  if (rows * half == 0 || T_len == 0) return;
  detail::set_device(device);
  Scratch table(T_len * half * sizeof(float2));
  launch(kern::rope_table_kernel, {grid_for(T_len * half, kThreads), kThreads, 0, stream()},
         table.as<float2>(), T_len, half, D, base, offset);
  ATTNLAB_CUDA_LAUNCHED();
  detail::dispatch_float(dt, "rope", [&](auto tag) {
    using T = decltype(tag);
    launch(kern::rope_kernel<T>, {grid_for(rows * half, kThreads), kThreads, 0, stream()},
           static_cast<const T*>(x), static_cast<T*>(y), table.as<float2>(), rows, T_len, half,
           inverse);
    ATTNLAB_CUDA_LAUNCHED();
  });
}

}  // namespace attn::cuda
