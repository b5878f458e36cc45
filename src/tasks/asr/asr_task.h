// Speech recognition with CTC (task: asr): a corpus synthesised by `attnlab data asr` (KJV
// phrases spoken by espeak-ng voices; the test split has unseen voices and unseen text) or any
// LibriSpeech-format folder / JSONL manifest; log-mel features (computed once per corpus and
// cached, verified, under data.cache_dir), SpecAugment in training; CTC loss; greedy decoding
// and character / word error rates. An optional longer-than-training test set (test_long) is
// reported separately: length generalisation.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/speech_batcher.h"
#include "models/asr/asr.h"
#include "tasks/task.h"

namespace attn::tasks {

std::vector<config::KeySpec> asr_keys();

// The characters a transcript may hold; id 0 is the CTC blank, then space, apostrophe, A–Z.
// Lower-case letters are upper-cased.
class SpeechVocab {
 public:
  SpeechVocab();
  int64_t size() const { return static_cast<int64_t>(chars_.size()) + 1; }
  // Throws std::invalid_argument naming the character for one outside the vocabulary.
  std::vector<int32_t> encode(const std::string& transcript) const;
  std::string decode(const std::vector<int32_t>& ids) const;  // blank-free ids
  const std::string& chars() const { return chars_; }

 private:
  std::string chars_;
  int32_t id_of_[256];
};

class AsrTask : public Task {
 public:
  void resolve(config::Config& c) const override;
  void prepare(const config::Config& c, const std::string& saved_run_dir, Device device) override;
  nn::Module& model() override { return *model_; }
  Generator& dropout_generator() override { return model_->dropout_gen; }
  std::vector<std::pair<std::string, std::string>> artifacts() const override;

  Tensor next_train_loss() override;
  uint64_t position() const override { return batcher_->position(); }
  void set_position(uint64_t p) override { batcher_->set_position(p); }
  // Input frames (10 ms each) of the mean training batch: frames/s is then exact over epochs.
  std::pair<int64_t, std::string> items_per_micro_batch() const override { return {frames_per_batch_, "frames"}; }
  // Each bucket's utterances in near-equal contiguous parts (a bucket of n gives rank r
  // [r·n/W, (r+1)·n/W), empty for some ranks when n < W); the loss of a part of n_r is weighted
  // by n_r·W/n, so the mean over the ranks is the bucket's mean over utterances.
  void set_shard(Shard shard) override { shard_ = std::move(shard); }

  nlohmann::json evaluate() override;  // val_loss, val_cer, val_wer
  std::string describe(const nlohmann::json& metrics) const override;
  int64_t validation_batches() const override { return val_batches_; }
  nlohmann::json final_metrics() override;  // test_{loss,cer,wer}, test_long_{cer,wer}
  std::vector<Column> compare_columns() const override;

  struct Scores {
    double loss = 0, cer = 0, wer = 0;
  };
  // Loss (mean over utterances of CTC / target length), corpus CER and WER of greedy decoding,
  // over the first `max_batches` batches (0: all); this rank's utterances of each, summed over
  // the ranks.
  Scores score(const data::SpeechEvalBatcher& b, int64_t max_batches);

 private:
  std::unique_ptr<models::SpeechRecognizer> model_;
  std::unique_ptr<data::SpeechBatcher> batcher_;
  std::unique_ptr<data::SpeechEvalBatcher> val_, test_, test_long_;
  SpeechVocab vocab_;
  nlohmann::json corpus_info_;  // per split: source, utterances, hours, fingerprint (corpus.json)
  Device device_ = Device::cpu();
  int64_t val_batches_ = 0, test_batches_ = 0, frames_per_batch_ = 0;
  Shard shard_;
};

}  // namespace attn::tasks
