// Speech features: log-mel against a float64 numpy reference (tests/log_mel_reference.py) on
// real speech from espeak-ng and on a 16 kHz chirp, the filterbank itself, frame counts,
// per-utterance normalisation, SpecAugment masks, the feature cache, and compute() from two
// threads.
#include <gtest/gtest.h>
#include <sndfile.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <numbers>
#include <set>
#include <thread>

#include "data/feature_cache.h"
#include "data/log_mel.h"
#include "data/spec_augment.h"
#include "scratch_dir.h"
#include "torch_ref.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace attn::data;
using attn::testing::scratch_dir;
using attn::testing::shell_quote;

namespace {

constexpr const char* kSentence = "In the beginning God created the heaven and the earth";

fs::path scratch() { return scratch_dir("attnlab_speech_features_"); }

struct Audio {
  int sample_rate = 0;
  std::vector<float> samples;
};

// libsndfile's float read scales 16-bit PCM by 1/32768, as the reference does.
Audio read_wav(const fs::path& path) {
  SF_INFO info{};
  SNDFILE* f = sf_open(path.c_str(), SFM_READ, &info);
  if (!f) throw std::runtime_error("sf_open " + path.string() + ": " + sf_strerror(nullptr));
  Audio a;
  a.sample_rate = info.samplerate;
  if (info.channels != 1) throw std::runtime_error(path.string() + ": not mono");
  a.samples.resize(info.frames);
  sf_count_t got = sf_readf_float(f, a.samples.data(), info.frames);
  sf_close(f);
  if (got != info.frames) throw std::runtime_error(path.string() + ": short read");
  return a;
}

// The sentence spoken by espeak-ng (22050 Hz, 16-bit mono), made once per process; empty path
// with `why` set when espeak-ng is missing or fails.
const fs::path& espeak_wav(std::string* why) {
  static std::string error;
  static const fs::path wav = [] {
    fs::path p = scratch() / "genesis.wav";
    if (std::system("command -v espeak-ng >/dev/null 2>&1") != 0) {
      error = "espeak-ng is not installed (apt-get install espeak-ng)";
      return fs::path();
    }
    std::string cmd = "espeak-ng -w " + shell_quote(p.string()) + " " + shell_quote(kSentence);
    if (std::system(cmd.c_str()) != 0 || !fs::exists(p)) {
      error = "`" + cmd + "` failed";
      return fs::path();
    }
    return p;
  }();
  *why = error;
  return wav;
}

#define ESPEAK_WAV_OR_FAIL(var)                \
  std::string var##_why;                       \
  const fs::path var = espeak_wav(&var##_why); \
  ASSERT_FALSE(var.empty()) << var##_why

// The reference needs numpy in the torch interpreter (Debian's python3-numpy).
bool numpy_available() {
  static const bool ok = std::system((shell_quote(attn::testing::torch_python()) +
                                      " -c 'import numpy' >/dev/null 2>&1")
                                         .c_str()) == 0;
  return ok;
}

#define SKIP_OR_FAIL_WITHOUT_NUMPY()                                                           \
  do {                                                                                         \
    if (!numpy_available()) {                                                                  \
      std::string msg = "numpy is not importable by " + attn::testing::torch_python() +        \
                        " (apt-get install python3-numpy)";                                    \
      if (attn::testing::torch_required()) FAIL() << msg << " (ATTNLAB_REQUIRE_TORCH is set)"; \
      GTEST_SKIP() << msg;                                                                     \
    }                                                                                          \
  } while (0)

json options_json(const MelOptions& o) {
  return {{"sample_rate", o.sample_rate},
          {"window_ms", o.window_ms},
          {"hop_ms", o.hop_ms},
          {"n_fft", o.n_fft},
          {"n_mels", o.n_mels},
          {"f_min", o.f_min},
          {"f_max", o.f_max}};
}

json run_reference(const json& in, const std::string& tag) {
  const fs::path dir = scratch() / tag;
  fs::create_directories(dir);
  {
    std::ofstream f(dir / "in.json");
    f << in.dump();
    if (!f.good()) throw std::runtime_error("cannot write " + (dir / "in.json").string());
  }
  const std::string cmd = attn::testing::reference_command(
      attn::testing::reference_script("log_mel_reference.py"), dir / "in.json", dir / "out.json");
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("reference failed: " + cmd);
  std::ifstream f(dir / "out.json");
  return json::parse(f);
}

std::string write_f32(const std::vector<float>& x, const std::string& name) {
  fs::path p = scratch() / name;
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(x.data()), static_cast<std::streamsize>(x.size() * 4));
  if (!f.good()) throw std::runtime_error("cannot write " + p.string());
  return p.string();
}

// A 16 kHz linear chirp from 60 Hz to 7800 Hz over 1.5 s at amplitude 0.5, plus a 440 Hz tone.
std::vector<float> chirp_16k() {
  const double sr = 16000, dur = 1.5, f0 = 60, f1 = 7800;
  std::vector<float> x(static_cast<size_t>(sr * dur));
  for (size_t i = 0; i < x.size(); ++i) {
    double t = i / sr;
    double phase = 2 * std::numbers::pi * (f0 * t + 0.5 * (f1 - f0) / dur * t * t);
    x[i] =
        static_cast<float>(0.5 * std::sin(phase) + 0.1 * std::sin(2 * std::numbers::pi * 440 * t));
  }
  return x;
}

struct Mismatch {
  double max_log_err = 0;
  int64_t worst = -1, bad = 0;
};

// Every value against the float64 reference. The features come from an f32 FFT, whose error in
// each X_k is a few ε_f32 (6e-8) times the frame's norm, not times |X_k|: a mel band far below
// its frame's loudest band carries a relative error up to (loudest / band) times larger. So each
// energy must agree to 1e-5 relative (the f32 log alone rounds E by up to ~1e-6; measured 1.6e-6
// on the loud bands) plus 1e-8 of its frame's largest band energy (the quiet bands' error,
// measured up to 7e-10 of it on these signals), plus 1e-12 near the 1e-10 floor; in the log
// that is |Δ| <= ln(1 + that / E_ref).
Mismatch compare_log_mel(const std::vector<float>& got, const json& ref, int64_t frames,
                         int64_t n_mels) {
  const auto& lm = ref["log_mel"];
  const auto& energy = ref["energy"];
  Mismatch m;
  for (int64_t t = 0; t < frames; ++t) {
    double frame_max = 0;
    for (int64_t j = 0; j < n_mels; ++j)
      frame_max = std::max(frame_max, energy[t * n_mels + j].get<double>());
    for (int64_t j = 0; j < n_mels; ++j) {
      const int64_t i = t * n_mels + j;
      const double e = std::max(energy[i].get<double>(), 1e-10);
      const double tol = std::log1p((1e-5 * e + 1e-8 * frame_max + 1e-12) / e);
      const double err = std::abs(got[i] - lm[i].get<double>());
      if (err > m.max_log_err) m.max_log_err = err, m.worst = i;
      if (err > tol) ++m.bad;
    }
  }
  return m;
}

}  // namespace

// ---- log-mel against numpy ------------------------------------------------------------------

TEST(LogMel, MatchesNumpyOnEspeakSpeech) {
  SKIP_OR_FAIL_WITHOUT_NUMPY();
  ESPEAK_WAV_OR_FAIL(wav);
  Audio a = read_wav(wav);
  ASSERT_EQ(a.sample_rate, 22050);
  MelOptions o;
  o.sample_rate = a.sample_rate;
  o.n_fft = 1024;
  LogMel lm(o);
  ASSERT_EQ(lm.window(), 551);  // 25 ms of 22050 Hz = 551.25
  ASSERT_EQ(lm.hop(), 221);     // 220.5 rounds up
  std::vector<float> got = lm.compute(a.samples.data(), static_cast<int64_t>(a.samples.size()));
  const int64_t T = lm.frames(static_cast<int64_t>(a.samples.size()));
  ASSERT_GT(T, 200);  // ~3 s of speech
  ASSERT_EQ(got.size(), static_cast<size_t>(T * 80));

  json c = options_json(lm.options());
  c["wav"] = wav.string();
  json out = run_reference({{"cases", {c}}}, "espeak");
  const json& ref = out["cases"][0];
  ASSERT_EQ(ref["frames"].get<int64_t>(), T);
  Mismatch m = compare_log_mel(got, ref, T, 80);
  EXPECT_EQ(m.bad, 0) << "max |Δ log| " << m.max_log_err << " at frame " << m.worst / 80 << ", mel "
                      << m.worst % 80;
  // The speech is there: loud bands, and silence at the 1e-10 floor (espeak pads with zeros).
  EXPECT_GT(*std::max_element(got.begin(), got.end()), 0.0f);
  EXPECT_NEAR(*std::min_element(got.begin(), got.end()), std::log(1e-10), 1e-5);
  std::printf("espeak 22050 Hz, n_fft 1024: %lld frames, max |Δ log-mel| %.3g\n",
              static_cast<long long>(T), m.max_log_err);
}

TEST(LogMel, MatchesNumpyOnChirp16k) {
  SKIP_OR_FAIL_WITHOUT_NUMPY();
  std::vector<float> x = chirp_16k();
  const std::string f32 = write_f32(x, "chirp.f32");
  MelOptions full;  // 16 kHz, 25/10 ms, 80 mels, n_fft automatic
  MelOptions band = full;
  band.n_mels = 40, band.f_min = 20, band.f_max = 7600, band.window_ms = 32, band.hop_ms = 12.5;
  std::vector<LogMel> lms;
  lms.emplace_back(full);
  lms.emplace_back(band);
  ASSERT_EQ(lms[0].n_fft(), 512);  // the next power of two >= 400
  ASSERT_EQ(lms[1].n_fft(), 512);  // = 512 samples
  json cases = json::array();
  for (const LogMel& lm : lms) {
    json c = options_json(lm.options());
    c["f32"] = f32;
    cases.push_back(c);
  }
  json out = run_reference({{"cases", cases}}, "chirp");
  for (size_t k = 0; k < lms.size(); ++k) {
    const LogMel& lm = lms[k];
    std::vector<float> got = lm.compute(x.data(), static_cast<int64_t>(x.size()));
    const int64_t T = lm.frames(static_cast<int64_t>(x.size()));
    const json& ref = out["cases"][k];
    ASSERT_EQ(ref["frames"].get<int64_t>(), T);
    Mismatch m = compare_log_mel(got, ref, T, lm.n_mels());
    EXPECT_EQ(m.bad, 0) << "case " << k << ": max |Δ log| " << m.max_log_err << " at frame "
                        << m.worst / lm.n_mels() << ", mel " << m.worst % lm.n_mels();
    std::printf("chirp 16 kHz case %zu (n_fft %d, %d mels): %lld frames, max |Δ log-mel| %.3g\n", k,
                lm.n_fft(), lm.n_mels(), static_cast<long long>(T), m.max_log_err);
  }
}

TEST(LogMel, FilterbankMatchesNumpy) {
  SKIP_OR_FAIL_WITHOUT_NUMPY();
  std::vector<MelOptions> settings(4);
  settings[0].n_fft = 512;  // 16 kHz, 80 mels, 0 to 8000 Hz
  settings[1].sample_rate = 22050, settings[1].n_fft = 1024;
  settings[2].n_mels = 40, settings[2].f_min = 20, settings[2].f_max = 7600,
  settings[2].n_fft = 400;
  settings[3].sample_rate = 8000, settings[3].n_mels = 23, settings[3].f_min = 64,
  settings[3].n_fft = 256;
  json fbs = json::array();
  std::vector<LogMel> lms;
  for (const MelOptions& o : settings) {
    lms.emplace_back(o);
    const MelOptions& r = lms.back().options();
    fbs.push_back({{"sample_rate", r.sample_rate},
                   {"n_fft", r.n_fft},
                   {"n_mels", r.n_mels},
                   {"f_min", r.f_min},
                   {"f_max", r.f_max}});
  }
  json out = run_reference({{"filterbanks", fbs}}, "filterbank");
  for (size_t k = 0; k < lms.size(); ++k) {
    std::vector<double> fb = lms[k].filterbank();
    const auto& ref = out["filterbanks"][k]["fb"];
    ASSERT_EQ(fb.size(), ref.size()) << "setting " << k;
    double max_err = 0;
    for (size_t i = 0; i < fb.size(); ++i)
      max_err = std::max(max_err, std::abs(fb[i] - ref[i].get<double>()));
    // Both are f64 evaluations of the same formula in different order: rounding only.
    EXPECT_LT(max_err, 1e-12) << "setting " << k;
    // Triangles peak at most 1; every filter has weight somewhere.
    const int bins = lms[k].n_bins();
    for (int m = 0; m < lms[k].n_mels(); ++m) {
      auto row = fb.begin() + static_cast<int64_t>(m) * bins;
      double peak = *std::max_element(row, row + bins);
      EXPECT_GT(peak, 0.0) << "setting " << k << " filter " << m;
      EXPECT_LE(peak, 1.0) << "setting " << k << " filter " << m;
    }
  }
}

// ---- frames, options ------------------------------------------------------------------------

TEST(LogMel, FrameCountEdgeCases) {
  LogMel lm(MelOptions{});  // win 400, hop 160
  ASSERT_EQ(lm.window(), 400);
  ASSERT_EQ(lm.hop(), 160);
  EXPECT_EQ(lm.frames(0), 0);
  EXPECT_EQ(lm.frames(399), 0);
  EXPECT_EQ(lm.frames(400), 1);
  EXPECT_EQ(lm.frames(400 + 160 - 1), 1);
  EXPECT_EQ(lm.frames(400 + 160), 2);
  EXPECT_EQ(lm.frames(16000), 98);  // 1 + floor(15600 / 160)

  std::vector<float> x = chirp_16k();
  EXPECT_TRUE(lm.compute(x.data(), 399).empty());
  std::vector<float> one = lm.compute(x.data(), 400);
  std::vector<float> still_one = lm.compute(x.data(), 559);  // the partial second frame is dropped
  std::vector<float> two = lm.compute(x.data(), 560);
  ASSERT_EQ(one.size(), 80u);
  EXPECT_EQ(still_one, one);
  ASSERT_EQ(two.size(), 160u);
  EXPECT_TRUE(std::equal(one.begin(), one.end(), two.begin()));
  // The second frame starts at sample 160: the same as the first frame of x + 160.
  std::vector<float> shifted = lm.compute(x.data() + 160, 400);
  EXPECT_TRUE(std::equal(shifted.begin(), shifted.end(), two.begin() + 80));
}

TEST(LogMel, RejectsBadOptionsNamingThem) {
  auto message = [](MelOptions o) {
    try {
      LogMel lm(o);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("(no exception)");
  };
  MelOptions o;
  o.sample_rate = 0;
  EXPECT_NE(message(o).find("MelOptions.sample_rate"), std::string::npos) << message(o);
  o = {}, o.window_ms = 0;
  EXPECT_NE(message(o).find("MelOptions.window_ms"), std::string::npos) << message(o);
  o = {}, o.hop_ms = -10;
  EXPECT_NE(message(o).find("MelOptions.hop_ms"), std::string::npos) << message(o);
  o = {}, o.n_mels = 0;
  EXPECT_NE(message(o).find("MelOptions.n_mels"), std::string::npos) << message(o);
  o = {}, o.n_fft = 256;  // shorter than the 400-sample window
  EXPECT_NE(message(o).find("MelOptions.n_fft"), std::string::npos) << message(o);
  o = {}, o.f_max = 9000;  // above Nyquist
  EXPECT_NE(message(o).find("MelOptions.f_max"), std::string::npos) << message(o);
  o = {}, o.f_min = 8000;  // not below f_max
  EXPECT_NE(message(o).find("MelOptions.f_min"), std::string::npos) << message(o);
  o = {}, o.n_mels = 256;  // the lowest filters fall between FFT bins
  EXPECT_NE(message(o).find("MelOptions.n_mels"), std::string::npos) << message(o);
  EXPECT_EQ(message(MelOptions{}), "(no exception)");
}

TEST(LogMel, TwoThreadsGiveTheSameResultAsOne) {
  std::vector<float> x = chirp_16k();
  LogMel lm(MelOptions{});
  const std::vector<float> alone = lm.compute(x.data(), static_cast<int64_t>(x.size()));
  std::vector<float> a, b, c;
  std::thread t1([&] {
    for (int i = 0; i < 5; ++i) a = lm.compute(x.data(), static_cast<int64_t>(x.size()));
  });
  std::thread t2([&] {
    for (int i = 0; i < 5; ++i) b = lm.compute(x.data(), static_cast<int64_t>(x.size()));
  });
  // Meanwhile a third thread plans (and destroys) FFTs of other sizes, under the planner's lock.
  std::thread t3([&] {
    for (int n_fft : {1024, 2048, 4096}) {
      MelOptions o;
      o.n_fft = n_fft;
      c = LogMel(o).compute(x.data(), 4000);
    }
  });
  t1.join(), t2.join(), t3.join();
  EXPECT_EQ(a, alone);
  EXPECT_EQ(b, alone);
  EXPECT_EQ(c.size(), 23u * 80u);
}

// ---- normalisation --------------------------------------------------------------------------

TEST(NormalizePerUtterance, ZeroMeanUnitVarianceOnSpeech) {
  ESPEAK_WAV_OR_FAIL(wav);
  Audio a = read_wav(wav);
  MelOptions o;
  o.sample_rate = a.sample_rate;
  LogMel lm(o);
  const int64_t T = lm.frames(static_cast<int64_t>(a.samples.size())), M = lm.n_mels();
  std::vector<float> f = lm.compute(a.samples.data(), static_cast<int64_t>(a.samples.size()));
  std::vector<float> raw = f;
  normalize_per_utterance(f.data(), T, M);
  for (int64_t m = 0; m < M; ++m) {
    double s = 0, s2 = 0, r = 0, r2 = 0;
    for (int64_t t = 0; t < T; ++t) s += f[t * M + m], r += raw[t * M + m];
    for (int64_t t = 0; t < T; ++t) {
      s2 += (f[t * M + m] - s / T) * (f[t * M + m] - s / T);
      r2 += (raw[t * M + m] - r / T) * (raw[t * M + m] - r / T);
    }
    ASSERT_GT(r2 / T, 1.0) << "mel " << m << ": speech should move every band";
    // f32 outputs of magnitude ~3: the mean of T of them is exact to ~1e-6.
    EXPECT_NEAR(s / T, 0.0, 1e-5) << "mel " << m;
    // Variance v / (v + 1e-5) of a band with raw variance v > 1: 1 to 1e-5.
    EXPECT_NEAR(s2 / T, 1.0, 2e-5) << "mel " << m;
  }
}

TEST(NormalizePerUtterance, SmallCaseByHandAndConstantBinGivesZeros) {
  // [3 frames, 2 mels]: mel 0 is 1, 2, 3 (mean 2, variance 2/3); mel 1 is constant.
  std::vector<float> f = {1, -7.5f, 2, -7.5f, 3, -7.5f};
  normalize_per_utterance(f.data(), 3, 2);
  const double s = std::sqrt(2.0 / 3.0 + 1e-5);
  EXPECT_FLOAT_EQ(f[0], static_cast<float>(-1 / s));
  EXPECT_FLOAT_EQ(f[2], 0.0f);
  EXPECT_FLOAT_EQ(f[4], static_cast<float>(1 / s));
  EXPECT_EQ(f[1], 0.0f);
  EXPECT_EQ(f[3], 0.0f);
  EXPECT_EQ(f[5], 0.0f);
  for (float v : f) EXPECT_FALSE(std::isnan(v));
}

// ---- SpecAugment ----------------------------------------------------------------------------

namespace {

// Distinct nonzero values, so a 0 can only be a mask.
std::vector<float> ramp(int64_t frames, int64_t n_mels) {
  std::vector<float> f(frames * n_mels);
  for (size_t i = 0; i < f.size(); ++i) f[i] = 1.0f + static_cast<float>(i);
  return f;
}

// Maximal runs of indices for which `masked(i)` holds.
template <class F>
std::vector<MaskBand> runs(int64_t n, F masked) {
  std::vector<MaskBand> out;
  for (int64_t i = 0; i < n; ++i) {
    if (!masked(i)) continue;
    if (!out.empty() && out.back().start + out.back().width == i)
      ++out.back().width;
    else
      out.push_back({i, 1});
  }
  return out;
}

}  // namespace

TEST(SpecAugment, SameSeedAndStreamSameMasksOtherStreamOthers) {
  const int64_t T = 300, M = 80;
  SpecAugmentOptions o;
  std::vector<float> a = ramp(T, M), b = ramp(T, M), c = ramp(T, M), d = ramp(T, M);
  spec_augment(a.data(), T, M, o, 1234, 7);
  spec_augment(b.data(), T, M, o, 1234, 7);
  EXPECT_EQ(a, b);
  spec_augment(c.data(), T, M, o, 1234, 8);
  EXPECT_NE(a, c);
  spec_augment(d.data(), T, M, o, 1235, 7);
  EXPECT_NE(a, d);
  // Over many streams the masks differ nearly always (they coincide only by chance).
  std::set<std::pair<int64_t, int64_t>> first_time_bands;
  for (uint64_t s = 0; s < 100; ++s) {
    SpecAugmentMasks mk = spec_augment_masks(T, M, o, 1234, s);
    first_time_bands.insert({mk.time[0].start, mk.time[0].width});
  }
  EXPECT_GT(first_time_bands.size(), 90u);
}

TEST(SpecAugment, BandsWithinBoundsAndEverythingElseUntouched) {
  const int64_t T = 120, M = 80;
  SpecAugmentOptions o;  // 2 × [0, 15] mels, 2 × [0, 20] frames
  std::set<int64_t> freq_widths, time_widths;
  int64_t min_start = M, max_end = 0;
  for (uint64_t stream = 0; stream < 400; ++stream) {
    const std::vector<float> orig = ramp(T, M);
    std::vector<float> f = orig;
    spec_augment(f.data(), T, M, o, 99, stream);
    SpecAugmentMasks mk = spec_augment_masks(T, M, o, 99, stream);
    ASSERT_EQ(mk.freq.size(), 2u);
    ASSERT_EQ(mk.time.size(), 2u);
    for (const MaskBand& b : mk.freq) {
      ASSERT_GE(b.width, 0);
      ASSERT_LE(b.width, 15);
      ASSERT_GE(b.start, 0);
      ASSERT_LE(b.start + b.width, M);
      freq_widths.insert(b.width);
      if (b.width > 0)
        min_start = std::min(min_start, b.start), max_end = std::max(max_end, b.start + b.width);
    }
    for (const MaskBand& b : mk.time) {
      ASSERT_GE(b.width, 0);
      ASSERT_LE(b.width, 20);
      ASSERT_GE(b.start, 0);
      ASSERT_LE(b.start + b.width, T);
      time_widths.insert(b.width);
    }
    // From the output alone: fully zero columns and rows form at most 2 runs each, of at most
    // 2 × 15 mels and 2 × 20 frames in all.
    auto zero_col = [&](int64_t m) {
      for (int64_t t = 0; t < T; ++t)
        if (f[t * M + m] != 0) return false;
      return true;
    };
    auto zero_row = [&](int64_t t) {
      for (int64_t m = 0; m < M; ++m)
        if (f[t * M + m] != 0) return false;
      return true;
    };
    std::vector<MaskBand> cols = runs(M, zero_col), rows = runs(T, zero_row);
    ASSERT_LE(cols.size(), 2u) << "stream " << stream;
    ASSERT_LE(rows.size(), 2u) << "stream " << stream;
    int64_t ncols = 0, nrows = 0;
    for (auto& r : cols) ncols += r.width;
    for (auto& r : rows) nrows += r.width;
    ASSERT_LE(ncols, 30);
    ASSERT_LE(nrows, 40);
    // Every value outside the zero rows and columns is bit-for-bit the original, every value in
    // them is 0, and the zero rows/columns are exactly the union of the drawn bands.
    std::vector<char> col_masked(M, 0), row_masked(T, 0);
    for (const MaskBand& b : mk.freq) std::fill_n(col_masked.begin() + b.start, b.width, 1);
    for (const MaskBand& b : mk.time) std::fill_n(row_masked.begin() + b.start, b.width, 1);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t m = 0; m < M; ++m) {
        const bool masked = col_masked[m] || row_masked[t];
        ASSERT_EQ(masked, zero_col(m) || zero_row(t)) << "stream " << stream;
        ASSERT_EQ(f[t * M + m], masked ? 0.0f : orig[t * M + m]) << "stream " << stream;
      }
  }
  // 800 draws of each: every width from 0 to the maximum occurs, and bands reach both edges.
  EXPECT_EQ(freq_widths.size(), 16u);
  EXPECT_EQ(time_widths.size(), 21u);
  EXPECT_EQ(min_start, 0);
  EXPECT_EQ(max_end, M);
}

TEST(SpecAugment, ShortUtterancesAndBadOptions) {
  // Wider masks than the utterance: widths are capped at its extent, nothing is written outside.
  SpecAugmentOptions o{1, 50, 1, 50};
  std::vector<float> f = ramp(5, 8);
  f.resize(f.size() + 4, 42.0f);  // values after the features must stay
  for (uint64_t s = 0; s < 50; ++s) spec_augment(f.data(), 5, 8, o, 1, s);
  for (size_t i = 40; i < f.size(); ++i) EXPECT_EQ(f[i], 42.0f);
  SpecAugmentMasks mk = spec_augment_masks(5, 8, o, 1, 3);
  EXPECT_LE(mk.freq[0].start + mk.freq[0].width, 8);
  EXPECT_LE(mk.time[0].start + mk.time[0].width, 5);
  spec_augment(nullptr, 0, 8, o, 1, 0);  // no frames: nothing to do
  SpecAugmentOptions bad;
  bad.time_width = -1;
  try {
    spec_augment_masks(10, 8, bad, 1, 0);
    FAIL() << "a negative width was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("time_width"), std::string::npos) << e.what();
  }
  EXPECT_THROW(spec_augment_masks(10, 8, SpecAugmentOptions{}, 1, uint64_t{1} << 40),
               std::invalid_argument);
}

// ---- feature cache --------------------------------------------------------------------------

namespace {

std::vector<UtteranceFeatures> some_features() {
  std::vector<UtteranceFeatures> u(3);
  u[0] = {"spk1-utt1", 3, {}};
  u[1] = {"", 0, {}};  // an empty id and no frames are allowed
  u[2] = {"spk2-utt7 (ünïcode)", 5, {}};
  uint64_t bits = 0x9E3779B97F4A7C15ull;
  for (auto& x : u) {
    x.data.resize(x.frames * 4);
    for (float& v : x.data) {  // arbitrary bit patterns, NaN and negative zero included
      bits = bits * 6364136223846793005ull + 1442695040888963407ull;
      uint32_t b = static_cast<uint32_t>(bits >> 32);
      std::memcpy(&v, &b, 4);
    }
  }
  u[0].data[0] = -0.0f;
  u[0].data[1] = std::numeric_limits<float>::quiet_NaN();
  return u;
}

bool bit_equal(const std::vector<UtteranceFeatures>& a, const std::vector<UtteranceFeatures>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].id != b[i].id || a[i].frames != b[i].frames || a[i].data.size() != b[i].data.size() ||
        std::memcmp(a[i].data.data(), b[i].data.data(), a[i].data.size() * 4) != 0)
      return false;
  return true;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << s;
  ASSERT_TRUE(f.good());
}

std::string load_error(const fs::path& p, const std::string& key, int64_t n_mels) {
  try {
    load_feature_cache(p.string(), key, n_mels);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no exception)";
}

}  // namespace

TEST(FeatureCache, RoundTripIsBitExact) {
  const fs::path p = scratch() / "round_trip.feats";
  const std::string key = feature_cache_key("manifest-sha256:abc", MelOptions{});
  const auto feats = some_features();
  save_feature_cache(p.string(), key, feats, 4);
  auto back = load_feature_cache(p.string(), key, 4);
  ASSERT_TRUE(back.has_value());
  EXPECT_TRUE(bit_equal(*back, feats));
  // Saving again over it (the rename replaces the file) and no temporary file is left behind.
  save_feature_cache(p.string(), key, {feats[2]}, 4);
  back = load_feature_cache(p.string(), key, 4);
  ASSERT_TRUE(back.has_value());
  EXPECT_TRUE(bit_equal(*back, {feats[2]}));
  for (const auto& e : fs::directory_iterator(scratch()))
    EXPECT_EQ(e.path().string().find("round_trip.feats.tmp"), std::string::npos) << e.path();
  // An empty cache round-trips too.
  save_feature_cache(p.string(), key, {}, 4);
  back = load_feature_cache(p.string(), key, 4);
  ASSERT_TRUE(back.has_value());
  EXPECT_TRUE(back->empty());
}

TEST(FeatureCache, MissingFileOrOtherKeyGivesNullopt) {
  const fs::path p = scratch() / "keyed.feats";
  EXPECT_FALSE(load_feature_cache((scratch() / "absent.feats").string(), "k", 4).has_value());
  save_feature_cache(p.string(), "corpus A", some_features(), 4);
  EXPECT_FALSE(load_feature_cache(p.string(), "corpus B", 4).has_value());
  EXPECT_FALSE(load_feature_cache(p.string(), "corpus A", 5).has_value());  // other n_mels
  EXPECT_TRUE(load_feature_cache(p.string(), "corpus A", 4).has_value());
}

TEST(FeatureCache, KeyChangesWithEveryOptionAndCorpus) {
  MelOptions o;
  const std::string k = feature_cache_key("fp", o);
  EXPECT_NE(k.find("fp"), std::string::npos);
  MelOptions explicit_fft = o;
  explicit_fft.n_fft = 512, explicit_fft.f_max = 8000;  // what 0 resolves to
  EXPECT_EQ(feature_cache_key("fp", explicit_fft), k);
  EXPECT_NE(feature_cache_key("fq", o), k);
  std::vector<MelOptions> others(7, o);
  others[0].sample_rate = 22050;
  others[1].window_ms = 20;
  others[2].hop_ms = 12.5;
  others[3].n_mels = 40;
  others[4].n_fft = 1024;
  others[5].f_min = 20;
  others[6].f_max = 7600;
  std::set<std::string> keys{k};
  for (const MelOptions& x : others) keys.insert(feature_cache_key("fp", x));
  EXPECT_EQ(keys.size(), 8u);
  MelOptions invalid;
  invalid.n_mels = 0;
  EXPECT_THROW(feature_cache_key("fp", invalid), std::invalid_argument);
}

TEST(FeatureCache, EveryFlippedByteThrowsNamingTheFile) {
  const fs::path p = scratch() / "flip.feats";
  const std::string key = "the key";
  save_feature_cache(p.string(), key, some_features(), 4);
  const std::string good = read_bytes(p);
  // Every byte of the file, one at a time: the magic, version, key, sizes, ids, data, checksum.
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] ^= 0x10;
    write_bytes(p, bad);
    const std::string err = load_error(p, key, 4);
    ASSERT_NE(err.find(p.string()), std::string::npos) << "byte " << i << ": " << err;
  }
  write_bytes(p, good);
  EXPECT_TRUE(load_feature_cache(p.string(), key, 4).has_value());
}

TEST(FeatureCache, TruncatedFileThrows) {
  const fs::path p = scratch() / "truncated.feats";
  save_feature_cache(p.string(), "k", some_features(), 4);
  const std::string good = read_bytes(p);
  for (size_t n :
       {size_t{0}, size_t{5}, size_t{12}, good.size() / 2, good.size() - 9, good.size() - 1}) {
    write_bytes(p, good.substr(0, n));
    const std::string err = load_error(p, "k", 4);
    EXPECT_NE(err.find(p.string()), std::string::npos) << n << " bytes: " << err;
  }
  write_bytes(p, good + "x");  // a byte too many
  EXPECT_NE(load_error(p, "k", 4).find(p.string()), std::string::npos);
}

TEST(FeatureCache, SaveRejectsInconsistentEntries) {
  std::vector<UtteranceFeatures> u = {{"utt-x", 2, std::vector<float>(7)}};
  try {
    save_feature_cache((scratch() / "bad.feats").string(), "k", u, 4);
    FAIL() << "7 values for 2 frames x 4 mels were accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("utt-x"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(scratch() / "bad.feats"));
  // A directory that does not exist: the error names the file.
  try {
    save_feature_cache((scratch() / "no-such-dir" / "x.feats").string(), "k", some_features(), 4);
    FAIL() << "saved into a missing directory";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("x.feats"), std::string::npos) << e.what();
  }
}
