// Additive white Gaussian noise at a chosen SNR, as the synthetic speech corpus adds it.
#pragma once
#include <cstdint>
#include <vector>

namespace attn::data {

// Additive white Gaussian noise at snr_db relative to the mean power of `samples`, drawn from
// Philox with `key` (deterministic); the result is clipped to [-1, 1].
void add_white_noise(std::vector<float>& samples, double snr_db, uint64_t key);

}  // namespace attn::data
