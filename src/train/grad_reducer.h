// Data-parallel gradient averaging overlapped with the backward (PyTorch DDP's reducer, small).
//
// The parameters are cut into buckets of about `bucket_bytes`, in reverse order (the order in
// which a backward completes their gradients). A grad-ready hook on each leaf counts its bucket
// down; a bucket whose gradients are all in is copied into its flat buffer and handed to a
// communication thread, which averages it over the ranks while the backward goes on. Buckets
// start strictly in index order, on every rank, so all ranks issue the same collectives in the
// same order (MPI's and NCCL's rule) even where their backwards finish gradients differently.
//
// Threads: collectives run only on the communication thread while a backward is armed, and only
// on the caller's thread otherwise (finish() waits for all of them), so the backend needs
// MPI_THREAD_SERIALIZED (no two threads inside MPI at once), not MPI_THREAD_MULTIPLE.
//
// Two modes: AllReduce (each param's .grad() becomes the mean over the ranks) and ZeRO-1's
// ReduceScatter (each bucket's flat length is padded to a multiple of the world size; this rank
// keeps only its slice [r·n/W, (r+1)·n/W) of the mean, in bucket(i).shard, for the optimizer
// shard of train/zero_optimizer.h).
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "dist/communicator.h"
#include "optim/param.h"

namespace attn::train {

// n elements from src[src_offset...] to dst[dst_offset...] (same dtype; any devices).
void copy_elements(Tensor& dst, int64_t dst_offset, const Tensor& src, int64_t src_offset,
                   int64_t n);

// Where a step's communication time went.
struct CommStats {
  double comm_s = 0;    // inside the gradient collectives
  double hidden_s = 0;  // of which before the backward had finished (overlapped)
  double hidden_fraction() const { return comm_s > 0 ? hidden_s / comm_s : 0; }
};

class GradReducer {
 public:
  enum class Mode { AllReduce, ReduceScatter };

  struct Bucket {
    std::vector<size_t> params;    // indices into the param list, in bucket order
    std::vector<int64_t> offsets;  // each one's first element in flat
    int64_t numel = 0;             // flat length (ReduceScatter: padded to a multiple of W)
    Tensor flat;                   // [numel] on the params' device and dtype
    Tensor shard;                  // ReduceScatter: [numel / W], this rank's slice of the mean
  };

  // Every param: the same float dtype and device. Installs the hooks (kept for the params'
  // lifetime; they do nothing unless a backward is armed). bucket_bytes > 0.
  GradReducer(dist::Communicator& comm, const ParamList& params, int64_t bucket_bytes, Mode mode);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // The next backward's gradients are reduced (the last micro-batch of an optimizer step).
  void arm();
  // After that backward: starts the buckets whose gradients never came (a param this forward
  // did not use reduces zeros), waits for every bucket and, in AllReduce mode, writes the mean
  // into each param's .grad() (a zero gradient for one that had none). Rethrows a failure of the
  // communication thread. The step's times.
  CommStats finish();

  const std::vector<Bucket>& buckets() const { return buckets_; }
  const ParamList& params() const { return params_; }
  Mode mode() const { return mode_; }

 private:
  void on_ready(size_t param);
  void launch_ready();  // the consecutive complete buckets from next_launch_
  void launch(size_t bucket);
  void communicate();  // the communication thread

  dist::Communicator& comm_;
  ParamList params_;
  Mode mode_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // per param
  std::vector<int64_t> pending_;   // per bucket: gradients not in yet
  size_t next_launch_ = 0;
  bool armed_ = false;
  std::shared_ptr<GradReducer*> self_;  // what the hooks reach the reducer through

  using Clock = std::chrono::steady_clock;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<size_t> queue_;  // launched buckets waiting for the thread
  size_t done_ = 0;           // buckets reduced since arm()
  std::vector<std::pair<Clock::time_point, Clock::time_point>> spans_;  // per bucket
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace attn::train
