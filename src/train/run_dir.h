// The run directory as a place: which paths may be one, and one process at a time in it.
#pragma once
#include <string>

namespace attn::train {

// Checks run.dir before anything is written (ConfigError naming run.dir otherwise): not empty,
// not the filesystem root, the home directory, the current directory or one above it, not a
// file. A new run (resume false) needs a directory that does not hold a run already and holds
// nothing but a run's own files (what a start that died before its config was written leaves);
// a resume needs the run's config.yaml.
void check_run_dir(const std::string& dir, bool resume);

// An exclusive flock(2) on DIR/.lock for the life of the object: a second process training or
// resuming the same run directory is refused (ConfigError) instead of interleaving its writes.
// The kernel drops the lock when the process dies, so a crash never leaves it held.
class RunLock {
 public:
  explicit RunLock(const std::string& dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace attn::train
