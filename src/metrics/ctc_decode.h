// Greedy (best-path) CTC decoding: the most likely class of each frame, repeats collapsed, blanks
// dropped. A label repeated in the output needs a blank between its frames ("a ∅ a" → "aa",
// "a a" → "a"), as in the CTC loss (ops/ctc.cpp).
#pragma once
#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace attn::metrics {

// log_probs [B, T, C] on any device, any floating dtype (copied to the host); frames
// t >= input_lengths[b] are ignored. On a tie the first maximal class wins.
std::vector<std::vector<int32_t>> ctc_greedy_decode(const Tensor& log_probs,
                                                    const std::vector<int64_t>& input_lengths,
                                                    int64_t blank = 0);

}  // namespace attn::metrics
