// The communicator of this process: the one entry point the trainer needs.
//
//   world size 1          -> LocalCommunicator (identity; touches neither MPI nor NCCL)
//   CPU tensors           -> MpiCommunicator (needs a build with MPI and a job from mpirun/srun)
//   CUDA tensors          -> NcclCommunicator on options.device; NCCL's unique id travels over
//                            MPI (init = Mpi) or through options.init_file (init = File)
#pragma once
#include <chrono>
#include <memory>
#include <string>

#include "dist/communicator.h"

namespace attn::dist {

// dist.init: how the ranks of a NCCL communicator find each other.
enum class InitMethod { Mpi, File };
// "mpi" or "file"; anything else throws naming the key dist.init.
InitMethod parse_init_method(const std::string& value);

struct CommOptions {
  Device device = Device::cpu();  // the device the collectives' tensors live on
  InitMethod init = InitMethod::Mpi;
  std::string init_file;  // init = File: the rendezvous path (fresh per job; file_rendezvous.h)
  // NCCL: how long the id exchange, the communicator's creation and each wait may take before
  // the job is declared stuck (a rank died or never started).
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
};

bool built_with_mpi();
bool built_with_nccl();  // CUDA build with NCCL (or the emulated build with the fake NCCL)

std::unique_ptr<Communicator> make_communicator(const ProcessPlace& place,
                                                const CommOptions& options = {});

}  // namespace attn::dist
