#include "train/job_communicator.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace attn::train {

JobCommunicator::JobCommunicator(std::unique_ptr<dist::Communicator> backend, double timeout_s,
                                 Device device)
    : backend_(std::move(backend)), timeout_s_(timeout_s), device_(device) {
  if (!(timeout_s > 0)) throw std::invalid_argument("JobCommunicator: timeout_s must be positive");
  watchdog_ = std::thread([this] { watch(); });
}

JobCommunicator::~JobCommunicator() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  watchdog_.join();
}

JobCommunicator::Deadline::Deadline(JobCommunicator& c, const char* what) : c_(c) {
  {
    std::lock_guard<std::mutex> lock(c_.mutex_);
    c_.what_ = what;
    c_.started_ = std::chrono::steady_clock::now();
  }
  c_.wake_.notify_all();
}

JobCommunicator::Deadline::~Deadline() {
  std::lock_guard<std::mutex> lock(c_.mutex_);
  c_.what_ = nullptr;
}

// Sleeps until a collective starts, then until its deadline; one still in flight then ends the
// job. (The abort runs on this thread while the collective blocks another: Open MPI's MPI_Abort
// and ncclCommAbort are made for that.)
void JobCommunicator::watch() {
  const auto limit = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(timeout_s_));
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    if (!what_) {
      wake_.wait(lock, [&] { return stop_ || what_; });
      continue;
    }
    const auto started = started_;
    wake_.wait_until(lock, started + limit, [&] { return stop_ || !what_ || started_ != started; });
    if (stop_ || !what_ || started_ != started) continue;
    // (abort prints "rank R: why": the rank that noticed.)
    const std::string why = fmt::format(
        "collective {} did not finish within dist.timeout_s = {} s: another rank of the {} has "
        "died or stalled; "
        "aborting the job",
        what_, timeout_s_, world_size());
    lock.unlock();
    backend_->abort(1, why);
  }
}

void JobCommunicator::abort(int code, const std::string& why) {
  backend_->abort(code, why);
  std::_Exit(code == 0 ? 1
                       : code);  // (a backend's abort does not return; should one, still end now)
}

Tensor JobCommunicator::staged(const Tensor& t) const {
  return t.defined() && t.device() != device_ ? t.to(device_) : t;
}

void JobCommunicator::unstage(Tensor& host, const Tensor& staged) {
  if (!host.defined()) {
    host = staged.to(Device::cpu());
  } else if (!staged.same(host)) {
    copy_bytes(host.raw_data(), host.device(), staged.raw_data(), staged.device(), host.nbytes());
  }
}

void JobCommunicator::all_reduce(Tensor& t, dist::ReduceOp op) {
  Tensor s = staged(t);
  {
    Deadline d(*this, "all_reduce");
    backend_->all_reduce(s, op);
  }
  unstage(t, s);
}

void JobCommunicator::broadcast(Tensor& t, int root) {
  Tensor s = staged(t);
  {
    Deadline d(*this, "broadcast");
    backend_->broadcast(s, root);
  }
  unstage(t, s);
}

void JobCommunicator::all_gather(const Tensor& in, Tensor& out) {
  const Tensor s_in = staged(in);
  Tensor s_out = staged(out);
  {
    Deadline d(*this, "all_gather");
    backend_->all_gather(s_in, s_out);
  }
  if (in.device() != device_ || (out.defined() && out.device() != device_))
    unstage(out, s_out);
  else
    out = s_out;
}

void JobCommunicator::reduce_scatter(const Tensor& in, Tensor& out, dist::ReduceOp op) {
  const Tensor s_in = staged(in);
  Tensor s_out = staged(out);
  {
    Deadline d(*this, "reduce_scatter");
    backend_->reduce_scatter(s_in, s_out, op);
  }
  if (in.device() != device_ || (out.defined() && out.device() != device_))
    unstage(out, s_out);
  else
    out = s_out;
}

void JobCommunicator::barrier() {
  Deadline d(*this, "barrier");
  backend_->barrier();
}

}  // namespace attn::train
