// KJV corpus: runs Debian's `bible` program once, strips verse references, caches the result.
//
// Measured with bible-kjv 4.38 (Debian): `bible -f` prints 31,102 lines (4,404,412 bytes); after
// stripping the references the text is 31,102 lines, 4,137,850 bytes, 63 distinct characters
// ("\n !'(),-.:;?", A-Z without X, a-z). The 90/10 split gives 3,724,065 / 413,785 characters.
#include "data/kjv.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

namespace attn::data {

namespace fs = std::filesystem;

namespace {

constexpr const char* kBibleCommand = "bible -f \"Genesis 1:1-Revelation 22:21\"";
constexpr const char* kInstallHint =
    "install the Debian package bible-kjv (`apt-get install bible-kjv`)";
// The full text has 31,102 verses and ~4.14 MB; anything far below is a broken install.
constexpr size_t kMinLines = 30000;
constexpr size_t kMinBytes = 4000000;

bool program_on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  if (!path) return false;
  std::stringstream dirs(path);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    fs::path p = fs::path(dir.empty() ? "." : dir) / name;
    if (::access(p.c_str(), X_OK) == 0 && !fs::is_directory(p)) return true;
  }
  return false;
}

std::string run_bible() {
  if (!program_on_path("bible"))
    throw std::runtime_error("kjv_corpus: the `bible` program is not on PATH; " +
                             std::string(kInstallHint));
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(kBibleCommand, "r"), ::pclose);
  if (!pipe) throw std::runtime_error(std::string("kjv_corpus: cannot run ") + kBibleCommand);
  std::string out;
  char buf[1 << 16];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe.get())) > 0;) out.append(buf, n);
  int status = ::pclose(pipe.release());
  if (status != 0)
    throw std::runtime_error(std::string("kjv_corpus: `") + kBibleCommand + "` failed (status " +
                             std::to_string(status) + "); " + kInstallHint);
  return out;
}

size_t count_lines(const std::string& text) {
  size_t n = 0;
  for (char c : text) n += c == '\n';
  return n;
}

bool plausible(const std::string& text) {
  return text.size() >= kMinBytes && count_lines(text) >= kMinLines;
}

void check_plausible(const std::string& text) {
  if (plausible(text)) return;
  throw std::runtime_error("kjv_corpus: `bible` produced only " + std::to_string(text.size()) +
                           " bytes in " + std::to_string(count_lines(text)) +
                           " lines (expected ~4.14 MB in 31,102 lines); the KJV text is "
                           "incomplete: reinstall bible-kjv and bible-kjv-text");
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("kjv_corpus: cannot read " + p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_atomically(const fs::path& p, const std::string& text) {
  fs::path tmp = p;
  tmp += ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    if (!out.flush()) throw std::runtime_error("kjv_corpus: cannot write " + tmp.string());
  }
  fs::rename(tmp, p);  // atomic on POSIX: readers see the old file or the whole new one
}

}  // namespace

std::string strip_verse_references(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  size_t pos = 0;
  while (pos < raw.size()) {
    size_t end = raw.find('\n', pos);
    if (end == std::string_view::npos) end = raw.size();
    std::string_view line = raw.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t ref_end = line.find_first_of(" \t");
    size_t text_start =
        ref_end == std::string_view::npos ? line.size() : line.find_first_not_of(" \t", ref_end);
    if (text_start != std::string_view::npos) out.append(line.substr(text_start));
    out.push_back('\n');
    pos = end + 1;
  }
  return out;
}

std::string kjv_corpus(const std::string& cache_dir) {
  fs::path cache = fs::path(cache_dir) / "kjv.txt";
  if (fs::exists(cache)) {
    std::string text = read_file(cache);
    if (plausible(text)) return text;  // a damaged cache is rebuilt below
  }
  std::string text = strip_verse_references(run_bible());
  check_plausible(text);
  fs::create_directories(cache_dir);
  write_atomically(cache, text);
  return text;
}

TextSplit split_train_val(const std::string& text, double train_fraction) {
  if (!(train_fraction > 0.0 && train_fraction <= 1.0))
    throw std::invalid_argument("split_train_val: train_fraction must be in (0, 1], got " +
                                std::to_string(train_fraction));
  auto n_train =
      static_cast<size_t>(std::llround(train_fraction * static_cast<double>(text.size())));
  if (n_train > text.size()) n_train = text.size();
  return {text.substr(0, n_train), text.substr(n_train)};
}

}  // namespace attn::data
