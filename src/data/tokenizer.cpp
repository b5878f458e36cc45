// Character and byte tokenizers; JSON save/restore of the vocabulary.
#include "data/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace attn::data {

namespace {

// 'a', '\n' or '\xNN', for error messages.
std::string describe_byte(unsigned char c) {
  if (c == '\n') return "'\\n'";
  if (c == '\t') return "'\\t'";
  if (c >= 0x20 && c < 0x7f) return std::string("'") + static_cast<char>(c) + "'";
  char buf[8];
  std::snprintf(buf, sizeof buf, "'\\x%02x'", c);
  return buf;
}

void check_id(int32_t id, int64_t vocab, size_t pos, const char* who) {
  if (id < 0 || id >= vocab)
    throw std::out_of_range(std::string(who) + ": id " + std::to_string(id) + " at position " +
                            std::to_string(pos) + " outside the vocabulary [0, " +
                            std::to_string(vocab) + ")");
}

std::vector<uint8_t> vocab_from_json(const nlohmann::json& j) {
  if (!j.contains("vocab") || !j["vocab"].is_array())
    throw std::invalid_argument("Tokenizer::from_json: a char tokenizer needs a \"vocab\" array");
  std::vector<uint8_t> vocab;
  for (const auto& v : j["vocab"]) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > 255)
      throw std::invalid_argument("Tokenizer::from_json: vocab entry " + v.dump() +
                                  " is not a byte value 0..255");
    vocab.push_back(static_cast<uint8_t>(v.get<int64_t>()));
  }
  return vocab;
}

}  // namespace

// ---- CharTokenizer ----------------------------------------------------------

CharTokenizer::CharTokenizer(std::string_view corpus) {
  bool seen[256] = {};
  for (char c : corpus) seen[static_cast<unsigned char>(c)] = true;
  std::vector<uint8_t> vocab;
  for (int b = 0; b < 256; ++b)
    if (seen[b]) vocab.push_back(static_cast<uint8_t>(b));
  set_vocab(std::move(vocab));
}

CharTokenizer CharTokenizer::from_vocab(std::vector<uint8_t> vocab) {
  CharTokenizer t;
  t.set_vocab(std::move(vocab));
  return t;
}

void CharTokenizer::set_vocab(std::vector<uint8_t> vocab) {
  vocab_ = std::move(vocab);
  if (vocab_.empty())
    throw std::invalid_argument("CharTokenizer: empty vocabulary (empty corpus?)");
  std::fill(std::begin(id_of_), std::end(id_of_), -1);
  for (size_t i = 0; i < vocab_.size(); ++i) {
    if (i > 0 && vocab_[i] <= vocab_[i - 1])
      throw std::invalid_argument(
          "CharTokenizer: vocabulary must be distinct ascending bytes, "
          "got " +
          describe_byte(vocab_[i]) + " after " + describe_byte(vocab_[i - 1]));
    id_of_[vocab_[i]] = static_cast<int32_t>(i);
  }
}

std::vector<int32_t> CharTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    ids[i] = id_of_[c];
    if (ids[i] < 0)
      throw std::invalid_argument("CharTokenizer::encode: character " + describe_byte(c) +
                                  " at position " + std::to_string(i) +
                                  " is not in the vocabulary (" + std::to_string(vocab_.size()) +
                                  " characters)");
  }
  return ids;
}

std::string CharTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    check_id(ids[i], vocab_size(), i, "CharTokenizer::decode");
    out[i] = static_cast<char>(vocab_[ids[i]]);
  }
  return out;
}

nlohmann::json CharTokenizer::to_json() const {
  return {{"kind", kind()}, {"vocab_size", vocab_size()}, {"vocab", vocab_}};
}

// ---- ByteTokenizer ----------------------------------------------------------

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    check_id(ids[i], 256, i, "ByteTokenizer::decode");
    out[i] = static_cast<char>(ids[i]);
  }
  return out;
}

nlohmann::json ByteTokenizer::to_json() const {
  return {{"kind", kind()}, {"vocab_size", vocab_size()}};
}

// ---- from_json --------------------------------------------------------------

std::unique_ptr<Tokenizer> Tokenizer::from_json(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("kind") || !j["kind"].is_string())
    throw std::invalid_argument("Tokenizer::from_json: expected an object with a \"kind\", got " +
                                j.dump().substr(0, 200));
  std::string kind = j["kind"].get<std::string>();
  std::unique_ptr<Tokenizer> tok;
  if (kind == "char")
    tok = std::make_unique<CharTokenizer>(CharTokenizer::from_vocab(vocab_from_json(j)));
  else if (kind == "byte")
    tok = std::make_unique<ByteTokenizer>();
  else
    throw std::invalid_argument("Tokenizer::from_json: unknown kind \"" + kind +
                                "\" (expected \"char\" or \"byte\")");
  if (j.contains("vocab_size") &&
      (!j["vocab_size"].is_number_integer() || j["vocab_size"].get<int64_t>() != tok->vocab_size()))
    throw std::invalid_argument("Tokenizer::from_json: vocab_size " + j["vocab_size"].dump() +
                                " does not match the " + kind + " vocabulary of " +
                                std::to_string(tok->vocab_size()));
  return tok;
}

}  // namespace attn::data
