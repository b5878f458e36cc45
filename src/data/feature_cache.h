// A verified on-disk cache of per-utterance features (log-mel frames), so a corpus is
// featurised once. The file says what it was computed from (`key`); a file for other inputs is
// ignored, a damaged one is an error, never silently wrong features.
//
// Format 1, little-endian (u64 strings are a u64 length, then the bytes):
//   "ATNLFEAT"  u32 version  string key  u64 n_mels  u64 count
//   count × { string id  u64 frames  f32[frames · n_mels] data }
//   u64 XXH64 (seed 0, the checkpoints' hash) of every byte before it
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/idx.h"  // DataFileError
#include "data/log_mel.h"

namespace attn::data {

struct UtteranceFeatures {
  std::string id;
  int64_t frames = 0;
  std::vector<float> data;  // [frames, n_mels] row-major
};

// What a cache of LogMel features depends on: the corpus (corpus_fingerprint, e.g. the content
// hash of its manifest), kLogMelVersion and the resolved options (n_fft 0 and its power of two
// give the same key). Throws std::invalid_argument for invalid options (resolve_mel_options).
std::string feature_cache_key(const std::string& corpus_fingerprint, const MelOptions& o);

// Writes path through a temporary file beside it (path.tmp.PID.N): every write checked, fsync'd,
// renamed over path, then the directory fsync'd; on failure the temporary file is removed and a
// DataFileError names it. Throws std::invalid_argument when n_mels < 1 or an utterance's data is
// not frames · n_mels values (naming the utterance).
void save_feature_cache(const std::string& path, const std::string& key,
                        const std::vector<UtteranceFeatures>& feats, int64_t n_mels);

// nullopt when path does not exist or holds features of another key, n_mels or format version
// (the caller then recomputes and saves). A file that is truncated, corrupt (checksum mismatch)
// or not a feature cache throws DataFileError (a std::runtime_error) naming path. The whole file
// is checksummed in either case, so a damaged key also throws.
std::optional<std::vector<UtteranceFeatures>> load_feature_cache(const std::string& path,
                                                                 const std::string& key,
                                                                 int64_t n_mels);

}  // namespace attn::data
