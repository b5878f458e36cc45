#include "studies/process_pool.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <stdexcept>

#include "util/write_all.h"

extern char** environ;

namespace fs = std::filesystem;

namespace attn::studies {

namespace {

using Clock = std::chrono::steady_clock;

// Appends text to the log, every byte checked.
void append(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0)
    throw std::runtime_error(fmt::format("cannot open log '{}': {}", path, std::strerror(errno)));
  if (!util::write_all(fd, text.data(), text.size())) {
    const int err = errno;
    ::close(fd);
    throw std::runtime_error(fmt::format("cannot write log '{}': {}", path, std::strerror(err)));
  }
  if (::close(fd) != 0)
    throw std::runtime_error(fmt::format("cannot write log '{}': {}", path, std::strerror(errno)));
}

std::string now_text() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::localtime(&t));
  return buf;
}

// This process's environment with CUDA_VISIBLE_DEVICES replaced (when device is not empty).
std::vector<std::string> child_environment(const std::string& device) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e)
    if (device.empty() || std::strncmp(*e, "CUDA_VISIBLE_DEVICES=", 21) != 0) env.emplace_back(*e);
  if (!device.empty()) env.push_back("CUDA_VISIBLE_DEVICES=" + device);
  return env;
}

std::vector<char*> pointers(std::vector<std::string>& v) {
  std::vector<char*> p;
  for (std::string& s : v) p.push_back(s.data());
  p.push_back(nullptr);
  return p;
}

// Starts the job with its output appended to its log; the pid, or -1 (errno) when it cannot start.
pid_t start(const Job& job, const std::string& device) {
  int fd = ::open(job.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0)
    throw std::runtime_error(
        fmt::format("cannot open log '{}': {}", job.log, std::strerror(errno)));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  if (job.stdout_file.empty())
    posix_spawn_file_actions_adddup2(&fa, fd, STDOUT_FILENO);
  else
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, job.stdout_file.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, fd, STDERR_FILENO);
  std::vector<std::string> args = job.argv, env = child_environment(device);
  std::vector<char*> argv = pointers(args), envp = pointers(env);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(fd);
  if (rc != 0) {
    errno = rc;
    return -1;
  }
  return pid;
}

int exit_code_of(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

std::vector<JobResult> run_jobs(const std::vector<Job>& jobs, const PoolOptions& opt) {
  std::vector<JobResult> results(jobs.size());
  const size_t slots = std::max<size_t>(opt.slots, 1);
  std::vector<bool> busy(slots, false);
  struct Running {
    size_t job, slot;
    Clock::time_point t0;
  };
  std::map<pid_t, Running> running;
  auto finish = [&](size_t j, int code, Clock::time_point t0) {
    results[j] = {code, std::chrono::duration<double>(Clock::now() - t0).count()};
    append(jobs[j].log,
           fmt::format("== {} exit {} after {:.1f} s\n", now_text(), code, results[j].seconds));
    if (opt.on_finish) opt.on_finish(j, results[j]);
  };
  size_t next = 0;
  while (next < jobs.size() || !running.empty()) {
    const bool stopping = opt.stop && opt.stop();
    while (!stopping && next < jobs.size() && running.size() < slots) {
      size_t slot = 0;
      while (busy[slot]) ++slot;
      const Job& job = jobs[next];
      const std::string device = opt.devices.empty() ? "" : opt.devices[slot % opt.devices.size()];
      fs::create_directories(fs::path(job.log).parent_path());
      std::string cmd;
      for (const std::string& a : job.argv) cmd += (cmd.empty() ? a : " " + a);
      append(job.log, fmt::format("== {} {}{}\n", now_text(), cmd,
                                  device.empty() ? "" : " (CUDA_VISIBLE_DEVICES=" + device + ")"));
      if (opt.on_start) opt.on_start(next, slot);
      const Clock::time_point t0 = Clock::now();
      pid_t pid = start(job, device);
      if (pid < 0) {
        append(job.log, fmt::format("cannot start '{}': {}\n", job.argv[0], std::strerror(errno)));
        finish(next++, 127, t0);
        continue;
      }
      busy[slot] = true;
      running[pid] = {next++, slot, t0};
    }
    if (running.empty()) {
      if (stopping) break;
      continue;
    }
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(fmt::format("waiting for the runs: {}", std::strerror(errno)));
    }
    auto it = running.find(pid);
    if (it == running.end()) continue;  // not one of ours
    const Running r = it->second;
    running.erase(it);
    busy[r.slot] = false;
    finish(r.job, exit_code_of(status), r.t0);
  }
  return results;
}

std::vector<std::string> visible_gpus(int device_count) {
  std::vector<std::string> out;
  if (const char* v = std::getenv("CUDA_VISIBLE_DEVICES")) {
    std::string s = v;
    size_t at = 0;
    while (at <= s.size()) {
      size_t comma = s.find(',', at);
      std::string e = s.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
      e.erase(0, e.find_first_not_of(" \t"));
      e.erase(e.find_last_not_of(" \t") + 1);
      if (!e.empty()) out.push_back(e);
      if (comma == std::string::npos) break;
      at = comma + 1;
    }
    return out;
  }
  for (int i = 0; i < device_count; ++i) out.push_back(std::to_string(i));
  return out;
}

}  // namespace attn::studies
