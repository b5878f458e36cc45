#include "data/speech_batcher.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "data/image_data.h"  // philox_permutation

namespace attn::data {

int64_t SpeechDataset::total_frames() const {
  return std::accumulate(frames.begin(), frames.end(), int64_t{0});
}

int64_t SpeechDataset::max_frames() const {
  return frames.empty() ? 0 : *std::max_element(frames.begin(), frames.end());
}

std::vector<std::vector<int64_t>> length_buckets(const std::vector<int64_t>& frames, int64_t batch) {
  if (batch <= 0) throw std::invalid_argument("length_buckets: batch must be positive, got " + std::to_string(batch));
  std::vector<int64_t> order(frames.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return frames[a] < frames[b]; });
  std::vector<std::vector<int64_t>> buckets;
  for (size_t i = 0; i < order.size(); i += static_cast<size_t>(batch))
    buckets.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(i),
                         order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), i + static_cast<size_t>(batch))));
  return buckets;
}

SpeechBatch make_speech_batch(const SpeechDataset& d, const std::vector<int64_t>& utterances,
                              const SpecAugmentOptions* augment, uint64_t seed, uint64_t epoch) {
  const int64_t B = static_cast<int64_t>(utterances.size()), F = d.n_mels;
  SpeechBatch b;
  b.utterances = utterances;
  int64_t T = 0;
  for (int64_t u : utterances) T = std::max(T, d.frames[u]);
  b.features = zeros({B, T, F}, {DType::F32});
  float* out = b.features.data<float>();
  for (int64_t r = 0; r < B; ++r) {
    const int64_t u = utterances[r], n = d.frames[u];
    float* row = out + r * T * F;
    std::copy(d.features[u].begin(), d.features[u].begin() + n * F, row);
    if (augment)
      spec_augment(row, n, F, *augment, seed, epoch * static_cast<uint64_t>(d.size()) + static_cast<uint64_t>(u));
    b.frames.push_back(n);
    b.target_lengths.push_back(static_cast<int64_t>(d.labels[u].size()));
    b.targets.insert(b.targets.end(), d.labels[u].begin(), d.labels[u].end());
  }
  return b;
}

SpeechBatcher::SpeechBatcher(std::shared_ptr<const SpeechDataset> data, int64_t batch, uint64_t seed,
                             SpecAugmentOptions augment, bool use_augment)
    : data_(std::move(data)), seed_(seed), augment_(augment), use_augment_(use_augment) {
  if (!data_ || data_->size() == 0) throw std::invalid_argument("SpeechBatcher: no utterances");
  buckets_ = length_buckets(data_->frames, batch);
}

int64_t SpeechBatcher::bucket_at(uint64_t position) const {
  const uint64_t n = buckets_.size(), epoch = position / n;
  if (perm_cache_.first != epoch) perm_cache_ = {epoch, philox_permutation(static_cast<int64_t>(n), seed_, epoch)};
  return perm_cache_.second[position % n];
}

namespace {

// Utterances [first, last) of a bucket, or a clear error for a range outside it.
std::vector<int64_t> bucket_part(const std::vector<int64_t>& bucket, int64_t first, int64_t last, const char* who) {
  if (first < 0 || last > static_cast<int64_t>(bucket.size()) || first >= last)
    throw std::out_of_range(std::string(who) + ": utterances [" + std::to_string(first) + ", " + std::to_string(last) +
                            ") of a bucket of " + std::to_string(bucket.size()));
  return {bucket.begin() + first, bucket.begin() + last};
}

}  // namespace

int64_t SpeechBatcher::bucket_size(uint64_t position) const {
  return static_cast<int64_t>(buckets_[bucket_at(position)].size());
}

SpeechBatch SpeechBatcher::batch_at(uint64_t position) const { return batch_at(position, 0, bucket_size(position)); }

SpeechBatch SpeechBatcher::batch_at(uint64_t position, int64_t first, int64_t last) const {
  const std::vector<int64_t> part = bucket_part(buckets_[bucket_at(position)], first, last, "SpeechBatcher");
  return make_speech_batch(*data_, part, use_augment_ ? &augment_ : nullptr, seed_, position / buckets_.size());
}

SpeechBatch SpeechBatcher::next() { return batch_at(position_++); }

SpeechEvalBatcher::SpeechEvalBatcher(std::shared_ptr<const SpeechDataset> data, int64_t batch)
    : data_(std::move(data)) {
  if (!data_) throw std::invalid_argument("SpeechEvalBatcher: no dataset");
  buckets_ = length_buckets(data_->frames, batch);
}

SpeechBatch SpeechEvalBatcher::batch_at(int64_t i) const { return batch_at(i, 0, bucket_size(i)); }

SpeechBatch SpeechEvalBatcher::batch_at(int64_t i, int64_t first, int64_t last) const {
  return make_speech_batch(*data_, bucket_part(buckets_.at(i), first, last, "SpeechEvalBatcher"));
}

}  // namespace attn::data
