// Image classification data for the ViT: an IDX image set (Fashion-MNIST from Debian's
// dataset-fashion-mnist by default; any MNIST-style directory works), its train / validation /
// test splits, and batchers that are pure functions of (seed, position), so resumes are exact.
//
// Layout: a batch is x [B, 1, H, W] f32 (NCHW, PyTorch's layout: a patch embedding cuts
// C x P x P patches from it, like a Conv2d with kernel = stride = P) and y [B] i32.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/idx.h"
#include "tensor/tensor.h"

namespace attn::data {

constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
constexpr const char* kFashionMnistPackage = "dataset-fashion-mnist";
constexpr int kFashionMnistClasses = 10;
// Mean and (population) std of every pixel of the 60,000 Fashion-MNIST training images, pixels
// scaled to [0, 1]; pixel_stats() on the real files reproduces them (tests/test_image_data.cpp).
constexpr float kFashionMnistMean = 0.28604060f;
constexpr float kFashionMnistStd = 0.35302424f;
constexpr int64_t kDefaultValSize = 5000;

struct ImageDataset {
  int64_t rows = 0, cols = 0;
  int num_classes = 0;
  std::vector<uint8_t> pixels;  // [size, rows, cols], row-major
  std::vector<int32_t> labels;  // [size], each in [0, num_classes)

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  int64_t image_pixels() const { return rows * cols; }
  const uint8_t* image(int64_t i) const { return pixels.data() + i * image_pixels(); }
};

// An image file and its label file. Throws DataFileError (naming the file) for any problem
// read_idx_images / read_idx_labels find, and when the two counts differ.
ImageDataset load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                              int num_classes = kFashionMnistClasses);

// The four standard files in dir: {train,t10k}-{images-idx3,labels-idx1}-ubyte, each plain or
// with .gz (the plain file wins when both exist). Throws DataFileError naming the directory,
// the missing file and the Debian package when the directory or a file is missing.
struct IdxFiles {
  std::string train_images, train_labels, test_images, test_labels;
};
IdxFiles find_idx_files(const std::string& dir);

// Validation images are carved from the training file by a fixed permutation (Philox, a
// constant key, independent of the run's seed): the first val_size entries, sorted. A random
// subset rather than the file's last images, so that a file stored in class order (some IDX
// conversions are) still gives a validation set with every class. Both parts keep file order.
std::vector<int64_t> validation_indices(int64_t n, int64_t val_size);
ImageDataset subset(const ImageDataset& d, const std::vector<int64_t>& indices);

// train: the training file minus val; val: validation_indices' images; test: the official
// test file, for the final number only. Throws std::invalid_argument unless
// 0 <= val_size < the training file's size, DataFileError when train and test disagree on the
// image size.
struct ImageSplits {
  ImageDataset train, val, test;
};
ImageSplits load_image_splits(const std::string& dir = kFashionMnistDir,
                              int64_t val_size = kDefaultValSize,
                              int num_classes = kFashionMnistClasses);

// Mean and population std over every pixel of every image, pixels scaled to [0, 1] (exact
// integer sums, then f64).
struct PixelStats {
  double mean = 0, std = 0;
};
PixelStats pixel_stats(const ImageDataset& d);

// What a batcher does to each image: pixel p (0..255) becomes (p / 255 - mean) / std in f32
// when normalize, p / 255 otherwise. Augmentation (training only): a horizontal flip with
// probability 1/2, then a shift by (dx, dy), each uniform in [-max_shift, max_shift], that
// moves the content right by dx and down by dy and fills the uncovered pixels with p = 0 (the
// background), before normalisation -- torchvision's RandomHorizontalFlip then
// RandomAffine(translate, fill=0) then Normalize.
struct ImageTransform {
  bool normalize = true;
  float mean = kFashionMnistMean, std = kFashionMnistStd;
  bool flip = false;
  int max_shift = 0;
};

// One sample's augmentation, a pure function of (seed, position, row).
struct Augmentation {
  bool flip = false;
  int dx = 0, dy = 0;
};

struct ImageBatch {
  Tensor x;  // [B, 1, H, W] F32 on the CPU
  Tensor y;  // [B] I32
};

// Training batches. Sample k = position * batch + row of the endless stream is image
// perm_e[k mod n] with e = k / n and perm_e the Fisher-Yates permutation drawn with Philox
// (key seed, counters e * 2^32 + i): every epoch visits each image once, batches are always
// full and may straddle two epochs. Augmentation draws one Philox4 at counter 2^63 + k (key
// seed): bit 31 of word 0 flips, words 1 and 2 give dx and dy. Not thread-safe (the current
// epochs' permutations are cached).
class ImageBatcher {
 public:
  // Throws std::invalid_argument for a null or empty dataset, batch <= 0, std <= 0, or
  // max_shift outside [0, min(rows, cols)).
  ImageBatcher(std::shared_ptr<const ImageDataset> data, int64_t batch, uint64_t seed,
               ImageTransform transform = {});

  ImageBatch next();  // the batch at position(), then advances position() by one
  ImageBatch batch_at(uint64_t position) const;
  // Rows [row_begin, row_end) of the batch at `position` (a data-parallel rank's share): the
  // same images and augmentations as those rows of batch_at(position).
  ImageBatch batch_at(uint64_t position, int64_t row_begin, int64_t row_end) const;
  uint64_t position() const { return position_; }  // batches served so far
  void set_position(uint64_t position) { position_ = position; }

  int64_t sample(uint64_t position, int64_t row) const;  // the image's index in the dataset
  Augmentation augmentation(uint64_t position, int64_t row) const;
  uint64_t epoch(uint64_t position) const;  // the epoch of the batch's first sample
  int64_t batch() const { return batch_; }
  const ImageDataset& data() const { return *data_; }

 private:
  const std::vector<int64_t>& permutation(uint64_t epoch) const;

  std::shared_ptr<const ImageDataset> data_;
  int64_t batch_;
  uint64_t seed_;
  ImageTransform transform_;
  std::vector<float> lut_;  // pixel value -> normalised f32
  uint64_t position_ = 0;
  mutable std::vector<std::pair<uint64_t, std::vector<int64_t>>> perm_cache_;  // <= 2 epochs
};

// Evaluation batches: the dataset in order, no augmentation (transform's flip and max_shift
// are ignored), batch i holds images [i * batch, min((i + 1) * batch, n)). The last batch keeps
// the remainder with a smaller B, so every image counts exactly once: weight a batch's mean
// loss or accuracy by its B.
class ImageEvalBatcher {
 public:
  ImageEvalBatcher(std::shared_ptr<const ImageDataset> data, int64_t batch,
                   ImageTransform transform = {});
  int64_t num_batches() const;  // ceil(n / batch); 0 for an empty dataset
  ImageBatch batch_at(int64_t i) const;
  const ImageDataset& data() const { return *data_; }

 private:
  std::shared_ptr<const ImageDataset> data_;
  int64_t batch_;
  std::vector<float> lut_;
};

// Fisher-Yates permutation of 0..n-1 from Philox (key, counters stream * 2^32 + i); n must
// be < 2^32 and stream < 2^31. The same (n, key, stream) always gives the same permutation.
std::vector<int64_t> philox_permutation(int64_t n, uint64_t key, uint64_t stream);

}  // namespace attn::data
