#include "data/speech_synthesis_plan.h"

#include <fmt/format.h>
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "data/kjv.h"
#include "tensor/philox.h"

namespace attn::data::synth {

namespace {

constexpr uint64_t kPhraseShuffleStream = 0x5048524153450000ull;  // keys the phrase shuffle

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

// ---- the items --------------------------------------------------------------------------------

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

}  // namespace

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

}  // namespace attn::data::synth
