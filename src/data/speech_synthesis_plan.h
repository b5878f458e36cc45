// Internal to the speech-corpus synthesis: which utterances the corpus has and how each one is
// drawn (phrase, voice, rate, pitch, SNR, noise key), as a pure function of the SynthesisConfig.
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
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/speech_phrases.h"
#include "data/speech_synthesis_config.h"

namespace attn::data::synth {

inline constexpr const char* kSplits[] = {"train", "val", "test", "test_long"};
inline constexpr int kNumSplits = 4;

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

// Every train, val and test item drawn, and c.test_long blank test_long items (index only),
// from the KJV phrases (cached in cache_dir). Throws std::runtime_error when the KJV has too few
// phrases for the counts or no two test phrases are long enough for test_long.
Plan make_plan(const SynthesisConfig& c, const std::string& cache_dir);

// Draw `attempt` of test_long utterance `index`: its own key; two distinct test phrases, joined
// long enough (the file comment), from counters 16, 17, 18, ...
Item long_item(const SynthesisConfig& c, const Plan& plan, int index, int attempt);

}  // namespace attn::data::synth
