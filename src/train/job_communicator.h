// The communicator the trainer uses in a job: any backend, with two additions.
//
// A deadline (dist.timeout_s): a collective that has not returned in time means another rank
// died or stalled (MPI and NCCL would wait forever), so the rank that noticed says which
// collective and after how long, and aborts the whole job through the backend
// (Communicator::abort prints "rank R: ..."), which then fails with that message instead of
// hanging.
//
// Host tensors on a device backend: the trainer's small collectives (a loss, a stop flag, a
// checksum, evaluation counts) are CPU tensors; with a backend whose tensors live on a CUDA
// device (NCCL) they are copied there and back around the collective.
//
// Collectives are serialised (one at a time per process), as the trainer and its communication
// thread use them.
#pragma once
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "dist/communicator.h"

namespace attn::train {

class JobCommunicator : public dist::Communicator {
 public:
  // timeout_s > 0; device: where the backend's tensors live (CPU for MPI).
  JobCommunicator(std::unique_ptr<dist::Communicator> backend, double timeout_s,
                  Device device = Device::cpu());
  ~JobCommunicator() override;

  const dist::ProcessPlace& place() const override { return backend_->place(); }
  void all_reduce(Tensor& t, dist::ReduceOp op = dist::ReduceOp::Sum) override;
  void broadcast(Tensor& t, int root = 0) override;
  void all_gather(const Tensor& in, Tensor& out) override;
  void reduce_scatter(const Tensor& in, Tensor& out,
                      dist::ReduceOp op = dist::ReduceOp::Sum) override;
  void barrier() override;
  [[noreturn]] void abort(int code, const std::string& why) override;

  double timeout_s() const { return timeout_s_; }

 private:
  // Arms the deadline for one collective while it runs.
  class Deadline {
   public:
    Deadline(JobCommunicator& c, const char* what);
    ~Deadline();

   private:
    JobCommunicator& c_;
  };
  void watch();
  // t itself, or its copy on the backend's device.
  Tensor staged(const Tensor& t) const;
  // Copies a staged result back into the caller's host tensor.
  static void unstage(Tensor& host, const Tensor& staged);

  std::unique_ptr<dist::Communicator> backend_;
  double timeout_s_;
  Device device_;
  std::mutex mutex_;
  std::condition_variable wake_;
  const char* what_ = nullptr;  // the collective in flight, or null
  std::chrono::steady_clock::time_point started_;
  bool stop_ = false;
  std::thread watchdog_;
};

}  // namespace attn::train
