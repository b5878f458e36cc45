// Batches of speech features for CTC training and evaluation.
//
// Bucketing: the utterances are sorted by length (frames; ties by index) and cut into
// consecutive batches of `batch` utterances, so a batch pads to its longest member and padding
// stays small (the last batch holds the remainder). The buckets are fixed; training visits them
// in a new Philox permutation every epoch (key seed, stream epoch), so micro-batch k of the
// endless stream is bucket perm_{k / n}[k mod n] and a resumed run continues exactly.
// SpecAugment (training only) draws its masks from (seed, stream = epoch · N + utterance).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/spec_augment.h"
#include "tensor/tensor.h"

namespace attn::data {

// Normalised features of a corpus split with their label sequences.
struct SpeechDataset {
  int64_t n_mels = 0;
  std::vector<std::string> ids, transcripts;
  std::vector<std::vector<float>> features;  // each [frames, n_mels], normalised per utterance
  std::vector<int64_t> frames;
  std::vector<std::vector<int32_t>> labels;  // transcript in the task's vocabulary
  int64_t size() const { return static_cast<int64_t>(features.size()); }
  int64_t total_frames() const;
  int64_t max_frames() const;
};

struct SpeechBatch {
  Tensor features;                      // [B, T_max, n_mels] f32 on the CPU, zero past each length
  std::vector<int64_t> frames;          // [B]
  std::vector<int32_t> targets;         // the B label sequences concatenated
  std::vector<int64_t> target_lengths;  // [B]
  std::vector<int64_t> utterances;      // [B] indices into the dataset
};

// The utterances by length, cut into batches of `batch` (see above). Throws for batch <= 0.
std::vector<std::vector<int64_t>> length_buckets(const std::vector<int64_t>& frames, int64_t batch);

// A batch of the given utterances, padded; with `augment`, SpecAugment draws per utterance from
// (seed, epoch · N + utterance).
SpeechBatch make_speech_batch(const SpeechDataset& d, const std::vector<int64_t>& utterances,
                              const SpecAugmentOptions* augment = nullptr, uint64_t seed = 0,
                              uint64_t epoch = 0);

class SpeechBatcher {
 public:
  // Throws std::invalid_argument for a null or empty dataset or batch <= 0.
  SpeechBatcher(std::shared_ptr<const SpeechDataset> data, int64_t batch, uint64_t seed,
                SpecAugmentOptions augment, bool use_augment);
  SpeechBatch next();  // the batch at position(), then position() + 1
  SpeechBatch batch_at(uint64_t position) const;
  // Utterances [first, last) of the bucket served at `position` (a data-parallel rank's share),
  // augmented as in batch_at(position).
  SpeechBatch batch_at(uint64_t position, int64_t first, int64_t last) const;
  uint64_t position() const { return position_; }
  void set_position(uint64_t p) { position_ = p; }
  int64_t batches_per_epoch() const { return static_cast<int64_t>(buckets_.size()); }
  // The bucket (index into buckets()) served at `position`, and its number of utterances.
  int64_t bucket_at(uint64_t position) const;
  int64_t bucket_size(uint64_t position) const;
  const std::vector<std::vector<int64_t>>& buckets() const { return buckets_; }
  const SpeechDataset& data() const { return *data_; }

 private:
  std::shared_ptr<const SpeechDataset> data_;
  std::vector<std::vector<int64_t>> buckets_;
  uint64_t seed_;
  SpecAugmentOptions augment_;
  bool use_augment_;
  uint64_t position_ = 0;
  mutable std::pair<uint64_t, std::vector<int64_t>> perm_cache_{UINT64_MAX, {}};
};

// Evaluation: the same length buckets, in order, no augmentation; every utterance once.
class SpeechEvalBatcher {
 public:
  SpeechEvalBatcher(std::shared_ptr<const SpeechDataset> data, int64_t batch);
  int64_t num_batches() const { return static_cast<int64_t>(buckets_.size()); }
  SpeechBatch batch_at(int64_t i) const;
  // Utterances [first, last) of batch i (a data-parallel rank's share).
  SpeechBatch batch_at(int64_t i, int64_t first, int64_t last) const;
  int64_t bucket_size(int64_t i) const { return static_cast<int64_t>(buckets_.at(i).size()); }
  const SpeechDataset& data() const { return *data_; }

 private:
  std::shared_ptr<const SpeechDataset> data_;
  std::vector<std::vector<int64_t>> buckets_;
};

}  // namespace attn::data
