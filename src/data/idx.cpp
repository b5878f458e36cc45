// IDX reader: a header (magic, big-endian uint32 dims), then exactly prod(dims) u8 values, read
// through zlib so that gzip-compressed and plain files take the same path.
#include "data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <utility>

namespace attn::data {

namespace fs = std::filesystem;

namespace {

constexpr uint8_t kTypeU8 = 0x08;
constexpr int kMaxDims = 8;
// A header whose dims multiply past this is corrupt (2^48 bytes = 256 TiB); the bound also
// keeps the product far from int64 overflow.
constexpr uint64_t kMaxElements = uint64_t{1} << 48;
constexpr size_t kChunk = size_t{1} << 24;  // bytes per gzread call (its length is an unsigned)

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw DataFileError("'" + path + "': " + what);
}

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? " x " : "") + std::to_string(dims[i]);
  return s;
}

// The IDX element types (only u8 is read); nullptr for a byte that is no IDX type.
const char* type_name(uint8_t type) {
  static constexpr std::pair<uint8_t, const char*> kTypes[] = {
      {0x08, "u8"}, {0x09, "s8"}, {0x0B, "i16"}, {0x0C, "i32"}, {0x0D, "f32"}, {0x0E, "f64"}};
  for (auto [code, name] : kTypes)
    if (code == type) return name;
  return nullptr;
}

std::string magic_meaning(uint32_t magic) {
  if (magic == kIdxImagesMagic) return " (u8 images)";
  if (magic == kIdxLabelsMagic) return " (u8 labels)";
  return "";
}

// A gzFile that closes itself. gzopen reads a file without the gzip magic as-is (zlib's
// "transparent" mode), so plain IDX files need no second code path.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path) {
    std::error_code ec;
    if (!fs::exists(path, ec)) fail(path, "no such file (expected an IDX file)");
    if (fs::is_directory(path, ec)) fail(path, "is a directory, expected an IDX file");
    f_ = gzopen(path.c_str(), "rb");
    if (!f_) fail(path, std::string("cannot open: ") + std::strerror(errno));
    gzbuffer(f_, 1 << 17);
  }
  ~GzReader() { gzclose(f_); }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  // Reads up to n bytes; fewer only at the end of the data. Throws on corrupt or cut-off gzip.
  size_t read(uint8_t* dst, size_t n) {
    size_t got = 0;
    while (got < n) {
      auto want = static_cast<unsigned>(std::min(n - got, kChunk));
      int r = gzread(f_, dst + got, want);
      if (r < 0) fail_stream();
      got += static_cast<size_t>(r);
      if (static_cast<unsigned>(r) < want) break;
    }
    check_not_cut_off();
    return got;
  }

  // Counts (and discards) everything left.
  uint64_t skip_rest() {
    std::vector<uint8_t> buf(1 << 16);
    uint64_t total = 0;
    for (size_t r; (r = read(buf.data(), buf.size())) > 0;) total += r;
    return total;
  }

 private:
  [[noreturn]] void fail_stream() {
    int err = Z_OK;
    const char* msg = gzerror(f_, &err);
    if (err == Z_ERRNO) fail(path_, std::string("read error: ") + std::strerror(errno));
    fail(path_, std::string("corrupt gzip data (") + msg + ")");
  }
  // zlib reports a gzip stream that stops mid-way as Z_BUF_ERROR after a short read.
  void check_not_cut_off() {
    int err = Z_OK;
    gzerror(f_, &err);
    if (err == Z_BUF_ERROR)
      fail(path_, "truncated: the gzip stream ends early (the compressed file is cut off)");
  }

  std::string path_;
  gzFile f_ = nullptr;
};

uint32_t big_endian_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

uint32_t read_magic(GzReader& in, const std::string& path) {
  uint8_t b[4];
  size_t got = in.read(b, 4);
  if (got < 4)
    fail(path, "truncated: " + std::to_string(got) + " bytes, shorter than the 4-byte IDX magic");
  return big_endian_u32(b);
}

// Any u8 IDX magic: 0x00 0x00 0x08 <ndims>, ndims in 1..8.
void check_generic_magic(uint32_t magic, const std::string& path) {
  uint8_t type = (magic >> 8) & 0xFF, ndims = magic & 0xFF;
  bool idx_like = (magic >> 16) == 0;
  if (idx_like && type != kTypeU8 && type_name(type))
    fail(path, "IDX type 0x" + idx_magic_str(type).substr(8) + " (" + type_name(type) +
                   ") is not supported, expected 0x08 (u8); found magic " + idx_magic_str(magic));
  if (!idx_like || type != kTypeU8 || ndims < 1 || ndims > kMaxDims)
    fail(path, "expected an IDX magic 0x000008NN (u8 data, NN = 1 to 8 dims), found " +
                   idx_magic_str(magic) + " (not an IDX file; gzip is the only compression read)");
}

std::vector<int64_t> read_dims(GzReader& in, const std::string& path, int ndims) {
  std::vector<uint8_t> raw(4 * static_cast<size_t>(ndims));
  size_t got = in.read(raw.data(), raw.size());
  if (got < raw.size())
    fail(path, "truncated: the magic declares " + std::to_string(ndims) + " dims (" +
                   std::to_string(raw.size()) + " header bytes) but the file ends after " +
                   std::to_string(got) + " of them");
  std::vector<int64_t> dims;
  uint64_t elements = 1;
  for (int i = 0; i < ndims; ++i) {
    dims.push_back(big_endian_u32(&raw[4 * i]));
    elements *= static_cast<uint64_t>(dims.back());
    if (elements > kMaxElements)
      fail(path, "implausible dims " + dims_str(dims) + (i + 1 < ndims ? " x ..." : "") +
                     ": more than 2^48 values, expected a header from an intact IDX file");
  }
  return dims;
}

// Reads exactly prod(dims) bytes and checks that nothing follows them.
std::vector<uint8_t> read_data(GzReader& in, const std::string& path,
                               const std::vector<int64_t>& dims) {
  uint64_t want = 1;
  for (int64_t d : dims) want *= static_cast<uint64_t>(d);
  // Grown chunk by chunk, so that a corrupt header claiming terabytes costs only the real size.
  std::vector<uint8_t> data;
  size_t got = 0;
  while (got < want) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(want - got, kChunk));
    data.resize(got + n);
    size_t r = in.read(data.data() + got, n);
    got += r;
    if (r < n) break;
  }
  if (got < want)
    fail(path, "truncated: dims " + dims_str(dims) + " promise " + std::to_string(want) +
                   " data bytes, found " + std::to_string(got));
  if (uint64_t extra = in.skip_rest())
    fail(path, std::to_string(extra) + " trailing bytes: dims " + dims_str(dims) + " promise " +
                   std::to_string(want) + " data bytes, found " + std::to_string(want + extra));
  return data;
}

// want_magic: checked before the data is read, so a swapped file is named as such even when it
// is also damaged.
IdxArray read_checked(const std::string& path, std::optional<uint32_t> want_magic,
                      const char* what) {
  GzReader in(path);
  IdxArray a;
  a.magic = read_magic(in, path);
  if (want_magic && a.magic != *want_magic)
    fail(path, "expected IDX magic " + idx_magic_str(*want_magic) + " (" + what + "), found " +
                   idx_magic_str(a.magic) + magic_meaning(a.magic));
  check_generic_magic(a.magic, path);
  a.dims = read_dims(in, path, static_cast<int>(a.magic & 0xFF));
  a.data = read_data(in, path, a.dims);
  return a;
}

}  // namespace

std::string idx_magic_str(uint32_t magic) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", magic);
  return buf;
}

IdxArray read_idx(const std::string& path) { return read_checked(path, std::nullopt, ""); }

IdxArray read_idx_images(const std::string& path) {
  IdxArray a = read_checked(path, kIdxImagesMagic, "u8 images");
  if (a.dims[1] == 0 || a.dims[2] == 0)
    fail(path, "images of " + std::to_string(a.dims[1]) + " x " + std::to_string(a.dims[2]) +
                   " pixels; expected rows, cols > 0");
  return a;
}

IdxArray read_idx_labels(const std::string& path, int num_classes) {
  IdxArray a = read_checked(path, kIdxLabelsMagic, "u8 labels");
  if (num_classes <= 0) return a;
  auto bad =
      std::find_if(a.data.begin(), a.data.end(), [&](uint8_t l) { return l >= num_classes; });
  if (bad != a.data.end())
    fail(path, "label " + std::to_string(*bad) + " at index " +
                   std::to_string(bad - a.data.begin()) + " is out of range: expected labels 0.." +
                   std::to_string(num_classes - 1) + " (" + std::to_string(num_classes) +
                   " classes)");
  return a;
}

}  // namespace attn::data
