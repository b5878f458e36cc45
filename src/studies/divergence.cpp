#include "studies/divergence.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace fs = std::filesystem;

namespace attn::studies {

namespace {

// The trainer's text in that row (src/train/trainer.cpp, train_loop).
constexpr const char* kNonFiniteError = "non-finite loss or gradient";

// The last complete line of a file, read from its end: the error row is short, so a longer last
// line (a statistics row) is not it and need not be read whole.
std::string last_line(const std::string& path, std::streamoff tail = 4096) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return "";
  const std::streamoff size = f.tellg();
  const std::streamoff from = std::max<std::streamoff>(0, size - tail);
  f.seekg(from);
  std::string text(static_cast<size_t>(size - from), '\0');
  if (!f.read(text.data(), static_cast<std::streamsize>(text.size()))) return "";
  while (!text.empty() && text.back() == '\n') text.pop_back();
  const size_t nl = text.rfind('\n');
  if (nl == std::string::npos && from > 0) return "";  // longer than the tail: not the error row
  return nl == std::string::npos ? text : text.substr(nl + 1);
}

}  // namespace

std::optional<int64_t> diverged_at(const std::string& dir) {
  if (fs::exists(dir + "/summary.json")) return std::nullopt;
  const nlohmann::json row =
      nlohmann::json::parse(last_line(dir + "/metrics.jsonl"), nullptr, false);
  if (!row.is_object() || !row.contains("error") || row["error"] != kNonFiniteError ||
      !row.contains("step") || !row["step"].is_number_integer())
    return std::nullopt;
  return row["step"].get<int64_t>();
}

}  // namespace attn::studies
