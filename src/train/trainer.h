// The LM training loop: config -> run directory with config.yaml, tokenizer.json, metrics.jsonl,
// checkpoints/ and (when finished) summary.json.
#pragma once
#include <string>
#include <vector>

#include "train/config.h"

namespace attn::train {

struct TrainOptions {
  bool resume = false;           // continue the run in run.dir from its latest checkpoint
  bool quiet = false;            // no progress line
  int64_t abort_after_step = -1; // testing: SIGKILL ourselves after this step (crash simulation)
  int64_t nan_at_step = -1;      // testing: poison the loss at this step
};

// Exit codes: 0 done; 2 configuration error (nothing written); 3 non-finite loss or gradient
// (the last good checkpoint is kept); 1 anything else.
int run_training(Config cfg, const TrainOptions& opt);

// Validation loss of a run's checkpoint (latest when checkpoint is empty), printed as JSON.
// `sets` override the run's saved config (say run.device=cpu for a run trained on a GPU).
int run_eval(const std::string& run_dir, const std::string& checkpoint, const std::vector<std::string>& sets = {});

// Tokens/s of forward + backward + AdamW for the config's model on random tokens.
int run_train_bench(Config cfg, int64_t steps);

// Sets OpenMP and Eigen threads (0: all cores).
void set_threads(int64_t n);

}  // namespace attn::train
