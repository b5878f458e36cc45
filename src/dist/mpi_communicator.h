// The MPI backend (Open MPI): collectives on host (CPU) tensors, for CPU training and for the
// bootstrap of NCCL. Built when CMake finds MPI (ATTNLAB_MPI, define ATTNLAB_WITH_MPI).
//
// MPI is initialised by the first MpiCommunicator (MPI_Init_thread asking for
// MPI_THREAD_SERIALIZED: collectives may come from any thread, one at a time, never two at once)
// and finalised at exit, unless someone else initialised it. Every communicator works on its own
// duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN, so a failed MPI call throws
// std::runtime_error naming the call and the rank instead of killing the job silently.
#pragma once
#include <memory>

#include "dist/communicator.h"

namespace attn::dist {

class MpiCommunicator final : public Communicator {
 public:
  // `place` comes from the environment (detect_process_place); it must be one that mpirun or
  // srun set, and MPI must agree with it (rank and world size), else a clear error.
  explicit MpiCommunicator(const ProcessPlace& place);
  ~MpiCommunicator() override;

  const ProcessPlace& place() const override { return place_; }
  void all_reduce(Tensor& t, ReduceOp op = ReduceOp::Sum) override;
  void broadcast(Tensor& t, int root = 0) override;
  void all_gather(const Tensor& in, Tensor& out) override;
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::Sum) override;
  void barrier() override;
  // "rank R: why" on stderr, then MPI_Abort(code; 1 if code is 0): mpirun ends every rank.
  [[noreturn]] void abort(int code, const std::string& why) override;

 private:
  struct Impl;
  ProcessPlace place_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace attn::dist
