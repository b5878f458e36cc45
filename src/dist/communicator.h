// Collectives across the processes of one job (data-parallel training), with two backends:
// MPI for host tensors (CPU training, and the bootstrap of NCCL), NCCL for CUDA tensors.
// Every rank calls the same collectives in the same order (MPI's and NCCL's rule); a collective
// on tensors of different shapes or dtypes across ranks is undefined, so callers keep them equal.
// A single-process job (world size 1) needs neither MPI nor NCCL: LocalCommunicator does every
// collective as the identity, and training behaves exactly as without this layer.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "tensor/tensor.h"

namespace attn::dist {

// Where this process sits in the job, from the launcher's environment (dist/launch_env.h).
struct ProcessPlace {
  int rank = 0, world_size = 1, local_rank = 0, local_size = 1;
  std::string source;  // "OMPI_COMM_WORLD_*", "SLURM_*", "RANK/WORLD_SIZE", or "single process"
};

enum class ReduceOp { Sum, Avg };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual const ProcessPlace& place() const = 0;
  int rank() const { return place().rank; }
  int world_size() const { return place().world_size; }

  // Tensors are CPU tensors for the MPI backend and CUDA tensors (of the communicator's device)
  // for the NCCL one; a wrong device or dtype throws std::invalid_argument naming the collective.

  // In place, on every rank: t = Σ_r t_r (Avg: / world_size). f32, f64, bf16, i32, i64. bf16 is
  // converted to f32, summed in f32 and rounded to bf16 once, by both backends (NCCL's own bf16
  // sum would round after every hop of its ring). Avg of an integer tensor throws (not exact).
  virtual void all_reduce(Tensor& t, ReduceOp op = ReduceOp::Sum) = 0;
  // t = root's t on every rank.
  virtual void broadcast(Tensor& t, int root = 0) = 0;
  // out [world_size · n] = concat_r in_r (in has n elements, the same n on every rank). `out`
  // either has world_size · n elements, in's dtype and device, or is undefined: then it is
  // allocated 1-D.
  virtual void all_gather(const Tensor& in, Tensor& out) = 0;
  // out [n / world_size] = rank's slice of Σ_r in_r (n divisible by world_size; bf16 and Avg as
  // all_reduce). `out` as for all_gather, with n / world_size elements.
  virtual void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::Sum) = 0;
  virtual void barrier() = 0;
  // Ends the whole job now (MPI_Abort / ncclCommAbort + MPI_Abort): for a rank that sees a
  // failure the others would otherwise wait on forever. Prints "rank R: why" to stderr first.
  // A failing rank must call this rather than return from main: MPI_Finalize at exit waits for
  // every rank, and the others are waiting in a collective.
  [[noreturn]] virtual void abort(int code, const std::string& why) = 0;
};

}  // namespace attn::dist
