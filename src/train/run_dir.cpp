#include "train/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>

#include "train/checkpoint.h"
#include "config/config.h"

namespace fs = std::filesystem;

namespace attn::train {

using config::ConfigError;

namespace {

[[noreturn]] void unsafe(const std::string& dir, const std::string& why) {
  throw ConfigError(fmt::format("config key 'run.dir': '{}' {}", dir, why));
}

bool is_within(const fs::path& inner, const fs::path& outer) {
  auto [o, i] = std::mismatch(outer.begin(), outer.end(), inner.begin(), inner.end());
  return o == outer.end();
}

// What a run writes into its directory (write_atomic's *.tmp.PID included; logs/, a job's
// rank files, opened as soon as the directory is locked, before config.yaml is written).
bool is_run_file(const std::string& name) {
  static const std::set<std::string> own = {"config.yaml",  "tokenizer.json", "metrics.jsonl",
                                            "summary.json", "checkpoints",    "logs",
                                            ".lock"};
  return own.count(name) || name.find(".tmp.") != std::string::npos;
}

}  // namespace

void check_run_dir(const std::string& dir, bool resume) {
  if (dir.find_first_not_of(" \t") == std::string::npos)
    unsafe(dir, "is empty: name a directory for the run");
  std::error_code ec;
  const fs::path abs = fs::weakly_canonical(fs::absolute(dir), ec);
  if (ec) unsafe(dir, "cannot be resolved: " + ec.message());
  if (abs == abs.root_path()) unsafe(dir, "is the filesystem root");
  if (is_within(fs::current_path(), abs)) unsafe(dir, "is the current directory or one above it");
  if (const char* home = std::getenv("HOME");
      home && *home && abs == fs::weakly_canonical(home, ec))
    unsafe(dir, "is the home directory");
  if (fs::exists(abs) && !fs::is_directory(abs)) unsafe(dir, "exists and is not a directory");

  const bool has_config = fs::exists(abs / "config.yaml");
  const bool used = has_config || fs::exists(abs / "summary.json") ||
                    !list_checkpoints((abs / "checkpoints").string()).empty();
  if (resume) {
    if (!has_config)
      throw ConfigError("--resume: '" + dir + "' has no config.yaml (no run to resume)");
    return;
  }
  if (used)
    throw ConfigError("run directory '" + dir +
                      "' already holds a run: pass --resume to continue it, or set run.dir");
  if (fs::is_directory(abs))
    for (const auto& e : fs::directory_iterator(abs))
      if (!is_run_file(e.path().filename().string()))
        unsafe(
            dir,
            fmt::format(
                "holds files that are not a run's (such as '{}'): choose an empty or new directory",
                e.path().filename().string()));
}

RunLock::RunLock(const std::string& dir) {
  const std::string path = dir + "/.lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw std::runtime_error(fmt::format("cannot open '{}': {}", path, std::strerror(errno)));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {};
    ssize_t n = ::pread(fd_, pid, sizeof pid - 1, 0);
    ::close(fd_);
    fd_ = -1;
    throw ConfigError(fmt::format(
        "run directory '{}' is in use by another attnlab process{}", dir,
        n > 0 ? fmt::format(" (pid {})", std::string(pid, static_cast<size_t>(n))) : ""));
  }
  const std::string me = std::to_string(::getpid());
  if (::ftruncate(fd_, 0) != 0 ||
      ::pwrite(fd_, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size()))
    throw std::runtime_error(fmt::format("cannot write '{}': {}", path, std::strerror(errno)));
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace attn::train
