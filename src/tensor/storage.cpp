#include "tensor/storage.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "backend/cuda/cuda_api.h"

namespace attn {

static constexpr size_t kCpuAlignment = 64;  // one cache line, enough for AVX-512 loads

namespace {
struct Usage {
  std::atomic<size_t> live{0}, peak{0};
  void add(size_t n) {
    size_t now = live.fetch_add(n) + n, p = peak.load();
    while (now > p && !peak.compare_exchange_weak(p, now)) {
    }
  }
};
Usage g_usage[2];  // indexed by Device::Kind
}  // namespace

size_t Storage::live_bytes(Device::Kind k) { return g_usage[k].live.load(); }
size_t Storage::peak_bytes(Device::Kind k) { return g_usage[k].peak.load(); }
void Storage::reset_peak(Device::Kind k) { g_usage[k].peak.store(g_usage[k].live.load()); }

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  if (device.is_cpu()) {
    size_t rounded = (bytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
    data_ = std::aligned_alloc(kCpuAlignment, rounded == 0 ? kCpuAlignment : rounded);
    if (!data_) throw std::bad_alloc();
  } else {
    data_ = cuda::device_alloc(bytes, device.index);
  }
  g_usage[device.kind].add(bytes);
}

Storage::~Storage() {
  g_usage[device_.kind].live.fetch_sub(bytes_);
  if (device_.is_cpu()) {
    std::free(data_);
  } else {
    cuda::device_free(data_, device_.index);
  }
}

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev.is_cpu() && src_dev.is_cpu()) {
    std::memcpy(dst, src, bytes);
  } else {
    cuda::copy(dst, dst_dev.is_cuda(), src, src_dev.is_cuda(), bytes);
  }
}

}  // namespace attn
