#include "data/white_noise.h"

#include <algorithm>
#include <cmath>

#include "tensor/philox.h"

namespace attn::data {

namespace {

// First counter of the noise: an utterance's key also draws its voice, rate, pitch, SNR and
// test_long pairs (speech_plan.cpp), from counters below this one.
constexpr uint64_t kNoiseCounter = 1ull << 32;

}  // namespace

// σ² = P / 10^(snr/10) with P = mean(x²): the noise has the asked SNR against the whole utterance
// (its pauses included, as a recording's noise floor would).
void add_white_noise(std::vector<float>& samples, double snr_db, uint64_t key) {
  if (samples.empty()) return;
  double power = 0;
  for (float x : samples) power += static_cast<double>(x) * x;
  power /= static_cast<double>(samples.size());
  double sigma = std::sqrt(power / std::pow(10.0, snr_db / 10.0));
  for (size_t i = 0; i < samples.size(); ++i) {
    double y = samples[i] + sigma * philox_normal(kNoiseCounter + i, key);
    samples[i] = static_cast<float>(std::clamp(y, -1.0, 1.0));
  }
}

}  // namespace attn::data
