// espeak-ng as a child process: posix_spawnp with an argv (never a shell), its exit status checked.
#include "data/espeak.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

extern char** environ;

namespace attn::data {

namespace {

std::string display_command(const std::vector<std::string>& argv) {
  std::string s;
  for (const std::string& a : argv) {
    bool plain = !a.empty() && a.find_first_of(" '\"\\$`!*?;&|<>()") == std::string::npos;
    s += (s.empty() ? "" : " ") + (plain ? a : "'" + a + "'");
  }
  return s;
}

struct CommandResult {
  int status = 0;      // waitpid status
  std::string output;  // stdout and stderr together
};

// posix_spawnp with an argv (no shell), stdin from /dev/null, stdout and stderr into one pipe.
CommandResult run_command(const std::vector<std::string>& argv) {
  int fds[2];
  // O_CLOEXEC: a child spawned by another thread meanwhile must not inherit this pipe.
  if (::pipe2(fds, O_CLOEXEC) != 0)
    throw std::runtime_error("cannot run " + display_command(argv) +
                             ": pipe: " + std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    throw std::runtime_error(
        "cannot run " + display_command(argv) + ": " + std::strerror(rc) +
        (rc == ENOENT ? " (install espeak-ng: apt-get install espeak-ng)" : ""));
  }
  CommandResult r;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n > 0 && r.output.size() < 16384) r.output.append(buf, static_cast<size_t>(n));
    if (n == 0 || (n < 0 && errno != EINTR)) break;
  }
  ::close(fds[0]);
  while (::waitpid(pid, &r.status, 0) < 0 && errno == EINTR) {
  }
  return r;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

}  // namespace

// `espeak-ng --version` prints "eSpeak NG text-to-speech: 1.51  Data at:
// /usr/lib/.../espeak-ng-data".
EspeakInstall espeak_install() {
  std::vector<std::string> argv = {"espeak-ng", "--version"};
  CommandResult r = run_command(argv);
  if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0)
    throw std::runtime_error(display_command(argv) + " failed (" + describe_status(r.status) + ")");
  auto field = [&](const std::string& label) {
    size_t at = r.output.find(label);
    if (at == std::string::npos) return std::string();
    size_t start = r.output.find_first_not_of(' ', at + label.size());
    size_t end = r.output.find_first_of(" \n", start);
    return start == std::string::npos ? std::string() : r.output.substr(start, end - start);
  };
  EspeakInstall e{field("text-to-speech:"), field("Data at:")};
  if (e.version.empty() || e.data_dir.empty())
    throw std::runtime_error("cannot parse the output of " + display_command(argv) + ": " +
                             r.output);
  return e;
}

void espeak_to_wav(const std::string& text, const std::string& voice, int rate, int pitch,
                   const std::string& wav_path) {
  std::vector<std::string> argv = {
      "espeak-ng",           "-v", voice,    "-s", std::to_string(rate), "-p",
      std::to_string(pitch), "-w", wav_path, text};
  CommandResult r = run_command(argv);
  if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0)
    throw std::runtime_error(display_command(argv) + " failed (" + describe_status(r.status) + ")" +
                             (r.output.empty() ? "" : ": " + r.output));
}

}  // namespace attn::data
