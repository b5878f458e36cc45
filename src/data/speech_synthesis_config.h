// What the synthetic speech corpus is made of (counts, phrase lengths, voices, rate, pitch,
// noise, seed): the SynthesisConfig, its presets, its checks and its JSON (corpus.json).
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

}  // namespace attn::data
