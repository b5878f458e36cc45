// The run configuration: a typed schema of every key (with its default and documentation), YAML
// loading, `--set a.b=c` overrides, validation with errors that name the key, and the resolved
// config written into the run directory. docs/config.md is generated from the same schema.
#pragma once
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace attn::train {

// Any problem with the user's configuration: bad key, bad type, bad value, missing file.
// The CLI turns it into one line on stderr and exit code 2.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class KeyType { Int, Float, Bool, String, Choice };

struct KeySpec {
  std::string path;  // "train.steps"
  KeyType type;
  std::string default_value;  // as YAML scalar text; "auto" where a rule computes it
  std::string doc;
  std::vector<std::string> choices;  // Choice only
  double min = -1e300, max = 1e300;  // Int / Float (inclusive unless *_exclusive)
  bool min_exclusive = false, max_exclusive = false;
  bool allow_auto = false;  // the value "auto" is accepted (resolved by a rule)
};

const std::vector<KeySpec>& schema();

// A flat, validated map from key path to its value as text. Every schema key is present.
class Config {
 public:
  static Config defaults();
  // Reads a YAML file; every key must be in the schema, and appear once.
  static Config from_file(const std::string& path);
  // Applies "a.b=c" (c is a YAML scalar; white space around key and value is dropped).
  void set(const std::string& assignment);
  // Keys given by the user (in a YAML file or with set()), as opposed to defaults and resolved values.
  const std::vector<std::string>& given_keys() const { return given_; }

  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  bool is_auto(const std::string& key) const;
  // Replaces an "auto" (or any) value with a resolved one, validated.
  void resolve(const std::string& key, const std::string& value);
  // Whether two values of `key` mean the same (2e-3 and 0.002 do).
  static bool same_value(const std::string& key, const std::string& a, const std::string& b);

  // Nested YAML with every key (comments: the docs).
  std::string to_yaml() const;

 private:
  void assign(const std::string& key, const std::string& value, const std::string& origin, bool given);
  std::map<std::string, std::string> values_;
  std::vector<std::string> given_;
};

// Markdown table of the schema (docs/config.md).
std::string schema_markdown();

}  // namespace attn::train
