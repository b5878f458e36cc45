// The run configuration: a typed schema of every key (with its default and documentation), YAML
// loading, `--set a.b=c` overrides, validation with errors that name the key, and the resolved
// config written into the run directory. docs/config.md is generated from the same schema.
// The schema is the union of the trainer's keys and each task's: schema() is defined by the layer
// that knows the tasks (src/train/schema.cpp); this file is only the machinery.
#pragma once
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace attn::config {

// Any problem with the user's configuration: bad key, bad type, bad value, missing file.
// The CLI turns it into one line on stderr and exit code 2.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// IntList: a YAML flow list of integers, "[256, 512]" ("[]": empty), each within min..max; in a
// YAML file also a block list. Its text is kept in that canonical form.
enum class KeyType { Int, Float, Bool, String, Choice, IntList };

struct KeySpec {
  std::string path;  // "train.steps"
  KeyType type;
  std::string default_value;  // as YAML scalar text; "auto" where a rule computes it
  std::string doc;
  std::vector<std::string> choices;  // Choice only
  double min = -1e300, max = 1e300;  // Int, Float, IntList entries (inclusive unless *_exclusive)
  bool min_exclusive = false, max_exclusive = false;
  bool allow_auto = false;  // the value "auto" is accepted (resolved by a rule)
  std::vector<std::string> tasks;  // the tasks that have this key; empty: every task
};

// Upper bounds of size keys, shared by every part of the schema: they keep every product of sizes
// (batch · length · width) far from int64 overflow.
constexpr double kMaxWidth = 1 << 20, kMaxLength = 1 << 20, kMaxCount = 1e12;

// Every key, in documentation order (src/train/schema.cpp).
const std::vector<KeySpec>& schema();

// Key constructors for the schema's parts.
KeySpec int_key(std::string path, std::string def, std::string doc, double min, double max = 1e300);
KeySpec float_key(std::string path, std::string def, std::string doc, double min, double max = 1e300,
                  bool min_exclusive = false);
KeySpec bool_key(std::string path, std::string def, std::string doc);
KeySpec string_key(std::string path, std::string def, std::string doc);
KeySpec choice_key(std::string path, std::string def, std::string doc, std::vector<std::string> choices);
KeySpec int_list_key(std::string path, std::string def, std::string doc, double min,
                     double max = 1e300);
KeySpec below_max(KeySpec k);     // the maximum is exclusive (AdamW's β < 1)
KeySpec auto_allowed(KeySpec k);  // "auto" is a value (resolved by a rule)

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
  std::vector<int64_t> get_int_list(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  bool is_auto(const std::string& key) const;
  // Replaces an "auto" (or any) value with a resolved one, validated.
  void resolve(const std::string& key, const std::string& value);
  // Whether two values of `key` mean the same (2e-3 and 0.002 do).
  static bool same_value(const std::string& key, const std::string& a, const std::string& b);

  // Whether the key belongs to this config's task (the key "task").
  bool uses(const KeySpec& k) const;
  // ConfigError for a given key that the chosen task does not have.
  void check_keys_of_task() const;
  // Nested YAML with every key of this config's task.
  std::string to_yaml() const;

 private:
  void assign(const std::string& key, const std::string& value, const std::string& origin, bool given);
  std::map<std::string, std::string> values_;
  std::vector<std::string> given_;
};

// Markdown table of the schema (docs/config.md).
std::string schema_markdown();

}  // namespace attn::config
