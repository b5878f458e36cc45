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

// Passes when |a - b| <= atol + rtol·|b| everywhere (b is the reference); names the worst index.
inline ::testing::AssertionResult all_close(const Tensor& a, const Tensor& b, double atol,
                                            double rtol) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure()
           << "shapes differ: " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  std::vector<double> va = a.to_vector(), vb = b.to_vector();
  double worst = 0;
  size_t at = 0;
  bool ok = true;
  for (size_t i = 0; i < va.size(); ++i) {
    bool both_nan = std::isnan(va[i]) && std::isnan(vb[i]);
    bool same_inf = std::isinf(va[i]) && va[i] == vb[i];
    if (both_nan || same_inf) continue;
    double err = std::abs(va[i] - vb[i]), lim = atol + rtol * std::abs(vb[i]);
    if (!(err <= lim)) ok = false;
    if (!(err <= worst) || std::isnan(err)) {
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
