// SIGINT / SIGTERM during training: the first asks the loop to stop after the current step (it
// then writes a checkpoint and exits 128 + signal); a second one exits at once, leaving the run
// as a crash would (its last checkpoint valid, resumable).
#pragma once

namespace attn::train {

class StopSignal {
 public:
  StopSignal();   // installs the handlers
  ~StopSignal();  // restores the previous ones
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;

  // The signal received (SIGINT or SIGTERM), or 0.
  static int pending();
};

// "SIGINT", "SIGTERM", ...
const char* signal_name(int sig);

}  // namespace attn::train
