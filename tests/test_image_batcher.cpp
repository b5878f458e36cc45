// Image batchers: the training batcher's determinism, resumes, epochs and augmentation (against
// naive flips and shifts on real Fashion-MNIST images), and the evaluation batcher's coverage.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <tuple>

#include "data/image_data.h"
#include "ops/ops.h"
#include "image_data_test_util.h"

using namespace attn;
using namespace attn::data;
using namespace attn::data::image_test;

namespace {

std::shared_ptr<const ImageDataset> shared_train() {
  static const auto d = std::make_shared<const ImageDataset>(splits().train);
  return d;
}
std::shared_ptr<const ImageDataset> shared_val() {
  static const auto d = std::make_shared<const ImageDataset>(splits().val);
  return d;
}
// The first n training images: epochs short enough to cross several in a test.
std::shared_ptr<const ImageDataset> small_train(int64_t n) {
  std::vector<int64_t> idx(n);
  for (int64_t i = 0; i < n; ++i) idx[i] = i;
  return std::make_shared<const ImageDataset>(subset(splits().train, idx));
}

float norm(uint8_t p, const ImageTransform& t = {}) {
  return (static_cast<float>(p) / 255.0f - t.mean) / t.std;
}

// Naive references: out[y][x] = in[y][W-1-x]; out[y][x] = in[y-dy][x-dx], 0 outside.
std::vector<uint8_t> naive_flip(const std::vector<uint8_t>& in, int64_t H, int64_t W) {
  std::vector<uint8_t> out(in.size());
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) out[y * W + x] = in[y * W + (W - 1 - x)];
  return out;
}
std::vector<uint8_t> naive_shift(const std::vector<uint8_t>& in, int64_t H, int64_t W, int dx,
                                 int dy) {
  std::vector<uint8_t> out(in.size(), 0);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      if (y - dy >= 0 && y - dy < H && x - dx >= 0 && x - dx < W)
        out[y * W + x] = in[(y - dy) * W + (x - dx)];
  return out;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}
bool same_batch(const ImageBatch& a, const ImageBatch& b) {
  return same_bits(a.x, b.x) && same_bits(a.y, b.y);
}

}  // namespace

// ---- the training batcher -----------------------------------------------------------------

TEST(ImageBatcher, BatchesAreNormalisedImagesAndTheirLabels) {
  ImageBatcher b(shared_train(), 64, 7);
  for (uint64_t pos : {0u, 1u, 900u}) {
    ImageBatch batch = b.batch_at(pos);
    ASSERT_EQ(batch.x.shape(), (Shape{64, 1, 28, 28}));
    ASSERT_EQ(batch.y.shape(), (Shape{64}));
    ASSERT_EQ(batch.y.dtype(), DType::I32);
    for (int64_t r = 0; r < 64; ++r) {
      int64_t i = b.sample(pos, r);
      ASSERT_EQ(batch.y.data<int32_t>()[r], splits().train.labels[i]);
      for (int64_t p = 0; p < 784; ++p)
        ASSERT_EQ(batch.x.data<float>()[r * 784 + p], norm(splits().train.image(i)[p]));
    }
  }
  ImageTransform raw;
  raw.normalize = false;
  ImageBatch x = ImageBatcher(shared_train(), 4, 7, raw).batch_at(0);
  EXPECT_EQ(x.x.data<float>()[0], splits().train.image(b.sample(0, 0))[0] / 255.0f);
}

// A data-parallel rank's rows: the images and augmentations of those rows of the whole batch.
TEST(ImageBatcher, RowsOfABatchAreThoseOfTheWholeBatch) {
  ImageTransform aug;
  aug.flip = true, aug.max_shift = 2;
  ImageBatcher b(shared_train(), 12, 5, aug);
  for (uint64_t pos : {0u, 7u}) {
    ImageBatch whole = b.batch_at(pos), part = b.batch_at(pos, 4, 8);
    ASSERT_EQ(part.x.shape(), (Shape{4, 1, 28, 28}));
    EXPECT_TRUE(same_batch(part, {slice(whole.x, 0, 4, 8), slice(whole.y, 0, 4, 8)}));
  }
  EXPECT_THROW(b.batch_at(0, 8, 13), std::out_of_range);
}

TEST(ImageBatcher, SameSeedAndPositionBitIdenticalDifferentSeedDifferentOrder) {
  ImageTransform aug;
  aug.flip = true, aug.max_shift = 3;
  ImageBatcher a(shared_train(), 32, 11, aug), b(shared_train(), 32, 11, aug);
  ImageBatcher c(shared_train(), 32, 12, aug);
  for (uint64_t pos : {0u, 5u, 3000u}) EXPECT_TRUE(same_batch(a.batch_at(pos), b.batch_at(pos)));
  int same_sample = 0, same_aug = 0;
  for (int64_t r = 0; r < 32; ++r) {
    same_sample += a.sample(0, r) == c.sample(0, r);
    Augmentation x = a.augmentation(0, r), y = c.augmentation(0, r);
    same_aug += x.flip == y.flip && x.dx == y.dx && x.dy == y.dy;
  }
  EXPECT_LE(same_sample, 2);
  EXPECT_LE(same_aug, 8);
  EXPECT_FALSE(same_batch(a.batch_at(0), c.batch_at(0)));
}

TEST(ImageBatcher, SetPositionResumesTheUninterruptedStream) {
  ImageTransform aug;
  aug.flip = true, aug.max_shift = 2;
  struct Case {
    std::shared_ptr<const ImageDataset> data;
    int64_t batch;
    uint64_t stop, end;
  };
  // 700 images in batches of 128: epochs end inside batches 5, 10, 16, so the resume starts in
  // epoch 1 and crosses two boundaries; the full split's first epoch ends inside batch 107.
  for (const Case& k : {Case{small_train(700), 128, 7, 20}, Case{shared_train(), 512, 105, 110}}) {
    ImageBatcher stream(k.data, k.batch, 99, aug);
    std::vector<ImageBatch> ref;
    for (uint64_t p = 0; p < k.end; ++p) ref.push_back(stream.next());
    EXPECT_EQ(stream.position(), k.end);
    ImageBatcher resumed(k.data, k.batch, 99, aug);
    resumed.set_position(k.stop);
    for (uint64_t p = k.stop; p < k.end; ++p) EXPECT_TRUE(same_batch(resumed.next(), ref[p])) << p;
    ImageBatcher backwards(k.data, k.batch, 99, aug);  // any order: a pure function of position
    for (uint64_t p = k.end; p-- > 0;) EXPECT_TRUE(same_batch(backwards.batch_at(p), ref[p])) << p;
  }
}

TEST(ImageBatcher, EachEpochVisitsEveryImageOnce) {
  const int64_t n = 55000;
  for (int64_t batch : {1000, 384}) {  // 384 does not divide n: batches straddle epochs
    ImageBatcher b(shared_train(), batch, 5);
    std::vector<std::vector<int64_t>> seen(2);
    for (uint64_t pos = 0; pos * batch < 2 * n; ++pos)
      for (int64_t r = 0; r < batch; ++r)
        if (int64_t k = pos * batch + r; k < 2 * n) seen[k / n].push_back(b.sample(pos, r));
    for (auto& epoch : seen) {
      std::vector<int64_t> sorted = epoch;
      std::sort(sorted.begin(), sorted.end());
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(sorted[i], i) << "batch " << batch;
    }
    EXPECT_NE(seen[0], seen[1]);  // a fresh permutation each epoch
    EXPECT_EQ(b.epoch(n / batch + 1), 1u);
  }
}

TEST(ImageBatcher, FlipAndShiftMatchANaiveImplementation) {
  auto data = small_train(50);
  for (auto [flip, shift] : {std::pair{true, 0}, std::pair{false, 4}, std::pair{true, 4}}) {
    ImageTransform t;
    t.flip = flip, t.max_shift = shift;
    ImageBatcher b(data, 50, 3, t);
    std::set<int> dxs;
    int flips = 0;
    for (uint64_t pos = 0; pos < 4; ++pos) {
      ImageBatch batch = b.batch_at(pos);
      for (int64_t r = 0; r < 50; ++r) {
        Augmentation a = b.augmentation(pos, r);
        const uint8_t* img = data->image(b.sample(pos, r));
        std::vector<uint8_t> want(img, img + 784);
        if (a.flip) want = naive_flip(want, 28, 28);
        want = naive_shift(want, 28, 28, a.dx, a.dy);
        for (int64_t p = 0; p < 784; ++p)
          ASSERT_EQ(batch.x.data<float>()[r * 784 + p], norm(want[p])) << pos << " " << r;
        flips += a.flip;
        dxs.insert(a.dx);
        EXPECT_TRUE(std::abs(a.dx) <= shift && std::abs(a.dy) <= shift);
      }
    }
    EXPECT_EQ(flips > 0, flip);
    EXPECT_EQ(dxs.size(), static_cast<size_t>(2 * shift + 1));
  }
}

TEST(ImageBatcher, FlipIsAFairCoinAndShiftsAreUniform) {
  ImageTransform t;
  t.flip = true, t.max_shift = 2;
  ImageBatcher b(shared_train(), 100, 21, t);
  std::map<int, int> dx, dy;
  int flips = 0, equal = 0;
  for (uint64_t pos = 0; pos < 200; ++pos) {
    std::set<std::tuple<bool, int, int>> in_batch;  // rows draw independently: ~43 of 50 kinds
    for (int64_t r = 0; r < 100; ++r) {
      Augmentation a = b.augmentation(pos, r);
      flips += a.flip, ++dx[a.dx], ++dy[a.dy], equal += a.dx == a.dy;
      in_batch.insert({a.flip, a.dx, a.dy});
    }
    ASSERT_GT(in_batch.size(), 30u) << pos;
  }
  EXPECT_NEAR(flips, 10000, 300);  // 20000 draws: sd 71
  for (int s = -2; s <= 2; ++s) {
    EXPECT_NEAR(dx[s], 4000, 250) << s;
    EXPECT_NEAR(dy[s], 4000, 250) << s;
  }
  EXPECT_NEAR(equal, 4000, 250);  // dx and dy independent
}

TEST(ImageBatcher, RejectsBadArguments) {
  ImageTransform t;
  EXPECT_THROW(ImageBatcher(nullptr, 4, 0), std::invalid_argument);
  EXPECT_THROW(ImageBatcher(shared_train(), 0, 0), std::invalid_argument);
  t.max_shift = 28;
  EXPECT_THROW(ImageBatcher(shared_train(), 4, 0, t), std::invalid_argument);
  t.max_shift = 0, t.std = 0;
  EXPECT_THROW(ImageBatcher(shared_train(), 4, 0, t), std::invalid_argument);
  EXPECT_THROW(ImageBatcher(std::make_shared<const ImageDataset>(), 4, 0), std::invalid_argument);
}

// ---- the evaluation batcher ---------------------------------------------------------------

TEST(ImageEvalBatcher, CoversTheSplitOnceInOrderKeepingThePartialBatch) {
  ImageTransform aug;  // augmentation is ignored in evaluation
  aug.flip = true, aug.max_shift = 3;
  const ImageDataset& val = splits().val;
  for (int64_t batch : {1000, 384}) {
    ImageEvalBatcher e(shared_val(), batch, aug);
    ASSERT_EQ(e.num_batches(), (5000 + batch - 1) / batch);
    int64_t next = 0;
    for (int64_t i = 0; i < e.num_batches(); ++i) {
      ImageBatch b = e.batch_at(i);
      int64_t B = b.y.size(0);
      EXPECT_EQ(B, std::min<int64_t>(batch, 5000 - next));
      ASSERT_EQ(b.x.shape(), (Shape{B, 1, 28, 28}));
      for (int64_t r = 0; r < B; ++r, ++next) {
        ASSERT_EQ(b.y.data<int32_t>()[r], val.labels[next]);
        for (int64_t p = 0; p < 784; ++p)
          ASSERT_EQ(b.x.data<float>()[r * 784 + p], norm(val.image(next)[p]));
      }
    }
    EXPECT_EQ(next, 5000);
    EXPECT_THROW(e.batch_at(e.num_batches()), std::out_of_range);
  }
  EXPECT_EQ(ImageEvalBatcher(shared_val(), 384).batch_at(13).y.size(0), 8);  // 5000 - 13 * 384
}
