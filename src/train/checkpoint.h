// Checkpoints: everything needed to continue a run exactly where it stopped, in a verified file.
//
// Format 2 (little-endian):
//   0  char[8] "ATNLCKPT"    8  u32 version (2)    12 u32 header bytes (32)
//   16 u64 payload bytes     24 u64 XXH64 of the payload (seed 0)
//   32 payload: the TrainState fields, u64 parameter count, per parameter (name, tensor), AdamW.
// A file whose size, magic, version or checksum is off is rejected before a byte of it is used.
// Format 1 (attnlab before the checksum: the payload behind the string "ATTNLAB-CKPT-1") loads
// with a note that it could not be verified.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "nn/module.h"
#include "optim/adamw.h"

namespace attn::train {

// A checkpoint that cannot be used: the message names the file and what is wrong with it.
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TrainState {
  int64_t step = 0;             // optimizer steps completed
  uint64_t data_position = 0;   // batches served by the batcher
  uint64_t dropout_offset = 0;  // the model's dropout generator
  uint64_t metrics_bytes = 0;   // metrics.jsonl length at this point
  double elapsed_s = 0;         // training wall time so far
  double best_val_loss = 1e300;
  int64_t tokens = 0;
};

// Written through write_atomic (fsync of the file before the rename, of the directory after).
void save_checkpoint(const std::string& path, const nn::Module& model, const AdamW& opt,
                     const TrainState& s);

// "" when the file is a complete format-2 checkpoint whose checksum matches, else why not.
std::string verify_checkpoint(const std::string& path);

// Verifies, then restores parameters (and the optimizer unless null) in place; nothing is changed
// when it throws (CheckpointError naming the file). Non-finite weights or moments are refused.
TrainState load_checkpoint(const std::string& path, nn::Module& model, AdamW* opt);

// step-*.ckpt in dir, oldest first (names carry a zero-padded step).
std::vector<std::string> list_checkpoints(const std::string& dir);
// The checkpoint with the highest step in dir, or "" when there is none.
std::string latest_checkpoint(const std::string& dir);

// The newest checkpoint in dir that verifies ("" if none), and the newer ones that did not, with
// the reason: what "the last good checkpoint" may name.
struct VerifiedCheckpoint {
  std::string path;
  std::vector<std::pair<std::string, std::string>> rejected;  // (file, reason), newest first
};
VerifiedCheckpoint latest_verified_checkpoint(const std::string& dir);

// Keeps the `keep` newest checkpoints in dir.
void prune_checkpoints(const std::string& dir, int64_t keep);

}  // namespace attn::train
