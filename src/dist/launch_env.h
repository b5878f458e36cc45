// Where this process sits in a multi-process job, read from the launcher's environment.
//
// Order of precedence (the first family whose rank variable is set wins; the others are ignored):
//   1. Open MPI's mpirun:  OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE
//   2. Slurm's srun:       SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, and the tasks on this node
//                          from SLURM_NTASKS_PER_NODE, else SLURM_TASKS_PER_NODE ("4(x2),3", the
//                          entry of node SLURM_NODEID)
//   3. torchrun style:     RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE
//   4. none of them:       a single process (rank 0 of 1)
// mpirun comes first because it may run inside a Slurm allocation (whose SLURM_* then describe
// the allocation, not this job). Once a family is chosen all four of its values are required: a
// missing one, a non-number, rank >= size or local rank >= local size is an error naming the
// variable, never a guess (a wrong local rank would put two ranks on one GPU).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dist/communicator.h"

namespace attn::dist {

// Variable name -> value.
using Environment = std::map<std::string, std::string>;

ProcessPlace detect_process_place(const Environment& env);
ProcessPlace detect_process_place();  // from this process's environment

// The ranks of a job that would drive the same GPU: `gpus[r]` identifies rank r's GPU (its host
// and PCI bus, hashed). Returns (r, s), r < s, for the smallest s whose key an earlier rank r
// has, if any.
std::optional<std::pair<int, int>> ranks_sharing_a_gpu(const std::vector<uint64_t>& gpus);

}  // namespace attn::dist
