// A flat, reference-counted byte buffer on one device.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "tensor/dtype.h"

namespace attn {

class Storage {
 public:
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  // Mutable access counts as a write: version() changes with every call, so a value derived
  // from this storage (a parameter's cached bf16 copy) can tell whether it may be stale.
  void* data() {
    ++version_;
    return data_;
  }
  const void* data() const { return data_; }
  uint64_t version() const { return version_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

  // Bytes of tensor storage alive now and the peak since the last reset, per device kind.
  static size_t live_bytes(Device::Kind kind);
  static size_t peak_bytes(Device::Kind kind);
  static void reset_peak(Device::Kind kind);

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  uint64_t version_ = 0;
  Device device_;
};

// Copy bytes between any two devices (host<->device, device<->device).
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);

}  // namespace attn
