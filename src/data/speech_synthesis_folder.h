// Internal to the speech-corpus synthesis: its output folder. One process at a time (a lock),
// the corpus.json that says which config the folder holds, and checked atomic writes.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace attn::data::synth {

// Written to path.tmp.PID, fsync'ed, renamed over path; every call checked.
void write_text_atomically(const std::filesystem::path& path, const std::string& content);

// The whole file; throws std::runtime_error naming it when it cannot be read.
std::string read_text(const std::filesystem::path& path);

// An exclusive flock on out_dir/.lock for the synthesis' lifetime.
class DirLock {
 public:
  // Throws std::runtime_error when the lock cannot be created or another process holds it.
  explicit DirLock(const std::filesystem::path& dir);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  int fd_ = -1;
};

// corpus.json: written into a new (or empty) folder, compared in an existing corpus. Throws
// std::runtime_error when it holds another identity, is not JSON, or the folder is not empty
// and has none.
void claim_folder(const std::filesystem::path& dir, const nlohmann::ordered_json& identity);

// Temporary files a killed run left behind (*.tmp.*); safe under the folder's lock.
void remove_stale_temps(const std::filesystem::path& split_dir);

}  // namespace attn::data::synth
