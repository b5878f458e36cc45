#include "train/run_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "util/log.h"
#include "util/write_all.h"

namespace fs = std::filesystem;

namespace attn::train {

namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path, int err) {
  throw std::runtime_error(fmt::format("{} '{}': {}", what, path, std::strerror(err)));
}

std::string parent_of(const std::string& path) {
  fs::path p = fs::path(path).parent_path();
  return p.empty() ? "." : p.string();
}

}  // namespace

void sync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("cannot open directory", dir, errno);
  int rc = ::fsync(fd), err = errno;
  ::close(fd);
  if (rc != 0) fail("cannot sync directory", dir, err);
}

void write_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create", tmp, errno);
  bool ok = util::write_all(fd, content.data(), content.size()) && ::fsync(fd) == 0;
  int err = errno;
  if (::close(fd) != 0 && ok) ok = false, err = errno;
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) ok = false, err = errno;
  if (!ok) {
    ::unlink(tmp.c_str());
    fail("cannot write", path, err);
  }
  sync_directory(parent_of(path));
}

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot read", path, errno);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int err = errno;
      ::close(fd);
      fail("cannot read", path, err);
    }
    if (r == 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  ::close(fd);
  return out;
}

std::vector<std::string> remove_temp_files(const std::string& dir) {
  std::vector<std::string> removed;
  if (!fs::is_directory(dir)) return removed;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && name.find(".tmp.") != std::string::npos) {
      fs::remove(e.path());
      removed.push_back(e.path().string());
    }
  }
  return removed;
}

MetricsLog::MetricsLog(const std::string& path, uint64_t keep_bytes) : path_(path) {
  if (fs::exists(path)) {
    std::string text = read_file(path);
    uint64_t keep = keep_bytes;
    if (text.size() < keep_bytes || (keep > 0 && text[keep - 1] != '\n')) {
      // The file does not end where the checkpoint says it did: keep its complete lines only.
      size_t cut = text.rfind('\n', std::min<size_t>(text.size(), keep) - (keep > 0 ? 1 : 0));
      keep = cut == std::string::npos ? 0 : cut + 1;
      logging::warn(
          "warning: '{}' has {} bytes where the checkpoint recorded {}: rows after byte {} "
          "are lost; "
          "cut back to its last complete line\n",
          path, text.size(), keep_bytes, keep);
    }
    if (::truncate(path.c_str(), static_cast<off_t>(keep)) != 0)
      fail("cannot truncate", path, errno);
    bytes_ = keep;
  } else if (keep_bytes > 0) {
    logging::warn(
        "warning: '{}' is missing (the checkpoint recorded {} bytes of it): a new one is started\n",
        path, keep_bytes);
  }
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("cannot open", path, errno);
}

MetricsLog::~MetricsLog() {
  if (fd_ >= 0) ::close(fd_);
}

void MetricsLog::write(const nlohmann::json& row) {
  const std::string line = row.dump() + "\n";
  if (!util::write_all(fd_, line.data(), line.size()))
    fail("cannot write a metrics row to", path_, errno);
  bytes_ += line.size();
}

void MetricsLog::sync() {
  if (::fsync(fd_) != 0) fail("cannot sync", path_, errno);
}

}  // namespace attn::train
