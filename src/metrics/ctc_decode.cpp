#include "metrics/ctc_decode.h"

#include <stdexcept>
#include <string>

namespace attn::metrics {

std::vector<std::vector<int32_t>> ctc_greedy_decode(const Tensor& log_probs,
                                                    const std::vector<int64_t>& input_lengths,
                                                    int64_t blank) {
  if (log_probs.dim() != 3 || log_probs.size(2) == 0)
    throw std::invalid_argument("ctc_greedy_decode: need log_probs [B, T, C] with C > 0, got " +
                                shape_str(log_probs.shape()));
  const int64_t B = log_probs.size(0), T = log_probs.size(1), C = log_probs.size(2);
  if (static_cast<int64_t>(input_lengths.size()) != B)
    throw std::invalid_argument("ctc_greedy_decode: log_probs " + shape_str(log_probs.shape()) +
                                " needs " + std::to_string(B) + " input lengths, got " +
                                std::to_string(input_lengths.size()));
  if (blank < 0 || blank >= C)
    throw std::out_of_range("ctc_greedy_decode: blank " + std::to_string(blank) + " outside [0, " +
                            std::to_string(C) + ")");
  const std::vector<double> v = log_probs.to_vector();
  std::vector<std::vector<int32_t>> out(B);
  for (int64_t b = 0; b < B; ++b) {
    if (input_lengths[b] < 0 || input_lengths[b] > T)
      throw std::out_of_range(
          "ctc_greedy_decode: input length " + std::to_string(input_lengths[b]) +
          " outside [0, T = " + std::to_string(T) + "] (sample " + std::to_string(b) + ")");
    int64_t prev = blank;  // a label right after a blank (or at the start) is new
    for (int64_t t = 0; t < input_lengths[b]; ++t) {
      const double* row = v.data() + (b * T + t) * C;
      int64_t best = 0;
      for (int64_t c = 1; c < C; ++c)
        if (row[c] > row[best]) best = c;
      if (best != blank && best != prev) out[b].push_back(static_cast<int32_t>(best));
      prev = best;
    }
  }
  return out;
}

}  // namespace attn::metrics
