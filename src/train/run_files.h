// Files of a run directory: atomic writes, the JSONL metrics log, checkpoints.
#pragma once
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "models/lm/lm.h"
#include "optim/adamw.h"

namespace attn::train {

// Writes `content` to path via a temporary file and a rename: readers see the old or the new file.
void write_atomic(const std::string& path, const std::string& content);
std::string read_file(const std::string& path);

// Appends one JSON object per line, flushed each time (a crash loses at most the line in flight).
class MetricsLog {
 public:
  // Truncates the file to `keep_bytes` first (a resume drops rows written after its checkpoint).
  MetricsLog(const std::string& path, uint64_t keep_bytes);
  void write(const nlohmann::json& row);
  uint64_t bytes() const { return bytes_; }

 private:
  std::ofstream out_;
  uint64_t bytes_;
};

// Everything needed to continue a run exactly where it stopped.
struct TrainState {
  int64_t step = 0;             // optimizer steps completed
  uint64_t data_position = 0;   // batches served by the batcher
  uint64_t dropout_offset = 0;  // the model's dropout generator
  uint64_t metrics_bytes = 0;   // metrics.jsonl length at this point
  double elapsed_s = 0;         // training wall time so far
  double best_val_loss = 1e300;
  int64_t tokens = 0;
};

void save_checkpoint(const std::string& path, const models::DecoderLM& model, const AdamW& opt, const TrainState& s);
// Restores params and optimizer in place; throws naming what does not match.
TrainState load_checkpoint(const std::string& path, models::DecoderLM& model, AdamW* opt);
// The checkpoint with the highest step in dir, or "" when there is none.
std::string latest_checkpoint(const std::string& dir);
// Keeps the `keep` newest checkpoints in dir.
void prune_checkpoints(const std::string& dir, int64_t keep);

}  // namespace attn::train
