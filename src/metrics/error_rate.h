// Character and word error rates of a transcription: the Levenshtein distance (insertions,
// deletions and substitutions, each costing 1) from the hypothesis to the reference, over the
// reference's length. A corpus rate is Σ edits / Σ reference lengths (ErrorCounts::operator+=),
// not the mean of the sentences' rates.
#pragma once
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

namespace attn::metrics {

// Two rows of the dynamic programme: O(|a|·|b|) time, O(|b|) memory.
template <class T>
int64_t edit_distance(std::span<const T> a, std::span<const T> b) {
  std::vector<int64_t> prev(b.size() + 1), cur(b.size() + 1);
  std::iota(prev.begin(), prev.end(), int64_t{0});  // from the empty prefix of a: j insertions
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = static_cast<int64_t>(i);
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] =
          std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

struct ErrorCounts {
  int64_t edits = 0, reference_length = 0;
  // edits / reference_length; an empty reference gives 0 without edits and +inf with some.
  double rate() const;
  ErrorCounts& operator+=(const ErrorCounts& o);
};

// Over the strings' bytes (one character each for the ASCII text of the KJV).
ErrorCounts char_errors(const std::string& hyp, const std::string& ref);
// Over the words, split on any run of whitespace.
ErrorCounts word_errors(const std::string& hyp, const std::string& ref);
std::vector<std::string> split_words(const std::string& s);

}  // namespace attn::metrics
