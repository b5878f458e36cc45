#include "data/speech_synthesis_jobs.h"

#include <fmt/format.h>
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <exception>
#include <thread>
#include <vector>

namespace attn::data::synth {

void Progress::tick() {
  std::lock_guard<std::mutex> lock(mu_);
  ++done_;
  auto now = Clock::now();
  if (!on_ || (done_ < total_ && now - last_ < std::chrono::milliseconds(250))) return;
  last_ = now;
  double s = std::chrono::duration<double>(now - start_).count();
  double per_s = s > 0 ? static_cast<double>(done_) / s : 0;
  double eta = per_s > 0 ? static_cast<double>(total_ - done_) / per_s : 0;
  fmt::print(stderr, "\rasr corpus: {}/{} utterances, {:.1f} utt/s, ETA {:.0f} s   {}", done_,
             total_, per_s, eta, done_ == total_ ? "\n" : "");
  std::fflush(stderr);
}

void parallel_for(size_t begin, size_t end, int jobs, const std::function<void(size_t)>& fn) {
  std::atomic<size_t> next{begin};
  std::atomic<bool> stop{false};
  std::mutex error_mu;
  std::exception_ptr error;
  auto worker = [&] {
    try {
      for (size_t i; !stop && (i = next++) < end;) fn(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!error) error = std::current_exception();
      stop = true;
    }
  };
  std::vector<std::thread> threads;
  for (size_t j = 0; j < std::min(static_cast<size_t>(jobs), end - begin); ++j)
    threads.emplace_back(worker);
  for (std::thread& t : threads) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace attn::data::synth
