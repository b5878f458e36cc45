#include "data/speech_synthesis_folder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "util/write_all.h"

namespace attn::data::synth {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

// The first key whose value differs ("config.seed is 1 there, 2 now"), for the error message.
std::string first_difference(const ordered_json& was, const ordered_json& now,
                             const std::string& prefix = "") {
  for (const auto& [key, value] : now.items()) {
    if (!was.contains(key)) return prefix + key + " is absent there, " + value.dump() + " now";
    if (was[key] == value) continue;
    if (value.is_object() && was[key].is_object())
      return first_difference(was[key], value, prefix + key + ".");
    return prefix + key + " is " + was[key].dump() + " there, " + value.dump() + " now";
  }
  for (const auto& [key, value] : was.items())
    if (!now.contains(key)) return prefix + key + " is " + value.dump() + " there, absent now";
  return "";
}

}  // namespace

// ---- files ------------------------------------------------------------------------------------

// Written to path.tmp.PID, fsync'ed, renamed over path; every call checked.
void write_text_atomically(const fs::path& path, const std::string& content) {
  fs::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());
  auto fail = [&](const char* what) {
    std::string why = std::strerror(errno);
    std::error_code ec;
    fs::remove(tmp, ec);
    throw std::runtime_error("cannot write " + path.string() + ": " + what + " " + tmp.string() +
                             ": " + why);
  };
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("open");
  if (!util::write_all(fd, content.data(), content.size())) {
    const int err = errno;
    ::close(fd);
    errno = err;
    fail("write");
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    fail("fsync");
  }
  if (::close(fd) != 0) fail("close");
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename");
}

std::string read_text(const fs::path& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot read " + path.string() + ": " + std::strerror(errno));
  std::string s;
  char buf[65536];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) s.append(buf, n);
  bool bad = std::ferror(f);
  std::fclose(f);
  if (bad) throw std::runtime_error("error reading " + path.string());
  return s;
}

// ---- the folder -------------------------------------------------------------------------------

DirLock::DirLock(const fs::path& dir) {
  fs::path p = dir / ".lock";
  fd_ = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw std::runtime_error("cannot create " + p.string() + ": " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd_);
    throw std::runtime_error("another process is synthesising into " + dir.string() + " (" +
                             p.string() + " is locked)");
  }
}

DirLock::~DirLock() { ::close(fd_); }

// corpus.json: written into a new (or empty) folder, compared in an existing corpus.
void claim_folder(const fs::path& dir, const ordered_json& identity) {
  fs::path file = dir / "corpus.json";
  if (fs::exists(file)) {
    ordered_json was;
    try {
      was = ordered_json::parse(read_text(file));
    } catch (const nlohmann::json::parse_error& e) {
      throw std::runtime_error(file.string() + " is not valid JSON (" + e.what() + "); delete " +
                               dir.string() + " or choose another output folder");
    }
    if (was != identity)
      throw std::runtime_error(dir.string() +
                               " holds a corpus synthesised with a different config (" +
                               first_difference(was, identity) + ", corpus.json); choose another " +
                               "output folder or delete that one");
    return;
  }
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename() != ".lock")
      throw std::runtime_error(dir.string() +
                               " is not empty and has no corpus.json: not a speech "
                               "corpus folder; choose an empty or new one");
  write_text_atomically(file, identity.dump(2) + "\n");
}

// Temporary files a killed run left behind (*.tmp.*); safe under the folder's lock.
void remove_stale_temps(const fs::path& split_dir) {
  for (const auto& entry : fs::directory_iterator(split_dir))
    if (entry.path().filename().string().find(".tmp.") != std::string::npos)
      fs::remove(entry.path());
}

}  // namespace attn::data::synth
