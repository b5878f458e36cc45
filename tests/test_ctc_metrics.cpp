// Greedy CTC decoding (metrics/ctc_decode.h) and the character / word error rates
// (metrics/error_rate.h): hand-made frame sequences with known outputs; edit distances of known
// pairs; on random strings, agreement with a second, independent (recursive, memoised)
// Levenshtein distance, symmetry and the triangle inequality; CER and WER of known sentences.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "metrics/ctc_decode.h"
#include "metrics/error_rate.h"
#include "tensor/tensor.h"

using namespace attn;
using namespace attn::metrics;

namespace {

// log_probs [B, T, C] whose argmax at (b, t) is frames[b][t]: 0 there, −5 elsewhere (−1 marks
// padding frames, all −5).
Tensor frames_to_log_probs(const std::vector<std::vector<int>>& frames, int64_t C) {
  const int64_t B = static_cast<int64_t>(frames.size());
  int64_t T = 0;
  for (const auto& f : frames) T = std::max<int64_t>(T, static_cast<int64_t>(f.size()));
  std::vector<double> v(B * T * C, -5.0);
  for (int64_t b = 0; b < B; ++b)
    for (size_t t = 0; t < frames[b].size(); ++t)
      if (frames[b][t] >= 0) v[(b * T + t) * C + frames[b][t]] = 0.0;
  return from_vector(v, {B, T, C}, {DType::F64});
}

using Labels = std::vector<int32_t>;

TEST(CtcGreedyDecode, CollapsesRepeatsAndDropsBlanks) {
  // a = 1, b = 2, c = 3, blank = 0
  Tensor lp =
      frames_to_log_probs({{1, 1, 0, 1, 2, 2, 0},   // a a ∅ a b b ∅ -> a a b
                           {0, 0, 0, 0, 0, 0, 0},   // all blank -> nothing
                           {1, 0, 1, 0, 0, 1, 1},   // a ∅ a ∅ ∅ a a -> a a a
                           {3, 3, 3, 3, 3, 3, 3},   // one long c -> c
                           {2, 1, 2, 1, 3, 0, 3}},  // no blanks between changes -> b a b a c c
                          4);
  auto out = ctc_greedy_decode(lp, {7, 7, 7, 7, 7});
  ASSERT_EQ(out.size(), 5u);
  EXPECT_EQ(out[0], (Labels{1, 1, 2}));
  EXPECT_EQ(out[1], Labels{});
  EXPECT_EQ(out[2], (Labels{1, 1, 1}));
  EXPECT_EQ(out[3], Labels{3});
  EXPECT_EQ(out[4], (Labels{2, 1, 2, 1, 3, 3}));
}

TEST(CtcGreedyDecode, IgnoresFramesPastTheInputLength) {
  Tensor lp = frames_to_log_probs({{1, 2, 3, 3, 1}, {2, 2, 0, 2, 1}}, 4);
  auto out = ctc_greedy_decode(lp, {2, 4});
  EXPECT_EQ(out[0], (Labels{1, 2}));
  EXPECT_EQ(out[1], (Labels{2, 2}));
  EXPECT_EQ(ctc_greedy_decode(lp, {0, 0})[1], Labels{});
}

TEST(CtcGreedyDecode, TiesGoToTheFirstClass) {
  // Frame 0: classes 2 and 3 tie (-> 2). Frame 1: blank 0 and class 1 tie (-> blank). Frame 2:
  // classes 1 and 3 tie (-> 1).
  Tensor lp = from_vector({-3, -4, -1, -1,  //
                           -1, -1, -2, -2,  //
                           -2, -0.5, -2, -0.5},
                          {1, 3, 4}, {DType::F64});
  EXPECT_EQ(ctc_greedy_decode(lp, {3})[0], (Labels{2, 1}));
}

TEST(CtcGreedyDecode, AnyBlankIndexAndDtype) {
  // blank = 2: "0 0 2 0 1 2 2 1" -> 0 0 1 1
  Tensor lp = frames_to_log_probs({{0, 0, 2, 0, 1, 2, 2, 1}}, 3);
  EXPECT_EQ(ctc_greedy_decode(lp, {8}, 2)[0], (Labels{0, 0, 1, 1}));
  EXPECT_EQ(ctc_greedy_decode(lp.to(DType::F32), {8}, 2)[0], (Labels{0, 0, 1, 1}));
  EXPECT_EQ(ctc_greedy_decode(lp.to(DType::BF16), {8}, 2)[0], (Labels{0, 0, 1, 1}));
}

TEST(CtcGreedyDecode, BadArgumentsGiveOneClearError) {
  Tensor lp = frames_to_log_probs({{1, 2}}, 3);
  EXPECT_THROW(ctc_greedy_decode(from_vector({0, 1}, {2}), {1}), std::invalid_argument);
  EXPECT_THROW(ctc_greedy_decode(lp, {1, 1}), std::invalid_argument);
  EXPECT_THROW(ctc_greedy_decode(lp, {3}), std::out_of_range);
  EXPECT_THROW(ctc_greedy_decode(lp, {2}, 3), std::out_of_range);
  try {
    ctc_greedy_decode(lp, {3});
  } catch (const std::out_of_range& e) {
    EXPECT_NE(std::string(e.what()).find("input length 3 outside [0, T = 2]"), std::string::npos)
        << e.what();
  }
}

// ---- edit distance ---------------------------------------------------------------------------

int64_t ed(const std::string& a, const std::string& b) { return edit_distance<char>(a, b); }

TEST(EditDistance, KnownPairs) {
  EXPECT_EQ(ed("kitten", "sitting"), 3);
  EXPECT_EQ(ed("sitting", "kitten"), 3);
  EXPECT_EQ(ed("", "x"), 1);
  EXPECT_EQ(ed("x", ""), 1);
  EXPECT_EQ(ed("", ""), 0);
  EXPECT_EQ(ed("abc", "abc"), 0);
  EXPECT_EQ(ed("flaw", "lawn"), 2);
  EXPECT_EQ(ed("intention", "execution"), 5);
  EXPECT_EQ(ed("ab", "ba"), 2);  // no transpositions: two substitutions
  EXPECT_EQ(ed("", "abcd"), 4);
  const std::vector<int32_t> a = {1, 2, 3, 4}, b = {2, 3, 5};
  EXPECT_EQ(edit_distance<int32_t>(a, b), 2);  // delete 1, substitute 4 -> 5
}

// A second implementation, top-down: d(i, j) over the suffixes a[i:], b[j:], memoised.
int64_t memo_distance(const std::string& a, const std::string& b) {
  std::map<std::pair<size_t, size_t>, int64_t> memo;
  std::function<int64_t(size_t, size_t)> d = [&](size_t i, size_t j) -> int64_t {
    if (i == a.size()) return static_cast<int64_t>(b.size() - j);
    if (j == b.size()) return static_cast<int64_t>(a.size() - i);
    auto it = memo.find({i, j});
    if (it != memo.end()) return it->second;
    int64_t best = a[i] == b[j] ? d(i + 1, j + 1) : 1 + d(i + 1, j + 1);
    best = std::min({best, 1 + d(i + 1, j), 1 + d(i, j + 1)});
    return memo[{i, j}] = best;
  };
  return d(0, 0);
}

TEST(EditDistance, RandomStringsAgreeWithAnIndependentImplementation) {
  std::mt19937 rng(2024);
  std::uniform_int_distribution<int> len(0, 9), ch(0, 2);
  auto random_string = [&] {
    std::string s(len(rng), 'a');
    for (char& c : s) c = static_cast<char>('a' + ch(rng));
    return s;
  };
  for (int trial = 0; trial < 300; ++trial) {
    const std::string a = random_string(), b = random_string(), c = random_string();
    const int64_t ab = ed(a, b);
    ASSERT_EQ(ab, memo_distance(a, b)) << "'" << a << "' vs '" << b << "'";
    EXPECT_EQ(ab, ed(b, a)) << "symmetry: '" << a << "', '" << b << "'";
    EXPECT_LE(ed(a, c), ab + ed(b, c)) << "triangle: '" << a << "', '" << b << "', '" << c << "'";
    EXPECT_EQ(ed(a, a), 0);
    const int64_t la = static_cast<int64_t>(a.size()), lb = static_cast<int64_t>(b.size());
    EXPECT_GE(ab, std::abs(la - lb));
    EXPECT_LE(ab, std::max(la, lb));
  }
}

// ---- CER / WER -------------------------------------------------------------------------------

TEST(ErrorRates, KnownSentences) {
  const std::string ref = "IN THE BEGINNING GOD CREATED THE HEAVEN AND THE EARTH";
  const std::string hyp = "IN THE BEGINING GOD CREATED THE HEAVENS AND EARTH";
  // Characters: one N deleted, one S inserted, "THE " deleted: 6 of 53.
  ErrorCounts c = char_errors(hyp, ref);
  EXPECT_EQ(c.edits, 6);
  EXPECT_EQ(c.reference_length, 53);
  EXPECT_DOUBLE_EQ(c.rate(), 6.0 / 53.0);
  // Words: BEGINING and HEAVENS substituted, THE deleted: 3 of 10.
  ErrorCounts w = word_errors(hyp, ref);
  EXPECT_EQ(w.edits, 3);
  EXPECT_EQ(w.reference_length, 10);
  EXPECT_DOUBLE_EQ(w.rate(), 0.3);
}

TEST(ErrorRates, CorpusRateIsTotalEditsOverTotalLength) {
  ErrorCounts total;
  total += char_errors("IN THE BEGINING GOD CREATED THE HEAVENS AND EARTH",
                       "IN THE BEGINNING GOD CREATED THE HEAVEN AND THE EARTH");  // 6 / 53
  total += char_errors("AND THE EARTH WAS WITH OUT FORM AND VOID",
                       "AND THE EARTH WAS WITHOUT FORM AND VOID");  // 1 / 39
  EXPECT_EQ(total.edits, 7);
  EXPECT_EQ(total.reference_length, 92);
  EXPECT_DOUBLE_EQ(total.rate(), 7.0 / 92.0);
  EXPECT_NE(total.rate(), (6.0 / 53.0 + 1.0 / 39.0) / 2);  // not the mean of the rates
  ErrorCounts words;
  words += word_errors("AND THE EARTH WAS WITH OUT FORM AND VOID",
                       "AND THE EARTH WAS WITHOUT FORM AND VOID");  // WITH sub, OUT ins: 2 / 8
  EXPECT_EQ(words.edits, 2);
  EXPECT_EQ(words.reference_length, 8);
}

TEST(ErrorRates, WordsSplitOnAnyWhitespace) {
  ErrorCounts w = word_errors("  IN   THE\tBEGINNING\n", "IN THE BEGINNING");
  EXPECT_EQ(w.edits, 0);
  EXPECT_EQ(w.reference_length, 3);
  EXPECT_EQ(split_words(" a\t bc \n d "), (std::vector<std::string>{"a", "bc", "d"}));
  EXPECT_EQ(word_errors("", "GOD SAID").edits, 2);
  EXPECT_EQ(word_errors("GOD SAID", "").edits, 2);
}

TEST(ErrorRates, EmptyReference) {
  EXPECT_EQ(char_errors("", "").rate(), 0.0);
  EXPECT_EQ(char_errors("ab", "").rate(), std::numeric_limits<double>::infinity());
  EXPECT_EQ(char_errors("ab", "").edits, 2);
}

}  // namespace
