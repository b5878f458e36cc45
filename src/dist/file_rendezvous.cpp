#include "dist/file_rendezvous.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "util/write_all.h"

namespace attn::dist {

namespace {

constexpr const char* kMagic = "attnlab-rendezvous 1 ";

[[noreturn]] void fail(const std::string& what, const std::string& path, int err) {
  throw std::runtime_error(
      fmt::format("rendezvous file '{}': {}: {}", path, what, std::strerror(err)));
}

std::string encode(const std::string& payload) {
  static const char* hex = "0123456789abcdef";
  std::string out = kMagic + std::to_string(payload.size()) + "\n";
  for (unsigned char c : payload) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out + "\n";
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

std::string decode(const std::string& path, const std::string& text) {
  auto bad = [&](const std::string& why) {
    return std::runtime_error(fmt::format(
        "rendezvous file '{}': {}; expected \"{}<n>\" and n bytes in hex (written by rank 0 of "
        "this job)",
        path, why, kMagic));
  };
  const size_t magic = std::strlen(kMagic);
  if (text.compare(0, magic, kMagic) != 0) throw bad("no rendezvous header");
  size_t eol = text.find('\n', magic);
  if (eol == std::string::npos) throw bad("no end of header");
  size_t n = 0;
  try {
    size_t used = 0;
    n = std::stoull(text.substr(magic, eol - magic), &used);
    if (used != eol - magic) throw bad("a size that is not a number");
  } catch (const std::logic_error&) {
    throw bad("a size that is not a number");
  }
  if (text.size() != eol + 1 + 2 * n + 1 || text.back() != '\n')
    throw bad(
        fmt::format("{} bytes of payload announced, the file has {} characters", n, text.size()));
  std::string payload(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    int hi = hex_digit(text[eol + 1 + 2 * i]), lo = hex_digit(text[eol + 2 + 2 * i]);
    if (hi < 0 || lo < 0) throw bad("a payload that is not hex");
    payload[i] = static_cast<char>(hi * 16 + lo);
  }
  return payload;
}

// The whole file, or false (errno set) if it cannot be opened or read.
bool read_all(const std::string& path, std::string& out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  out.clear();
  char buf[4096];
  for (;;) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int err = errno;
      ::close(fd);
      errno = err;
      return false;
    }
    if (r == 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  ::close(fd);
  return true;
}

}  // namespace

void publish_rendezvous(const std::string& path, const std::string& payload) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create " + tmp, path, errno);
  const std::string encoded = encode(payload);
  bool ok = util::write_all(fd, encoded.data(), encoded.size()) && ::fsync(fd) == 0;
  int err = errno;
  if (::close(fd) != 0 && ok) ok = false, err = errno;
  if (ok && ::link(tmp.c_str(), path.c_str()) != 0) ok = false, err = errno;
  ::unlink(tmp.c_str());
  if (!ok && err == EEXIST)
    throw std::runtime_error(fmt::format(
        "rendezvous file '{}' already exists (left by an earlier job?): remove it, or give each "
        "job its own path",
        path));
  if (!ok) fail("cannot write", path, err);
}

std::string await_rendezvous(const std::string& path, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string text;
  for (;;) {
    if (read_all(path, text)) return decode(path, text);
    if (errno != ENOENT) fail("cannot read", path, errno);
    if (std::chrono::steady_clock::now() >= deadline)
      throw std::runtime_error(fmt::format(
          "rendezvous file '{}' did not appear within {:.1f} s (is rank 0 running, and does every "
          "rank see this path?)",
          path, timeout.count() / 1000.0));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string exchange_through_file(const std::string& path, int rank, const std::string& payload,
                                  std::chrono::milliseconds timeout) {
  if (rank == 0) {
    publish_rendezvous(path, payload);
    return payload;
  }
  return await_rendezvous(path, timeout);
}

void remove_rendezvous(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) fail("cannot remove", path, errno);
}

}  // namespace attn::dist
