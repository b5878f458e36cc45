// A task: one model family the generic trainer (src/train/) can train. The task owns what is its
// own — its config keys (tasks/registry.cpp collects them into the schema), the rules that
// resolve its "auto" values (the n of the sigmoid bias b = -ln n), the model, the resumable
// training stream, the evaluation set, the loss and its metrics, the files it keeps in the run
// directory. The trainer owns the loop, accumulation, clipping, AdamW, the schedule, logging,
// the evaluation cadence, checkpoints and resume, and knows no task by name.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "nn/module.h"
#include "tensor/tensor.h"

namespace attn::tasks {

// A column of `compare`'s table: a number in summary.json, its header ("{unit}" is replaced by
// the run's summary "unit"), its format ("{:.4f}").
struct Column {
  std::string key, header, format;
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
  // What a micro-batch holds, for throughput: {count, "tokens" | "images"}.
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
