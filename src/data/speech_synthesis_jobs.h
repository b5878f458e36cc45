// Internal to the speech-corpus synthesis: its utterances made on `jobs` threads at once, with a
// progress line on stderr.
#pragma once
#include <chrono>
#include <cstddef>
#include <functional>
#include <mutex>

namespace attn::data::synth {

// done/total, utterances/s and ETA on stderr, at most 4 times a second.
class Progress {
 public:
  Progress(size_t total, bool on) : total_(total), on_(on), start_(Clock::now()) {}
  void tick();  // one utterance done; thread-safe

 private:
  using Clock = std::chrono::steady_clock;
  std::mutex mu_;
  size_t total_, done_ = 0;
  bool on_;
  Clock::time_point start_, last_{};
};

// fn(i) for i in [begin, end), `jobs` threads at a time; the first exception stops the others
// and is rethrown.
void parallel_for(size_t begin, size_t end, int jobs, const std::function<void(size_t)>& fn);

}  // namespace attn::data::synth
