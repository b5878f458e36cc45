// The text of the synthetic speech corpus: KJV verses cut into phrases, each with the transcript
// a recogniser is trained on.
#pragma once
#include <string>
#include <vector>

namespace attn::data {

// A KJV phrase: what espeak-ng is given, and its transcript.
struct Phrase {
  std::string text;        // the KJV words, whitespace normalised, hyphens as spaces
  std::string transcript;  // text upper-cased: only A-Z, space and apostrophe
};

// The verses (one per line) cut at , ; : . ? !, digits (verse numbers) removed, whitespace runs
// collapsed, '-' mapped to a space; a piece with any other character that is not a letter, space
// or apostrophe (the KJV's parentheses) is dropped, as is one whose transcript is shorter than
// min_chars or longer than max_chars. Deduplicated by transcript, in order of first occurrence.
std::vector<Phrase> kjv_phrases(const std::string& verses, int min_chars, int max_chars);

}  // namespace attn::data
