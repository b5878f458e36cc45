// What the trainer does with the job it is part of (data parallelism, docs/architecture.md):
// the communicator made once at the start, the parameters made equal on every rank, the
// numbers the ranks must agree on (a setup failure, a signal), sums for sharded evaluation.
// In a single process every function here is the identity and nothing touches MPI.
#pragma once
#include <memory>
#include <string>

#include "config/config.h"
#include "dist/communicator.h"
#include "optim/param.h"
#include "tasks/task.h"

namespace attn::train {

// The communicator of this process at `place` (dist::detect_process_place(), which the trainer
// reads once: its log needs the rank before the job is opened): the LocalCommunicator for a
// single process, else the backend for `device` behind a dist.timeout_s deadline
// (job_communicator.h).
std::unique_ptr<dist::Communicator> open_job(const config::Config& c,
                                             const dist::ProcessPlace& place, Device device);

// Every rank's parameters become rank 0's; then check_parameters_equal.
void broadcast_parameters(dist::Communicator& comm, const ParamList& params);
// An XXH64 of every parameter's bytes, all-gathered: a rank whose parameters differ from rank
// 0's is a std::runtime_error naming it.
void check_parameters_equal(dist::Communicator& comm, const ParamList& params);

// The task's shard of the job, its sums going through comm.
tasks::Shard task_shard(dist::Communicator& comm);

// The first non-zero `code` of the ranks in rank order (0: none): collective.
int first_nonzero(dist::Communicator& comm, int code);

// The mean of x over the ranks (x itself in one process).
double mean_over_ranks(dist::Communicator& comm, double x);

}  // namespace attn::train
