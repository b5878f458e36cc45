#include "studies/run_plan.h"

#include <fmt/format.h>
#include <filesystem>

#include "studies/divergence.h"
#include "train/run_dir.h"
#include "train/run_setup.h"
#include "train/saved_config.h"

namespace fs = std::filesystem;

namespace attn::studies {

using config::Config;
using config::ConfigError;

namespace {

// Runs `f`, turning its ConfigError into one that says where in the grid the value came from.
template <typename F>
void blame(const Grid& g, const std::string& where, F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("grid '{}': {}: {}", g.path, where, e.what()));
  }
}

}  // namespace

const char* state_name(RunState s) {
  switch (s) {
    case RunState::New:
      return "new";
    case RunState::Resume:
      return "resume";
    case RunState::Finished:
      return "finished";
    case RunState::Diverged:
      return "diverged";
  }
  return "?";
}

std::vector<std::string> train_args(const Grid& grid, const GridRun& run) {
  std::vector<std::string> args = {"train", "--config", grid.base};
  for (const std::string& s : grid.sets) args.insert(args.end(), {"--set", s});
  for (const auto& [k, v] : run.sets) args.insert(args.end(), {"--set", k + "=" + v});
  args.insert(args.end(),
              {"--set", "run.seed=" + std::to_string(run.seed), "--set", "run.dir=" + run.dir});
  return args;
}

Config run_config(const Grid& grid, const GridRun& run) {
  Config c;
  blame(grid, "base", [&] { c = Config::from_file(grid.base); });
  for (const std::string& s : grid.sets) blame(grid, fmt::format("set '{}'", s), [&] { c.set(s); });
  for (size_t i = 0; i < run.sets.size(); ++i) {
    const auto& [k, v] = run.sets[i];
    blame(grid, fmt::format("axis key '{}' value '{}'", k, v), [&] { c.set(k + "=" + v); });
  }
  blame(grid, "seeds", [&] { c.set("run.seed=" + std::to_string(run.seed)); });
  blame(grid, "runs_dir", [&] { c.set("run.dir=" + run.dir); });
  blame(grid, fmt::format("run {}", run.name), [&] { train::resolve_run_config(c); });
  return c;
}

std::vector<PlannedRun> plan_runs(const Grid& grid, const std::vector<GridRun>& runs) {
  std::vector<PlannedRun> out;
  for (const GridRun& r : runs) {
    const Config c = run_config(grid, r);
    PlannedRun p{r, RunState::New, c.get_string("run.device"), train_args(grid, r)};
    const std::string where = fmt::format("run {} ({})", r.name, r.dir);
    if (fs::exists(r.dir + "/config.yaml")) {
      // The run on disk must be the grid's run, as its resume would demand (config.yaml is the
      // truth).
      blame(grid, where, [&] {
        train::check_run_dir(r.dir, true);
        const Config saved = Config::from_file(r.dir + "/config.yaml");
        train::reopen_config(saved, c, train::Reopen::Resume, r.dir);
        // Finished and diverged runs are outcomes; another train.steps in the grid resumes them
        // (the trainer's extension: a diverged run from its last good checkpoint, on the
        // schedule of the new length).
        const bool same_steps = saved.get_int("train.steps") == c.get_int("train.steps");
        const std::optional<int64_t> diverged = diverged_at(r.dir);
        if (same_steps && fs::exists(r.dir + "/summary.json"))
          p.state = RunState::Finished;
        else if (same_steps && diverged)
          p.state = RunState::Diverged, p.diverged_step = *diverged;
        else
          p.state = RunState::Resume;
      });
    } else {
      blame(grid, where, [&] { train::check_run_dir(r.dir, false); });
    }
    if (p.state == RunState::Resume) p.train_args.push_back("--resume");
    out.push_back(std::move(p));
  }
  return out;
}

std::string log_file(const Grid& grid, const GridRun& run, const std::string& suffix) {
  return (fs::path(grid.runs_dir) / "logs" / (run.name + suffix + ".log")).string();
}

std::string status_file(const Grid& grid, const GridRun& run, const std::string& suffix) {
  return (fs::path(grid.runs_dir) / "logs" / (run.name + suffix + ".status.json")).string();
}

std::string attnlab_binary() { return fs::read_symlink("/proc/self/exe").string(); }

std::string display_path(const std::string& path) {
  std::error_code ec;
  const fs::path abs = fs::absolute(path, ec).lexically_normal(), here = fs::current_path(ec);
  const fs::path rel = abs.lexically_relative(here);
  return !ec && !rel.empty() && *rel.begin() != ".." ? rel.string() : path;
}

std::string shell_line(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& a : argv) {
    const bool plain = !a.empty() && a.find_first_not_of(
                                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789._-+=/:,@%") == std::string::npos;
    if (!out.empty()) out += ' ';
    if (plain) {
      out += a;
      continue;
    }
    out += '\'';
    for (char ch : a) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    out += '\'';
  }
  return out;
}

}  // namespace attn::studies
