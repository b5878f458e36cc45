// Audio I/O through libsndfile, resampling through libsamplerate.
//
// Truncation: libsndfile opens a WAV whose data chunk is cut short without an error and clamps
// sf_info.frames to what the file holds; its log then reads "data : 106692 (should be 29956)"
// (measured with libsndfile 1.2.0 on an espeak-ng WAV cut to 30,000 bytes). So a WAV is
// truncated when the log's data-chunk line promises more bytes than the file has. A truncated
// FLAC keeps the STREAMINFO frame count and fails while decoding ("flac decoder lost sync"):
// fewer frames read than sf_info.frames.
#include "data/audio.h"

#include <samplerate.h>
#include <sndfile.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>
#include <stdexcept>

namespace attn::data {

namespace fs = std::filesystem;

namespace {

struct SndfileCloser {
  void operator()(SNDFILE* f) const { sf_close(f); }
};
using SndfilePtr = std::unique_ptr<SNDFILE, SndfileCloser>;

[[noreturn]] void fail(const std::string& what, const std::string& path, const std::string& why) {
  throw std::runtime_error(what + ": " + path + ": " + why);
}

SndfilePtr open_for_reading(const std::string& path, SF_INFO& info) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("read_audio", path, "no such file");
  if (fs::is_directory(path, ec)) fail("read_audio", path, "is a directory, not an audio file");
  info = SF_INFO{};
  SNDFILE* f = sf_open(path.c_str(), SFM_READ, &info);
  if (!f)
    fail("read_audio", path,
         std::string("not a readable audio file (libsndfile: ") + sf_strerror(nullptr) + ")");
  return SndfilePtr(f);
}

// The "(should be N)" libsndfile logs after a data chunk's size when the file ends early:
// {promised, present} bytes, or {0, 0} when the log has no such line.
std::pair<long long, long long> short_data_chunk(SNDFILE* f) {
  char log[8192] = {};
  sf_command(f, SFC_GET_LOG_INFO, log, sizeof log);
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    std::string key = line.substr(0, line.find(':'));
    key.erase(std::remove_if(key.begin(), key.end(), ::isspace), key.end());
    if (key != "data" && key != "SSND") continue;  // WAV / AIFF audio chunks
    long long promised = 0, present = 0;
    size_t colon = line.find(':');
    if (std::sscanf(line.c_str() + colon + 1, " %lld (should be %lld)", &promised, &present) == 2 &&
        present < promised)
      return {promised, present};
  }
  return {0, 0};
}

std::vector<float> read_frames(SNDFILE* f, const SF_INFO& info, const std::string& path) {
  std::vector<float> interleaved(static_cast<size_t>(info.frames) * info.channels);
  sf_count_t done = 0;
  while (done < info.frames) {
    sf_count_t n = sf_readf_float(f, interleaved.data() + done * info.channels, info.frames - done);
    if (n <= 0) break;
    done += n;
  }
  if (done < info.frames || sf_error(f) != SF_ERR_NO_ERROR)
    fail("read_audio", path,
         "truncated or corrupt: decoded " + std::to_string(done) + " of the " +
             std::to_string(info.frames) +
             " frames its header promises (libsndfile: " + sf_strerror(f) + ")");
  return interleaved;
}

std::vector<float> to_mono(std::vector<float> interleaved, int channels) {
  if (channels == 1) return interleaved;
  std::vector<float> mono(interleaved.size() / channels);
  for (size_t i = 0; i < mono.size(); ++i) {
    float sum = 0.0f;
    for (int c = 0; c < channels; ++c) sum += interleaved[i * channels + c];
    mono[i] = sum / static_cast<float>(channels);
  }
  return mono;
}

// q = round(x·32768) clipped to [-32768, 32767]: the inverse of the reader's q / 32768, so reading
// and writing back is lossless, and WAV and FLAC hold the same integers. (libsndfile's own float
// conversion scales by 32767 for WAV but not for FLAC: the two came out 1 LSB apart.)
std::vector<short> to_pcm16(const std::vector<float>& x) {
  std::vector<short> q(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    q[i] = static_cast<short>(
        std::clamp(std::lrint(static_cast<double>(x[i]) * 32768.0), -32768L, 32767L));
  return q;
}

int output_format(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  if (ext == ".wav") return SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  if (ext == ".flac") return SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
  fail("write_audio", path, "unknown extension '" + ext + "' (expected .wav or .flac)");
}

void write_frames(const std::string& tmp, const std::string& path, const Audio& a) {
  SF_INFO info{};
  info.samplerate = a.sample_rate;
  info.channels = 1;
  info.format = output_format(path);
  SNDFILE* raw = sf_open(tmp.c_str(), SFM_WRITE, &info);
  if (!raw)
    fail("write_audio", path,
         "cannot create " + tmp + " (libsndfile: " + sf_strerror(nullptr) + ")");
  SndfilePtr f(raw);
  std::vector<short> pcm = to_pcm16(a.samples);
  auto frames = static_cast<sf_count_t>(pcm.size());
  if (sf_writef_short(f.get(), pcm.data(), frames) != frames)
    fail("write_audio", path,
         "writing " + tmp + " failed (libsndfile: " + sf_strerror(f.get()) + ")");
  sf_write_sync(f.get());  // fsync before the rename makes it durable
  if (int err = sf_close(f.release()); err != 0)
    fail("write_audio", path,
         "closing " + tmp + " failed (libsndfile: " + sf_error_number(err) + ")");
}

}  // namespace

Audio read_audio(const std::string& path, int target_rate) {
  SF_INFO info;
  SndfilePtr f = open_for_reading(path, info);
  if (auto [promised, present] = short_data_chunk(f.get()); promised > 0)
    fail("read_audio", path,
         "truncated: its header promises " + std::to_string(promised) +
             " bytes of audio data, the file holds " + std::to_string(present));
  if (info.frames <= 0) fail("read_audio", path, "holds no audio (0 frames)");
  if (info.samplerate <= 0 || info.channels <= 0)
    fail("read_audio", path,
         "header gives sample rate " + std::to_string(info.samplerate) + " and " +
             std::to_string(info.channels) + " channels");
  Audio a{to_mono(read_frames(f.get(), info, path), info.channels), info.samplerate};
  return target_rate > 0 && target_rate != a.sample_rate ? resample(a, target_rate) : a;
}

double audio_duration_s(const std::string& path) {
  SF_INFO info;
  SndfilePtr f = open_for_reading(path, info);
  if (info.frames <= 0 || info.samplerate <= 0)
    fail("audio_duration_s", path, "holds no audio (0 frames)");
  return static_cast<double>(info.frames) / info.samplerate;
}

Audio resample(const Audio& a, int rate) {
  if (rate <= 0 || a.sample_rate <= 0)
    throw std::invalid_argument("resample: rates must be positive, got " +
                                std::to_string(a.sample_rate) + " -> " + std::to_string(rate));
  if (rate == a.sample_rate || a.samples.empty()) return Audio{a.samples, rate};
  double ratio = static_cast<double>(rate) / a.sample_rate;
  std::vector<float> out(static_cast<size_t>(std::ceil(a.samples.size() * ratio)) + 16);
  SRC_DATA d{};
  d.data_in = a.samples.data();
  d.input_frames = static_cast<long>(a.samples.size());
  d.data_out = out.data();
  d.output_frames = static_cast<long>(out.size());
  d.src_ratio = ratio;
  d.end_of_input = 1;
  if (int err = src_simple(&d, SRC_SINC_MEDIUM_QUALITY, 1); err != 0)
    throw std::runtime_error(std::string("resample: libsamplerate: ") + src_strerror(err));
  out.resize(static_cast<size_t>(d.output_frames_gen));
  return Audio{std::move(out), rate};
}

void write_audio(const std::string& path, const Audio& a) {
  if (a.sample_rate <= 0) fail("write_audio", path, "sample rate " + std::to_string(a.sample_rate));
  if (a.samples.empty()) fail("write_audio", path, "no samples to write");
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  try {
    write_frames(tmp, path, a);
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) fail("write_audio", path, "renaming " + tmp + " failed: " + ec.message());
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

}  // namespace attn::data
