#include "data/spec_augment.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "tensor/philox.h"

namespace attn::data {

namespace {

// Counter layout: tag (bits 56-62) | stream (bits 16-55) | mask (bits 0-15). The tag keeps these
// counters apart from the batchers' (small) and the image augmentation's (bit 63) under the same
// seed; frequency masks count up from 0 and time masks from 2^15, so changing one count leaves
// the other kind's bands as they were.
constexpr uint64_t kSpecAugmentTag = uint64_t{0x53} << 56;
constexpr uint64_t kTimeMaskBase = uint64_t{1} << 15;
constexpr uint64_t kMaxStream = uint64_t{1} << 40;

void check_option(const char* name, int v) {
  if (v < 0 || static_cast<uint64_t>(v) >= kTimeMaskBase)
    throw std::invalid_argument(std::string("SpecAugmentOptions.") + name +
                                " must be in [0, 32767], got " + std::to_string(v));
}

// width uniform in [0, min(max_width, extent)], start uniform in [0, extent − width]. The
// reductions modulo a small m from 32 and 64 random bits have biases below m / 2^32, negligible.
MaskBand draw_band(uint64_t counter, uint64_t seed, int max_width, int64_t extent) {
  Philox4 r = philox4x32_10(counter, seed);
  const auto w_span = static_cast<uint64_t>(std::min<int64_t>(max_width, extent)) + 1;
  MaskBand b;
  b.width = static_cast<int64_t>(r.x[0] % w_span);
  const uint64_t start_bits = (static_cast<uint64_t>(r.x[1]) << 32) | r.x[2];
  b.start = static_cast<int64_t>(start_bits % static_cast<uint64_t>(extent - b.width + 1));
  return b;
}

}  // namespace

SpecAugmentMasks spec_augment_masks(int64_t frames, int64_t n_mels, const SpecAugmentOptions& o,
                                    uint64_t seed, uint64_t stream) {
  check_option("freq_masks", o.freq_masks);
  check_option("freq_width", o.freq_width);
  check_option("time_masks", o.time_masks);
  check_option("time_width", o.time_width);
  if (frames < 0 || n_mels < 1)
    throw std::invalid_argument("spec_augment: need frames >= 0 and n_mels >= 1, got " +
                                std::to_string(frames) + " x " + std::to_string(n_mels));
  if (stream >= kMaxStream)
    throw std::invalid_argument("spec_augment: stream must be < 2^40, got " +
                                std::to_string(stream));
  const uint64_t base = kSpecAugmentTag | (stream << 16);
  SpecAugmentMasks masks;
  for (int i = 0; i < o.freq_masks; ++i)
    masks.freq.push_back(draw_band(base | static_cast<uint64_t>(i), seed, o.freq_width, n_mels));
  for (int i = 0; i < o.time_masks; ++i)
    masks.time.push_back(
        draw_band(base | (kTimeMaskBase + static_cast<uint64_t>(i)), seed, o.time_width, frames));
  return masks;
}

void spec_augment(float* feats, int64_t frames, int64_t n_mels, const SpecAugmentOptions& o,
                  uint64_t seed, uint64_t stream) {
  const SpecAugmentMasks masks = spec_augment_masks(frames, n_mels, o, seed, stream);
  if (frames == 0) return;
  if (!feats) throw std::invalid_argument("spec_augment: null features");
  for (const MaskBand& b : masks.freq)
    for (int64_t t = 0; t < frames; ++t) std::fill_n(feats + t * n_mels + b.start, b.width, 0.0f);
  for (const MaskBand& b : masks.time)
    std::fill_n(feats + b.start * n_mels, b.width * n_mels, 0.0f);
}

}  // namespace attn::data
