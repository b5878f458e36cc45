// Helpers shared by the test suites.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backend/cuda/cuda_api.h"
#include "ops/ops.h"

namespace attn {
inline bool cuda_available_for_tests() { return cuda::device_count() > 0; }
}  // namespace attn

namespace attn::testing {

inline Tensor rand_tensor(const Shape& s, uint64_t seed, double lo = -1, double hi = 1,
                          DType dt = DType::F64) {
  Generator g(seed);
  return uniform(s, g, {dt}, lo, hi);
}

inline Tensor ids_tensor(const std::vector<int64_t>& ids, const Shape& s, DType dt = DType::I64) {
  std::vector<double> v(ids.begin(), ids.end());
  return from_vector(v, s, {dt});
}

// What all_close does with NaN and ±∞. By default any of them, on either side, fails: a test that
// compares two results that both went NaN (or both overflowed) has shown nothing, and NaN == NaN
// passing is how a NaN-producing bug slips through. kMustMatch is the opt-in for a test whose
// reference legitimately holds ±∞ or NaN in known places (e.g. lse = −∞ for a row with no
// visible key): those must then sit at the same indices with the same value (NaN with NaN).
enum class NonFinite { kFail, kMustMatch };

// Passes when |a - b| <= atol + rtol·|b| everywhere (b is the reference); names the worst index.
inline ::testing::AssertionResult all_close(const Tensor& a, const Tensor& b, double atol,
                                            double rtol, NonFinite nonfinite = NonFinite::kFail) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure()
           << "shapes differ: " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  std::vector<double> va = a.to_vector(), vb = b.to_vector();
  double worst = 0;
  size_t at = 0;
  bool ok = true;
  for (size_t i = 0; i < va.size(); ++i) {
    if (!std::isfinite(va[i]) || !std::isfinite(vb[i])) {
      const bool same = (std::isnan(va[i]) && std::isnan(vb[i])) || va[i] == vb[i];
      if (nonfinite == NonFinite::kMustMatch && same) continue;
      return ::testing::AssertionFailure()
             << "non-finite value at flat index " << i << " (a=" << va[i] << ", b=" << vb[i] << ")"
             << (nonfinite == NonFinite::kFail ? "; NaN/inf fail unless the test opts in with "
                                                 "NonFinite::kMustMatch"
                                               : "; they must match");
    }
    double err = std::abs(va[i] - vb[i]), lim = atol + rtol * std::abs(vb[i]);
    if (!(err <= lim)) ok = false;
    if (!(err <= worst)) {
      worst = err;
      at = i;
    }
  }
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max |a-b| = " << worst << " at flat index " << at
                                       << " (a=" << va[at] << ", b=" << vb[at] << "), atol "
                                       << atol << ", rtol " << rtol;
}

}  // namespace attn::testing
