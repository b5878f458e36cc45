// The one checked write(2) loop every file writer shares (run files, logs, the feature cache,
// the speech corpus, the NCCL rendezvous, the sweep's logs).
#pragma once
#include <cstddef>

namespace attn::util {

// Writes all n bytes to fd, retrying EINTR and short writes. false with errno set on a failure;
// a write that makes no progress counts as ENOSPC (POSIX lets write(2) return 0 on a full disk).
bool write_all(int fd, const void* data, size_t n);

}  // namespace attn::util
