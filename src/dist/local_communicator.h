// The communicator of a single-process job: every collective is the identity (a sum over one
// rank), so training behaves exactly as without the dist layer. Works on any device.
#pragma once
#include "dist/communicator.h"

namespace attn::dist {

class LocalCommunicator final : public Communicator {
 public:
  LocalCommunicator() { place_.source = "single process"; }
  const ProcessPlace& place() const override { return place_; }
  void all_reduce(Tensor& t, ReduceOp op = ReduceOp::Sum) override;
  void broadcast(Tensor& t, int root = 0) override;
  void all_gather(const Tensor& in, Tensor& out) override;
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::Sum) override;
  void barrier() override {}
  // Prints "rank 0: why" and exits with `code` at once (no destructors, as MPI_Abort).
  [[noreturn]] void abort(int code, const std::string& why) override;

 private:
  ProcessPlace place_;
};

}  // namespace attn::dist
