// The synthetic ASR corpus: KJV phrases through espeak-ng, resampled, noised, written as WAV
// with JSONL manifests; cached (a WAV that reads back is kept) and therefore resumable.
//
// Phrase assignment: the deduplicated phrases are shuffled by the seed; the first train_phrases
// are train, the next val_phrases val, the next test_phrases test, so no val or test transcript
// occurs in train.
//
// test_long: an utterance joins two distinct test phrases whose joined transcript has more than
// L·rate_max/rate_min characters (L: the longest train transcript), i.e. more characters per
// second at the fastest rate than any train phrase at the slowest. That is not enough: duration
// is ~0.5 s + 8.3 s·chars/rate (wpm) with a residual of up to ±0.65 s across voices (measured on
// the small corpus), and 12 of its 60 first draws were shorter than the longest train utterance.
// So test_long is made after train, and a draw is kept only when it is longer than the longest
// train utterance; otherwise the next draw (its own key: seed, index, attempt) is synthesised.
// The kept draw's number is in its file name (test_long/test_long-N.tryK.wav), so a resume
// reuses it without the manifest; rates and voices of test_long lean towards the slow and long.
//
// Random draws: Philox4x32-10 with a key per (seed, split, index) and one counter per draw (voice,
// rate, pitch, SNR, pair attempts; the noise from counter 2^32 on), so an utterance does not
// depend on which worker made it, nor on the others; train durations, and with them the test_long
// choices, are themselves functions of the config.
#include "data/speech_synthesis.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <unordered_set>

#include "data/audio.h"
#include "data/espeak.h"
#include "data/kjv.h"
#include "tensor/philox.h"

namespace attn::data {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

constexpr const char* kSplits[] = {"train", "val", "test", "test_long"};
constexpr int kNumSplits = 4;
constexpr uint64_t kPhraseShuffleStream = 0x5048524153450000ull;  // keys the phrase shuffle
constexpr uint64_t kNoiseCounter = 1ull << 32;                    // first counter of the noise
constexpr const char* kFormat = "attnlab speech corpus 1";

// ---- deterministic draws ----------------------------------------------------------------------

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t stream_key(uint64_t seed, uint64_t stream, uint64_t index) {
  return splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ index);
}

// Uniform in [0, 1) with 53 random bits.
double uniform(uint64_t key, uint64_t counter) {
  Philox4 r = philox4x32_10(counter, key);
  uint64_t bits = (static_cast<uint64_t>(r.x[0]) << 21) | (r.x[1] >> 11);
  return static_cast<double>(bits) * 0x1p-53;
}

// Uniform integer in [lo, hi].
int64_t uniform_int(int64_t lo, int64_t hi, uint64_t key, uint64_t counter) {
  auto span = static_cast<double>(hi - lo + 1);
  return lo + std::min<int64_t>(hi - lo, static_cast<int64_t>(uniform(key, counter) * span));
}

template <class T>
void shuffle(std::vector<T>& v, uint64_t key) {  // Fisher-Yates, one counter per position
  for (size_t i = v.size(); i > 1; --i)
    std::swap(v[i - 1],
              v[static_cast<size_t>(uniform_int(0, static_cast<int64_t>(i) - 1, key, i))]);
}

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
  for (size_t done = 0; done < content.size();) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      fail("write");
    }
    done += static_cast<size_t>(n);
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

// An exclusive flock on out_dir/.lock for the synthesis' lifetime.
class DirLock {
 public:
  explicit DirLock(const fs::path& dir) {
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
  ~DirLock() { ::close(fd_); }
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  int fd_ = -1;
};

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

// ---- the plan ---------------------------------------------------------------------------------

struct Item {
  int split = 0, index = 0;
  int attempt = 0;  // test_long: which draw was kept (the file comment)
  std::string id, file /*relative to out_dir*/, text, transcript, voice;
  int rate = 0, pitch = 0;
  std::optional<double> snr_db;
  uint64_t key = 0;
  double duration_s = 0;  // filled once its WAV exists
};

struct Plan {
  std::vector<Item> items;  // train, val, test, then test_long (whose draws come when made)
  std::vector<Phrase> test_phrases;
  std::vector<std::string> test_voices;
  size_t long_min_chars = 0;  // a test_long transcript has at least this many characters
};

std::vector<std::string> voices(const std::vector<std::string>& accents,
                                const std::vector<std::string>& variants) {
  std::vector<std::string> v;
  for (const std::string& a : accents)
    for (const std::string& var : variants) v.push_back(a + "+" + var);
  return v;
}

Item blank_item(int split, int index) {
  Item it;
  it.split = split;
  it.index = index;
  it.id = fmt::format("{}-{:06d}", kSplits[split], index);
  it.file = std::string(kSplits[split]) + "/" + it.id + ".wav";
  return it;
}

// Voice, rate, pitch and SNR from counters 0-3 of it.key.
void draw_voice(const SynthesisConfig& c, const std::vector<std::string>& voice_list, Item& it) {
  it.voice = voice_list[static_cast<size_t>(
      uniform_int(0, static_cast<int64_t>(voice_list.size()) - 1, it.key, 0))];
  it.rate = static_cast<int>(uniform_int(c.rate_min, c.rate_max, it.key, 1));
  it.pitch = static_cast<int>(uniform_int(c.pitch_min, c.pitch_max, it.key, 2));
  it.snr_db = c.snr_db[static_cast<size_t>(
      uniform_int(0, static_cast<int64_t>(c.snr_db.size()) - 1, it.key, 3))];
}

Item phrase_item(const SynthesisConfig& c, int split, int index, const Phrase& p,
                 const std::vector<std::string>& voice_list) {
  Item it = blank_item(split, index);
  it.text = p.text;
  it.transcript = p.transcript;
  it.key = stream_key(c.seed, static_cast<uint64_t>(split) + 1, static_cast<uint64_t>(index));
  draw_voice(c, voice_list, it);
  return it;
}

// Draw `attempt` of test_long utterance `index`: its own key; two distinct test phrases, joined
// long enough (the file comment), from counters 16, 17, 18, ...
Item long_item(const SynthesisConfig& c, const Plan& plan, int index, int attempt) {
  Item it = blank_item(3, index);
  it.attempt = attempt;
  it.file = fmt::format("test_long/{}.try{}.wav", it.id, attempt);
  it.key = stream_key(stream_key(c.seed, 4, static_cast<uint64_t>(index)), 5,
                      static_cast<uint64_t>(attempt));
  draw_voice(c, plan.test_voices, it);
  const std::vector<Phrase>& test = plan.test_phrases;
  const auto n = static_cast<int64_t>(test.size());
  for (uint64_t k = 0; k < 1000000; ++k) {
    auto a = static_cast<size_t>(uniform_int(0, n - 1, it.key, 16 + 2 * k));
    auto b = static_cast<size_t>(uniform_int(0, n - 1, it.key, 17 + 2 * k));
    if (a == b || test[a].transcript.size() + 1 + test[b].transcript.size() < plan.long_min_chars)
      continue;
    it.text = test[a].text + " " + test[b].text;
    it.transcript = test[a].transcript + " " + test[b].transcript;
    return it;
  }
  throw std::runtime_error("test_long: no pair of test phrases found reaching " +
                           std::to_string(plan.long_min_chars) + " characters");
}

void plan_test_long(const SynthesisConfig& c, Plan& plan, size_t longest_train) {
  plan.long_min_chars = static_cast<size_t>(std::floor(static_cast<double>(longest_train) *
                                                       c.rate_max / c.rate_min)) +
                        1;
  std::vector<size_t> lengths;
  for (const Phrase& p : plan.test_phrases) lengths.push_back(p.transcript.size());
  std::sort(lengths.rbegin(), lengths.rend());
  if (lengths.size() < 2 || lengths[0] + 1 + lengths[1] < plan.long_min_chars)
    throw std::runtime_error(fmt::format(
        "test_long: no two of the {} test phrases together reach {} characters (the longest train "
        "phrase, {} characters, times rate_max/rate_min): raise test_phrases",
        plan.test_phrases.size(), plan.long_min_chars, longest_train));
  for (int i = 0; i < c.test_long; ++i) plan.items.push_back(blank_item(3, i));
}

Plan make_plan(const SynthesisConfig& c, const std::string& cache_dir) {
  std::vector<Phrase> pool = kjv_phrases(kjv_corpus(cache_dir), c.min_chars, c.max_chars);
  shuffle(pool, stream_key(c.seed, kPhraseShuffleStream, 0));
  const size_t counts[] = {size_t(c.train_phrases), size_t(c.val_phrases), size_t(c.test_phrases)};
  if (counts[0] + counts[1] + counts[2] > pool.size())
    throw std::runtime_error(fmt::format(
        "the KJV has {} distinct phrases of {}-{} characters, fewer than the {} train + {} val + "
        "{} test phrases asked for",
        pool.size(), c.min_chars, c.max_chars, counts[0], counts[1], counts[2]));
  Plan plan;
  const std::vector<std::string> train_voices = voices(c.train_accents, c.train_variants);
  plan.test_voices = voices(c.test_accents, c.test_variants);
  size_t next = 0, longest_train = 0;
  for (int split = 0; split < 3; ++split)
    for (size_t i = 0; i < counts[split]; ++i) {
      const Phrase& p = pool[next++];
      if (split == 0) longest_train = std::max(longest_train, p.transcript.size());
      if (split == 2) plan.test_phrases.push_back(p);
      plan.items.push_back(phrase_item(c, split, static_cast<int>(i), p,
                                       split == 2 ? plan.test_voices : train_voices));
    }
  if (c.test_long > 0) plan_test_long(c, plan, longest_train);
  return plan;
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
  if (fs::is_regular_file(file, ec) && read_text(file) == text) return;
  write_text_atomically(file, text);
}

// done/total, utterances/s and ETA on stderr, at most 4 times a second.
class Progress {
 public:
  Progress(size_t total, bool on) : total_(total), on_(on), start_(Clock::now()) {}
  void tick() {
    std::lock_guard<std::mutex> lock(mu_);
    ++done_;
    auto now = Clock::now();
    if (!on_ || (done_ < total_ && now - last_ < std::chrono::milliseconds(250))) return;
    last_ = now;
    double s = std::chrono::duration<double>(now - start_).count();
    double per_s = s > 0 ? static_cast<double>(done_) / s : 0;
    double eta = per_s > 0 ? static_cast<double>(total_ - done_) / per_s : 0;
    fmt::print(stderr, "\rasr corpus: {}/{} utterances, {:.1f} utt/s, ETA {:.0f} s   {}", done_,
               total_, per_s, eta, done_ == total_ ? "\n" : "");
    std::fflush(stderr);
  }

 private:
  using Clock = std::chrono::steady_clock;
  std::mutex mu_;
  size_t total_, done_ = 0;
  bool on_;
  Clock::time_point start_, last_{};
};

// fn(i) for i in [begin, end), `jobs` threads at a time; the first exception stops the others
// and is rethrown.
void parallel_for(size_t begin, size_t end, int jobs, const std::function<void(size_t)>& fn) {
  std::atomic<size_t> next{begin};
  std::atomic<bool> stop{false};
  std::mutex error_mu;
  std::exception_ptr error;
  auto worker = [&] {
    try {
      for (size_t i; !stop && (i = next++) < end;) fn(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!error) error = std::current_exception();
      stop = true;
    }
  };
  std::vector<std::thread> threads;
  for (size_t j = 0; j < std::min(static_cast<size_t>(jobs), end - begin); ++j)
    threads.emplace_back(worker);
  for (std::thread& t : threads) t.join();
  if (error) std::rethrow_exception(error);
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
    parallel_for(0, first_long, jobs, [&](size_t i) {
      make_phrase(items[i]);
      finished(items[i].split);
    });
    for (const Item& it : items)
      longest_train_ = std::max(longest_train_, it.split == 0 ? it.duration_s : 0.0);
    kept_ = kept_attempts(out_ / "test_long");
    parallel_for(first_long, items.size(), jobs, [&](size_t i) {
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
      Item kept = long_item(c_, plan_, index, k->second);
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
      Item draw = long_item(c_, plan_, index, attempt);
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
  Progress progress_;
  std::atomic<int> remaining_[kNumSplits] = {};
  std::atomic<int> synthesised_{0}, reused_{0}, redrawn_{0};
  double longest_train_ = 0;
  std::map<int, int> kept_;
};

SynthesisReport summarise(const std::vector<Item>& items, const Synthesis& s, double seconds) {
  SynthesisReport r;
  r.synthesised = s.synthesised();
  r.reused = s.reused();
  r.test_long_redrawn = s.redrawn();
  r.seconds = seconds;
  for (int split = 0; split < kNumSplits; ++split) {
    SplitSummary sum{kSplits[split]};
    std::set<std::string> voice_set;
    double total = 0;
    for (const Item& it : items) {
      if (it.split != split) continue;
      sum.shortest_s =
          sum.utterances == 0 ? it.duration_s : std::min(sum.shortest_s, it.duration_s);
      sum.longest_s = std::max(sum.longest_s, it.duration_s);
      ++sum.utterances;
      total += it.duration_s;
      voice_set.insert(it.voice);
    }
    sum.voices = static_cast<int>(voice_set.size());
    sum.hours = total / 3600.0;
    r.splits.push_back(sum);
  }
  for (const Item& it : items)
    r.test_long_not_longer += it.split == 3 && it.duration_s <= r.splits[0].longest_s;
  return r;
}

}  // namespace

// ---- SynthesisConfig ----------------------------------------------------------------------------

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

void SynthesisConfig::validate() const {
  auto bad = [](const std::string& field, const std::string& why) {
    throw std::invalid_argument("SynthesisConfig: " + field + " " + why);
  };
  if (train_phrases < 1) bad("train_phrases", "must be >= 1");
  if (val_phrases < 0) bad("val_phrases", "must be >= 0");
  if (test_phrases < 1) bad("test_phrases", "must be >= 1");
  if (test_long < 0) bad("test_long", "must be >= 0");
  if (test_long > 0 && test_phrases < 2) bad("test_phrases", "must be >= 2 for test_long");
  if (min_chars < 1 || max_chars < min_chars)
    bad("min_chars/max_chars", "must satisfy 1 <= min <= max");
  if (rate_min < 80 || rate_max > 450 || rate_min > rate_max)
    bad("rate_min/rate_max", "must satisfy 80 <= min <= max <= 450 (espeak-ng -s)");
  if (pitch_min < 0 || pitch_max > 99 || pitch_min > pitch_max)
    bad("pitch_min/pitch_max", "must satisfy 0 <= min <= max <= 99 (espeak-ng -p)");
  if (snr_db.empty()) bad("snr_db", "must list at least one SNR (null for none)");
  for (const auto& s : snr_db)
    if (s && !std::isfinite(*s)) bad("snr_db", "must be finite numbers or null");
  if (sample_rate < 4000 || sample_rate > 192000) bad("sample_rate", "must be in [4000, 192000]");
  auto disjoint = [&](const std::vector<std::string>& a, const std::vector<std::string>& b,
                      const std::string& what) {
    if (a.empty() || b.empty()) bad(what, "lists must not be empty");
    std::set<std::string> sa(a.begin(), a.end()), sb(b.begin(), b.end());
    if (sa.size() != a.size() || sb.size() != b.size()) bad(what, "lists must not repeat a name");
    for (const std::string& x : a)
      if (sb.count(x))
        bad(what, "'" + x + "' is both a train and a test one: they must be disjoint");
  };
  disjoint(train_accents, test_accents, "accents");
  disjoint(train_variants, test_variants, "variants");
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

// ---- phrases, noise --------------------------------------------------------------

namespace {

// One piece between punctuation marks as a Phrase, or nullopt when it has other characters.
std::optional<Phrase> normalise_piece(std::string_view piece) {
  Phrase p;
  bool pending_space = false;
  for (char ch : piece) {
    auto c = static_cast<unsigned char>(ch);
    if (std::isdigit(c)) continue;  // verse numbers
    if (std::isspace(c) || ch == '-') {
      pending_space = !p.text.empty();
      continue;
    }
    if (!std::isalpha(c) && ch != '\'') return std::nullopt;
    if (pending_space) p.text += ' ', p.transcript += ' ';
    pending_space = false;
    p.text += ch;
    p.transcript += static_cast<char>(std::toupper(c));
  }
  return p;
}

}  // namespace

std::vector<Phrase> kjv_phrases(const std::string& verses, int min_chars, int max_chars) {
  std::vector<Phrase> out;
  std::unordered_set<std::string> seen;
  size_t start = 0;
  for (size_t i = 0; i <= verses.size(); ++i) {
    if (i < verses.size() && (verses[i] == '\0' || !std::strchr(",;:.?!\n", verses[i]))) continue;
    std::optional<Phrase> p = normalise_piece(std::string_view(verses).substr(start, i - start));
    start = i + 1;
    if (!p) continue;
    auto n = static_cast<int>(p->transcript.size());
    if (n < min_chars || n > max_chars || !seen.insert(p->transcript).second) continue;
    out.push_back(std::move(*p));
  }
  return out;
}

// σ² = P / 10^(snr/10) with P = mean(x²): the noise has the asked SNR against the whole utterance
// (its pauses included, as a recording's noise floor would).
void add_white_noise(std::vector<float>& samples, double snr_db, uint64_t key) {
  if (samples.empty()) return;
  double power = 0;
  for (float x : samples) power += static_cast<double>(x) * x;
  power /= static_cast<double>(samples.size());
  double sigma = std::sqrt(power / std::pow(10.0, snr_db / 10.0));
  for (size_t i = 0; i < samples.size(); ++i) {
    double y = samples[i] + sigma * philox_normal(kNoiseCounter + i, key);
    samples[i] = static_cast<float>(std::clamp(y, -1.0, 1.0));
  }
}

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
  Plan plan =
      make_plan(c, o.cache_dir);  // before touching out_dir: a plan that fails leaves no trace
  const fs::path out = fs::absolute(out_dir);
  fs::create_directories(out);
  DirLock lock(out);
  claim_folder(out, identity);
  for (const char* split : kSplits) {
    fs::create_directories(out / split);
    remove_stale_temps(out / split);
  }
  Synthesis synthesis(out, c, o, plan);
  synthesis.run();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summarise(plan.items, synthesis, seconds);
}

}  // namespace attn::data
