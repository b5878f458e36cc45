// The King James Bible as plain training text, produced from Debian's bible-kjv package and
// cached on disk, plus the character-level train/validation split used by the decoder LM.
#pragma once
#include <string>
#include <string_view>

namespace attn::data {

// The whole KJV, one verse per line ('\n' endings), verse references removed. The first call
// runs `bible -f "Genesis 1:1-Revelation 22:21"` and caches the text in cache_dir/kjv.txt
// (written to a temp file and renamed); later calls read the cache. Throws std::runtime_error
// when the `bible` program is missing (install bible-kjv) or its output is implausibly short.
std::string kjv_corpus(const std::string& cache_dir);

// Removes the first whitespace-separated token (the reference, e.g. "Ge1:1") and the blanks
// after it from every line; normalises line endings to '\n'.
std::string strip_verse_references(std::string_view bible_output);

struct TextSplit {
  std::string train, val;
};
// The first round(train_fraction * size) characters are train, the rest validation.
TextSplit split_train_val(const std::string& text, double train_fraction = 0.9);

}  // namespace attn::data
