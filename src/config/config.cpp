#include "config/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <sstream>

namespace attn::config {

static KeySpec key(std::string path, KeyType type, std::string def, std::string doc) {
  KeySpec k;
  k.path = std::move(path);
  k.type = type;
  k.default_value = std::move(def);
  k.doc = std::move(doc);
  return k;
}
KeySpec int_key(std::string path, std::string def, std::string doc, double min, double max) {
  KeySpec k = key(std::move(path), KeyType::Int, std::move(def), std::move(doc));
  k.min = min, k.max = max;
  return k;
}
KeySpec float_key(std::string path, std::string def, std::string doc, double min, double max, bool min_exclusive) {
  KeySpec k = key(std::move(path), KeyType::Float, std::move(def), std::move(doc));
  k.min = min, k.max = max, k.min_exclusive = min_exclusive;
  return k;
}
// The same key with its maximum exclusive (AdamW's β < 1).
KeySpec below_max(KeySpec k) {
  k.max_exclusive = true;
  return k;
}
KeySpec bool_key(std::string path, std::string def, std::string doc) {
  return key(std::move(path), KeyType::Bool, std::move(def), std::move(doc));
}
KeySpec string_key(std::string path, std::string def, std::string doc) {
  return key(std::move(path), KeyType::String, std::move(def), std::move(doc));
}
KeySpec choice_key(std::string path, std::string def, std::string doc, std::vector<std::string> choices) {
  KeySpec k = key(std::move(path), KeyType::Choice, std::move(def), std::move(doc));
  k.choices = std::move(choices);
  return k;
}

KeySpec int_list_key(std::string path, std::string def, std::string doc, double min, double max) {
  KeySpec k = key(std::move(path), KeyType::IntList, std::move(def), std::move(doc));
  k.min = min, k.max = max;
  return k;
}

KeySpec auto_allowed(KeySpec k) {
  k.allow_auto = true;
  return k;
}

namespace {

const KeySpec* find_key(const std::string& path) {
  for (const KeySpec& k : schema())
    if (k.path == path) return &k;
  return nullptr;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string closest_key(const std::string& path) {
  const KeySpec* best = nullptr;
  size_t best_d = SIZE_MAX;
  for (const KeySpec& k : schema()) {
    size_t d = edit_distance(path, k.path);
    if (d < best_d) best_d = d, best = &k;
  }
  return best->path;
}

[[noreturn]] void fail(const std::string& key, const std::string& origin, const std::string& what) {
  throw ConfigError(fmt::format("config key '{}'{}: {}", key, origin.empty() ? "" : " (" + origin + ")", what));
}

bool parse_int(const std::string& v, int64_t& out) {
  try {
    size_t used;
    out = std::stoll(v, &used);
    return used == v.size();
  } catch (...) {
    return false;
  }
}

bool parse_float(const std::string& v, double& out) {
  try {
    size_t used;
    out = std::stod(v, &used);
    return used == v.size() && std::isfinite(out);
  } catch (...) {
    return false;
  }
}

// "[256, 512]" (any YAML flow list of integers; "[]" is empty).
bool parse_int_list(const std::string& v, std::vector<int64_t>& out) {
  YAML::Node n;
  try {
    n = YAML::Load(v);
  } catch (const YAML::Exception&) {
    return false;
  }
  if (!n.IsSequence()) return false;
  out.clear();
  for (const YAML::Node& e : n) {
    int64_t x;
    if (!e.IsScalar() || !parse_int(e.Scalar(), x)) return false;
    out.push_back(x);
  }
  return true;
}

std::string int_list_text(const std::vector<int64_t>& v) {
  return fmt::format("[{}]", fmt::join(v, ", "));
}

bool parse_bool(const std::string& v, bool& out) {
  if (v == "true" || v == "True" || v == "yes" || v == "on") return out = true, true;
  if (v == "false" || v == "False" || v == "no" || v == "off") return out = false, true;
  return false;
}

void check_value(const KeySpec& k, const std::string& v, const std::string& origin) {
  if (k.allow_auto && v == "auto") return;
  auto range = [&](double x, const std::string& text) {
    bool low = k.min_exclusive ? x <= k.min : x < k.min;
    bool high = k.max_exclusive ? x >= k.max : x > k.max;
    if (low || high)
      fail(k.path, origin,
           fmt::format("{} is out of range (must be {} {}{})", text, k.min_exclusive ? ">" : ">=", k.min,
                       k.max < 1e299 ? fmt::format(" and {} {}", k.max_exclusive ? "<" : "<=", k.max) : ""));
  };
  switch (k.type) {
    case KeyType::Int: {
      int64_t x;
      if (!parse_int(v, x)) fail(k.path, origin, "expected an integer, got '" + v + "'");
      range(static_cast<double>(x), v);
      break;
    }
    case KeyType::Float: {
      double x;
      if (!parse_float(v, x)) fail(k.path, origin, "expected a number, got '" + v + "'");
      range(x, v);
      break;
    }
    case KeyType::Bool: {
      bool b;
      if (!parse_bool(v, b)) fail(k.path, origin, "expected true or false, got '" + v + "'");
      break;
    }
    case KeyType::Choice:
      if (std::find(k.choices.begin(), k.choices.end(), v) == k.choices.end())
        fail(k.path, origin, fmt::format("'{}' is not one of {}", v, fmt::join(k.choices, ", ")));
      break;
    case KeyType::IntList: {
      std::vector<int64_t> xs;
      if (!parse_int_list(v, xs))
        fail(k.path, origin, "expected a list of integers such as [256, 512], got '" + v + "'");
      for (int64_t x : xs) range(static_cast<double>(x), fmt::format("{} (in {})", x, v));
      break;
    }
    case KeyType::String: break;
  }
}

// yaml-cpp keeps both entries of a key written twice; a config where the last one silently wins
// is an error instead (also `a: {b: 1}` next to `a.b`-style duplicates after flattening).
void flatten(const YAML::Node& node, const std::string& prefix, const std::string& path,
             std::vector<std::pair<std::string, YAML::Node>>& out) {
  for (auto it = node.begin(); it != node.end(); ++it) {
    std::string key = prefix.empty() ? it->first.as<std::string>() : prefix + "." + it->first.as<std::string>();
    for (const auto& seen : out)
      if (seen.first == key || seen.first.rfind(key + ".", 0) == 0)
        throw ConfigError(fmt::format("config key '{}' ({}): given twice", key, path));
    if (it->second.IsMap()) flatten(it->second, key, path, out);
    else out.push_back({key, it->second});
  }
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

}  // namespace


Config Config::defaults() {
  Config c;
  for (const KeySpec& k : schema()) c.values_[k.path] = k.default_value;
  return c;
}

void Config::assign(const std::string& key, const std::string& value, const std::string& origin, bool given) {
  const KeySpec* k = find_key(key);
  if (!k) throw ConfigError(fmt::format("unknown config key '{}'{} (did you mean '{}'?)", key,
                                        origin.empty() ? "" : " (" + origin + ")", closest_key(key)));
  check_value(*k, value, origin);
  std::vector<int64_t> list;
  values_[key] =
      k->type == KeyType::IntList && parse_int_list(value, list) ? int_list_text(list) : value;
  if (given && std::find(given_.begin(), given_.end(), key) == given_.end()) given_.push_back(key);
}

Config Config::from_file(const std::string& path) {
  if (!std::filesystem::exists(path)) throw ConfigError("config file '" + path + "' not found");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    throw ConfigError("config file '" + path + "': YAML error: " + e.what());
  }
  Config c = defaults();
  if (root.IsNull()) return c;
  if (!root.IsMap()) throw ConfigError("config file '" + path + "': the top level must be a mapping");
  std::vector<std::pair<std::string, YAML::Node>> flat;
  flatten(root, "", path, flat);
  for (auto& [key, node] : flat) {
    const KeySpec* k = find_key(key);
    if (k && k->type == KeyType::IntList && node.IsSequence()) {  // checked as its flow text
      c.assign(key, YAML::Dump(node), path, true);
      continue;
    }
    if (!node.IsScalar())
      throw ConfigError(fmt::format("config key '{}' ({}): expected a single value", key, path));
    c.assign(key, node.Scalar(), path, true);
  }
  return c;
}

void Config::set(const std::string& assignment) {
  size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError("--set '" + assignment + "': expected key=value, e.g. train.steps=100");
  assign(trim(assignment.substr(0, eq)), trim(assignment.substr(eq + 1)), "--set", true);
}

void Config::resolve(const std::string& key, const std::string& value) { assign(key, value, "resolved", false); }

bool Config::same_value(const std::string& key, const std::string& a, const std::string& b) {
  if (a == b) return true;
  const KeySpec* k = find_key(key);
  if (!k) return false;
  if (k->type == KeyType::Float) {
    double x, y;
    return parse_float(a, x) && parse_float(b, y) && x == y;
  }
  if (k->type == KeyType::Int) {
    int64_t x, y;
    return parse_int(a, x) && parse_int(b, y) && x == y;
  }
  if (k->type == KeyType::Bool) {
    bool x, y;
    return parse_bool(a, x) && parse_bool(b, y) && x == y;
  }
  if (k->type == KeyType::IntList) {
    std::vector<int64_t> x, y;
    return parse_int_list(a, x) && parse_int_list(b, y) && x == y;
  }
  return false;
}

bool Config::is_auto(const std::string& key) const { return get_string(key) == "auto"; }

const std::string& Config::get_string(const std::string& key) const {
  auto it = values_.find(key);
  if (it == values_.end()) throw std::logic_error("Config: no key " + key);
  return it->second;
}

int64_t Config::get_int(const std::string& key) const {
  int64_t x;
  if (!parse_int(get_string(key), x)) throw std::logic_error("Config: " + key + " is not an integer");
  return x;
}

double Config::get_float(const std::string& key) const {
  double x;
  if (!parse_float(get_string(key), x)) throw std::logic_error("Config: " + key + " is not a number (auto unresolved?)");
  return x;
}

bool Config::get_bool(const std::string& key) const {
  bool b;
  if (!parse_bool(get_string(key), b)) throw std::logic_error("Config: " + key + " is not a bool");
  return b;
}

std::vector<int64_t> Config::get_int_list(const std::string& key) const {
  std::vector<int64_t> v;
  if (!parse_int_list(get_string(key), v))
    throw std::logic_error("Config: " + key + " is not a list of integers");
  return v;
}

bool Config::uses(const KeySpec& k) const {
  if (k.tasks.empty()) return true;
  const std::string& task = get_string("task");
  return std::find(k.tasks.begin(), k.tasks.end(), task) != k.tasks.end();
}

void Config::check_keys_of_task() const {
  for (const std::string& key : given_) {
    const KeySpec* k = find_key(key);
    if (k && !uses(*k))
      throw ConfigError(fmt::format("config key '{}': task '{}' has no such key (it belongs to task {})", key,
                                    get_string("task"), fmt::join(k->tasks, ", ")));
  }
}

std::string Config::to_yaml() const {
  // Sections in order of first appearance, the keys of each together; only this task's keys.
  std::vector<std::string> sections;
  for (const KeySpec& k : schema()) {
    std::string sec = k.path.substr(0, k.path.find('.'));
    if (uses(k) && std::find(sections.begin(), sections.end(), sec) == sections.end()) sections.push_back(sec);
  }
  std::ostringstream os;
  for (const std::string& sec : sections) {
    os << (sec == sections.front() ? "" : "\n");
    if (sec == "task") {  // the one top-level key
      os << "task: " << get_string("task") << "\n";
      continue;
    }
    os << sec << ":\n";
    for (const KeySpec& k : schema()) {
      if (!uses(k) || k.path.compare(0, sec.size() + 1, sec + ".") != 0) continue;
      const std::string& v = get_string(k.path);
      bool quote = k.type == KeyType::String;
      os << "  " << k.path.substr(sec.size() + 1) << ": " << (quote ? YAML::Dump(YAML::Node(v)) : v) << "\n";
    }
  }
  return os.str();
}

std::string schema_markdown() {
  std::ostringstream os;
  os << "# Configuration keys\n\n"
     << "Generated by `attnlab config --doc` from the schema (the trainer's keys in `src/train/schema.cpp`,\n"
     << "the transformer's in `src/tasks/transformer_keys.cpp`, each task's in its own file); a test keeps\n"
     << "this file in step with it. Every run writes its fully resolved `config.yaml` (every key, with\n"
     << "`auto` values resolved) into its run directory. Override any key with `--set key=value`.\n"
     << "Unknown keys, wrong types and out-of-range values are errors that name the key (exit code 2).\n\n"
     << "Keys with a task in the last column exist for that task only.\n\n"
     << "| key | type | default | meaning | task |\n|---|---|---|---|---|\n";
  const char* names[] = {"int", "float", "bool", "string", "choice", "list of int"};
  for (const KeySpec& k : schema()) {
    std::string type = names[static_cast<int>(k.type)];
    if (k.type == KeyType::Choice) type = fmt::format("{}", fmt::join(k.choices, " \\| "));
    os << "| `" << k.path << "` | " << type << " | `" << (k.default_value.empty() ? "\"\"" : k.default_value) << "` | "
       << k.doc << " | " << (k.tasks.empty() ? "all" : fmt::format("{}", fmt::join(k.tasks, ", "))) << " |\n";
  }
  return os.str();
}

}  // namespace attn::config
