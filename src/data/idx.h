// IDX files, the format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/): a 4-byte
// magic 0x00 0x00 <type> <ndims>, then ndims big-endian uint32 sizes, then the values row-major.
// Only type 0x08 (unsigned byte) is read, which covers every MNIST-style image and label file:
// images are magic 0x00000803 (u8 [N, rows, cols]), labels 0x00000801 (u8 [N]). Files may be
// gzip-compressed (.gz) or plain; the reader tells them apart by content, not by name.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace attn::data {

// A data file that is missing, unreadable or not what it claims to be. The message names the
// file and says what was expected and what was found.
struct DataFileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr uint32_t kIdxImagesMagic = 0x00000803;  // u8, 3 dims
constexpr uint32_t kIdxLabelsMagic = 0x00000801;  // u8, 1 dim

// A u8 IDX array: dims as in the header, data row-major with exactly prod(dims) bytes.
struct IdxArray {
  uint32_t magic = 0;
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

// Reads any u8 IDX file (1 to 8 dims). Throws DataFileError when the file is missing or
// unreadable, the gzip stream is corrupt or ends early, the magic is not 0x0000 08 <ndims>, or
// the data is shorter or longer than the dims promise.
IdxArray read_idx(const std::string& path);

// read_idx, then: the magic must be kIdxImagesMagic and rows, cols > 0.
IdxArray read_idx_images(const std::string& path);

// read_idx, then: the magic must be kIdxLabelsMagic and, when num_classes > 0, every label
// must be < num_classes (the message gives the first offending label and its index).
IdxArray read_idx_labels(const std::string& path, int num_classes = 0);

// "0x00000803": how magics are printed in messages.
std::string idx_magic_str(uint32_t magic);

}  // namespace attn::data
