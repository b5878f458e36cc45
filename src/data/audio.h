// Audio files for speech data: reading anything libsndfile reads (WAV, FLAC, ...) as mono float,
// resampling with libsamplerate, writing 16-bit PCM WAV or FLAC atomically.
#pragma once
#include <string>
#include <vector>

namespace attn::data {

// Mono samples in [-1, 1] (a PCM file's integers scaled by libsndfile: x / 2^(bits-1)).
struct Audio {
  std::vector<float> samples;
  int sample_rate = 0;
  double duration_s() const {
    return sample_rate > 0 ? static_cast<double>(samples.size()) / sample_rate : 0.0;
  }
};

// The whole file, channels averaged to mono; resampled to target_rate when it is > 0 and not the
// file's rate (0 keeps the file's rate). Throws std::runtime_error naming the file when it is
// missing, not an audio file libsndfile reads, corrupt, truncated (the header promises more audio
// than the file holds) or empty (0 frames).
Audio read_audio(const std::string& path, int target_rate = 0);

// Resampled to `rate` with libsamplerate's SRC_SINC_MEDIUM_QUALITY (band-limited sinc; 22050 ->
// 16000 Hz measured: a 5 kHz sine keeps its amplitude to 1e-5, 7 kHz loses 0.28 dB, 10 kHz is
// removed rather than aliased). A copy when the rates are equal.
Audio resample(const Audio& a, int rate);

// 16-bit PCM, WAV or FLAC by the extension (.wav / .flac, any case): round(x·32768), clipped to
// [-32768, 32767], so audio read from a 16-bit file is written back unchanged. Written to
// path.tmp.PID, every libsndfile call checked, synced, then renamed over path, so a reader sees the
// old file or the whole new one. Throws naming the file.
void write_audio(const std::string& path, const Audio& a);

// frames / rate from the header alone (no decoding); throws naming the file when it cannot be
// opened or holds no frames.
double audio_duration_s(const std::string& path);

}  // namespace attn::data
