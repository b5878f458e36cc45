// Shared by the image data tests (test_image_data.cpp, test_image_batcher.cpp, one binary): the
// real Fashion-MNIST files of dataset-fashion-mnist, read once per binary.
#pragma once
#include <string>

#include "data/image_data.h"

namespace attn::data::image_test {

inline std::string real(const std::string& name) {
  return std::string(kFashionMnistDir) + "/" + name;
}

// The real files, read once per binary.
inline const ImageDataset& full_train() {
  static const ImageDataset d =
      load_idx_dataset(real("train-images-idx3-ubyte.gz"), real("train-labels-idx1-ubyte.gz"));
  return d;
}
inline const ImageSplits& splits() {
  static const ImageSplits s = load_image_splits();
  return s;
}

}  // namespace attn::data::image_test
