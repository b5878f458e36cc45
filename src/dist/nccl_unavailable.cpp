// The NCCL backend's entry points in a build without NCCL (CPU-only, or CUDA without libnccl).
#include <fmt/format.h>

#include <stdexcept>

#include "dist/make_communicator.h"
#include "dist/nccl_communicator.h"

namespace attn::dist {

bool built_with_nccl() { return false; }

std::unique_ptr<Communicator> make_nccl_communicator(const ProcessPlace& place, NcclOptions) {
  throw std::runtime_error(fmt::format(
      "a CUDA job of {} ranks needs NCCL, but this attnlab was built without it (configure a CUDA "
      "build where nccl.h and libnccl are installed, with -DATTNLAB_MPI=AUTO or ON)",
      place.world_size));
}

}  // namespace attn::dist
