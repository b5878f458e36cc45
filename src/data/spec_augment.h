// SpecAugment on log-mel features [frames, n_mels] (data loader, CPU).
#pragma once
#include <cstdint>
#include <vector>

namespace attn::data {

// SpecAugment (Park et al. 2019) without time warping: freq_masks bands of mel bins and
// time_masks bands of frames set to 0 (the mean, after normalisation). Each band's width is
// uniform in [0, min(width, extent)], its start uniform in [0, extent − width]; bands may
// overlap.
struct SpecAugmentOptions {
  int freq_masks = 2, freq_width = 15, time_masks = 2, time_width = 20;
};

struct MaskBand {
  int64_t start = 0, width = 0;  // [start, start + width)
};
struct SpecAugmentMasks {
  std::vector<MaskBand> freq, time;  // freq_masks and time_masks bands, in draw order
};

// The bands spec_augment applies: a pure function of (seed, stream) and the sizes, drawn with
// Philox (tensor/philox.h), so a resumed run draws the same masks. The caller makes stream unique
// per draw, e.g. epoch · N + utterance (stream < 2^40). Throws std::invalid_argument naming the
// option when a count or width is outside [0, 32767].
SpecAugmentMasks spec_augment_masks(int64_t frames, int64_t n_mels, const SpecAugmentOptions& o,
                                    uint64_t seed, uint64_t stream);
void spec_augment(float* feats, int64_t frames, int64_t n_mels, const SpecAugmentOptions& o,
                  uint64_t seed, uint64_t stream);

}  // namespace attn::data
