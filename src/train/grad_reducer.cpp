#include "train/grad_reducer.h"

#include "backend/cuda/cuda_api.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace attn::train {

void copy_elements(Tensor& dst, int64_t dst_offset, const Tensor& src, int64_t src_offset,
                   int64_t n) {
  if (dst.dtype() != src.dtype()) throw std::invalid_argument("copy_elements: dtypes differ");
  const size_t es = dtype_size(dst.dtype());
  copy_bytes(static_cast<char*>(dst.raw_data()) + dst_offset * es, dst.device(),
             static_cast<const char*>(src.raw_data()) + src_offset * es, src.device(), n * es);
}

GradReducer::GradReducer(dist::Communicator& comm, const ParamList& params, int64_t bucket_bytes,
                         Mode mode)
    : comm_(comm), params_(params), mode_(mode) {
  if (bucket_bytes <= 0) throw std::invalid_argument("GradReducer: bucket_bytes must be positive");
  if (params_.empty()) throw std::invalid_argument("GradReducer: no parameters");
  const DType dtype = params_[0].value.dtype();
  const Device device = params_[0].value.device();
  for (const Param& p : params_)
    if (p.value.dtype() != dtype || p.value.device() != device)
      throw std::invalid_argument(
          fmt::format("GradReducer: parameter '{}' is {} on {}, the first one {} on {}: "
                      "one dtype and device for all",
                      p.name, dtype_name(p.value.dtype()), p.value.device().str(),
                      dtype_name(dtype), device.str()));
  const int64_t es = static_cast<int64_t>(dtype_size(dtype)), world = comm_.world_size();
  bucket_of_.resize(params_.size());
  // Reverse order: the last params (the head, the last block) finish first in a backward.
  for (size_t k = params_.size(); k-- > 0;) {
    if (buckets_.empty() || buckets_.back().numel * es >= bucket_bytes) buckets_.emplace_back();
    Bucket& b = buckets_.back();
    b.params.push_back(k);
    b.offsets.push_back(b.numel);
    b.numel += params_[k].value.numel();
    bucket_of_[k] = buckets_.size() - 1;
  }
  for (Bucket& b : buckets_) {
    if (mode_ == Mode::ReduceScatter) {
      b.numel = (b.numel + world - 1) / world * world;
      b.shard = zeros({b.numel / world}, {dtype, device});
    }
    b.flat = zeros({b.numel}, {dtype, device});  // the padding stays zero
  }
  pending_.assign(buckets_.size(), 0);
  spans_.resize(buckets_.size());
  // The hooks outlive nothing they point at: the reducer clears `self` before it goes.
  self_ = std::make_shared<GradReducer*>(this);
  for (size_t k = 0; k < params_.size(); ++k)
    params_[k].value.add_grad_ready_hook(
        [self = std::weak_ptr<GradReducer*>(self_), k](const Tensor&) {
          if (auto s = self.lock(); s && *s) (*s)->on_ready(k);
        });
  thread_ = std::thread([this] { communicate(); });
}

GradReducer::~GradReducer() {
  *self_ = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void GradReducer::arm() {
  if (armed_) throw std::logic_error("GradReducer::arm: the previous step was not finished");
  for (size_t b = 0; b < buckets_.size(); ++b)
    pending_[b] = static_cast<int64_t>(buckets_[b].params.size());
  next_launch_ = 0;
  std::lock_guard<std::mutex> lock(mutex_);
  done_ = 0;
  armed_ = true;
}

void GradReducer::on_ready(size_t param) {
  if (!armed_) return;
  --pending_[bucket_of_[param]];
  launch_ready();
}

void GradReducer::launch_ready() {
  while (next_launch_ < buckets_.size() && pending_[next_launch_] == 0) launch(next_launch_++);
}

// Copies the bucket's gradients into its flat buffer (zeros for a param without one) and queues it.
void GradReducer::launch(size_t bucket) {
  Bucket& b = buckets_[bucket];
  for (size_t i = 0; i < b.params.size(); ++i) {
    const Tensor& value = params_[b.params[i]].value;
    Tensor g = value.grad();
    copy_elements(b.flat, b.offsets[i],
                  g.defined() ? g : zeros(value.shape(), {value.dtype(), value.device()}), 0,
                  value.numel());
  }
  // CUDA: the copies are queued on this thread's stream, the collective runs on the
  // communication thread's: wait for them first.
  if (b.flat.device().is_cuda()) cuda::synchronize(b.flat.device().index);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(bucket);
  }
  changed_.notify_all();
}

void GradReducer::communicate() {
  // A new thread's current CUDA device is 0: make it the params' (synchronize sets it).
  if (const Device d = params_[0].value.device(); d.is_cuda()) cuda::synchronize(d.index);
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    changed_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    const size_t bucket = queue_.front();
    queue_.pop_front();
    lock.unlock();
    const Clock::time_point t0 = Clock::now();
    try {
      Bucket& b = buckets_[bucket];
      if (mode_ == Mode::AllReduce)
        comm_.all_reduce(b.flat, dist::ReduceOp::Avg);
      else
        comm_.reduce_scatter(b.flat, b.shard, dist::ReduceOp::Avg);
    } catch (...) {
      lock.lock();
      if (!error_) error_ = std::current_exception();
      lock.unlock();
    }
    const Clock::time_point t1 = Clock::now();
    lock.lock();
    spans_[bucket] = {t0, t1};
    ++done_;
    changed_.notify_all();
  }
}

CommStats GradReducer::finish() {
  if (!armed_) throw std::logic_error("GradReducer::finish: no backward was armed");
  const Clock::time_point backward_end = Clock::now();
  while (next_launch_ < buckets_.size()) launch(next_launch_++);  // gradients that never came
  {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return done_ == buckets_.size(); });
    armed_ = false;
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }
  CommStats s;
  for (const auto& [t0, t1] : spans_) {
    s.comm_s += std::chrono::duration<double>(t1 - t0).count();
    s.hidden_s +=
        std::max(0.0, std::chrono::duration<double>(std::min(t1, backward_end) - t0).count());
  }
  if (mode_ == Mode::AllReduce)
    for (Bucket& b : buckets_)
      for (size_t i = 0; i < b.params.size(); ++i) {
        Tensor& value = params_[b.params[i]].value;
        if (!value.grad().defined())
          value.set_grad(Tensor::empty(value.shape(), value.dtype(), value.device()));
        Tensor g = value.grad();
        copy_elements(g, 0, b.flat, b.offsets[i], value.numel());
      }
  return s;
}

}  // namespace attn::train
