#include "data/speech_synthesis_config.h"

#include <cmath>
#include <set>
#include <stdexcept>

namespace attn::data {

using nlohmann::ordered_json;

SynthesisConfig SynthesisConfig::small() {
  SynthesisConfig c;
  c.train_phrases = 600, c.val_phrases = 60, c.test_phrases = 100, c.test_long = 60;
  c.train_accents = {"en-us", "en-gb"};
  c.train_variants = {"m1", "m3", "f2"};
  c.test_accents = {"en-gb-x-rp", "en-us-nyc"};
  c.test_variants = {"m7", "f4"};
  return c;
}

SynthesisConfig SynthesisConfig::reference() {
  SynthesisConfig c;
  c.train_phrases = 8000, c.val_phrases = 400, c.test_phrases = 1000, c.test_long = 500;
  c.train_accents = {"en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-029"};
  c.train_variants = {"m1", "m2", "m3", "m4",    "m5",     "m6",
                      "f1", "f2", "f3", "klatt", "robert", "steph"};
  c.test_accents = {"en-gb-x-rp", "en-gb-x-gbcwmd", "en-us-nyc"};
  c.test_variants = {"m7", "f4", "f5", "klatt2", "paul"};
  return c;
}

SynthesisConfig SynthesisConfig::preset(const std::string& name) {
  if (name == "small") return small();
  if (name == "reference") return reference();
  throw std::invalid_argument("unknown speech corpus size '" + name +
                              "' (expected small or reference)");
}

namespace {

[[noreturn]] void bad(const std::string& field, const std::string& why) {
  throw std::invalid_argument("SynthesisConfig: " + field + " " + why);
}

void check_counts(const SynthesisConfig& c) {
  if (c.train_phrases < 1) bad("train_phrases", "must be >= 1");
  if (c.val_phrases < 0) bad("val_phrases", "must be >= 0");
  if (c.test_phrases < 1) bad("test_phrases", "must be >= 1");
  if (c.test_long < 0) bad("test_long", "must be >= 0");
  if (c.test_long > 0 && c.test_phrases < 2) bad("test_phrases", "must be >= 2 for test_long");
  if (c.min_chars < 1 || c.max_chars < c.min_chars)
    bad("min_chars/max_chars", "must satisfy 1 <= min <= max");
}

void check_ranges(const SynthesisConfig& c) {
  if (c.rate_min < 80 || c.rate_max > 450 || c.rate_min > c.rate_max)
    bad("rate_min/rate_max", "must satisfy 80 <= min <= max <= 450 (espeak-ng -s)");
  if (c.pitch_min < 0 || c.pitch_max > 99 || c.pitch_min > c.pitch_max)
    bad("pitch_min/pitch_max", "must satisfy 0 <= min <= max <= 99 (espeak-ng -p)");
  if (c.snr_db.empty()) bad("snr_db", "must list at least one SNR (null for none)");
  for (const auto& s : c.snr_db)
    if (s && !std::isfinite(*s)) bad("snr_db", "must be finite numbers or null");
  if (c.sample_rate < 4000 || c.sample_rate > 192000)
    bad("sample_rate", "must be in [4000, 192000]");
}

// Both lists non-empty, neither repeating a name, no name in both.
void check_disjoint(const std::vector<std::string>& a, const std::vector<std::string>& b,
                    const std::string& what) {
  if (a.empty() || b.empty()) bad(what, "lists must not be empty");
  std::set<std::string> sa(a.begin(), a.end()), sb(b.begin(), b.end());
  if (sa.size() != a.size() || sb.size() != b.size()) bad(what, "lists must not repeat a name");
  for (const std::string& x : a)
    if (sb.count(x)) bad(what, "'" + x + "' is both a train and a test one: they must be disjoint");
}

}  // namespace

void SynthesisConfig::validate() const {
  check_counts(*this);
  check_ranges(*this);
  check_disjoint(train_accents, test_accents, "accents");
  check_disjoint(train_variants, test_variants, "variants");
}

nlohmann::ordered_json SynthesisConfig::to_json() const {
  ordered_json snr = ordered_json::array();
  for (const auto& s : snr_db) snr.push_back(s ? ordered_json(*s) : ordered_json(nullptr));
  return {{"train_phrases", train_phrases},
          {"val_phrases", val_phrases},
          {"test_phrases", test_phrases},
          {"test_long", test_long},
          {"min_chars", min_chars},
          {"max_chars", max_chars},
          {"train_accents", train_accents},
          {"train_variants", train_variants},
          {"test_accents", test_accents},
          {"test_variants", test_variants},
          {"rate_min", rate_min},
          {"rate_max", rate_max},
          {"pitch_min", pitch_min},
          {"pitch_max", pitch_max},
          {"snr_db", snr},
          {"sample_rate", sample_rate},
          {"seed", seed}};
}

}  // namespace attn::data
