// The process's log (spdlog underneath), for every layer: what used to be fmt::print(stderr, ...).
// Rank 0 writes each message to stderr exactly as given, its own line ends included (the progress
// line's "\r" and trailing blanks), so a single-process run's console is what it always was.
// In a job of several processes every rank also appends to <run_dir>/logs/rank-<rank>.log, one
// line per line of text with a UTC timestamp, the level and the rank; the other ranks' consoles
// carry only errors, prefixed "[rank N] " (a rank whose file fails has nowhere else to say so).
// A single process writes no file: its console is already the whole record.
//
// Before init() (or after reset()) the log is rank 0 of 1 at level info: stderr only.
#pragma once
#include <fmt/format.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace attn::logging {

// A message passes when its level is at or above the log's level.
enum class Level { Trace, Debug, Info, Warn, Error };

// The variable that overrides the config key log.level (and every caller's level).
inline constexpr const char* kLevelVariable = "ATTNLAB_LOG_LEVEL";

// A level name that is none of trace, debug, info, warn, error; the message names its source.
class LevelError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// "info" -> Level::Info; anything else throws LevelError naming `source` ("config key
// 'log.level'") and the five names.
Level parse_level(std::string_view name, std::string_view source);
const char* level_name(Level level);
// ATTNLAB_LOG_LEVEL's level; nullopt when it is unset or empty; LevelError when it is no level.
std::optional<Level> level_from_environment();

// Configures the log for this process: `level`, unless ATTNLAB_LOG_LEVEL is set, which beats it;
// rank 0's console; with world_size > 1 and a run_dir, the file run_dir/logs/rank-<rank>.log
// (the folder made, the file appended to, a first line saying who opened it). Callable again (the
// trainer calls it once the config is known, again once the run directory is locked). Throws
// LevelError, std::invalid_argument for a rank outside [0, world_size), std::runtime_error naming
// the folder or file it cannot make or open.
void init(int rank, int world_size, const std::string& run_dir, Level level);
// Back to the state before init(): rank 0 of 1, level info, stderr only; closes the file.
void reset();
// Only the level (ATTNLAB_LOG_LEVEL still beats it); the sinks stay. Throws LevelError as init().
void set_level(Level level);

Level level();
bool enabled(Level level);
// The rank file written to; empty when there is none.
std::string file_path();

// Logs `text` as it is, line ends included. A failed write (a full disk) throws std::runtime_error
// naming the file and the system's reason, as every other run file's write does (train/run_files.h:
// the run stops with exit 1); the sink that failed is dropped, so the error itself can still be
// logged by the caller on the sinks that work.
void write(Level level, std::string_view text);

template <class... Args>
void log(Level level, fmt::format_string<Args...> format, Args&&... args) {
  if (enabled(level)) write(level, fmt::format(format, std::forward<Args>(args)...));
}
template <class... Args>
void trace(fmt::format_string<Args...> format, Args&&... args) {
  log(Level::Trace, format, std::forward<Args>(args)...);
}
template <class... Args>
void debug(fmt::format_string<Args...> format, Args&&... args) {
  log(Level::Debug, format, std::forward<Args>(args)...);
}
template <class... Args>
void info(fmt::format_string<Args...> format, Args&&... args) {
  log(Level::Info, format, std::forward<Args>(args)...);
}
template <class... Args>
void warn(fmt::format_string<Args...> format, Args&&... args) {
  log(Level::Warn, format, std::forward<Args>(args)...);
}
template <class... Args>
void error(fmt::format_string<Args...> format, Args&&... args) {
  log(Level::Error, format, std::forward<Args>(args)...);
}

}  // namespace attn::logging
