// The NCCL backend: collectives on CUDA tensors, one GPU per rank. Compiled in the CUDA build
// with NCCL (ATTNLAB_WITH_NCCL) and in the emulated build against the fake NCCL
// (src/backend/cuda_emu/fake_nccl.cpp), where the same code runs under mpirun on the CPU.
//
// Stream: every collective is queued on cudaStreamPerThread, the stream the CUDA backend runs
// its kernels on, so it follows the kernels that produced its input and precedes those that
// read its output without any event. A dedicated communication stream would let a gradient's
// all-reduce overlap the next layer's backward, at the price of events both ways; not yet.
//
// Errors: the communicator is non-blocking (ncclConfig_t::blocking = 0), so neither its creation
// nor a collective can hang the host: each is polled through ncclCommGetAsyncError, and with
// wait_each (the default) the stream too, until done, an error, or the timeout. An error or a
// timeout aborts the NCCL communicator (ncclCommAbort) and throws std::runtime_error naming the
// rank, the collective and NCCL's message; the caller then ends the job with abort().
#pragma once
#include <chrono>
#include <memory>
#include <string>

#include "dist/communicator.h"

namespace attn::dist {

struct NcclOptions {
  int device = 0;  // this rank's GPU, cuda:device
  // The unique id goes from rank 0 to the others by host->broadcast when host is set (the MPI
  // communicator, which the NCCL one then owns: abort() ends the job through it, and it checks
  // that no two ranks share a GPU), else through rendezvous_file (file_rendezvous.h).
  std::unique_ptr<Communicator> host;
  std::string rendezvous_file;
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
  // Waits (with the timeout) for each collective to finish on the GPU before returning. Off,
  // collectives return once queued and synchronize() is the place errors show.
  bool wait_each = true;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const ProcessPlace& place, NcclOptions options);
  ~NcclCommunicator() override;

  const ProcessPlace& place() const override { return place_; }
  Device device() const { return Device::cuda(options_.device); }
  void all_reduce(Tensor& t, ReduceOp op = ReduceOp::Sum) override;
  void broadcast(Tensor& t, int root = 0) override;
  void all_gather(const Tensor& in, Tensor& out) override;
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::Sum) override;
  // A one-element all-reduce, waited for.
  void barrier() override;
  // Waits for every collective queued so far: the timeout helper (see the top of this file).
  void synchronize();
  // ncclCommAbort, then the host's abort (MPI_Abort) or, without one, "rank R: why" and exit.
  [[noreturn]] void abort(int code, const std::string& why) override;

 private:
  struct Impl;
  void check_one_gpu_per_rank(int visible_devices);
  std::string exchange_unique_id();                // rank 0's ncclUniqueId bytes, on every rank
  void enter(const char* what, const Tensor& t);   // checks t and the communicator, sets the device
  void queued(const char* what, int nccl_result);  // settles a call; waits with wait_each
  ProcessPlace place_;
  NcclOptions options_;
  std::unique_ptr<Impl> impl_;
};

// The factory's way in (make_communicator.h): defined by nccl_communicator.cpp, or by
// nccl_unavailable.cpp in a build without NCCL, where it throws saying so.
std::unique_ptr<Communicator> make_nccl_communicator(const ProcessPlace& place,
                                                     NcclOptions options);

}  // namespace attn::dist
