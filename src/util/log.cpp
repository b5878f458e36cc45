#include "util/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <spdlog/logger.h>
#include <spdlog/sinks/base_sink.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <mutex>
#include <vector>

#include "util/write_all.h"

namespace fs = std::filesystem;

namespace attn::logging {

namespace {

constexpr const char* kNames[] = {"trace", "debug", "info", "warn", "error"};

// Our levels are spdlog's first five, in the same order.
static_assert(static_cast<int>(spdlog::level::trace) == 0 &&
              static_cast<int>(spdlog::level::err) == 4);
spdlog::level::level_enum to_spdlog(Level l) { return static_cast<spdlog::level::level_enum>(l); }

// A sink whose failure is kept for write() to throw, instead of thrown into spdlog (which would
// print it its own way, rate-limited, and carry on). A sink that failed writes nothing more.
class CheckedSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::optional<std::string> take_failure() {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::exchange(failure_, std::nullopt);
  }

 protected:
  void fail(std::string why) {  // under mutex_ (from sink_it_)
    failed_ = true;
    failure_ = std::move(why);
  }
  void flush_() override {}
  bool failed_ = false;

 private:
  std::optional<std::string> failure_;
};

// Rank 0's console: the text exactly as given.
class ConsoleSink : public CheckedSink {
 protected:
  void sink_it_(const spdlog::details::log_msg& m) override {
    if (failed_) return;
    if (std::fwrite(m.payload.data(), 1, m.payload.size(), stderr) != m.payload.size())
      fail(fmt::format("cannot write to stderr: {}", std::strerror(errno)));
  }
};

// 2025-01-31T12:00:00.123Z: UTC, so that the ranks of a job on machines in different time zones
// sort together.
std::string utc_timestamp(std::chrono::system_clock::time_point t) {
  const int64_t ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  const std::time_t s = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&s, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
}

// Each line of `text` (split at "\n" and "\r", trailing blanks cut) after `prefix`; empty lines
// (the "\n" that ends a run of "\r" progress lines) are dropped.
std::string prefixed_lines(std::string_view text, std::string_view prefix) {
  std::string out;
  while (!text.empty()) {
    size_t end = text.find_first_of("\r\n");
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    if (line.empty()) continue;
    out.append(prefix).append(line).push_back('\n');
  }
  return out;
}

// A rank's file: one write(2) per message, unbuffered, so a crash loses nothing already logged.
class RankFileSink : public CheckedSink {
 public:
  RankFileSink(std::string path, int rank) : path_(std::move(path)), rank_(rank) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0)
      throw std::runtime_error(
          fmt::format("cannot open the log file '{}': {}", path_, std::strerror(errno)));
  }
  ~RankFileSink() override {
    if (fd_ >= 0) ::close(fd_);
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& m) override {
    if (failed_) return;
    const std::string prefix = fmt::format("[{}] [{}] [rank {}] ", utc_timestamp(m.time),
                                           kNames[static_cast<int>(m.level)], rank_);
    const std::string lines =
        prefixed_lines(std::string_view(m.payload.data(), m.payload.size()), prefix);
    if (!util::write_all(fd_, lines.data(), lines.size()))
      fail(fmt::format("cannot write a log line to '{}': {}", path_, std::strerror(errno)));
  }

 private:
  std::string path_;
  int rank_;
  int fd_ = -1;
};

// The console of a rank other than 0: its errors only (the sink's level), each line marked.
class RankConsoleSink : public CheckedSink {
 public:
  explicit RankConsoleSink(int rank) : prefix_(fmt::format("[rank {}] ", rank)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& m) override {
    if (failed_) return;
    const std::string lines =
        prefixed_lines(std::string_view(m.payload.data(), m.payload.size()), prefix_);
    if (std::fwrite(lines.data(), 1, lines.size(), stderr) != lines.size())
      fail(fmt::format("cannot write to stderr: {}", std::strerror(errno)));
  }

 private:
  std::string prefix_;
};

struct Log {
  std::shared_ptr<spdlog::logger> logger;
  std::vector<std::shared_ptr<CheckedSink>> sinks;
  std::string file;
};

// Raises the first failure a sink kept.
void throw_failure(const std::vector<std::shared_ptr<CheckedSink>>& sinks) {
  for (const auto& s : sinks)
    if (std::optional<std::string> why = s->take_failure()) throw std::runtime_error(*why);
}

Log make_log(int rank, int world_size, const std::string& run_dir, Level level) {
  Log out;
  if (rank == 0) {
    out.sinks.push_back(std::make_shared<ConsoleSink>());
  } else {
    out.sinks.push_back(std::make_shared<RankConsoleSink>(rank));
    out.sinks.back()->set_level(spdlog::level::err);
  }
  if (world_size > 1 && !run_dir.empty()) {
    const std::string dir = run_dir + "/logs";
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec)
      throw std::runtime_error(
          fmt::format("cannot create the log folder '{}': {}", dir, ec.message()));
    out.file = fmt::format("{}/rank-{}.log", dir, rank);
    auto file = std::make_shared<RankFileSink>(out.file, rank);
    // Only to the file: which process appended what (a resumed run appends to the same file).
    const std::string opened = fmt::format("log opened by pid {}: rank {} of {}, level {}\n",
                                           ::getpid(), rank, world_size, level_name(level));
    file->log(spdlog::details::log_msg("attnlab", spdlog::level::info, opened));
    throw_failure({file});
    out.sinks.push_back(std::move(file));
  }
  std::vector<spdlog::sink_ptr> sinks(out.sinks.begin(), out.sinks.end());
  out.logger = std::make_shared<spdlog::logger>("attnlab", sinks.begin(), sinks.end());
  out.logger->set_level(to_spdlog(level));
  return out;
}

// The process's log; read by every message, replaced by init() and reset().
std::mutex log_mutex;
std::atomic<int> current_level{static_cast<int>(Level::Info)};
Log& current() {
  static Log log = make_log(0, 1, "", Level::Info);
  return log;
}

void install(Log log, Level level) {
  std::lock_guard<std::mutex> lock(log_mutex);
  current() = std::move(log);
  current_level = static_cast<int>(level);
}

}  // namespace

Level parse_level(std::string_view name, std::string_view source) {
  for (int i = 0; i < 5; ++i)
    if (name == kNames[i]) return static_cast<Level>(i);
  throw LevelError(fmt::format(
      "{}: '{}' is not a log level (expected trace, debug, info, warn or error)", source, name));
}

const char* level_name(Level level) { return kNames[static_cast<int>(level)]; }

std::optional<Level> level_from_environment() {
  const char* v = std::getenv(kLevelVariable);
  if (!v || !*v) return std::nullopt;
  return parse_level(v, fmt::format("environment variable {}", kLevelVariable));
}

void init(int rank, int world_size, const std::string& run_dir, Level level) {
  if (world_size < 1 || rank < 0 || rank >= world_size)
    throw std::invalid_argument(
        fmt::format("logging::init: rank {} is outside a job of {} processes", rank, world_size));
  const Level effective = level_from_environment().value_or(level);
  install(make_log(rank, world_size, run_dir, effective), effective);
}

void reset() { install(make_log(0, 1, "", Level::Info), Level::Info); }

void set_level(Level level) {
  const Level effective = level_from_environment().value_or(level);
  std::lock_guard<std::mutex> lock(log_mutex);
  current().logger->set_level(to_spdlog(effective));
  current_level = static_cast<int>(effective);
}

Level level() { return static_cast<Level>(current_level.load()); }

bool enabled(Level l) { return static_cast<int>(l) >= current_level.load(); }

std::string file_path() {
  std::lock_guard<std::mutex> lock(log_mutex);
  return current().file;
}

void write(Level level, std::string_view text) {
  std::shared_ptr<spdlog::logger> logger;
  std::vector<std::shared_ptr<CheckedSink>> sinks;
  {
    std::lock_guard<std::mutex> lock(log_mutex);
    logger = current().logger;
    sinks = current().sinks;
  }
  logger->log(to_spdlog(level), spdlog::string_view_t(text.data(), text.size()));
  throw_failure(sinks);
}

}  // namespace attn::logging
