// Speech data: audio files (libsndfile, libsamplerate), manifests and LibriSpeech folders, and the
// espeak-ng corpus synthesis. espeak-ng is installed by scripts/setup.sh: a missing one fails.
#include <gtest/gtest.h>
#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numbers>
#include <set>
#include <sstream>

#include "data/audio.h"
#include "data/espeak.h"
#include "data/speech_corpus.h"
#include "data/speech_synthesis.h"
#include "scratch_dir.h"

using namespace attn::data;
namespace fs = std::filesystem;

namespace {

fs::path scratch() { return attn::testing::scratch_dir("attnlab-test-speech-"); }

fs::path fresh_dir(const std::string& name) {
  fs::path d = scratch() / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

bool espeak_installed() { return std::system("espeak-ng --version >/dev/null 2>&1") == 0; }

#define REQUIRE_ESPEAK()                                                                       \
  ASSERT_TRUE(espeak_installed()) << "espeak-ng is not installed (apt-get install espeak-ng; " \
                                     "scripts/setup.sh installs it)"

std::string kjv_cache() { return (fs::temp_directory_path() / "attnlab-kjv").string(); }

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out << bytes;
  ASSERT_TRUE(out.flush()) << p;
}

// The message of the std::runtime_error f throws ("" and a test failure when it does not).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a std::runtime_error";
  return "";
}

Audio sine(double freq, double amplitude, int rate, double seconds) {
  Audio a{{}, rate};
  for (int i = 0; i < static_cast<int>(seconds * rate); ++i)
    a.samples.push_back(
        static_cast<float>(amplitude * std::sin(2 * std::numbers::pi * freq * i / rate)));
  return a;
}

double rms(const std::vector<float>& x, size_t begin, size_t end) {
  double s = 0;
  for (size_t i = begin; i < end; ++i) s += static_cast<double>(x[i]) * x[i];
  return std::sqrt(s / static_cast<double>(end - begin));
}

// Frequency from the upward zero crossings (linearly interpolated) between begin and end.
double crossing_frequency(const Audio& a, size_t begin, size_t end) {
  std::vector<double> crossings;
  for (size_t i = begin; i + 1 < end; ++i)
    if (a.samples[i] < 0 && a.samples[i + 1] >= 0)
      crossings.push_back(static_cast<double>(i) +
                          a.samples[i] / (a.samples[i] - a.samples[i + 1]));
  EXPECT_GE(crossings.size(), 10u);
  return (crossings.size() - 1) * a.sample_rate / (crossings.back() - crossings.front());
}

const char* kSentence = "And God said, Let there be light";

// espeak-ng's own WAV (22050 Hz) of kSentence, made once.
fs::path espeak_wav() {
  static const fs::path p = [] {
    fs::path w = scratch() / "espeak-sentence.wav";
    espeak_to_wav(kSentence, "en-us+m3", 160, 50, w.string());
    return w;
  }();
  return p;
}

}  // namespace

// ---- audio files ------------------------------------------------------------------------------

TEST(Audio, EspeakUtteranceResampledAndFlacEqualsWav) {
  REQUIRE_ESPEAK();
  Audio native = read_audio(espeak_wav().string());
  EXPECT_EQ(native.sample_rate, 22050);  // espeak-ng's rate: the resampling below is real
  Audio a = read_audio(espeak_wav().string(), 16000);
  EXPECT_EQ(a.sample_rate, 16000);
  EXPECT_GT(a.duration_s(), 0.5);
  EXPECT_LT(a.duration_s(), 10.0);
  EXPECT_NEAR(a.duration_s(), native.duration_s(), 1e-3);  // resampling keeps the duration
  EXPECT_GT(rms(a.samples, 0, a.samples.size()), 0.01) << "silent synthesis";

  fs::path dir = fresh_dir("flac-vs-wav");
  write_audio((dir / "u.wav").string(), a);
  write_audio((dir / "u.flac").string(), a);
  Audio wav = read_audio((dir / "u.wav").string()), flac = read_audio((dir / "u.flac").string());
  EXPECT_EQ(flac.sample_rate, 16000);
  ASSERT_EQ(wav.samples.size(), a.samples.size());
  EXPECT_EQ(flac.samples, wav.samples);  // both 16-bit PCM: the same integers
  double worst = 0;
  for (size_t i = 0; i < a.samples.size(); ++i)
    worst = std::max(worst, std::abs(static_cast<double>(wav.samples[i]) - a.samples[i]));
  EXPECT_LE(worst, 0.5 / 32768 + 1e-12);  // rounded to the nearest 16-bit step (no sample clips)
  write_audio((dir / "again.flac").string(), flac);  // 16-bit audio is written back losslessly
  EXPECT_EQ(read_audio((dir / "again.flac").string()).samples, flac.samples);
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << "temp left: " << e.path();
}

TEST(Audio, ResamplingKeepsFrequencyAndAmplitude) {
  for (double freq : {440.0, 1000.0, 5000.0}) {
    Audio in = sine(freq, 0.5, 22050, 1.0);
    Audio out = resample(in, 16000);
    EXPECT_EQ(out.sample_rate, 16000);
    EXPECT_NEAR(static_cast<double>(out.samples.size()), 16000.0, 2.0);
    const size_t lo = 1600, hi = 14400;  // away from the edges, where the sinc sees zeros
    // Interpolated zero crossings over 0.8 s locate the frequency to far better than 0.01%.
    EXPECT_NEAR(crossing_frequency(out, lo, hi), freq, freq * 1e-4) << freq << " Hz";
    // SINC_MEDIUM's passband ripple is well under 0.1 dB; 0.5% is ~0.04 dB.
    EXPECT_NEAR(rms(out.samples, lo, hi) * std::sqrt(2.0), 0.5, 0.5 * 0.005) << freq << " Hz";
  }
  // Above the new Nyquist frequency (8 kHz) a sine must be filtered out, not aliased to 6 kHz.
  Audio high = resample(sine(10000.0, 0.5, 22050, 1.0), 16000);
  EXPECT_LT(rms(high.samples, 1600, 14400), 0.5 * 0.01);
}

TEST(Audio, MissingCorruptTruncatedAndEmptyFilesThrowNamingTheFile) {
  REQUIRE_ESPEAK();
  fs::path dir = fresh_dir("bad-audio");
  fs::path missing = dir / "missing.wav";
  std::string e = error_of([&] { read_audio(missing.string()); });
  EXPECT_NE(e.find(missing.string()), std::string::npos) << e;
  EXPECT_NE(e.find("no such file"), std::string::npos) << e;

  fs::path garbage = dir / "garbage.wav";
  std::string junk;
  for (int i = 0; i < 4000; ++i) junk += static_cast<char>((i * 7919 + 13) % 251);
  spit(garbage, junk);
  e = error_of([&] { read_audio(garbage.string()); });
  EXPECT_NE(e.find(garbage.string()), std::string::npos) << e;

  std::string whole = slurp(espeak_wav());
  fs::path half = dir / "half.wav";
  spit(half, whole.substr(0, whole.size() / 2));
  e = error_of([&] { read_audio(half.string()); });
  EXPECT_NE(e.find(half.string()), std::string::npos) << e;
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;

  fs::path flac = dir / "whole.flac", half_flac = dir / "half.flac";
  write_audio(flac.string(), read_audio(espeak_wav().string()));
  std::string flac_bytes = slurp(flac);
  spit(half_flac, flac_bytes.substr(0, flac_bytes.size() / 2));
  e = error_of([&] { read_audio(half_flac.string()); });
  EXPECT_NE(e.find(half_flac.string()), std::string::npos) << e;
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;

  fs::path empty = dir / "empty.wav";  // a valid header with 0 frames
  SF_INFO info{};
  info.samplerate = 16000, info.channels = 1, info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  SNDFILE* f = sf_open(empty.c_str(), SFM_WRITE, &info);
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(sf_close(f), 0);
  e = error_of([&] { read_audio(empty.string()); });
  EXPECT_NE(e.find(empty.string()), std::string::npos) << e;
  EXPECT_NE(e.find("0 frames"), std::string::npos) << e;
}

TEST(Audio, StereoIsAveragedToMono) {
  fs::path p = fresh_dir("stereo") / "lr.wav";
  SF_INFO info{};
  info.samplerate = 8000, info.channels = 2, info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  SNDFILE* f = sf_open(p.c_str(), SFM_WRITE, &info);
  ASSERT_NE(f, nullptr);
  const short frames[] = {1000, 3000, -2000, 0, 16384, 16384};  // L, R interleaved
  ASSERT_EQ(sf_writef_short(f, frames, 3), 3);
  ASSERT_EQ(sf_close(f), 0);
  Audio a = read_audio(p.string());
  ASSERT_EQ(a.samples.size(), 3u);
  EXPECT_EQ(a.sample_rate, 8000);
  EXPECT_FLOAT_EQ(a.samples[0], 2000.0f / 32768);
  EXPECT_FLOAT_EQ(a.samples[1], -1000.0f / 32768);
  EXPECT_FLOAT_EQ(a.samples[2], 0.5f);
}

TEST(Audio, WhiteNoiseHasTheAskedSnrAndIsDeterministic) {
  Audio clean = sine(300.0, 0.3, 16000, 4.0);
  for (double snr : {20.0, 10.0}) {
    std::vector<float> noisy = clean.samples;
    add_white_noise(noisy, snr, 42);
    double signal = 0, noise = 0;
    for (size_t i = 0; i < noisy.size(); ++i) {
      signal += static_cast<double>(clean.samples[i]) * clean.samples[i];
      double d = static_cast<double>(noisy[i]) - clean.samples[i];
      noise += d * d;
    }
    // 64,000 Gaussian draws: the noise power's relative s.d. is sqrt(2/64000) ≈ 0.6% (0.024 dB).
    EXPECT_NEAR(10 * std::log10(signal / noise), snr, 0.15) << snr << " dB";
    std::vector<float> again = clean.samples, other = clean.samples;
    add_white_noise(again, snr, 42);
    add_white_noise(other, snr, 43);
    EXPECT_EQ(again, noisy);
    EXPECT_NE(other, noisy);
  }
}

// ---- manifests and LibriSpeech ----------------------------------------------------------------

TEST(SpeechCorpus, ManifestResolvesRelativePathsAndDurations) {
  fs::path dir = fresh_dir("manifest-good");
  fs::create_directories(dir / "wav");
  write_audio((dir / "wav" / "a.wav").string(), sine(200, 0.3, 16000, 1.25));
  write_audio((dir / "b.flac").string(), sine(200, 0.3, 8000, 0.5));
  fs::path m = dir / "m.jsonl";
  spit(
      m,
      "{\"id\":\"a\",\"path\":\"wav/"
      "a.wav\",\"transcript\":\"HELLO\",\"speaker\":\"s1\",\"rate\":150}\n"
      "\n"
      "{\"id\":\"b\",\"path\":\"" +
          (dir / "b.flac").string() +
          "\",\"transcript\":\"WORLD\",\"voice\":\"en-us+m3\",\"duration\":7.5,\"snr_db\":null}\n");
  std::vector<Utterance> u = read_manifest(m.string());
  ASSERT_EQ(u.size(), 2u);
  EXPECT_EQ(u[0].id, "a");
  EXPECT_EQ(u[0].audio_path, (dir / "wav" / "a.wav").string());
  EXPECT_TRUE(fs::path(u[0].audio_path).is_absolute());
  EXPECT_EQ(u[0].transcript, "HELLO");
  EXPECT_EQ(u[0].speaker, "s1");
  EXPECT_DOUBLE_EQ(u[0].duration_s, 1.25);  // from the header: 20,000 frames at 16 kHz
  EXPECT_EQ(u[1].speaker, "en-us+m3");      // "voice" when there is no "speaker"
  EXPECT_DOUBLE_EQ(u[1].duration_s, 7.5);   // the manifest's, not the file's 0.5 s
  // A relative manifest path resolves the same way.
  fs::path cwd = fs::current_path();
  fs::current_path(dir);
  std::vector<Utterance> rel = read_speech_corpus("m.jsonl");
  fs::current_path(cwd);
  ASSERT_EQ(rel.size(), 2u);
  EXPECT_EQ(rel[0].audio_path, u[0].audio_path);
}

TEST(SpeechCorpus, ManifestErrorsNameLineKeyAndPath) {
  fs::path dir = fresh_dir("manifest-bad");
  write_audio((dir / "a.wav").string(), sine(200, 0.3, 16000, 0.2));
  const std::string good = "{\"id\":\"a\",\"path\":\"a.wav\",\"transcript\":\"A\"}\n";
  auto message = [&](const std::string& name, const std::string& content) {
    spit(dir / name, content);
    return error_of([&] { read_manifest((dir / name).string()); });
  };
  std::string e =
      message("missing-audio.jsonl",
              good + "{\"id\":\"b\",\"path\":\"nowhere/b.wav\",\"transcript\":\"B\"}\n");
  EXPECT_NE(e.find("missing-audio.jsonl line 2"), std::string::npos) << e;
  EXPECT_NE(e.find((dir / "nowhere" / "b.wav").string()), std::string::npos) << e;
  EXPECT_NE(e.find("does not exist"), std::string::npos) << e;

  e = message("malformed.jsonl", good + "{\"id\":\"b\",\"path\":\"a.wav\",\"transcript\":\"B\"}\n" +
                                     "{\"id\":\"c\",\"path\":\"a.wav\",\n");
  EXPECT_NE(e.find("malformed.jsonl line 3"), std::string::npos) << e;
  EXPECT_NE(e.find("not valid JSON"), std::string::npos) << e;

  e = message("no-key.jsonl", "{\"id\":\"a\",\"path\":\"a.wav\"}\n");
  EXPECT_NE(e.find("no-key.jsonl line 1"), std::string::npos) << e;
  EXPECT_NE(e.find("missing key \"transcript\""), std::string::npos) << e;

  e = message("wrong-type.jsonl", good + "{\"id\":7,\"path\":\"a.wav\",\"transcript\":\"A\"}\n");
  EXPECT_NE(e.find("wrong-type.jsonl line 2"), std::string::npos) << e;
  EXPECT_NE(e.find("\"id\" must be a string"), std::string::npos) << e;

  e = message("duplicate.jsonl", good + good);
  EXPECT_NE(e.find("duplicate.jsonl line 2: id \"a\" repeats line 1"), std::string::npos) << e;
}

TEST(SpeechCorpus, LibriSpeechLayoutFromSynthesisedFlacs) {
  REQUIRE_ESPEAK();
  fs::path root = fresh_dir("librispeech");
  // speaker -> chapter -> {utterance number, text}; written out of order to test the sort.
  struct Utt {
    std::string speaker, chapter, n, text;
  };
  const std::vector<Utt> utts = {{"26", "495", "0001", "HE WENT UP"},
                                 {"19", "198", "0002", "LET THERE BE LIGHT"},
                                 {"19", "198", "0000", "IN THE BEGINNING"}};
  std::map<fs::path, std::string> trans;
  for (const Utt& u : utts) {
    fs::path chapter = root / u.speaker / u.chapter;
    fs::create_directories(chapter);
    std::string id = u.speaker + "-" + u.chapter + "-" + u.n;
    fs::path raw = chapter / (id + ".raw.wav");
    espeak_to_wav(u.text, "en-gb+f2", 170, 50, raw.string());
    write_audio((chapter / (id + ".flac")).string(), read_audio(raw.string(), 16000));
    fs::remove(raw);
    trans[chapter / (u.speaker + "-" + u.chapter + ".trans.txt")] += id + " " + u.text + "\n";
  }
  for (const auto& [path, text] : trans) spit(path, text);

  std::vector<Utterance> got = read_speech_corpus(root.string());
  ASSERT_EQ(got.size(), 3u);
  const std::vector<std::string> ids = {"19-198-0000", "19-198-0002", "26-495-0001"};
  const std::vector<std::string> texts = {"IN THE BEGINNING", "LET THERE BE LIGHT", "HE WENT UP"};
  const std::vector<std::string> speakers = {"19", "19", "26"};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(got[i].id, ids[i]);
    EXPECT_EQ(got[i].transcript, texts[i]);
    EXPECT_EQ(got[i].speaker, speakers[i]);
    EXPECT_EQ(fs::path(got[i].audio_path).filename(), ids[i] + ".flac");
    EXPECT_TRUE(fs::path(got[i].audio_path).is_absolute());
    EXPECT_NEAR(got[i].duration_s, read_audio(got[i].audio_path).duration_s(), 1e-9);
    EXPECT_GT(got[i].duration_s, 0.3);
  }

  fs::path trans_19 = root / "19" / "198" / "19-198.trans.txt";
  fs::path gone = root / "19" / "198" / "19-198-0002.flac";
  fs::rename(gone, root / "moved.flac");
  std::string e = error_of([&] { read_librispeech(root.string()); });
  EXPECT_NE(e.find(trans_19.string() + " line 1"), std::string::npos) << e;
  EXPECT_NE(e.find(gone.string()), std::string::npos) << e;
  fs::rename(root / "moved.flac", gone);

  spit(trans_19, "19-198-0000 IN THE BEGINNING\n19-198-0002\n");
  e = error_of([&] { read_librispeech(root.string()); });
  EXPECT_NE(e.find(trans_19.string() + " line 2"), std::string::npos) << e;
  EXPECT_NE(e.find("UTTID TEXT"), std::string::npos) << e;

  e = error_of([&] { read_speech_corpus(fresh_dir("not-librispeech").string()); });
  EXPECT_NE(e.find("no SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt"), std::string::npos) << e;
}

// ---- phrases and the synthesis ---------------------------------------------------------------

TEST(SpeechSynthesis, PhrasesAreCutNormalisedFilteredAndDeduplicated) {
  const std::string verses =
      "In the beginning God created the heaven and the earth.\n"
      "And the earth was without form, and void; and darkness was upon the face of the deep.\n"
      "And God said, Let there be light: and there was light.\n"
      "(And it was so) from Beer-sheba  unto 12 Dan's  border? And God said, Amen!\n";
  std::vector<Phrase> p = kjv_phrases(verses, 12, 48);
  std::vector<std::string> transcripts, texts;
  for (const Phrase& x : p) transcripts.push_back(x.transcript), texts.push_back(x.text);
  // "and void" (8) is too short, the first verse (53 characters) too long, "(And it was so) ..."
  // dropped for its parentheses, the second "And God said" a duplicate.
  const std::vector<std::string> want = {
      "AND THE EARTH WAS WITHOUT FORM", "AND DARKNESS WAS UPON THE FACE OF THE DEEP",
      "AND GOD SAID", "LET THERE BE LIGHT", "AND THERE WAS LIGHT"};
  EXPECT_EQ(transcripts, want);
  EXPECT_EQ(texts[3], "Let there be light");
  std::vector<Phrase> q = kjv_phrases("from Beer-sheba  unto 12 Dan's  border?\n", 12, 48);
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q[0].transcript, "FROM BEER SHEBA UNTO DAN'S BORDER");
}

TEST(SpeechSynthesis, PresetsAndValidation) {
  SynthesisConfig r = SynthesisConfig::reference();
  EXPECT_EQ(r.train_phrases, 8000);
  EXPECT_EQ(r.test_phrases, 1000);
  EXPECT_EQ(r.train_accents.size() * r.train_variants.size(), 60u);
  EXPECT_EQ(r.test_accents.size() * r.test_variants.size(), 15u);
  EXPECT_NO_THROW(r.validate());
  EXPECT_NO_THROW(SynthesisConfig::small().validate());
  SynthesisConfig bad = SynthesisConfig::small();
  bad.test_variants.push_back(bad.train_variants[0]);
  try {
    bad.validate();
    ADD_FAILURE() << "overlapping variants accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("variants"), std::string::npos) << e.what();
  }
  EXPECT_THROW(SynthesisConfig::preset("huge"), std::invalid_argument);
}

TEST(SpeechSynthesis, EspeakFailuresNameTheCommand) {
  REQUIRE_ESPEAK();
  fs::path wav = fresh_dir("espeak-fail") / "x.wav";
  std::string e =
      error_of([&] { espeak_to_wav("In the beginning", "xx-nowhere", 150, 50, wav.string()); });
  EXPECT_NE(
      e.find("espeak-ng -v xx-nowhere -s 150 -p 50 -w " + wav.string() + " 'In the beginning'"),
      std::string::npos)
      << e;
  EXPECT_NE(e.find("exit status 1"), std::string::npos) << e;
  // An unknown +variant, which espeak-ng itself would silently ignore, is refused up front.
  SynthesisConfig c = SynthesisConfig::small();
  c.test_variants = {"no-such-variant"};
  SynthesisOptions o;
  o.progress = false;
  try {
    synthesise_speech_corpus((scratch() / "never-made").string(), c, o);
    ADD_FAILURE() << "an unknown variant was accepted";
  } catch (const std::invalid_argument& ex) {
    EXPECT_NE(std::string(ex.what()).find("no variant 'no-such-variant'"), std::string::npos)
        << ex.what();
  }
  EXPECT_FALSE(fs::exists(scratch() / "never-made"));
}

namespace {

SynthesisConfig tiny_config() {
  SynthesisConfig c;
  c.train_phrases = 8, c.val_phrases = 2, c.test_phrases = 8, c.test_long = 3;
  c.train_accents = {"en-us"};
  c.train_variants = {"m1", "f2"};
  c.test_accents = {"en-gb-x-rp"};
  c.test_variants = {"m7", "f4"};
  c.rate_min = 150, c.rate_max = 170;  // test_long needs joined phrases of > 48·170/150 chars
  c.seed = 7;
  return c;
}

SynthesisOptions tiny_options() {
  SynthesisOptions o;
  o.jobs = 2;
  o.cache_dir = kjv_cache();
  o.progress = false;
  return o;
}

std::map<std::string, std::vector<Utterance>> manifests(const fs::path& dir) {
  std::map<std::string, std::vector<Utterance>> m;
  for (const char* s : {"train", "val", "test", "test_long"})
    m[s] = read_manifest((dir / (std::string(s) + ".jsonl")).string());
  return m;
}

}  // namespace

TEST(SpeechSynthesis, TinyCorpusSplitsResumesAndRefusesAnotherConfig) {
  REQUIRE_ESPEAK();
  fs::path dir = fresh_dir("tiny-corpus");
  const SynthesisConfig c = tiny_config();
  SynthesisReport first = synthesise_speech_corpus(dir.string(), c, tiny_options());
  EXPECT_EQ(first.synthesised, 21);
  EXPECT_EQ(first.reused, 0);

  auto m = manifests(dir);
  ASSERT_EQ(m["train"].size(), 8u);
  ASSERT_EQ(m["val"].size(), 2u);
  ASSERT_EQ(m["test"].size(), 8u);
  ASSERT_EQ(m["test_long"].size(), 3u);
  std::set<std::string> train_text, train_voices, test_text;
  double longest_train = 0;
  for (const Utterance& u : m["train"]) {
    train_text.insert(u.transcript);
    train_voices.insert(u.speaker);
    longest_train = std::max(longest_train, u.duration_s);
  }
  EXPECT_EQ(train_text.size(), 8u);
  for (const std::string& v : train_voices) EXPECT_TRUE(v == "en-us+m1" || v == "en-us+f2") << v;
  for (const Utterance& u : m["val"]) {
    EXPECT_FALSE(train_text.count(u.transcript)) << u.transcript;
    EXPECT_TRUE(u.speaker == "en-us+m1" || u.speaker == "en-us+f2") << u.speaker;
  }
  for (const Utterance& u : m["test"]) test_text.insert(u.transcript);
  for (const char* split : {"test", "test_long"})
    for (const Utterance& u : m[split]) {
      EXPECT_FALSE(train_text.count(u.transcript)) << u.transcript;
      EXPECT_TRUE(u.speaker == "en-gb-x-rp+m7" || u.speaker == "en-gb-x-rp+f4") << u.speaker;
      EXPECT_FALSE(train_voices.count(u.speaker)) << u.speaker;
    }
  for (const Utterance& u : m["test_long"]) {
    EXPECT_GT(u.duration_s, longest_train) << u.id << " is not longer than every train utterance";
    bool joins_two_test_phrases = false;  // "A B" with A and B test transcripts
    for (const std::string& a : test_text)
      if (u.transcript.rfind(a + " ", 0) == 0 && test_text.count(u.transcript.substr(a.size() + 1)))
        joins_two_test_phrases = true;
    EXPECT_TRUE(joins_two_test_phrases) << u.transcript;
  }
  EXPECT_TRUE(first.test_long_longer_than_train()) << first.stats_line();
  for (const auto& [split, utts] : m)
    for (const Utterance& u : utts) {
      Audio a = read_audio(u.audio_path);
      EXPECT_EQ(a.sample_rate, 16000) << u.id;
      EXPECT_DOUBLE_EQ(a.duration_s(), u.duration_s) << u.id;
      for (char ch : u.transcript)
        EXPECT_TRUE(std::isupper(ch) || ch == ' ' || ch == '\'') << u.transcript;
    }

  // Resume: one WAV and one manifest deleted are made again; nothing else is touched.
  std::map<fs::path, fs::file_time_type> mtimes;
  std::map<fs::path, std::string> bytes;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file())
      mtimes[e.path()] = e.last_write_time(), bytes[e.path()] = slurp(e.path());
  const fs::path lost_wav = dir / "train" / "train-000003.wav",
                 lost_manifest = dir / "test_long.jsonl";
  fs::remove(lost_wav);
  fs::remove(lost_manifest);
  SynthesisReport second = synthesise_speech_corpus(dir.string(), c, tiny_options());
  EXPECT_EQ(second.synthesised, 1);
  EXPECT_EQ(second.reused, 20);
  for (const auto& [path, mtime] : mtimes) {
    ASSERT_TRUE(fs::exists(path)) << path;
    EXPECT_EQ(slurp(path), bytes[path]) << path << " differs after the resume";
    if (path != lost_wav && path != lost_manifest && path.filename() != ".lock") {
      EXPECT_EQ(fs::last_write_time(path), mtime) << path << " was rewritten";
    }
  }
  ASSERT_EQ(second.splits.size(), first.splits.size());
  for (size_t i = 0; i < first.splits.size(); ++i) {
    EXPECT_EQ(second.splits[i].utterances, first.splits[i].utterances);
    EXPECT_EQ(second.splits[i].voices, first.splits[i].voices);
    EXPECT_DOUBLE_EQ(second.splits[i].hours, first.splits[i].hours);
  }

  SynthesisConfig other = c;
  other.seed = 8;
  std::string e = error_of([&] { synthesise_speech_corpus(dir.string(), other, tiny_options()); });
  EXPECT_NE(e.find("different config"), std::string::npos) << e;
  EXPECT_NE(e.find("config.seed is 7 there, 8 now"), std::string::npos) << e;
  EXPECT_EQ(slurp(dir / "corpus.json"), bytes[dir / "corpus.json"]);
}
