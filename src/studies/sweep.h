// `attnlab sweep GRID.yaml`: every run of a study's grid (studies/grid.h) as an `attnlab train`
// child process: finished (and diverged) runs skipped, interrupted ones resumed, the rest trained;
// a failed run is reported (exit code, log) and the others go on. Then each finished run's
// quantised evaluations (the grid's `quant:`, studies/quant_eval.h) that are not current. Each
// run's stdout and stderr go to runs_dir/logs/<name>.log, its outcome to
// runs_dir/logs/<name>.status.json. The whole grid is validated first: a bad grid is one
// ConfigError (exit 2) and nothing starts. Then the report.
#pragma once
#include <cstdint>
#include <string>

namespace attn::studies {

struct SweepOptions {
  std::string grid;
  std::string runs_dir;     // overrides the grid's runs_dir when not empty
  bool dry_run = false;     // print the runs and their commands, start nothing
  std::string emit_slurm;   // write a Slurm job-array script here instead of running
  int64_t only_index = -1;  // run only this run (a Slurm array task); no report
  int64_t parallel = 0;     // runs at once; 0: one per visible GPU for CUDA runs, else 1
  int64_t threads = 0;      // > 0: each child's run.threads (--set; it changes no result)
  bool report = true;
  int64_t child_abort_after_step = -1;  // testing: passed to each child as --abort-after-step
  int64_t child_nan_at_step = -1;       // testing: passed to each child as --nan-at-step
};

// 0 when every run finished or diverged (a result: studies/divergence.h); 1 when one failed, a
// quantised evaluation failed, or the report did; 128 + signal when stopped.
int run_sweep(const SweepOptions& opt);

}  // namespace attn::studies
