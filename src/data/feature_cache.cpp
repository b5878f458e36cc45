#include "data/feature_cache.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <fmt/format.h>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>

#include "util/write_all.h"

namespace attn::data {

namespace fs = std::filesystem;

namespace {

static_assert(std::endian::native == std::endian::little, "the cache format is little-endian");

constexpr char kMagic[8] = {'A', 'T', 'N', 'L', 'F', 'E', 'A', 'T'};
constexpr uint32_t kVersion = 1;
constexpr uint64_t kTrailerBytes = 8;
constexpr uint64_t kMinBytes = sizeof kMagic + 4 + kTrailerBytes;
// The smallest entry: an empty id and zero frames.
constexpr uint64_t kMinEntryBytes = 16;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw DataFileError("feature cache '" + path + "': " + what);
}

[[noreturn]] void fail_errno(const std::string& path, const std::string& what) {
  fail(path, what + ": " + std::strerror(errno));
}

struct HashState {
  std::unique_ptr<XXH64_state_t, XXH_errorcode (*)(XXH64_state_t*)> s{XXH64_createState(),
                                                                      XXH64_freeState};
  HashState() {
    if (!s || XXH64_reset(s.get(), 0) != XXH_OK) throw std::bad_alloc();
  }
  void update(const void* p, size_t n) { XXH64_update(s.get(), p, n); }
  uint64_t digest() const { return XXH64_digest(s.get()); }
};

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }
  // close(2) once, reporting its result (where a deferred write error can surface).
  int close() {
    int fd = fd_;
    fd_ = -1;
    return ::close(fd);
  }

 private:
  int fd_;
};

// Buffered, checked writes that hash every byte.
class Writer {
 public:
  Writer(int fd, const std::string& path) : fd_(fd), path_(path) { buf_.reserve(kBuffer); }
  void bytes(const void* p, size_t n) {
    hash_.update(p, n);
    const char* c = static_cast<const char*>(p);
    if (buf_.size() + n > kBuffer) flush();
    if (n >= kBuffer) return write_all(c, n);
    buf_.append(c, n);
  }
  void u32(uint32_t v) { bytes(&v, 4); }
  void u64(uint64_t v) { bytes(&v, 8); }
  void string(const std::string& s) {
    u64(s.size());
    bytes(s.data(), s.size());
  }
  // The checksum of everything so far, unhashed, then the buffer out.
  void finish() {
    uint64_t h = hash_.digest();
    buf_.append(reinterpret_cast<const char*>(&h), 8);
    flush();
  }

 private:
  static constexpr size_t kBuffer = size_t{1} << 20;
  void flush() {
    write_all(buf_.data(), buf_.size());
    buf_.clear();
  }
  void write_all(const char* p, size_t n) {
    if (!util::write_all(fd_, p, n)) fail_errno(path_, "cannot write");
  }
  int fd_;
  const std::string& path_;
  std::string buf_;
  HashState hash_;
};

// Exact reads of the bytes before the trailer, hashing every one; a read past them is a
// truncated file.
class Reader {
 public:
  Reader(int fd, const std::string& path, uint64_t body_bytes)
      : fd_(fd), path_(path), left_(body_bytes) {}
  uint64_t left() const { return left_; }
  // Throws unless count items of item_bytes each are left (without overflowing).
  void need(uint64_t count, uint64_t item_bytes, const char* what) const {
    if (item_bytes != 0 && count > left_ / item_bytes)
      fail(path_, fmt::format("truncated: {} needs {} x {} bytes, {} are left", what, count,
                              item_bytes, left_));
  }
  void bytes(void* p, uint64_t n, const char* what) {
    need(n, 1, what);
    read_raw(p, n);
    hash_.update(p, n);
    left_ -= n;
  }
  uint32_t u32(const char* what) {
    uint32_t v;
    bytes(&v, 4, what);
    return v;
  }
  uint64_t u64(const char* what) {
    uint64_t v;
    bytes(&v, 8, what);
    return v;
  }
  std::string string(const char* what) {
    uint64_t n = u64(what);
    need(n, 1, what);
    std::string s(n, '\0');
    bytes(s.data(), n, what);
    return s;
  }
  // Hashes what is left (a file we will not use must still be intact).
  void skip_rest() {
    std::vector<char> buf(size_t{1} << 20);
    while (left_ > 0) bytes(buf.data(), std::min<uint64_t>(left_, buf.size()), "the rest");
  }
  // The trailer must be the checksum of everything read.
  void verify() {
    if (left_ != 0) fail(path_, fmt::format("{} unexpected bytes after the last entry", left_));
    uint64_t stored;
    read_raw(&stored, 8);
    if (stored != hash_.digest())
      fail(path_, fmt::format("checksum mismatch (XXH64 {:016x}, the file says {:016x}): the file "
                              "is corrupt; delete it to recompute the features",
                              hash_.digest(), stored));
  }

 private:
  void read_raw(void* p, uint64_t n) {
    char* c = static_cast<char*>(p);
    while (n > 0) {
      ssize_t r = ::read(fd_, c, n);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) fail_errno(path_, "cannot read");
      if (r == 0) fail(path_, "truncated: the file ended while being read");
      c += r;
      n -= static_cast<uint64_t>(r);
    }
  }
  int fd_;
  const std::string& path_;
  uint64_t left_;
  HashState hash_;
};

void check_entries(const std::vector<UtteranceFeatures>& feats, int64_t n_mels) {
  if (n_mels < 1)
    throw std::invalid_argument("save_feature_cache: n_mels must be >= 1, got " +
                                std::to_string(n_mels));
  for (const UtteranceFeatures& u : feats)
    if (u.frames < 0 || u.data.size() != static_cast<uint64_t>(u.frames) * n_mels)
      throw std::invalid_argument(
          fmt::format("save_feature_cache: utterance '{}' has {} values for {} frames x {} mels",
                      u.id, u.data.size(), u.frames, n_mels));
}

void sync_directory_of(const std::string& path) {
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) dir = ".";
  FileDescriptor fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY));
  if (fd.get() < 0 || ::fsync(fd.get()) != 0) fail_errno(path, "cannot fsync its directory");
}

std::string temp_name(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return fmt::format("{}.tmp.{}.{}", path, ::getpid(), counter++);
}

void write_file(const std::string& tmp, const std::string& key,
                const std::vector<UtteranceFeatures>& feats, int64_t n_mels) {
  FileDescriptor fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) fail_errno(tmp, "cannot create");
  Writer w(fd.get(), tmp);
  w.bytes(kMagic, sizeof kMagic);
  w.u32(kVersion);
  w.string(key);
  w.u64(static_cast<uint64_t>(n_mels));
  w.u64(feats.size());
  for (const UtteranceFeatures& u : feats) {
    w.string(u.id);
    w.u64(static_cast<uint64_t>(u.frames));
    w.bytes(u.data.data(), u.data.size() * sizeof(float));
  }
  w.finish();
  if (::fsync(fd.get()) != 0) fail_errno(tmp, "cannot fsync");
  if (fd.close() != 0) fail_errno(tmp, "cannot close");
}

std::vector<UtteranceFeatures> read_entries(Reader& r, uint64_t count, int64_t n_mels) {
  std::vector<UtteranceFeatures> feats;
  feats.reserve(count);
  const uint64_t frame_bytes = static_cast<uint64_t>(n_mels) * sizeof(float);
  for (uint64_t i = 0; i < count; ++i) {
    UtteranceFeatures u;
    u.id = r.string("an utterance id");
    const uint64_t frames = r.u64("a frame count");
    r.need(frames, frame_bytes, "an utterance's features");
    u.frames = static_cast<int64_t>(frames);
    u.data.resize(frames * n_mels);
    r.bytes(u.data.data(), frames * frame_bytes, "an utterance's features");
    feats.push_back(std::move(u));
  }
  return feats;
}

}  // namespace

std::string feature_cache_key(const std::string& corpus_fingerprint, const MelOptions& o) {
  const MelOptions r = resolve_mel_options(o);
  return fmt::format(
      "corpus {} | log-mel v{}: sample_rate {} window_ms {} hop_ms {} n_mels {} n_fft {} "
      "f_min {} f_max {}",
      corpus_fingerprint, kLogMelVersion, r.sample_rate, r.window_ms, r.hop_ms, r.n_mels, r.n_fft,
      r.f_min, r.f_max);
}

void save_feature_cache(const std::string& path, const std::string& key,
                        const std::vector<UtteranceFeatures>& feats, int64_t n_mels) {
  check_entries(feats, n_mels);
  const std::string tmp = temp_name(path);
  try {
    write_file(tmp, key, feats, n_mels);
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      fail_errno(path, "cannot rename " + tmp + " to it");
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  sync_directory_of(path);
}

std::optional<std::vector<UtteranceFeatures>> load_feature_cache(const std::string& path,
                                                                 const std::string& key,
                                                                 int64_t n_mels) {
  if (n_mels < 1)
    throw std::invalid_argument("load_feature_cache: n_mels must be >= 1, got " +
                                std::to_string(n_mels));
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return std::nullopt;
    fail_errno(path, "cannot open");
  }
  const off_t size = ::lseek(fd.get(), 0, SEEK_END);
  if (size < 0 || ::lseek(fd.get(), 0, SEEK_SET) != 0) fail_errno(path, "cannot seek");
  if (static_cast<uint64_t>(size) < kMinBytes)
    fail(path,
         fmt::format("truncated: {} bytes, less than the smallest cache ({})", size, kMinBytes));
  Reader r(fd.get(), path, static_cast<uint64_t>(size) - kTrailerBytes);
  char magic[sizeof kMagic];
  r.bytes(magic, sizeof magic, "the magic");
  if (std::memcmp(magic, kMagic, sizeof kMagic) != 0)
    fail(path, "not an attnlab feature cache (bad magic)");
  if (r.u32("the version") != kVersion) {  // another format: recompute, once we know it is intact
    r.skip_rest();
    r.verify();
    return std::nullopt;
  }
  const std::string file_key = r.string("the key");
  const uint64_t file_mels = r.u64("n_mels");
  const uint64_t count = r.u64("the count");
  if (file_key != key || file_mels != static_cast<uint64_t>(n_mels)) {
    r.skip_rest();
    r.verify();
    return std::nullopt;
  }
  r.need(count, kMinEntryBytes, "the utterance count");
  std::vector<UtteranceFeatures> feats = read_entries(r, count, n_mels);
  r.verify();
  return feats;
}

}  // namespace attn::data
