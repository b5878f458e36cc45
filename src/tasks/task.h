// A task: one model family the generic trainer (src/train/) can train. The task owns what is its
// own — its config keys (tasks/registry.cpp collects them into the schema), the rules that
// resolve its "auto" values (the n of the sigmoid bias b = -ln n), the model, the resumable
// training stream, the evaluation set, the loss and its metrics, the files it keeps in the run
// directory. The trainer owns the loop, accumulation, clipping, AdamW, the schedule, logging,
// the evaluation cadence, checkpoints and resume, and knows no task by name.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "nn/module.h"
#include "tensor/tensor.h"

namespace attn::tasks {

// A column of `compare`'s table: a number in summary.json, its header ("{unit}" is replaced by
// the run's summary "unit"), its format ("{:.4f}"). A key ending in "@*" is a family: one column
// for each "<key>@<suffix>" that every run of the table has (a metric per eval length the config
// chose: "final_val_loss@256"), in the order of the suffixes' numbers, "{at}" in the header
// replaced by the suffix; none when no suffix is common to all of them.
struct Column {
  std::string key, header, format;
};

// Adds numbers up over the processes of a data-parallel job, in place on every rank (the
// identity in a single process): what a sharded evaluation sums (losses × counts, counts, edits).
using SumAcrossRanks = std::function<void(std::vector<double>&)>;

// Which share of the work this process does in a data-parallel job of `world` processes.
struct Shard {
  int rank = 0, world = 1;
  SumAcrossRanks sum = [](std::vector<double>&) {};
  // Rows [begin, end) of n that are this rank's: the r-th of world near-equal contiguous parts
  // (floor(r·n/W) to floor((r+1)·n/W)); empty when n < world for some ranks.
  std::pair<int64_t, int64_t> rows(int64_t n) const { return {rank * n / world, (rank + 1) * n / world}; }
};

class Task {
 public:
  virtual ~Task() = default;

  // Resolves the task's "auto" values and checks the rules between its keys (ConfigError).
  virtual void resolve(config::Config& c) const = 0;

  // Loads the data and builds the model from run.seed, placed on `device` (run.precision too).
  // A non-empty saved_run_dir restores the run's own files (artifacts()) from there instead of
  // deriving them from the data, so a resume or an eval sees exactly what the run saw.
  virtual void prepare(const config::Config& c, const std::string& saved_run_dir, Device device) = 0;
  virtual nn::Module& model() = 0;
  virtual Generator& dropout_generator() = 0;  // dropout (and drop-path): checkpointed
  // Files the run keeps beside config.yaml: (name, content).
  virtual std::vector<std::pair<std::string, std::string>> artifacts() const = 0;

  // The training stream: the loss of the next micro-batch (with its graph). position() counts
  // the micro-batches served; set_position() continues a saved stream exactly.
  virtual Tensor next_train_loss() = 0;
  virtual uint64_t position() const = 0;
  virtual void set_position(uint64_t p) = 0;
  // Data parallelism (train/data_parallel.h): from now on next_train_loss() computes the loss
  // of this rank's share of every global micro-batch (train.batch_size rows, the same stream
  // for any world size), weighted so that the MEAN over the ranks of their losses, and so of
  // their gradients, is the global micro-batch's loss; evaluate() and final_metrics() score
  // this rank's share of each evaluation batch and sum the counts with shard.sum, so every rank
  // returns the metrics of the whole set. Called after prepare(), before the first batch; until
  // then a task is the whole job (rank 0 of 1).
  virtual void set_shard(Shard shard) = 0;
  // What a (global) micro-batch holds, for throughput: {count, "tokens" | "images"}.
  virtual std::pair<int64_t, std::string> items_per_micro_batch() const = 0;

  // Validation metrics, the model in eval mode under no grad (the trainer sets both): at least
  // "val_loss" (the trainer tracks its best). One line for the progress output.
  virtual nlohmann::json evaluate() = 0;
  virtual std::string describe(const nlohmann::json& metrics) const = 0;
  virtual int64_t validation_batches() const = 0;
  // Metrics added to summary.json when the run finishes (a held-out test set); none by default.
  virtual nlohmann::json final_metrics() { return nlohmann::json::object(); }

  // compare's columns for this task's summaries.
  virtual std::vector<Column> compare_columns() const = 0;

  // The modules (dotted paths of model()) that fake quantisation keeps in full precision: the
  // output head, weights and activations (`attnlab eval --quant`).
  virtual std::vector<std::string> full_precision_modules() const { return {"head"}; }
};

}  // namespace attn::tasks
