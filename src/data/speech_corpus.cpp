// Speech corpus listings: JSONL manifests and the LibriSpeech folder layout.
#include "data/speech_corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <unordered_map>

#include "data/audio.h"

namespace attn::data {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// "manifest M line N: " — the prefix of every manifest error.
std::string where(const std::string& file, size_t line) {
  return file + " line " + std::to_string(line) + ": ";
}

std::string string_key(const json& row, const char* key, const std::string& at, bool required) {
  auto it = row.find(key);
  if (it == row.end() || it->is_null()) {
    if (required) throw std::runtime_error(at + "missing key \"" + std::string(key) + "\"");
    return "";
  }
  if (!it->is_string())
    throw std::runtime_error(at + "key \"" + std::string(key) + "\" must be a string, got " +
                             it->dump());
  return it->get<std::string>();
}

std::string existing_audio(const fs::path& p, const std::string& at) {
  std::error_code ec;
  if (!fs::is_regular_file(p, ec))
    throw std::runtime_error(at + "audio file " + p.string() + " does not exist");
  return p.string();
}

Utterance manifest_row(const std::string& text, const fs::path& folder, const std::string& at) {
  json row;
  try {
    row = json::parse(text);
  } catch (const json::parse_error& e) {
    throw std::runtime_error(at + "not valid JSON (" + e.what() + ")");
  }
  if (!row.is_object()) throw std::runtime_error(at + "expected a JSON object, got " + row.dump());
  Utterance u;
  u.id = string_key(row, "id", at, true);
  fs::path p = string_key(row, "path", at, true);
  u.transcript = string_key(row, "transcript", at, true);
  u.speaker = string_key(row, "speaker", at, false);
  if (u.speaker.empty()) u.speaker = string_key(row, "voice", at, false);
  u.audio_path =
      existing_audio(fs::absolute(p.is_absolute() ? p : folder / p).lexically_normal(), at);
  auto d = row.find("duration");
  if (d != row.end() && !d->is_null()) {
    if (!d->is_number() || d->get<double>() <= 0)
      throw std::runtime_error(at + "key \"duration\" must be a positive number of seconds, got " +
                               d->dump());
    u.duration_s = d->get<double>();
  } else {
    u.duration_s = audio_duration_s(u.audio_path);
  }
  return u;
}

// The utterances of one SPEAKER-CHAPTER.trans.txt.
std::vector<Utterance> read_transcripts(const fs::path& trans) {
  std::ifstream in(trans);
  if (!in) throw std::runtime_error("read_librispeech: cannot read " + trans.string());
  const fs::path chapter_dir = trans.parent_path();
  const std::string speaker = chapter_dir.parent_path().filename().string();
  const std::string prefix = speaker + "-" + chapter_dir.filename().string() + "-";
  std::vector<Utterance> out;
  size_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    std::string at = "read_librispeech: " + where(trans.string(), line_no);
    size_t space = line.find(' ');
    std::string id = line.substr(0, space);
    size_t text_start = space == std::string::npos ? space : line.find_first_not_of(' ', space);
    if (text_start == std::string::npos)
      throw std::runtime_error(at + "expected \"UTTID TEXT\", got \"" + line + "\"");
    if (id.rfind(prefix, 0) != 0 || id.size() == prefix.size())
      throw std::runtime_error(at + "utterance id \"" + id + "\" does not start with \"" + prefix +
                               "\" (SPEAKER-CHAPTER- of its folder)");
    Utterance u{id, existing_audio(fs::absolute(chapter_dir / (id + ".flac")), at),
                line.substr(text_start), speaker};
    u.duration_s = audio_duration_s(u.audio_path);
    out.push_back(std::move(u));
  }
  return out;
}

}  // namespace

std::vector<Utterance> read_manifest(const std::string& jsonl_path) {
  std::ifstream in(jsonl_path);
  if (!in) throw std::runtime_error("read_manifest: cannot read " + jsonl_path);
  const fs::path folder = fs::absolute(jsonl_path).parent_path();
  std::vector<Utterance> out;
  std::unordered_map<std::string, size_t> line_of_id;
  size_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string at = "read_manifest: " + where(jsonl_path, line_no);
    out.push_back(manifest_row(line, folder, at));
    if (auto [it, fresh] = line_of_id.emplace(out.back().id, line_no); !fresh)
      throw std::runtime_error(at + "id \"" + out.back().id + "\" repeats line " +
                               std::to_string(it->second));
  }
  if (in.bad()) throw std::runtime_error("read_manifest: error reading " + jsonl_path);
  if (out.empty())
    throw std::runtime_error("read_manifest: " + jsonl_path + " holds no utterances");
  return out;
}

std::vector<Utterance> read_librispeech(const std::string& dir) {
  std::vector<fs::path> trans_files;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (it->is_regular_file() && name.size() > 10 && name.ends_with(".trans.txt"))
      trans_files.push_back(it->path());
  }
  if (ec) throw std::runtime_error("read_librispeech: cannot list " + dir + ": " + ec.message());
  if (trans_files.empty())
    throw std::runtime_error("read_librispeech: " + dir +
                             " holds no SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt (not a "
                             "LibriSpeech-format folder)");
  std::vector<Utterance> out;
  for (const fs::path& t : trans_files)
    for (Utterance& u : read_transcripts(t)) out.push_back(std::move(u));
  std::sort(out.begin(), out.end(),
            [](const Utterance& a, const Utterance& b) { return a.id < b.id; });
  return out;
}

std::vector<Utterance> read_speech_corpus(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return read_librispeech(path);
  if (fs::is_regular_file(path, ec) && fs::path(path).extension() == ".jsonl")
    return read_manifest(path);
  if (!fs::exists(path, ec))
    throw std::runtime_error("read_speech_corpus: " + path + " does not exist");
  throw std::runtime_error("read_speech_corpus: " + path +
                           " is neither a .jsonl manifest nor a LibriSpeech-format folder");
}

}  // namespace attn::data
