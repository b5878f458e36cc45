// A job of W ranks as W threads of one process, for unit tests of what runs on top of
// dist::Communicator (the gradient reducer, ZeRO) without MPI: every collective is computed in
// f64 in rank order from the ranks' own buffers, between two barriers. CPU tensors of f32, f64,
// i32, i64.
#pragma once
#include <barrier>
#include <functional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "dist/communicator.h"

namespace attn::test {

class ThreadJob {
 public:
  explicit ThreadJob(int world) : world_(world), sync_(world), slots_(world) {}

  class Comm : public dist::Communicator {
   public:
    Comm(ThreadJob& job, int rank) : job_(job) {
      place_.rank = rank;
      place_.world_size = job.world_;
      place_.source = "test threads";
    }
    const dist::ProcessPlace& place() const override { return place_; }

    void all_reduce(Tensor& t, dist::ReduceOp op = dist::ReduceOp::Sum) override {
      ++collectives;
      const std::vector<double> sum = job_.sum_of(rank(), t, op);
      write(t, 0, sum);
    }
    void broadcast(Tensor& t, int root = 0) override {
      publish(t);
      const std::vector<double> v = job_.slots_[root].to_vector();
      job_.sync_.arrive_and_wait();
      write(t, 0, v);
    }
    void all_gather(const Tensor& in, Tensor& out) override {
      publish(in);
      std::vector<double> all;
      for (int r = 0; r < world_size(); ++r) {
        const std::vector<double> v = job_.slots_[r].to_vector();
        all.insert(all.end(), v.begin(), v.end());
      }
      job_.sync_.arrive_and_wait();
      write(out, 0, all);
    }
    void reduce_scatter(const Tensor& in, Tensor& out,
                        dist::ReduceOp op = dist::ReduceOp::Sum) override {
      ++collectives;
      const std::vector<double> sum = job_.sum_of(rank(), in, op);
      const size_t n = sum.size() / world_size();
      write(out, 0, std::vector<double>(sum.begin() + rank() * n, sum.begin() + (rank() + 1) * n));
    }
    void barrier() override { job_.sync_.arrive_and_wait(); }
    [[noreturn]] void abort(int, const std::string& why) override {
      throw std::runtime_error("abort: " + why);
    }

    int collectives = 0;  // started by this rank

   private:
    void publish(const Tensor& t) {
      ++collectives;
      job_.slots_[rank()] = t;
      job_.sync_.arrive_and_wait();
    }
    static void write(Tensor& t, int64_t, const std::vector<double>& v) {
      if (static_cast<int64_t>(v.size()) != t.numel())
        throw std::logic_error("ThreadJob: size mismatch");
      const Tensor src = from_vector(v, t.shape(), {t.dtype()});
      copy_bytes(t.raw_data(), t.device(), src.raw_data(), src.device(), t.nbytes());
    }
    friend class ThreadJob;
    ThreadJob& job_;
    dist::ProcessPlace place_;
  };

  // Runs body(comm) on W threads, one per rank; rethrows the first failure.
  void run(const std::function<void(Comm&)>& body) {
    std::vector<std::exception_ptr> errors(world_);
    std::vector<std::thread> threads;
    for (int r = 0; r < world_; ++r)
      threads.emplace_back([&, r] {
        Comm comm(*this, r);
        try {
          body(comm);
        } catch (...) {
          errors[r] = std::current_exception();
        }
      });
    for (auto& t : threads) t.join();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
  }

 private:
  std::vector<double> sum_of(int rank, const Tensor& t, dist::ReduceOp op) {
    slots_[rank] = t;
    sync_.arrive_and_wait();
    std::vector<double> sum(t.numel(), 0.0);
    for (int r = 0; r < world_; ++r) {
      const std::vector<double> v = slots_[r].to_vector();
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += v[i];
    }
    if (op == dist::ReduceOp::Avg)
      for (double& x : sum) x /= world_;
    sync_.arrive_and_wait();  // nobody writes its buffer before every rank has read it
    return sum;
  }

  int world_;
  std::barrier<> sync_;
  std::vector<Tensor> slots_;
};

}  // namespace attn::test
