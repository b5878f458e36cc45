// Image data: the IDX reader on the real Fashion-MNIST files (dataset-fashion-mnist) and on
// corrupted copies of them, the image directory, the splits and the pixel statistics. The
// batchers are in test_image_batcher.cpp (the same binary).
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "data/idx.h"
#include "data/image_data.h"
#include "image_data_test_util.h"
#include "scratch_dir.h"

using namespace attn;
using namespace attn::data;
using namespace attn::data::image_test;
namespace fs = std::filesystem;

namespace {

// A per-process scratch directory under $TMPDIR (or /tmp), removed after the last test.
fs::path scratch_dir() { return attn::testing::scratch_dir("attnlab-test-image-"); }

// An IDX file's bytes: big-endian magic and dims, then the data.
std::string encode_idx(uint32_t magic, const std::vector<uint32_t>& dims, const std::string& data) {
  std::string out;
  auto put = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>((v >> s) & 0xFF));
  };
  put(magic);
  for (uint32_t d : dims) put(d);
  return out + data;
}
std::string bytes_of(const IdxArray& a) {
  std::vector<uint32_t> dims(a.dims.begin(), a.dims.end());
  return encode_idx(a.magic, dims, std::string(a.data.begin(), a.data.end()));
}

std::string write_file(const std::string& name, const std::string& bytes, bool gzip) {
  std::string path = (scratch_dir() / name).string();
  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb1");
    EXPECT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream(path, std::ios::binary) << bytes;
  }
  return path;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

template <class F>
::testing::AssertionResult fails_with(F&& f, const std::string& path, const std::string& what) {
  std::string msg = "(no exception)";
  try {
    f();
  } catch (const DataFileError& e) {
    msg = e.what();
  } catch (const std::exception& e) {
    msg = std::string("(not a DataFileError) ") + e.what();
  }
  if (msg.find("'" + path + "'") != std::string::npos && msg.find(what) != std::string::npos)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "message \"" << msg << "\" lacks '" << path << "' or \"" << what << "\"";
}

// The real t10k files, decompressed: the material of every corrupted copy.
const std::string& test_images_bytes() {
  static const std::string b = bytes_of(read_idx(real("t10k-images-idx3-ubyte.gz")));
  return b;
}
const std::string& test_labels_bytes() {
  static const std::string b = bytes_of(read_idx(real("t10k-labels-idx1-ubyte.gz")));
  return b;
}

}  // namespace

// ---- the real files -----------------------------------------------------------------------

TEST(Idx, RealFashionMnistShapesAndBalancedLabels) {
  const ImageDataset& train = full_train();
  const ImageDataset& test = splits().test;
  EXPECT_EQ(train.size(), 60000);
  EXPECT_EQ(test.size(), 10000);
  for (const ImageDataset* d : {&train, &test}) {
    EXPECT_EQ(d->rows, 28);
    EXPECT_EQ(d->cols, 28);
    EXPECT_EQ(d->num_classes, 10);
    EXPECT_EQ(static_cast<int64_t>(d->pixels.size()), d->size() * 784);
    std::vector<int64_t> hist(10, 0);
    for (int32_t l : d->labels) ++hist.at(l);
    for (int c = 0; c < 10; ++c) EXPECT_EQ(hist[c], d->size() / 10) << "class " << c;
  }
  EXPECT_EQ(train.labels[0], 9);  // the first training image is an ankle boot
}

TEST(Idx, PlainAndGzipReadTheSame) {
  IdxArray gz = read_idx(real("t10k-images-idx3-ubyte.gz"));
  IdxArray plain = read_idx(write_file("t10k-images-idx3-ubyte", test_images_bytes(), false));
  EXPECT_EQ(gz.magic, kIdxImagesMagic);
  EXPECT_EQ(gz.dims, (std::vector<int64_t>{10000, 28, 28}));
  EXPECT_EQ(plain.dims, gz.dims);
  EXPECT_TRUE(plain.data == gz.data);
}

TEST(Idx, GenericReaderTakesAnyU8Shape) {
  std::string data(2 * 3 * 4 * 5, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i);
  IdxArray a = read_idx(write_file("four-dims.gz", encode_idx(0x804, {2, 3, 4, 5}, data), true));
  EXPECT_EQ(a.dims, (std::vector<int64_t>{2, 3, 4, 5}));
  EXPECT_EQ(std::string(a.data.begin(), a.data.end()), data);
}

// ---- corrupted copies ---------------------------------------------------------------------

TEST(IdxErrors, MissingFile) {
  std::string p = (scratch_dir() / "absent.gz").string();
  EXPECT_TRUE(fails_with([&] { read_idx(p); }, p, "no such file"));
}

TEST(IdxErrors, TruncatedData) {
  const std::string& b = test_images_bytes();
  for (bool gz : {false, true}) {
    std::string p = write_file(gz ? "short.gz" : "short", b.substr(0, b.size() - 1000), gz);
    EXPECT_TRUE(fails_with([&] { read_idx_images(p); }, p,
                           "truncated: dims 10000 x 28 x 28 promise 7840000 data bytes, found "
                           "7839000"));
  }
  std::string p = write_file("header-only", b.substr(0, 10), false);
  EXPECT_TRUE(fails_with([&] { read_idx_images(p); }, p, "file ends after 6 of them"));
}

TEST(IdxErrors, TruncatedGzipStream) {
  std::string whole = slurp(real("t10k-labels-idx1-ubyte.gz"));
  std::string p = write_file("cut.gz", whole.substr(0, whole.size() / 2), false);
  EXPECT_TRUE(fails_with([&] { read_idx_labels(p, 10); }, p, "gzip stream ends early"));
  whole[whole.size() / 2] ^= 0x55;  // a damaged deflate block or checksum
  p = write_file("damaged.gz", whole, false);
  EXPECT_TRUE(fails_with([&] { read_idx_labels(p, 10); }, p, "corrupt gzip data"));
}

TEST(IdxErrors, WrongMagic) {
  std::string labels = real("t10k-labels-idx1-ubyte.gz");
  EXPECT_TRUE(
      fails_with([&] { read_idx_images(labels); }, labels,
                 "expected IDX magic 0x00000803 (u8 images), found 0x00000801 (u8 labels)"));
  std::string images = real("t10k-images-idx3-ubyte.gz");
  EXPECT_TRUE(fails_with([&] { read_idx_labels(images); }, images,
                         "expected IDX magic 0x00000801 (u8 labels), found 0x00000803"));
  std::string p = write_file("text.idx", "hello, world", false);
  EXPECT_TRUE(fails_with([&] { read_idx(p); }, p, "expected an IDX magic 0x000008NN"));
  p = write_file("floats.idx", encode_idx(0x00000D01, {1}, "abcd"), false);
  EXPECT_TRUE(fails_with([&] { read_idx(p); }, p, "IDX type 0x0D (f32) is not supported"));
}

TEST(IdxErrors, WrongDims) {
  std::string b = test_images_bytes();
  std::string two = b;
  two[3] = 2;  // an image file that claims two dims
  std::string p = write_file("two-dims.gz", two, true);
  EXPECT_TRUE(fails_with([&] { read_idx_images(p); }, p,
                         "expected IDX magic 0x00000803 (u8 images), found 0x00000802"));
  std::string taller = b;
  taller[11] = 29;  // rows 28 -> 29: the data is now short
  p = write_file("taller.gz", taller, true);
  EXPECT_TRUE(fails_with([&] { read_idx_images(p); }, p,
                         "dims 10000 x 29 x 28 promise 8120000 data bytes, found 7840000"));
  std::string narrower = b;
  narrower[15] = 27;  // cols 28 -> 27: the data is now long
  p = write_file("narrower.gz", narrower, true);
  EXPECT_TRUE(fails_with([&] { read_idx_images(p); }, p, "280000 trailing bytes"));
  std::string empty_rows = b;
  empty_rows[11] = 0;
  p = write_file("zero-rows.gz", empty_rows.substr(0, 16), true);
  EXPECT_TRUE(fails_with([&] { read_idx_images(p); }, p, "expected rows, cols > 0"));
}

TEST(IdxErrors, TrailingBytes) {
  for (bool gz : {false, true}) {
    std::string p = write_file(gz ? "long.gz" : "long", test_labels_bytes() + "xyzzy", gz);
    EXPECT_TRUE(fails_with([&] { read_idx_labels(p, 10); }, p,
                           "5 trailing bytes: dims 10000 promise 10000 data bytes, found 10005"));
  }
}

TEST(IdxErrors, LabelOutOfRange) {
  std::string b = test_labels_bytes();
  b[8 + 1234] = 10;
  std::string p = write_file("label10.gz", b, true);
  EXPECT_TRUE(fails_with([&] { read_idx_labels(p, 10); }, p,
                         "label 10 at index 1234 is out of range: expected labels 0..9"));
  EXPECT_EQ(read_idx_labels(p).data[1234], 10);  // no class count: no check
}

TEST(IdxErrors, MismatchedCounts) {
  std::string b = test_labels_bytes();
  b[7] = static_cast<char>(0x0F);  // 10000 = 0x2710 -> 0x270F = 9999 labels
  std::string p = write_file("9999-labels.gz", b.substr(0, b.size() - 1), true);
  std::string images = real("t10k-images-idx3-ubyte.gz");
  EXPECT_TRUE(fails_with([&] { load_idx_dataset(images, p); }, p,
                         "has 9999 labels but '" + images + "' has 10000 images"));
}

// ---- directories and splits ---------------------------------------------------------------

TEST(ImageDir, MissingDirectoryOrFileNamesItAndThePackage) {
  std::string d = (scratch_dir() / "no-such-dir").string();
  EXPECT_TRUE(fails_with([&] { load_image_splits(d); }, d, "dataset-fashion-mnist"));
  fs::path partial = scratch_dir() / "partial";
  fs::create_directories(partial);
  for (const char* f :
       {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"})
    fs::copy_file(real(f), partial / f, fs::copy_options::overwrite_existing);
  EXPECT_TRUE(fails_with([&] { find_idx_files(partial.string()); }, partial.string(),
                         "no t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz"));
  EXPECT_TRUE(fails_with([&] { find_idx_files(partial.string()); }, partial.string(),
                         "apt-get install dataset-fashion-mnist"));
}

TEST(ImageDir, AnyMnistStyleDirectoryPlainOrGzip) {
  fs::path dir = scratch_dir() / "tiny";
  fs::create_directories(dir);
  auto put = [&](const std::string& name, uint32_t magic, std::vector<uint32_t> dims, int n,
                 bool gz) {
    std::string data(n, '\0');
    for (int i = 0; i < n; ++i) data[i] = static_cast<char>((i * 7) % (magic == 0x801 ? 3 : 256));
    write_file("tiny/" + name + (gz ? ".gz" : ""), encode_idx(magic, dims, data), gz);
  };
  put("train-images-idx3-ubyte", 0x803, {40, 5, 7}, 40 * 35, true);
  put("train-labels-idx1-ubyte", 0x801, {40}, 40, false);
  put("t10k-images-idx3-ubyte", 0x803, {9, 5, 7}, 9 * 35, false);
  put("t10k-labels-idx1-ubyte", 0x801, {9}, 9, true);
  ImageSplits s = load_image_splits(dir.string(), 10, 3);
  EXPECT_EQ(s.train.size(), 30);
  EXPECT_EQ(s.val.size(), 10);
  EXPECT_EQ(s.test.size(), 9);
  EXPECT_EQ(s.test.rows, 5);
  EXPECT_EQ(s.test.cols, 7);
  put("t10k-images-idx3-ubyte", 0x803, {9, 7, 5}, 9 * 35, false);
  std::string p = (dir / "t10k-images-idx3-ubyte").string();
  EXPECT_TRUE(
      fails_with([&] { load_image_splits(dir.string(), 10, 3); }, p, "images are 7 x 5 but"));
}

TEST(Splits, ValidationIsAFixedBalancedSubsetDisjointFromTrain) {
  const ImageSplits& s = splits();
  ASSERT_EQ(s.train.size(), 55000);
  ASSERT_EQ(s.val.size(), 5000);
  std::vector<int64_t> val = validation_indices(60000, 5000);
  EXPECT_EQ(val, validation_indices(60000, 5000));  // seed-independent, stable
  EXPECT_TRUE(std::is_sorted(val.begin(), val.end()));
  EXPECT_EQ(std::set<int64_t>(val.begin(), val.end()).size(), 5000u);
  EXPECT_GT(val.back() - val.front(), 59000);  // spread over the file, not one block
  std::vector<bool> in_val(60000, false);
  for (int64_t i : val) in_val[i] = true;
  const ImageDataset& full = full_train();
  int64_t t = 0;
  for (int64_t i = 0; i < 60000; ++i) {
    if (in_val[i]) continue;
    ASSERT_TRUE(std::equal(full.image(i), full.image(i) + 784, s.train.image(t))) << i;
    ASSERT_EQ(full.labels[i], s.train.labels[t++]);
  }
  for (int64_t k = 0; k < 5000; ++k)
    ASSERT_TRUE(std::equal(full.image(val[k]), full.image(val[k]) + 784, s.val.image(k)));
  std::vector<int> hist(10, 0);
  for (int32_t l : s.val.labels) ++hist[l];
  for (int c = 0; c < 10; ++c) EXPECT_NEAR(hist[c], 500, 80) << "class " << c;
  EXPECT_THROW(validation_indices(100, 100), std::invalid_argument);
  EXPECT_THROW(validation_indices(100, -1), std::invalid_argument);
  EXPECT_TRUE(validation_indices(100, 0).empty());
}

TEST(Stats, PixelStatsOnKnownPixelsAndTheRealTrainingSet) {
  ImageDataset d;
  d.rows = 1, d.cols = 4, d.num_classes = 1;
  d.pixels = {0, 255, 0, 255, 51, 51, 51, 51};  // mean (2 + 0.8) / 8 = 0.35
  d.labels = {0, 0};
  PixelStats s = pixel_stats(d);
  EXPECT_NEAR(s.mean, 0.35, 1e-12);
  EXPECT_NEAR(s.std, std::sqrt((2 * 0.65 * 0.65 + 2 * 0.35 * 0.35 + 4 * 0.15 * 0.15) / 8), 1e-12);
  PixelStats real_stats = pixel_stats(full_train());
  EXPECT_NEAR(real_stats.mean, 0.2860, 1e-4);
  EXPECT_NEAR(real_stats.std, 0.3530, 1e-4);
  EXPECT_NEAR(real_stats.mean, kFashionMnistMean, 1e-7);
  EXPECT_NEAR(real_stats.std, kFashionMnistStd, 1e-7);
}
