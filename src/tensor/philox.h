// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
// Counter-based: element i of a draw is a pure function of (seed, counter = offset + i), so the
// CPU and the GPU produce the same numbers in any order and any thread layout.
#pragma once
#include <cmath>
#include <cstdint>

#include "tensor/dtype.h"

namespace attn {

struct Philox4 {
  uint32_t x[4];
};

ATTNLAB_HD uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

ATTNLAB_HD Philox4 philox4x32_10(uint64_t counter, uint64_t seed) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    uint32_t lo0 = mulhilo32(0xD2511F53u, c0, &hi0);
    uint32_t lo1 = mulhilo32(0xCD9E8D57u, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// Uniform in [0, 1) with 24 random bits (exact in f32).
ATTNLAB_HD float philox_uniform(uint64_t counter, uint64_t seed) {
  return static_cast<float>(philox4x32_10(counter, seed).x[0] >> 8) * 0x1p-24f;
}

// Standard normal by Box-Muller (cosine branch) in f64, then rounded once: the host and the
// device then agree except when the two f64 results straddle an f32 rounding boundary.
ATTNLAB_HD double philox_normal(uint64_t counter, uint64_t seed) {
  Philox4 r = philox4x32_10(counter, seed);
  double u1 = (static_cast<double>(r.x[0]) + 1.0) * 0x1p-32;  // (0, 1]
  double u2 = static_cast<double>(r.x[1]) * 0x1p-32;          // [0, 1)
  return ::sqrt(-2.0 * ::log(u1)) * ::cos(6.283185307179586 * u2);
}

}  // namespace attn
