// A synthetic speech-recognition corpus: KJV phrases spoken by espeak-ng in many voices (accent +
// variant), with random speaking rate, pitch and white noise; test voices never seen in training.
//
// out_dir/corpus.json            the SynthesisConfig (written first; a rerun must match it)
// out_dir/<split>/<id>.wav       16-bit mono WAV at sample_rate, split in train, val, test
// out_dir/test_long/<id>.tryK.wav  the same; K: the draw kept (the first longer than all of train)
// out_dir/<split>.jsonl          the manifest (read_manifest), written once its split is complete
//
// Every draw comes from Philox keyed by (seed, split, index), so the corpus is a function of its
// config (and espeak-ng's version, which corpus.json records).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace attn::data {

struct SynthesisConfig {
  // Utterances per split: train, val and test are one phrase each (disjoint phrase sets); a
  // test_long utterance is two test phrases joined with a space, longer (in seconds) than every
  // train utterance: draws that are not are replaced by the next draw.
  int train_phrases = 600, val_phrases = 60, test_phrases = 100, test_long = 60;
  int min_chars = 12, max_chars = 48;  // phrase length, after normalisation (phrase.transcript)
  // Voices: every accent with every variant (`espeak-ng -v accent+variant`). The train and test
  // accents are disjoint, and so are the variants. val uses the train voices.
  std::vector<std::string> train_accents, train_variants, test_accents, test_variants;
  int rate_min = 130, rate_max = 200;  // espeak-ng -s (words per minute), uniform integer
  int pitch_min = 30, pitch_max = 70;  // espeak-ng -p (0-99), uniform integer
  // SNRs in dB of additive white Gaussian noise, one drawn per utterance; nullopt: no noise.
  std::vector<std::optional<double>> snr_db = {std::nullopt, 20.0, 10.0};
  int sample_rate = 16000;
  uint64_t seed = 1;

  // ~600/60/100/60 utterances, 2 accents x 3 variants for training, 2 x 2 unseen for test.
  static SynthesisConfig small();
  // 8,000/400/1,000/500 utterances, 5 accents x 12 variants for training, 3 x 5 unseen for test.
  static SynthesisConfig reference();
  // "small" or "reference"; anything else throws std::invalid_argument.
  static SynthesisConfig preset(const std::string& name);

  // Throws std::invalid_argument naming the field when a count, range or list is invalid or the
  // train and test accents (or variants) overlap.
  void validate() const;
  nlohmann::ordered_json to_json() const;
};

struct SynthesisOptions {
  int jobs = 0;                          // espeak-ng processes at once; 0: hardware threads
  std::string cache_dir = "data/cache";  // where kjv_corpus caches the KJV text
  bool progress = true;                  // the progress line on stderr
};

// A KJV phrase: what espeak-ng is given, and its transcript.
struct Phrase {
  std::string text;        // the KJV words, whitespace normalised, hyphens as spaces
  std::string transcript;  // text upper-cased: only A-Z, space and apostrophe
};

// The verses (one per line) cut at , ; : . ? !, digits (verse numbers) removed, whitespace runs
// collapsed, '-' mapped to a space; a piece with any other character that is not a letter, space
// or apostrophe (the KJV's parentheses) is dropped, as is one whose transcript is shorter than
// min_chars or longer than max_chars. Deduplicated by transcript, in order of first occurrence.
std::vector<Phrase> kjv_phrases(const std::string& verses, int min_chars, int max_chars);

// Additive white Gaussian noise at snr_db relative to the mean power of `samples`, drawn from
// Philox with `key` (deterministic); the result is clipped to [-1, 1].
void add_white_noise(std::vector<float>& samples, double snr_db, uint64_t key);

struct SplitSummary {
  std::string name;
  int utterances = 0, voices = 0;
  double hours = 0, shortest_s = 0, longest_s = 0;
};

struct SynthesisReport {
  std::vector<SplitSummary> splits;  // train, val, test, test_long
  int synthesised = 0, reused = 0;   // reused: WAVs already there that read back
  int test_long_not_longer = 0;      // test_long utterances not longer than the longest train one
  int test_long_redrawn = 0;         // test_long draws synthesised and dropped as too short
  double seconds = 0;                // wall-clock time of the whole call
  // Per split: hours, utterances, voices; whether test_long is longer than every train
  // utterance; the synthesis time.
  std::string stats_line() const;
  bool test_long_longer_than_train() const;
};

// Synthesises (or completes) the corpus in out_dir. Throws std::runtime_error when out_dir holds
// a corpus.json of a different config, when another process is synthesising into it, when the
// KJV has too few phrases for the counts, or naming the espeak-ng command that failed.
SynthesisReport synthesise_speech_corpus(const std::string& out_dir, const SynthesisConfig& config,
                                         const SynthesisOptions& options = {});

}  // namespace attn::data
