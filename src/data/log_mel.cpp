#include "data/log_mel.h"

#include <fftw3.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <numbers>
#include <stdexcept>
#include <string>

namespace attn::data {

namespace {

// FFTW's planner (and fftwf_destroy_plan) touch global state: every LogMel shares this lock.
std::mutex& fftw_planner_mutex() {
  static std::mutex m;
  return m;
}

// new-array execution needs arrays aligned like the ones the plan was made with; everything
// here is 64-byte aligned (more than any SIMD FFTW uses), planning arrays included.
constexpr size_t kAlign = 64;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
template <class T>
using AlignedBuffer = std::unique_ptr<T[], FreeDeleter>;

template <class T>
AlignedBuffer<T> aligned_buffer(size_t count) {
  size_t bytes = (count * sizeof(T) + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, bytes);
  if (!p) throw std::bad_alloc();
  return AlignedBuffer<T>(static_cast<T*>(p));
}

[[noreturn]] void bad_option(const std::string& name, const std::string& expected, double got) {
  char num[32];
  std::snprintf(num, sizeof num, "%g", got);
  throw std::invalid_argument("MelOptions." + name + " must be " + expected + ", got " + num);
}

// round(v) with halves up, for window and hop lengths in samples.
int64_t samples_of(double ms, int sample_rate) {
  return static_cast<int64_t>(std::floor(ms * sample_rate / 1000.0 + 0.5));
}

constexpr int64_t kMaxWindow = int64_t{1} << 20;

double hz_to_mel(double f) { return 2595.0 * std::log10(1.0 + f / 700.0); }
double mel_to_hz(double m) { return 700.0 * (std::pow(10.0, m / 2595.0) - 1.0); }

// Filter m spans edges f[m] < f[m + 1] < f[m + 2] (the triangle's feet and peak).
std::vector<double> mel_edges_hz(const MelOptions& o) {
  const double lo = hz_to_mel(o.f_min), hi = hz_to_mel(o.f_max);
  std::vector<double> f(o.n_mels + 2);
  for (int j = 0; j < o.n_mels + 2; ++j) f[j] = mel_to_hz(lo + (hi - lo) * j / (o.n_mels + 1));
  return f;
}

double triangle(double f, double left, double peak, double right) {
  return std::max(0.0, std::min((f - left) / (peak - left), (right - f) / (right - peak)));
}

double bin_hz(int k, const MelOptions& o) {
  return static_cast<double>(k) * o.sample_rate / o.n_fft;
}

}  // namespace

MelOptions resolve_mel_options(const MelOptions& in) {
  MelOptions o = in;
  if (o.sample_rate <= 0) bad_option("sample_rate", "> 0", o.sample_rate);
  if (!(std::isfinite(o.window_ms) && o.window_ms > 0))
    bad_option("window_ms", "finite and > 0", o.window_ms);
  if (!(std::isfinite(o.hop_ms) && o.hop_ms > 0)) bad_option("hop_ms", "finite and > 0", o.hop_ms);
  const int64_t win = samples_of(o.window_ms, o.sample_rate);
  if (win < 2 || win > kMaxWindow)
    bad_option("window_ms",
               "2 to 2^20 samples at sample_rate " + std::to_string(o.sample_rate) + " (" +
                   std::to_string(win) + " samples)",
               o.window_ms);
  if (samples_of(o.hop_ms, o.sample_rate) < 1)
    bad_option("hop_ms", "at least one sample at sample_rate " + std::to_string(o.sample_rate),
               o.hop_ms);
  if (o.n_mels < 1) bad_option("n_mels", ">= 1", o.n_mels);
  if (o.n_fft == 0) {
    o.n_fft = 1;
    while (o.n_fft < win) o.n_fft *= 2;
  } else if (o.n_fft < win) {
    bad_option("n_fft", "0 (automatic) or >= the window of " + std::to_string(win) + " samples",
               o.n_fft);
  }
  const double nyquist = o.sample_rate / 2.0;
  if (o.f_max == 0) o.f_max = nyquist;
  if (!(std::isfinite(o.f_max) && o.f_max > 0 && o.f_max <= nyquist))
    bad_option("f_max", "0 (sample_rate / 2) or in (0, " + std::to_string(nyquist) + "]", o.f_max);
  if (!(std::isfinite(o.f_min) && o.f_min >= 0 && o.f_min < o.f_max))
    bad_option("f_min", "in [0, f_max = " + std::to_string(o.f_max) + ")", o.f_min);
  return o;
}

struct LogMel::Plan {
  fftwf_plan p = nullptr;
  explicit Plan(int n_fft) {
    auto in = aligned_buffer<float>(n_fft);
    auto out = aligned_buffer<fftwf_complex>(n_fft / 2 + 1);
    std::lock_guard<std::mutex> lock(fftw_planner_mutex());
    // FFTW_ESTIMATE: no timing runs, so the plan (and every bit of the result) is the same in
    // every process; a measured plan could differ between runs and defeat the feature cache.
    p = fftwf_plan_dft_r2c_1d(n_fft, in.get(), out.get(), FFTW_ESTIMATE);
    if (!p)
      throw std::runtime_error("LogMel: FFTW could not plan a size-" + std::to_string(n_fft) +
                               " real FFT");
  }
  ~Plan() {
    std::lock_guard<std::mutex> lock(fftw_planner_mutex());
    fftwf_destroy_plan(p);
  }
};

LogMel::LogMel(const MelOptions& o) : opts_(resolve_mel_options(o)) {
  win_ = samples_of(opts_.window_ms, opts_.sample_rate);
  hop_ = samples_of(opts_.hop_ms, opts_.sample_rate);
  window_.resize(win_);
  for (int64_t i = 0; i < win_; ++i)
    window_[i] = static_cast<float>(0.5 - 0.5 * std::cos(2.0 * std::numbers::pi * i / win_));
  const std::vector<double> f = mel_edges_hz(opts_);
  for (int m = 0; m < opts_.n_mels; ++m) {
    Filter filt;
    for (int k = 0; k < n_bins(); ++k) {
      double h = triangle(bin_hz(k, opts_), f[m], f[m + 1], f[m + 2]);
      if (h <= 0) continue;
      if (filt.weights.empty()) filt.first_bin = k;
      filt.weights.resize(k - filt.first_bin + 1, 0.0);
      filt.weights.back() = h;
    }
    if (filt.weights.empty())
      throw std::invalid_argument("MelOptions.n_mels: " + std::to_string(opts_.n_mels) +
                                  " filters are too many for n_fft " + std::to_string(opts_.n_fft) +
                                  " (filter " + std::to_string(m) + ", " + std::to_string(f[m]) +
                                  " to " + std::to_string(f[m + 2]) +
                                  " Hz, covers no FFT bin): use fewer mels or a larger n_fft");
    filters_.push_back(std::move(filt));
  }
  plan_ = std::make_unique<Plan>(opts_.n_fft);
}

LogMel::~LogMel() = default;
LogMel::LogMel(LogMel&&) noexcept = default;
LogMel& LogMel::operator=(LogMel&&) noexcept = default;

int64_t LogMel::frames(int64_t n_samples) const {
  return n_samples < win_ ? 0 : 1 + (n_samples - win_) / hop_;
}

std::vector<float> LogMel::compute(const float* x, int64_t n) const {
  if (n < 0)
    throw std::invalid_argument("LogMel::compute: negative sample count " + std::to_string(n));
  if (!x && n > 0) throw std::invalid_argument("LogMel::compute: null samples");
  const int64_t T = frames(n), M = opts_.n_mels;
  std::vector<float> out(T * M);
  auto in = aligned_buffer<float>(opts_.n_fft);
  auto spec = aligned_buffer<fftwf_complex>(n_bins());
  std::vector<double> power(n_bins());
  for (int64_t t = 0; t < T; ++t) {
    const float* frame = x + t * hop_;
    for (int64_t i = 0; i < win_; ++i) in[i] = window_[i] * frame[i];
    std::fill(in.get() + win_, in.get() + opts_.n_fft, 0.0f);
    fftwf_execute_dft_r2c(plan_->p, in.get(), spec.get());
    for (int k = 0; k < n_bins(); ++k) {
      double re = spec[k][0], im = spec[k][1];
      power[k] = re * re + im * im;
    }
    for (int64_t m = 0; m < M; ++m) {
      const Filter& filt = filters_[m];
      double e = 0;
      for (size_t j = 0; j < filt.weights.size(); ++j)
        e += filt.weights[j] * power[filt.first_bin + j];
      out[t * M + m] = static_cast<float>(std::log(std::max(e, 1e-10)));
    }
  }
  return out;
}

std::vector<double> LogMel::filterbank() const {
  std::vector<double> fb(static_cast<size_t>(opts_.n_mels) * n_bins(), 0.0);
  for (int m = 0; m < opts_.n_mels; ++m) {
    const Filter& filt = filters_[m];
    for (size_t j = 0; j < filt.weights.size(); ++j)
      fb[static_cast<size_t>(m) * n_bins() + filt.first_bin + j] = filt.weights[j];
  }
  return fb;
}

void normalize_per_utterance(float* feats, int64_t frames, int64_t n_mels) {
  if (frames < 0 || n_mels < 1)
    throw std::invalid_argument("normalize_per_utterance: need frames >= 0 and n_mels >= 1, got " +
                                std::to_string(frames) + " x " + std::to_string(n_mels));
  if (frames == 0) return;
  if (!feats) throw std::invalid_argument("normalize_per_utterance: null features");
  for (int64_t m = 0; m < n_mels; ++m) {
    double sum = 0;
    for (int64_t t = 0; t < frames; ++t) sum += feats[t * n_mels + m];
    const double mean = sum / frames;
    double sq = 0;
    for (int64_t t = 0; t < frames; ++t) {
      double d = feats[t * n_mels + m] - mean;
      sq += d * d;
    }
    const double inv_std = 1.0 / std::sqrt(sq / frames + 1e-5);
    for (int64_t t = 0; t < frames; ++t)
      feats[t * n_mels + m] = static_cast<float>((feats[t * n_mels + m] - mean) * inv_std);
  }
}

}  // namespace attn::data
