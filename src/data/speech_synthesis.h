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
#include <string>
#include <vector>

// The corpus' parts, each in its own header; included here so that callers need only this one.
#include "data/speech_phrases.h"           // Phrase, kjv_phrases
#include "data/speech_synthesis_config.h"  // SynthesisConfig
#include "data/white_noise.h"              // add_white_noise

namespace attn::data {

struct SynthesisOptions {
  int jobs = 0;                          // espeak-ng processes at once; 0: hardware threads
  std::string cache_dir = "data/cache";  // where kjv_corpus caches the KJV text
  bool progress = true;                  // the progress line on stderr
};

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
