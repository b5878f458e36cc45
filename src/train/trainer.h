// The generic training loop (any task, tasks/task.h): config -> run directory with config.yaml,
// the task's files (tokenizer.json), metrics.jsonl, checkpoints/ and (when finished) summary.json.
#pragma once
#include <string>
#include <vector>

#include "config/config.h"

namespace attn::train {

using config::Config;
using config::ConfigError;

struct TrainOptions {
  bool resume = false;           // continue the run in run.dir from its latest good checkpoint
  bool quiet = false;            // no progress line
  int64_t abort_after_step = -1; // testing: SIGKILL ourselves after this step (crash simulation)
  int abort_rank = -1;           // testing, in a job: only this rank dies (-1: every rank)
  bool stall = false;            // testing: at abort_after_step, stop answering instead of dying
  int64_t nan_at_step = -1;      // testing: poison the loss at this step
};

// In a data-parallel job (started by mpirun or srun; train/data_parallel.h) every rank runs
// this; rank 0 alone writes the run directory, but for each rank's own logs/rank-N.log.
// Exit codes: 0 done; 2 configuration error (nothing written); 3 non-finite loss or gradient
// (the last good checkpoint is kept); 128 + signal after SIGINT/SIGTERM (a checkpoint of the last
// step written); 1 anything else (a failed write, an unusable checkpoint: the message names the file).
int run_training(Config cfg, const TrainOptions& opt);

// Validation loss of a run's checkpoint (the newest that verifies when checkpoint is empty), printed
// as JSON, in eval mode. The given keys of `requested` (its --set) may change only what
// saved_config.h allows for an eval (say run.device=cpu for a run trained on a GPU).
// quant: empty, or a fake-quantisation scheme ("w8a8", "w8a16"; metrics/fake_quant.h) to
// evaluate the checkpoint with, after `calibration_batches` training batches set the activation
// ranges; per_channel: one weight scale per output row.
struct QuantEval {
  std::string scheme;
  bool per_channel = false;
  int64_t calibration_batches = 16;
};
int run_eval(const std::string& run_dir, const std::string& checkpoint, const Config& requested,
             const QuantEval& quant = {});

// Throughput (tokens/s, images/s) of forward + backward + AdamW for the config's task on its
// training stream (train/bench_train.cpp).
int run_train_bench(Config cfg, int64_t steps);

}  // namespace attn::train
