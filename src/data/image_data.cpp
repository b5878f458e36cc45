// IDX image sets: loading, the train / validation / test splits, pixel statistics, and the
// deterministic training and evaluation batchers (Philox permutations and augmentation).
#include "data/image_data.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "tensor/philox.h"

namespace attn::data {

namespace fs = std::filesystem;

namespace {

// The validation split's permutation: a constant, so the split never depends on the run's seed.
constexpr uint64_t kValSplitKey = 0x76616C2D73706C74ull;  // "val-splt"
constexpr uint64_t kAugmentTag = uint64_t{1} << 63;       // augmentation counters: 2^63 + k

constexpr const char* kFileNames[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw DataFileError("'" + path + "': " + what);
}

std::string install_hint() {
  return std::string("for Fashion-MNIST install the Debian package ") + kFashionMnistPackage +
         " (`apt-get install " + kFashionMnistPackage + "`), which puts it in " + kFashionMnistDir;
}

// 64 random bits reduced modulo m: the bias is below m / 2^64, negligible.
uint64_t philox_below(uint64_t counter, uint64_t key, uint64_t m) {
  Philox4 r = philox4x32_10(counter, key);
  uint64_t bits = (static_cast<uint64_t>(r.x[1]) << 32) | r.x[0];
  return bits % m;
}

std::vector<float> make_lut(const ImageTransform& t) {
  if (t.normalize && !(t.std > 0.0f && std::isfinite(t.std) && std::isfinite(t.mean)))
    throw std::invalid_argument(
        std::string("image transform: normalisation needs a finite mean and std > 0, got mean ") +
        std::to_string(t.mean) + ", std " + std::to_string(t.std));
  std::vector<float> lut(256);
  for (int p = 0; p < 256; ++p) {
    float v = static_cast<float>(p) / 255.0f;
    lut[p] = t.normalize ? (v - t.mean) / t.std : v;
  }
  return lut;
}

void check_dataset(const char* who, const std::shared_ptr<const ImageDataset>& d, int64_t batch) {
  if (!d) throw std::invalid_argument(std::string(who) + ": null dataset");
  if (batch <= 0)
    throw std::invalid_argument(std::string(who) + ": batch must be positive, got " +
                                std::to_string(batch));
  if (static_cast<int64_t>(d->pixels.size()) != d->size() * d->image_pixels())
    throw std::invalid_argument(std::string(who) + ": dataset has " +
                                std::to_string(d->pixels.size()) + " pixels, expected " +
                                std::to_string(d->size()) + " x " + std::to_string(d->rows) +
                                " x " + std::to_string(d->cols));
}

ImageBatch empty_batch(int64_t batch, const ImageDataset& d) {
  return {Tensor::empty({batch, 1, d.rows, d.cols}, DType::F32),
          Tensor::empty({batch}, DType::I32)};
}

// Writes image `src` (rows x cols), flipped then shifted as `a` says, through the lookup table.
void render(const uint8_t* src, int64_t rows, int64_t cols, const Augmentation& a,
            const std::vector<float>& lut, float* dst) {
  for (int64_t y = 0; y < rows; ++y) {
    int64_t sy = y - a.dy;
    for (int64_t x = 0; x < cols; ++x) {
      int64_t sx = x - a.dx;  // column of the flipped image
      bool inside = sy >= 0 && sy < rows && sx >= 0 && sx < cols;
      uint8_t p = inside ? src[sy * cols + (a.flip ? cols - 1 - sx : sx)] : 0;
      dst[y * cols + x] = lut[p];
    }
  }
}

std::string pick_file(const fs::path& dir, const std::string& name) {
  std::error_code ec;
  for (const std::string& candidate : {name, name + ".gz"})
    if (fs::is_regular_file(dir / candidate, ec)) return (dir / candidate).string();
  fail(dir.string(), "no " + name + " or " + name +
                         ".gz (expected the four MNIST-style IDX files train-images-idx3-ubyte, "
                         "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                         "t10k-labels-idx1-ubyte, each optionally .gz); " +
                         install_hint());
}

}  // namespace

ImageDataset load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                              int num_classes) {
  IdxArray images = read_idx_images(images_path);
  IdxArray labels = read_idx_labels(labels_path, num_classes);
  if (images.dims[0] != labels.dims[0])
    fail(labels_path, "has " + std::to_string(labels.dims[0]) + " labels but '" + images_path +
                          "' has " + std::to_string(images.dims[0]) +
                          " images; expected one label per image");
  ImageDataset d;
  d.rows = images.dims[1];
  d.cols = images.dims[2];
  d.num_classes = num_classes;
  d.pixels = std::move(images.data);
  d.labels.assign(labels.data.begin(), labels.data.end());
  return d;
}

IdxFiles find_idx_files(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    fail(dir, "image data directory does not exist; " + install_hint() +
                  ", or point at a directory holding the four MNIST-style IDX files");
  return {pick_file(dir, kFileNames[0]), pick_file(dir, kFileNames[1]),
          pick_file(dir, kFileNames[2]), pick_file(dir, kFileNames[3])};
}

std::vector<int64_t> philox_permutation(int64_t n, uint64_t key, uint64_t stream) {
  if (n < 0 || n >= (int64_t{1} << 32) || stream >= (uint64_t{1} << 31))
    throw std::invalid_argument("philox_permutation: need 0 <= n < 2^32 and stream < 2^31, got n " +
                                std::to_string(n) + ", stream " + std::to_string(stream));
  std::vector<int64_t> perm(n);
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  // Fisher-Yates from the back: position i swaps with a uniform j in [0, i].
  for (int64_t i = n - 1; i > 0; --i) {
    uint64_t j = philox_below((stream << 32) | static_cast<uint64_t>(i), key, i + 1);
    std::swap(perm[i], perm[j]);
  }
  return perm;
}

std::vector<int64_t> validation_indices(int64_t n, int64_t val_size) {
  if (val_size < 0 || val_size >= n)
    throw std::invalid_argument("validation split: val_size must be in [0, " + std::to_string(n) +
                                ") for " + std::to_string(n) + " training images, got " +
                                std::to_string(val_size));
  std::vector<int64_t> perm = philox_permutation(n, kValSplitKey, 0);
  std::vector<int64_t> val(perm.begin(), perm.begin() + val_size);
  std::sort(val.begin(), val.end());
  return val;
}

ImageDataset subset(const ImageDataset& d, const std::vector<int64_t>& indices) {
  ImageDataset out;
  out.rows = d.rows, out.cols = d.cols, out.num_classes = d.num_classes;
  out.pixels.resize(indices.size() * d.image_pixels());
  out.labels.resize(indices.size());
  for (size_t k = 0; k < indices.size(); ++k) {
    int64_t i = indices[k];
    if (i < 0 || i >= d.size())
      throw std::out_of_range("subset: index " + std::to_string(i) + " outside [0, " +
                              std::to_string(d.size()) + ")");
    std::copy_n(d.image(i), d.image_pixels(), out.pixels.begin() + k * d.image_pixels());
    out.labels[k] = d.labels[i];
  }
  return out;
}

ImageSplits load_image_splits(const std::string& dir, int64_t val_size, int num_classes) {
  IdxFiles f = find_idx_files(dir);
  ImageDataset full = load_idx_dataset(f.train_images, f.train_labels, num_classes);
  ImageSplits s;
  s.test = load_idx_dataset(f.test_images, f.test_labels, num_classes);
  if (s.test.rows != full.rows || s.test.cols != full.cols)
    fail(f.test_images, "images are " + std::to_string(s.test.rows) + " x " +
                            std::to_string(s.test.cols) + " but '" + f.train_images + "' has " +
                            std::to_string(full.rows) + " x " + std::to_string(full.cols) +
                            "; expected the same size");
  std::vector<int64_t> val = validation_indices(full.size(), val_size);
  std::vector<bool> in_val(full.size(), false);
  for (int64_t i : val) in_val[i] = true;
  std::vector<int64_t> train;
  for (int64_t i = 0; i < full.size(); ++i)
    if (!in_val[i]) train.push_back(i);
  s.val = subset(full, val);
  s.train = subset(full, train);
  return s;
}

PixelStats pixel_stats(const ImageDataset& d) {
  // Integer sums are exact (255^2 * 2^40 pixels still fit in 64 bits); f64 only at the end.
  uint64_t sum = 0, sum_sq = 0;
  for (uint8_t p : d.pixels) sum += p, sum_sq += uint64_t{p} * p;
  if (d.pixels.empty()) return {};
  double n = static_cast<double>(d.pixels.size());
  double mean = static_cast<double>(sum) / n;
  double var = static_cast<double>(sum_sq) / n - mean * mean;
  return {mean / 255.0, std::sqrt(std::max(var, 0.0)) / 255.0};
}

// ---- training batcher -------------------------------------------------------

ImageBatcher::ImageBatcher(std::shared_ptr<const ImageDataset> data, int64_t batch, uint64_t seed,
                           ImageTransform transform)
    : data_(std::move(data)), batch_(batch), seed_(seed), transform_(transform) {
  check_dataset("ImageBatcher", data_, batch);
  if (data_->size() == 0) throw std::invalid_argument("ImageBatcher: empty dataset");
  int64_t limit = std::min(data_->rows, data_->cols);
  if (transform_.max_shift < 0 || transform_.max_shift >= limit)
    throw std::invalid_argument("ImageBatcher: max_shift must be in [0, " + std::to_string(limit) +
                                ") for " + std::to_string(data_->rows) + " x " +
                                std::to_string(data_->cols) + " images, got " +
                                std::to_string(transform_.max_shift));
  lut_ = make_lut(transform_);
  permutation(0);  // checks n < 2^32 now rather than at the first batch
}

const std::vector<int64_t>& ImageBatcher::permutation(uint64_t epoch) const {
  for (const auto& [e, perm] : perm_cache_)
    if (e == epoch) return perm;
  // A batch of at most n images spans at most two epochs: keep the two most recent (a larger
  // batch is still right, only slower).
  if (perm_cache_.size() >= 2) perm_cache_.erase(perm_cache_.begin());
  perm_cache_.emplace_back(epoch, philox_permutation(data_->size(), seed_, epoch));
  return perm_cache_.back().second;
}

int64_t ImageBatcher::sample(uint64_t position, int64_t row) const {
  uint64_t k = position * static_cast<uint64_t>(batch_) + static_cast<uint64_t>(row);
  auto n = static_cast<uint64_t>(data_->size());
  return permutation(k / n)[k % n];
}

Augmentation ImageBatcher::augmentation(uint64_t position, int64_t row) const {
  Augmentation a;
  if (!transform_.flip && transform_.max_shift == 0) return a;
  uint64_t k = position * static_cast<uint64_t>(batch_) + static_cast<uint64_t>(row);
  Philox4 r = philox4x32_10(kAugmentTag | k, seed_);
  a.flip = transform_.flip && (r.x[0] >> 31) != 0;
  // 32 bits modulo 2m + 1 (at most 55 here): the bias is below 2^-26, negligible.
  auto span = static_cast<uint32_t>(2 * transform_.max_shift + 1);
  a.dx = static_cast<int>(r.x[1] % span) - transform_.max_shift;
  a.dy = static_cast<int>(r.x[2] % span) - transform_.max_shift;
  return a;
}

uint64_t ImageBatcher::epoch(uint64_t position) const {
  return position * static_cast<uint64_t>(batch_) / static_cast<uint64_t>(data_->size());
}

ImageBatch ImageBatcher::batch_at(uint64_t position) const { return batch_at(position, 0, batch_); }

ImageBatch ImageBatcher::batch_at(uint64_t position, int64_t row_begin, int64_t row_end) const {
  if (row_begin < 0 || row_end > batch_ || row_begin >= row_end)
    throw std::out_of_range("ImageBatcher: rows [" + std::to_string(row_begin) + ", " +
                            std::to_string(row_end) + ") of a batch of " + std::to_string(batch_));
  ImageBatch b = empty_batch(row_end - row_begin, *data_);
  float* x = b.x.data<float>();
  int32_t* y = b.y.data<int32_t>();
  for (int64_t row = row_begin; row < row_end; ++row) {
    int64_t i = sample(position, row), out = row - row_begin;
    render(data_->image(i), data_->rows, data_->cols, augmentation(position, row), lut_,
           x + out * data_->image_pixels());
    y[out] = data_->labels[i];
  }
  return b;
}

ImageBatch ImageBatcher::next() { return batch_at(position_++); }

// ---- evaluation batcher -----------------------------------------------------

ImageEvalBatcher::ImageEvalBatcher(std::shared_ptr<const ImageDataset> data, int64_t batch,
                                   ImageTransform transform)
    : data_(std::move(data)), batch_(batch) {
  check_dataset("ImageEvalBatcher", data_, batch);
  lut_ = make_lut(transform);
}

int64_t ImageEvalBatcher::num_batches() const { return (data_->size() + batch_ - 1) / batch_; }

ImageBatch ImageEvalBatcher::batch_at(int64_t i) const {
  if (i < 0 || i >= num_batches())
    throw std::out_of_range("ImageEvalBatcher: batch " + std::to_string(i) + " outside [0, " +
                            std::to_string(num_batches()) + ")");
  int64_t begin = i * batch_, n = std::min(batch_, data_->size() - begin);
  ImageBatch b = empty_batch(n, *data_);
  for (int64_t r = 0; r < n; ++r) {
    render(data_->image(begin + r), data_->rows, data_->cols, {}, lut_,
           b.x.data<float>() + r * data_->image_pixels());
    b.y.data<int32_t>()[r] = data_->labels[begin + r];
  }
  return b;
}

}  // namespace attn::data
