// The decoder LM on text (task: lm): the KJV Bible, a text file or llm.c token shards; a char or
// byte tokenizer saved with the run; next-token cross-entropy; bits per char/byte/token; and, for
// length generalisation, the validation loss at the extra lengths of eval.lengths.
#pragma once
#include <memory>
#include <vector>

#include "config/config.h"
#include "data/batcher.h"
#include "data/tokenizer.h"
#include "models/lm/lm.h"
#include "tasks/task.h"

namespace attn::tasks {

std::vector<config::KeySpec> lm_keys();

struct LmData {
  std::shared_ptr<const std::vector<int32_t>> train, val;
  std::unique_ptr<data::Tokenizer> tokenizer;  // null for token shards
  int64_t vocab_size = 0;
  std::string unit = "char";  // what one token is, for bits-per-unit
};

// Loads the corpus the config names. `tokenizer_json`, when not empty, restores the run's saved
// vocabulary (eval and resume) instead of building it from the corpus.
LmData load_lm_data(const config::Config& c, const std::string& tokenizer_json = "");
// ConfigError naming the corpus and the keys when a split is too short for the batch shape (or
// for one window of the longest of eval.lengths).
void check_lm_data_fits(const config::Config& c, const LmData& d);
nn::ModelConfig lm_model_config(const config::Config& c, int64_t vocab_size);

class LmTask : public Task {
 public:
  void resolve(config::Config& c) const override;
  void prepare(const config::Config& c, const std::string& saved_run_dir, Device device) override;
  nn::Module& model() override { return *model_; }
  Generator& dropout_generator() override { return model_->dropout_gen; }
  std::vector<std::pair<std::string, std::string>> artifacts() const override;

  Tensor next_train_loss() override;
  uint64_t position() const override { return batcher_->position(); }
  void set_position(uint64_t p) override { batcher_->set_position(p); }
  std::pair<int64_t, std::string> items_per_micro_batch() const override;
  // Rows [r·B/W, (r+1)·B/W) of every training and validation batch (B divisible by W).
  void set_shard(Shard shard) override;

  // val_loss, val_bpc, unit; for each L of eval.lengths val_loss@L and val_tail_loss@L (the
  // loss per token over the windows of L, and over their last quarter of positions).
  nlohmann::json evaluate() override;
  std::string describe(const nlohmann::json& metrics) const override;
  int64_t validation_batches() const override { return static_cast<int64_t>(val_batches_.size()); }
  std::vector<Column> compare_columns() const override;
  // A tied head is the token embedding: it stays in full precision then.
  std::vector<std::string> full_precision_modules() const override;

 private:
  LmData data_;
  std::unique_ptr<models::DecoderLM> model_;
  std::unique_ptr<data::TokenBatcher> batcher_;
  std::vector<data::TokenBatch> val_batches_;  // on the device
  // eval.lengths: per extra length L its windows of the validation text, batched (on the device).
  struct LengthEval {
    int64_t length = 0, windows = 0;
    std::vector<data::TokenBatch> batches;
  };
  std::vector<LengthEval> length_evals_;
  Device device_ = Device::cpu();
  int64_t batch_ = 0, seq_len_ = 0;
  Shard shard_;
};

}  // namespace attn::tasks
