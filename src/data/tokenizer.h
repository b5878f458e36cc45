// Tokenizers for the decoder LM: characters of a corpus (CharTokenizer) or raw bytes
// (ByteTokenizer). The vocabulary is saved with a run as JSON and restored exactly.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace attn::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Throws std::out_of_range on an id outside [0, vocab_size()).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual std::string kind() const = 0;  // "char" or "byte"
  virtual nlohmann::json to_json() const = 0;
  // Rebuilds the tokenizer that to_json() described; throws std::invalid_argument on bad JSON.
  static std::unique_ptr<Tokenizer> from_json(const nlohmann::json& j);
};

// Vocabulary: the sorted distinct bytes of a corpus; id = rank. JSON:
// {"kind": "char", "vocab_size": n, "vocab": [byte values, ascending]}.
class CharTokenizer : public Tokenizer {
 public:
  // Builds the vocabulary from a corpus (must not be empty).
  explicit CharTokenizer(std::string_view corpus);
  // From an explicit vocabulary: distinct byte values, ascending.
  static CharTokenizer from_vocab(std::vector<uint8_t> vocab);

  // Throws std::invalid_argument naming the character and its position when it is not in
  // the vocabulary.
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(vocab_.size()); }
  std::string kind() const override { return "char"; }
  nlohmann::json to_json() const override;
  const std::vector<uint8_t>& vocab() const { return vocab_; }

 private:
  CharTokenizer() = default;
  void set_vocab(std::vector<uint8_t> vocab);

  std::vector<uint8_t> vocab_;  // id -> byte
  int32_t id_of_[256] = {};     // byte -> id, -1 when absent
};

// 256 ids, id = byte value. JSON: {"kind": "byte", "vocab_size": 256}.
class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return 256; }
  std::string kind() const override { return "byte"; }
  nlohmann::json to_json() const override;
};

}  // namespace attn::data
