#include "data/speech_phrases.h"

#include <cctype>
#include <cstring>
#include <optional>
#include <string_view>
#include <unordered_set>

namespace attn::data {

namespace {

// One piece between punctuation marks as a Phrase, or nullopt when it has other characters.
std::optional<Phrase> normalise_piece(std::string_view piece) {
  Phrase p;
  bool pending_space = false;
  for (char ch : piece) {
    auto c = static_cast<unsigned char>(ch);
    if (std::isdigit(c)) continue;  // verse numbers
    if (std::isspace(c) || ch == '-') {
      pending_space = !p.text.empty();
      continue;
    }
    if (!std::isalpha(c) && ch != '\'') return std::nullopt;
    if (pending_space) p.text += ' ', p.transcript += ' ';
    pending_space = false;
    p.text += ch;
    p.transcript += static_cast<char>(std::toupper(c));
  }
  return p;
}

}  // namespace

std::vector<Phrase> kjv_phrases(const std::string& verses, int min_chars, int max_chars) {
  std::vector<Phrase> out;
  std::unordered_set<std::string> seen;
  size_t start = 0;
  for (size_t i = 0; i <= verses.size(); ++i) {
    if (i < verses.size() && (verses[i] == '\0' || !std::strchr(",;:.?!\n", verses[i]))) continue;
    std::optional<Phrase> p = normalise_piece(std::string_view(verses).substr(start, i - start));
    start = i + 1;
    if (!p) continue;
    auto n = static_cast<int>(p->transcript.size());
    if (n < min_chars || n > max_chars || !seen.insert(p->transcript).second) continue;
    out.push_back(std::move(*p));
  }
  return out;
}

}  // namespace attn::data
