#include "dist/make_communicator.h"

#include <fmt/format.h>

#include <stdexcept>

#include "dist/local_communicator.h"
#include "dist/nccl_communicator.h"
#if ATTNLAB_WITH_MPI
#include "dist/mpi_communicator.h"
#endif

namespace attn::dist {

InitMethod parse_init_method(const std::string& value) {
  if (value == "mpi") return InitMethod::Mpi;
  if (value == "file") return InitMethod::File;
  throw std::invalid_argument(
      fmt::format("config key 'dist.init': '{}', expected mpi or file", value));
}

bool built_with_mpi() {
#if ATTNLAB_WITH_MPI
  return true;
#else
  return false;
#endif
}

namespace {

// The host communicator: MPI, or a clear reason why not.
std::unique_ptr<Communicator> make_mpi(const ProcessPlace& place, const char* for_what) {
#if ATTNLAB_WITH_MPI
  (void)for_what;
  return std::make_unique<MpiCommunicator>(place);
#else
  throw std::runtime_error(fmt::format(
      "{} of {} ranks needs MPI, but this attnlab was built without it (install libopenmpi-dev "
      "and configure with -DATTNLAB_MPI=ON)",
      for_what, place.world_size));
#endif
}

}  // namespace

std::unique_ptr<Communicator> make_communicator(const ProcessPlace& place,
                                                const CommOptions& options) {
  if (place.world_size == 1) return std::make_unique<LocalCommunicator>();
  if (options.device.is_cpu()) {
    if (options.init == InitMethod::File)
      throw std::invalid_argument(
          "config key 'dist.init': file is NCCL's rendezvous (CUDA); a CPU job of several ranks "
          "talks over MPI: use dist.init=mpi and start it with mpirun or srun");
    return make_mpi(place, "a CPU job");
  }
  if (!built_with_nccl()) return make_nccl_communicator(place, {});  // throws, saying why
  NcclOptions o;
  o.device = options.device.index;
  o.timeout = options.timeout;
  if (options.init == InitMethod::Mpi) {
    o.host = make_mpi(place, "NCCL's bootstrap over MPI (dist.init=mpi)");
  } else {
    if (options.init_file.empty())
      throw std::invalid_argument("dist.init=file needs the rendezvous path (dist.init_file)");
    o.rendezvous_file = options.init_file;
  }
  return make_nccl_communicator(place, std::move(o));
}

}  // namespace attn::dist
