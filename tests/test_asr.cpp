// The speech task's parts: the length buckets and the resumable batcher, the vocabulary, the
// subsampled lengths, and the model's padding invariance — an utterance alone and the same
// utterance inside a padded batch give the same log-probabilities and the same gradients, for
// every position kind and the main attention variants.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "data/speech_batcher.h"
#include "models/asr/asr.h"
#include "tasks/asr/asr_task.h"
#include "test_util.h"

using namespace attn;
using attn::testing::all_close;
using attn::testing::rand_tensor;

namespace {

std::shared_ptr<data::SpeechDataset> toy_dataset(int64_t n, int64_t n_mels) {
  auto d = std::make_shared<data::SpeechDataset>();
  d->n_mels = n_mels;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t frames = 10 + (i * 37) % 23;  // lengths out of order, with repeats
    d->frames.push_back(frames);
    std::vector<double> v = rand_tensor({frames, n_mels}, 100 + static_cast<uint64_t>(i)).to_vector();
    d->features.emplace_back(v.begin(), v.end());
    d->labels.push_back({static_cast<int32_t>(1 + i % 5), static_cast<int32_t>(2 + i % 3)});
    d->ids.push_back("u" + std::to_string(i));
    d->transcripts.push_back("AB");
  }
  return d;
}

}  // namespace

TEST(SpeechBatcher, BucketsAreSortedByLengthAndHoldEveryUtteranceOnce) {
  auto d = toy_dataset(23, 4);
  auto buckets = data::length_buckets(d->frames, 5);
  ASSERT_EQ(buckets.size(), 5u);  // 4 of 5, 1 of 3
  EXPECT_EQ(buckets.back().size(), 3u);
  std::vector<int64_t> seen;
  int64_t prev = 0;
  for (const auto& b : buckets)
    for (int64_t u : b) {
      EXPECT_GE(d->frames[u], prev);
      prev = d->frames[u];
      seen.push_back(u);
    }
  std::sort(seen.begin(), seen.end());
  for (int64_t i = 0; i < 23; ++i) EXPECT_EQ(seen[i], i);
  EXPECT_THROW(data::length_buckets(d->frames, 0), std::invalid_argument);
}

TEST(SpeechBatcher, EveryEpochVisitsEachBucketOnceInANewOrderAndResumesExactly) {
  auto d = toy_dataset(23, 4);
  data::SpeechBatcher a(d, 5, 7, {}, true);
  const int64_t n = a.batches_per_epoch();
  std::vector<int64_t> e0, e1;
  for (int64_t k = 0; k < n; ++k) e0.push_back(a.bucket_at(k));
  for (int64_t k = n; k < 2 * n; ++k) e1.push_back(a.bucket_at(k));
  EXPECT_EQ(std::set<int64_t>(e0.begin(), e0.end()).size(), static_cast<size_t>(n));
  EXPECT_EQ(std::set<int64_t>(e1.begin(), e1.end()).size(), static_cast<size_t>(n));
  EXPECT_NE(e0, e1);
  // A second batcher set to position 7 serves what the first serves after 7 batches, masks
  // included.
  for (int i = 0; i < 7; ++i) a.next();
  data::SpeechBatcher b(d, 5, 7, {}, true);
  b.set_position(7);
  for (int i = 0; i < 4; ++i) {
    data::SpeechBatch x = a.next(), y = b.next();
    EXPECT_EQ(x.utterances, y.utterances);
    EXPECT_TRUE(all_close(x.features, y.features, 0, 0));
  }
}

TEST(SpeechBatcher, BatchesArePaddedWithZerosAndCarryTheirLabels) {
  auto d = toy_dataset(9, 3);
  data::SpeechEvalBatcher ev(d, 4);
  data::SpeechBatch b = ev.batch_at(1);
  const int64_t B = static_cast<int64_t>(b.utterances.size()), T = b.features.size(1), F = 3;
  std::vector<double> x = b.features.to_vector();
  std::vector<int32_t> want_targets;
  for (int64_t r = 0; r < B; ++r) {
    const int64_t u = b.utterances[r];
    EXPECT_EQ(b.frames[r], d->frames[u]);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t f = 0; f < F; ++f) {
        const double got = x[(r * T + t) * F + f];
        if (t < d->frames[u]) EXPECT_FLOAT_EQ(got, d->features[u][t * F + f]);
        else EXPECT_EQ(got, 0.0);
      }
    want_targets.insert(want_targets.end(), d->labels[u].begin(), d->labels[u].end());
  }
  EXPECT_EQ(b.targets, want_targets);
}

TEST(SpeechBatcher, TrainingBatchesAreAugmentedAndEvaluationOnesAreNot) {
  auto d = toy_dataset(8, 40);
  data::SpecAugmentOptions aug;
  aug.freq_masks = 2;
  aug.freq_width = 8;
  aug.time_masks = 2;
  aug.time_width = 5;
  data::SpeechBatcher train(d, 8, 3, aug, true), plain(d, 8, 3, aug, false);
  Tensor a = train.batch_at(0).features, b = plain.batch_at(0).features;
  std::vector<double> va = a.to_vector(), vb = b.to_vector();
  int64_t changed = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    if (va[i] != vb[i]) {
      ++changed;
      EXPECT_EQ(va[i], 0.0) << "SpecAugment only zeroes values";
    }
  }
  EXPECT_GT(changed, 0);
}

// A data-parallel rank's part of a bucket: those utterances, augmented as in the whole bucket.
TEST(SpeechBatcher, PartOfABucketIsThoseUtterancesOfTheWholeBucket) {
  auto d = toy_dataset(13, 12);
  data::SpecAugmentOptions aug;
  aug.time_masks = 1;
  aug.time_width = 4;
  data::SpeechBatcher b(d, 4, 9, aug, true);
  for (uint64_t pos : {0u, 5u}) {
    const data::SpeechBatch whole = b.batch_at(pos);
    const int64_t n = static_cast<int64_t>(whole.utterances.size());
    const data::SpeechBatch part = b.batch_at(pos, 1, n);
    ASSERT_EQ(part.utterances, std::vector<int64_t>(whole.utterances.begin() + 1, whole.utterances.end()));
    // Each utterance's own frames are the same (the padding may be shorter).
    const int64_t tw = whole.features.size(1), tp = part.features.size(1), F = 12;
    const std::vector<double> w = whole.features.to_vector(), p = part.features.to_vector();
    for (int64_t r = 0; r + 1 < n; ++r)
      for (int64_t t = 0; t < part.frames[r] * F; ++t) ASSERT_EQ(p[r * tp * F + t], w[(r + 1) * tw * F + t]);
  }
  EXPECT_THROW(b.batch_at(0, 0, 9), std::out_of_range);
}

TEST(SpeechVocab, EncodesUpperCasesAndRefusesOtherCharacters) {
  tasks::SpeechVocab v;
  EXPECT_EQ(v.size(), 29);
  std::vector<int32_t> ids = v.encode("In the Lord's");
  EXPECT_EQ(v.decode(ids), "IN THE LORD'S");
  for (int32_t id : ids) EXPECT_GT(id, 0) << "0 is the blank";
  EXPECT_THROW(v.encode("verse 3"), std::invalid_argument);
}

TEST(SpeechModel, SubsampledLengthIsTheConvolutionsOutput) {
  models::AsrConfig c;
  c.n_mels = 9;
  c.conv_channels = 2;
  c.n_layers = 1;
  c.d_model = 8;
  c.n_heads = 2;
  c.vocab_size = 5;
  c.attention.position = nn::PositionKind::None;
  models::SpeechRecognizer m(c, 1, DType::F64);
  for (int64_t T : {7, 8, 9, 10, 11, 30}) {
    models::AsrOutput o = m.forward(rand_tensor({1, T, 9}, 5), {T});
    EXPECT_EQ(o.log_probs.size(1), models::subsampled_length(T)) << T;
    EXPECT_EQ(o.lengths[0], models::subsampled_length(T));
  }
  EXPECT_EQ(models::subsampled_length(6), 0);
  EXPECT_THROW(m.forward(rand_tensor({1, 6, 9}, 5), {6}), std::invalid_argument);
}

// Padding invariance, forward and backward, in f64 (so that "equal" can be tight): a short
// utterance A alone, and A padded inside a batch with a longer B.
class SpeechPadding : public ::testing::TestWithParam<std::tuple<nn::PositionKind, AttentionVariant>> {};

TEST_P(SpeechPadding, AnUtteranceAloneEqualsItselfInsideAPaddedBatch) {
  auto [pos, variant] = GetParam();
  models::AsrConfig c;
  c.n_mels = 12;
  c.conv_channels = 3;
  c.n_layers = 2;
  c.d_model = 16;
  c.n_heads = 2;
  c.vocab_size = 6;
  c.attention.position = pos;
  c.attention.variant = variant;
  c.attention.sigmoid_bias = -2;
  models::SpeechRecognizer m(c, 3, DType::F64);
  const int64_t TA = 19, TB = 33;
  Tensor a = rand_tensor({1, TA, 12}, 11), bfeat = rand_tensor({1, TB, 12}, 12);
  Tensor padded_a = concat({a, zeros({1, TB - TA, 12}, {DType::F64})}, 1);
  Tensor batch = concat({padded_a, bfeat}, 0);
  const std::vector<int32_t> ta = {1, 2, 2}, tb = {3, 4, 1, 5};

  auto grads = [&](const Tensor& x, const std::vector<int64_t>& frames, const std::vector<int32_t>& tg,
                   const std::vector<int64_t>& tl, Tensor* xgrad) {
    for (auto& p : m.parameters()) p.value.zero_grad();
    Tensor xx = x.detach();
    xx.set_requires_grad(true);
    m.loss(xx, frames, tg, tl).backward();
    *xgrad = xx.grad();
    std::vector<Tensor> g;
    for (auto& p : m.parameters()) g.push_back(p.value.grad().defined() ? p.value.grad().detach() : Tensor());
    return g;
  };
  // Forward: A's valid frames agree.
  models::AsrOutput alone = m.forward(a, {TA}), in_batch = m.forward(batch, {TA, TB});
  const int64_t LA = alone.lengths[0];
  ASSERT_EQ(in_batch.lengths[0], LA);
  EXPECT_TRUE(all_close(slice(slice(in_batch.log_probs, 0, 0, 1), 1, 0, LA), alone.log_probs, 1e-12, 1e-10));
  // Backward: the batch loss is the mean of the two, so its gradients are the mean of each
  // alone; and no gradient reaches A's padding frames.
  Tensor gxa, gxb, gx;
  std::vector<Tensor> ga = grads(a, {TA}, ta, {3}, &gxa);
  std::vector<Tensor> gb = grads(bfeat, {TB}, tb, {4}, &gxb);
  std::vector<int32_t> tab = ta;
  tab.insert(tab.end(), tb.begin(), tb.end());
  std::vector<Tensor> gab = grads(batch, {TA, TB}, tab, {3, 4}, &gx);
  ASSERT_EQ(ga.size(), gab.size());
  for (size_t i = 0; i < ga.size(); ++i) {
    ASSERT_TRUE(gab[i].defined()) << m.parameters()[i].name;
    EXPECT_TRUE(all_close(gab[i], mul(add(ga[i], gb[i]), 0.5), 1e-12, 1e-9)) << m.parameters()[i].name;
  }
  Tensor gx_a = slice(gx, 0, 0, 1);
  EXPECT_TRUE(all_close(slice(gx_a, 1, 0, TA), mul(gxa, 0.5), 1e-12, 1e-9));
  EXPECT_TRUE(all_close(slice(gx_a, 1, TA, TB), zeros({1, TB - TA, 12}, {DType::F64}), 0, 0));
}

std::string padding_case_name(const ::testing::TestParamInfo<SpeechPadding::ParamType>& info) {
  static const char* const kPositions[] = {"none", "learned", "sinusoidal", "rope", "alibi"};
  return std::string(kPositions[static_cast<int>(std::get<0>(info.param))]) + "_" +
         variant_name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(
    PositionsAndVariants, SpeechPadding,
    ::testing::Values(std::make_tuple(nn::PositionKind::Sinusoidal, AttentionVariant::Softmax),
                      std::make_tuple(nn::PositionKind::Rope, AttentionVariant::Softmax),
                      std::make_tuple(nn::PositionKind::Alibi, AttentionVariant::Softmax),
                      std::make_tuple(nn::PositionKind::Sinusoidal, AttentionVariant::Sigmoid),
                      std::make_tuple(nn::PositionKind::Rope, AttentionVariant::Sigmoid),
                      std::make_tuple(nn::PositionKind::Sinusoidal, AttentionVariant::Softmax1)),
    padding_case_name);
