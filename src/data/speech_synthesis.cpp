// The synthetic ASR corpus: KJV phrases through espeak-ng, resampled, noised, written as WAV
// with JSONL manifests; cached (a WAV that reads back is kept) and therefore resumable.
//
// Which utterances there are and how each is drawn (phrase assignment, the test_long draws, the
// Philox keys): speech_synthesis_plan.h. The output folder (its lock, corpus.json, checked
// atomic writes): speech_synthesis_folder.h. The threads and the progress line:
// speech_synthesis_jobs.h.
#include "data/speech_synthesis.h"

#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>
#include <thread>

#include "data/audio.h"
#include "data/espeak.h"
#include "data/speech_synthesis_folder.h"
#include "data/speech_synthesis_jobs.h"
#include "data/speech_synthesis_plan.h"

namespace attn::data {

namespace fs = std::filesystem;
using nlohmann::ordered_json;
using synth::Item, synth::Plan, synth::kSplits, synth::kNumSplits;

namespace {

constexpr const char* kFormat = "attnlab speech corpus 1";

// espeak-ng silently ignores an unknown +variant, so every variant is checked for its file.
void check_variants(const SynthesisConfig& c, const EspeakInstall& e) {
  for (const auto* list : {&c.train_variants, &c.test_variants})
    for (const std::string& v : *list) {
      fs::path file = fs::path(e.data_dir) / "voices" / "!v" / v;
      if (!fs::is_regular_file(file))
        throw std::invalid_argument("SynthesisConfig: espeak-ng has no variant '" + v +
                                    "' (no file " + file.string() +
                                    "; `espeak-ng --voices=variant` lists them)");
    }
}

// ---- making the utterances --------------------------------------------------------------------

// The duration of a WAV already there that reads back at the corpus' rate, or 0.
double reusable(const fs::path& wav, int rate) {
  std::error_code ec;
  if (!fs::is_regular_file(wav, ec)) return 0;
  try {
    Audio a = read_audio(wav.string());
    return a.sample_rate == rate ? a.duration_s() : 0;
  } catch (const std::runtime_error&) {
    return 0;  // torn or foreign: made again
  }
}

// espeak-ng's WAV, resampled to the corpus' rate, with the item's noise.
Audio synthesise(const fs::path& out, const Item& it, int rate) {
  fs::path raw =
      out / kSplits[it.split] / (it.id + ".espeak.tmp." + std::to_string(::getpid()) + ".wav");
  espeak_to_wav(it.text, it.voice, it.rate, it.pitch, raw.string());
  Audio a = read_audio(raw.string(), rate);
  fs::remove(raw);
  if (it.snr_db) add_white_noise(a.samples, *it.snr_db, it.key);
  return a;
}

std::string manifest_text(const std::vector<Item>& items, int split) {
  std::string text;
  for (const Item& it : items) {
    if (it.split != split) continue;
    ordered_json row = {{"id", it.id},
                        {"path", it.file},
                        {"transcript", it.transcript},
                        {"speaker", it.voice},
                        {"rate", it.rate},
                        {"pitch", it.pitch},
                        {"snr_db", it.snr_db ? ordered_json(*it.snr_db) : ordered_json(nullptr)},
                        {"duration", it.duration_s}};
    text += row.dump() + "\n";
  }
  return text;
}

// Rewritten only when missing or different, so a complete corpus is left untouched.
void write_manifest(const fs::path& out, const std::vector<Item>& items, int split) {
  fs::path file = out / (std::string(kSplits[split]) + ".jsonl");
  std::string text = manifest_text(items, split);
  std::error_code ec;
  if (fs::is_regular_file(file, ec) && synth::read_text(file) == text) return;
  synth::write_text_atomically(file, text);
}

// test_long-N.tryK.wav files already there: N -> the smallest K.
std::map<int, int> kept_attempts(const fs::path& dir) {
  std::map<int, int> kept;
  for (const auto& e : fs::directory_iterator(dir)) {
    int n = 0, k = 0, used = 0;
    std::string name = e.path().filename().string();
    if (std::sscanf(name.c_str(), "test_long-%d.try%d.wav%n", &n, &k, &used) == 2 &&
        used == static_cast<int>(name.size()) && (!kept.count(n) || k < kept[n]))
      kept[n] = k;
  }
  return kept;
}

constexpr int kMaxLongAttempts = 100;

class Synthesis {
 public:
  Synthesis(const fs::path& out, const SynthesisConfig& c, const SynthesisOptions& o, Plan& plan)
      : out_(out), c_(c), o_(o), plan_(plan), progress_(plan.items.size(), o.progress) {
    for (const Item& it : plan.items) ++remaining_[it.split];
  }

  // Train, val and test first: test_long keeps a draw only when it is longer than the longest
  // train utterance, which must be known by then.
  void run() {
    std::vector<Item>& items = plan_.items;
    for (int s = 0; s < kNumSplits; ++s)
      if (remaining_[s] == 0) write_manifest(out_, items, s);
    const size_t first_long = static_cast<size_t>(
        std::find_if(items.begin(), items.end(), [](const Item& it) { return it.split == 3; }) -
        items.begin());
    const int jobs =
        o_.jobs > 0 ? o_.jobs : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    synth::parallel_for(0, first_long, jobs, [&](size_t i) {
      make_phrase(items[i]);
      finished(items[i].split);
    });
    for (const Item& it : items)
      longest_train_ = std::max(longest_train_, it.split == 0 ? it.duration_s : 0.0);
    kept_ = kept_attempts(out_ / "test_long");
    synth::parallel_for(first_long, items.size(), jobs, [&](size_t i) {
      make_long(items[i]);
      finished(3);
    });
  }

  int synthesised() const { return synthesised_; }
  int reused() const { return reused_; }
  int redrawn() const { return redrawn_; }

 private:
  void finished(int split) {
    progress_.tick();
    if (--remaining_[split] == 0) write_manifest(out_, plan_.items, split);
  }

  void make_phrase(Item& it) {
    it.duration_s = reusable(out_ / it.file, c_.sample_rate);
    if (it.duration_s > 0) {
      ++reused_;
      return;
    }
    Audio a = synthesise(out_, it, c_.sample_rate);
    write_audio((out_ / it.file).string(), a);
    it.duration_s = a.duration_s();
    ++synthesised_;
  }

  // Draws until one is longer than every train utterance; a kept draw already on disk is reused.
  void make_long(Item& it) {
    const int index = it.index;
    if (auto k = kept_.find(index); k != kept_.end()) {
      Item kept = synth::long_item(c_, plan_, index, k->second);
      double d = reusable(out_ / kept.file, c_.sample_rate);
      if (d > longest_train_) {
        it = kept;
        it.duration_s = d;
        ++reused_;
        return;
      }
      fs::remove(out_ / kept.file);
    }
    for (int attempt = 0; attempt < kMaxLongAttempts; ++attempt) {
      Item draw = synth::long_item(c_, plan_, index, attempt);
      Audio a = synthesise(out_, draw, c_.sample_rate);
      if (a.duration_s() <= longest_train_) {
        ++redrawn_;
        continue;
      }
      write_audio((out_ / draw.file).string(), a);
      it = draw;
      it.duration_s = a.duration_s();
      ++synthesised_;
      return;
    }
    throw std::runtime_error(
        fmt::format("{}: none of {} draws was longer than the longest train utterance ({:.2f} s)",
                    it.id, kMaxLongAttempts, longest_train_));
  }

  const fs::path out_;
  const SynthesisConfig& c_;
  const SynthesisOptions& o_;
  Plan& plan_;
  synth::Progress progress_;
  std::atomic<int> remaining_[kNumSplits] = {};
  std::atomic<int> synthesised_{0}, reused_{0}, redrawn_{0};
  double longest_train_ = 0;
  std::map<int, int> kept_;
};

// Utterances, voices, hours and the shortest and longest duration of one split.
SplitSummary summarise_split(const std::vector<Item>& items, int split) {
  SplitSummary sum{kSplits[split]};
  std::set<std::string> voice_set;
  double total = 0;
  for (const Item& it : items) {
    if (it.split != split) continue;
    sum.shortest_s = sum.utterances == 0 ? it.duration_s : std::min(sum.shortest_s, it.duration_s);
    sum.longest_s = std::max(sum.longest_s, it.duration_s);
    ++sum.utterances;
    total += it.duration_s;
    voice_set.insert(it.voice);
  }
  sum.voices = static_cast<int>(voice_set.size());
  sum.hours = total / 3600.0;
  return sum;
}

SynthesisReport summarise(const std::vector<Item>& items, const Synthesis& s, double seconds) {
  SynthesisReport r;
  r.synthesised = s.synthesised();
  r.reused = s.reused();
  r.test_long_redrawn = s.redrawn();
  r.seconds = seconds;
  for (int split = 0; split < kNumSplits; ++split)
    r.splits.push_back(summarise_split(items, split));
  for (const Item& it : items)
    r.test_long_not_longer += it.split == 3 && it.duration_s <= r.splits[0].longest_s;
  return r;
}

}  // namespace

// ---- the corpus -------------------------------------------------------------------------------

bool SynthesisReport::test_long_longer_than_train() const {
  return splits.size() == kNumSplits && splits[3].utterances > 0 && test_long_not_longer == 0;
}

std::string SynthesisReport::stats_line() const {
  std::string s;
  for (const SplitSummary& sp : splits)
    s += fmt::format("{}{} {:.3f} h, {} utt, {} voices", s.empty() ? "" : "; ", sp.name, sp.hours,
                     sp.utterances, sp.voices);
  if (splits.size() == kNumSplits && splits[3].utterances > 0) {
    const double shortest = splits[3].shortest_s, longest = splits[0].longest_s;
    s += test_long_longer_than_train()
             ? fmt::format(
                   "; test_long all longer than train: shortest {:.2f} s > longest train {:.2f} s",
                   shortest, longest)
             : fmt::format(
                   "; WARNING: {} of {} test_long utterances are not longer than the longest "
                   "train one ({:.2f} s; shortest test_long {:.2f} s)",
                   test_long_not_longer, splits[3].utterances, longest, shortest);
  }
  return s + fmt::format("; {} synthesised ({} test_long draws redrawn), {} reused, {:.1f} s",
                         synthesised, test_long_redrawn, reused, seconds);
}

SynthesisReport synthesise_speech_corpus(const std::string& out_dir, const SynthesisConfig& c,
                                         const SynthesisOptions& o) {
  auto start = std::chrono::steady_clock::now();
  c.validate();
  EspeakInstall espeak = espeak_install();
  check_variants(c, espeak);
  ordered_json identity = {
      {"format", kFormat}, {"espeak_ng", espeak.version}, {"config", c.to_json()}};
  // Before touching out_dir: a plan that fails leaves no trace.
  Plan plan = synth::make_plan(c, o.cache_dir);
  const fs::path out = fs::absolute(out_dir);
  fs::create_directories(out);
  synth::DirLock lock(out);
  synth::claim_folder(out, identity);
  for (const char* split : kSplits) {
    fs::create_directories(out / split);
    synth::remove_stale_temps(out / split);
  }
  Synthesis synthesis(out, c, o, plan);
  synthesis.run();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summarise(plan.items, synthesis, seconds);
}

}  // namespace attn::data
