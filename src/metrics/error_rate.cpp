#include "metrics/error_rate.h"

#include <limits>
#include <sstream>

namespace attn::metrics {

double ErrorCounts::rate() const {
  if (reference_length == 0) return edits == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return static_cast<double>(edits) / static_cast<double>(reference_length);
}

ErrorCounts& ErrorCounts::operator+=(const ErrorCounts& o) {
  edits += o.edits;
  reference_length += o.reference_length;
  return *this;
}

ErrorCounts char_errors(const std::string& hyp, const std::string& ref) {
  return {edit_distance<char>(hyp, ref), static_cast<int64_t>(ref.size())};
}

std::vector<std::string> split_words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(std::move(w));
  return words;
}

ErrorCounts word_errors(const std::string& hyp, const std::string& ref) {
  const std::vector<std::string> h = split_words(hyp), r = split_words(ref);
  return {edit_distance<std::string>(h, r), static_cast<int64_t>(r.size())};
}

}  // namespace attn::metrics
