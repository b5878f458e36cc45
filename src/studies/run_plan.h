// What a sweep will do with each run of a grid, decided and checked before anything starts:
// the run's config validated with the real schema and the trainer's rules (the task's rules, the
// run directory's safety), its state on disk, and the `attnlab train` command that trains it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"
#include "studies/grid.h"

namespace attn::studies {

enum class RunState {
  New,       // nothing there: trained
  Resume,    // config.yaml but no summary.json (interrupted or failed): resumed with --resume
  Finished,  // summary.json, the grid's train.steps: skipped
  Diverged,  // stopped on a non-finite loss (studies/divergence.h), the grid's train.steps: kept
};
const char* state_name(RunState s);

struct PlannedRun {
  GridRun run;
  RunState state = RunState::New;
  std::string device;  // the resolved run.device
  // `attnlab train` arguments after the program name: --config BASE, the grid's --set, the
  // axes', run.seed, run.dir (and --resume for a resumed run).
  std::vector<std::string> train_args;
  int64_t diverged_step = -1;  // Diverged: the step of the non-finite loss
};

// The run's config (base, the grid's set:, its axis values, seed and directory), resolved by the
// task's and the trainer's rules. A ConfigError names the grid file and what gave the bad key.
config::Config run_config(const Grid& grid, const GridRun& run);

// Every run checked (config, run directory; a run on disk must match the grid, as a resume
// would demand) and its state; the first problem is a ConfigError naming the grid and the run.
std::vector<PlannedRun> plan_runs(const Grid& grid, const std::vector<GridRun>& runs);

// The arguments of a fresh `attnlab train` for the run (no --resume).
std::vector<std::string> train_args(const Grid& grid, const GridRun& run);

// The sweep's files of a run in runs_dir/logs: <name><suffix>.log, the child's output, and
// <name><suffix>.status.json, its outcome; suffix "" for the training, ".eval-MODE" for a
// quantised evaluation.
std::string log_file(const Grid& grid, const GridRun& run, const std::string& suffix = "");
std::string status_file(const Grid& grid, const GridRun& run, const std::string& suffix = "");

// The running attnlab binary (/proc/self/exe), absolute.
std::string attnlab_binary();
// A path as a user would type it here: relative to the current directory when inside it.
std::string display_path(const std::string& path);

// A command line for a shell: each argument single-quoted when it needs to be.
std::string shell_line(const std::vector<std::string>& argv);

}  // namespace attn::studies
