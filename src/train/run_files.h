// Files of a run directory: checked atomic writes and the JSONL metrics log. Every write is
// checked; a failure throws a std::runtime_error naming the file and the system's reason (the run
// stops with exit 1, and what was on disk before stays valid).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace attn::train {

// Writes `content` to path through a temporary file beside it (path.tmp.PID): written, fsync'ed,
// renamed over path, then the directory fsync'ed, so readers and a crash see the old file or the
// new one. On failure the temporary file is removed.
void write_atomic(const std::string& path, const std::string& content);
// The whole file; throws naming it when it cannot be read.
std::string read_file(const std::string& path);
// fsync of a directory (makes a rename or unlink in it durable).
void sync_directory(const std::string& dir);
// Removes the temporary files write_atomic leaves when a process dies mid-write (*.tmp.PID) from
// dir; returns their names. Only call it while holding the run's lock (run_dir.h).
std::vector<std::string> remove_temp_files(const std::string& dir);

// Appends one JSON object per line with one write(2) each (a crash loses at most the line in
// flight, which a resume truncates away).
class MetricsLog {
 public:
  // Opens path for appending after truncating it to `keep_bytes` (a resume drops the rows written
  // after its checkpoint). The file is never extended: when it is shorter than keep_bytes (rows
  // lost outside attnlab's control) it is cut back to its last complete line, with a warning.
  MetricsLog(const std::string& path, uint64_t keep_bytes);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void write(const nlohmann::json& row);
  // fsync: the rows so far survive a power loss (called before each checkpoint records bytes()).
  void sync();
  uint64_t bytes() const { return bytes_; }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t bytes_ = 0;
};

}  // namespace attn::train
