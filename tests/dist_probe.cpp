// A small program that test_dist_launch runs under mpirun (or without it) to watch a whole job
// from outside: its exit code, its time and its stderr.
//   dist_probe abort cpu|cuda        rank 1 calls abort(3, ...) while the others wait in a barrier
//   dist_probe file cuda PATH        NCCL through the file rendezvous: an all-reduce, checked
//   dist_probe place                 makes the communicator of this environment (errors printed)
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "dist/launch_env.h"
#include "dist/make_communicator.h"

using namespace attn;
using namespace attn::dist;

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  CommOptions o;
  o.device = argc > 2 && std::strcmp(argv[2], "cuda") == 0 ? Device::cuda(0) : Device::cpu();
  o.timeout = std::chrono::seconds(20);
  try {
    if (mode == "file") {
      o.init = InitMethod::File;
      o.init_file = argc > 3 ? argv[3] : "";
    }
    auto comm = make_communicator(detect_process_place(), o);
    if (mode == "abort") {
      comm->barrier();
      if (comm->rank() == 1) comm->abort(3, "gave up on purpose");
      comm->barrier();  // never returns: rank 1 is gone and mpirun ends the job
      std::fprintf(stderr, "rank %d: the barrier returned after an abort\n", comm->rank());
      return 0;  // the test checks the job's exit code is not 0
    }
    if (mode == "file") {
      Tensor t = from_vector({1.0 + comm->rank()}, {1}, {DType::F32, o.device});
      comm->all_reduce(t);
      const double want = comm->world_size() * (comm->world_size() + 1) / 2.0;
      if (t.to_vector()[0] != want) {
        std::fprintf(stderr, "rank %d: sum %g, want %g\n", comm->rank(), t.to_vector()[0], want);
        return 1;
      }
      comm->barrier();
      std::printf("rank %d of %d: ok\n", comm->rank(), comm->world_size());
      return 0;
    }
    std::printf("rank %d of %d (%s)\n", comm->rank(), comm->world_size(),
                comm->place().source.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
