// Speech features for the data loader (CPU): log-mel filterbank energies and their
// per-utterance normalisation. SpecAugment is in spec_augment.h, the on-disk cache in
// feature_cache.h.
//
// Log-mel, for samples x[0..n) at sample rate sr:
//   win = round(sr · window_ms / 1000), hop = round(sr · hop_ms / 1000)  (halves round up)
//   frames T = 1 + floor((n − win) / hop), 0 when n < win (no centre padding: frame t is
//     x[t·hop, t·hop + win), and a trailing part shorter than a frame is dropped)
//   w[i] = 0.5 − 0.5·cos(2π i / win), i < win  (periodic Hann, torch.hann_window's default)
//   X_t[k] = Σ_{i<win} w[i]·x[t·hop + i]·e^{−2πi·ik/n_fft}, k = 0..n_fft/2  (the windowed frame
//     zero-padded to n_fft; where the zeros go changes only the phase, not |X|)
//   P_t[k] = |X_t[k]|²  (power, no normalisation)
//   mel(f) = 2595·log10(1 + f/700) (HTK); edges e_0..e_{M+1} equally spaced in mel from
//     mel(f_min) to mel(f_max), f_j = mel⁻¹(e_j); filter m (0-based) is the triangle
//     H_m(f) = max(0, min((f − f_m)/(f_{m+1} − f_m), (f_{m+2} − f)/(f_{m+2} − f_{m+1}))),
//     peak 1, no area normalisation, sampled at the bin frequencies f_k = k·sr/n_fft
//   out[t, m] = ln(max(Σ_k H_m(f_k)·P_t[k], 1e-10))
// This is torchaudio's MelSpectrogram(power=2, mel_scale="htk", norm=None, center=False) with
// the frames cut at win instead of n_fft samples, then log. No dither, no pre-emphasis.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

namespace attn::data {

// What compute() returns, for cache keys: bump it whenever the same options would give other
// values, so that feature caches made before are recomputed.
constexpr int kLogMelVersion = 1;

struct MelOptions {
  int sample_rate = 16000;
  double window_ms = 25, hop_ms = 10;
  int n_mels = 80;
  int n_fft = 0;                // 0: the next power of two >= the window
  double f_min = 0, f_max = 0;  // f_max 0: sample_rate / 2
};

// Checks the options and fills the automatic ones (n_fft, f_max). Throws std::invalid_argument
// naming the option and the accepted range: sample_rate > 0; window and hop of at least one
// sample; n_mels >= 1; n_fft 0 or >= the window (in samples); 0 <= f_min < f_max <= sr / 2; and
// every mel filter must cover at least one FFT bin (too many mels for n_fft otherwise).
MelOptions resolve_mel_options(const MelOptions& o);

class LogMel {
 public:
  // Validates (resolve_mel_options), builds the window and the filterbank, and makes the FFTW
  // plan once. FFTW's planner is not thread-safe: plans are made and destroyed under one lock.
  explicit LogMel(const MelOptions& o);
  ~LogMel();
  LogMel(LogMel&&) noexcept;
  LogMel& operator=(LogMel&&) noexcept;
  LogMel(const LogMel&) = delete;
  LogMel& operator=(const LogMel&) = delete;

  // 1 + floor((n − win) / hop), 0 when n < win.
  int64_t frames(int64_t n_samples) const;
  // [frames(n), n_mels] row-major. Thread-safe: each call has its own buffers and runs the one
  // plan through FFTW's new-array execute, which may run concurrently.
  std::vector<float> compute(const float* x, int64_t n) const;

  const MelOptions& options() const { return opts_; }  // resolved
  int64_t window() const { return win_; }
  int64_t hop() const { return hop_; }
  int n_fft() const { return opts_.n_fft; }
  int n_mels() const { return opts_.n_mels; }
  int n_bins() const { return opts_.n_fft / 2 + 1; }
  // The filters H_m(f_k) as a dense [n_mels, n_bins] matrix, row-major.
  std::vector<double> filterbank() const;

 private:
  struct Filter {
    int first_bin = 0;            // weights[j] belongs to bin first_bin + j
    std::vector<double> weights;  // the nonzero stretch of H_m
  };
  struct Plan;

  MelOptions opts_;
  int64_t win_ = 0, hop_ = 0;
  std::vector<float> window_;  // [win]
  std::vector<Filter> filters_;
  std::unique_ptr<Plan> plan_;
};

// Per mel bin over the utterance's frames: x ← (x − mean) / sqrt(var + 1e-5), population
// variance, in f64. A constant bin becomes 0. feats is [frames, n_mels] row-major.
void normalize_per_utterance(float* feats, int64_t frames, int64_t n_mels);

}  // namespace attn::data
