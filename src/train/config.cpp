#include "train/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <sstream>

namespace attn::train {

namespace {

KeySpec key(std::string path, KeyType type, std::string def, std::string doc) {
  KeySpec k;
  k.path = std::move(path);
  k.type = type;
  k.default_value = std::move(def);
  k.doc = std::move(doc);
  return k;
}
KeySpec int_key(std::string path, std::string def, std::string doc, double min, double max = 1e300) {
  KeySpec k = key(std::move(path), KeyType::Int, std::move(def), std::move(doc));
  k.min = min, k.max = max;
  return k;
}
KeySpec float_key(std::string path, std::string def, std::string doc, double min, double max = 1e300,
                  bool min_exclusive = false) {
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

// Upper bounds that keep every product of sizes (batch · length · width) far from int64 overflow.
constexpr double kMaxWidth = 1 << 20, kMaxLength = 1 << 20, kMaxCount = 1e12;

std::vector<KeySpec> build_schema() {
  std::vector<KeySpec> s = {
      string_key("run.name", "kjv-char", "Experiment name; the default run directory is runs/<name>-<variant>-s<seed>."),
      string_key("run.dir", "auto", "Run directory (auto: from run.name, the variant and the seed)."),
      int_key("run.seed", "1", "Seed of the initialisation, the data order and dropout.", 0, kMaxCount),
      int_key("run.threads", "0", "CPU threads (0: all cores).", 0, 1024),
      choice_key("run.device", "cpu", "cpu, or cuda: the GPU of this process's local rank (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID or LOCAL_RANK, modulo the visible devices; GPU 0 when launched alone).", {"cpu", "cuda"}),
      choice_key("run.precision", "f32", "f32: every tensor in f32. bf16 (cuda only): bf16 activations and working weights, cast in each forward from f32 master weights; master weights, their gradients, AdamW's state and the loss stay f32.", {"f32", "bf16"}),
      choice_key("data.corpus", "kjv", "kjv: the King James Bible from Debian's bible-kjv; text: a UTF-8/ASCII file (data.path); shards: llm.c token shards (data.path, data.val_path).", {"kjv", "text", "shards"}),
      string_key("data.path", "", "Text file (corpus text) or training token shard (corpus shards)."),
      string_key("data.val_path", "", "Validation token shard (corpus shards)."),
      choice_key("data.tokenizer", "char", "char: the corpus's distinct characters (saved with the run); byte: 256 byte values. Ignored for shards.", {"char", "byte"}),
      float_key("data.train_fraction", "0.9", "Leading fraction of the text (by character) used for training; the rest validates.", 0, 1, true),
      string_key("data.cache_dir", "data/cache", "Where the prepared corpus is cached."),
      int_key("data.vocab_size", "0", "Vocabulary size for token shards (0: max token id + 1).", 0, 2147483647),
      int_key("model.d_model", "128", "Width of the residual stream.", 1, kMaxWidth),
      int_key("model.n_layers", "4", "Transformer blocks.", 1, 4096),
      int_key("model.n_heads", "4", "Attention heads (must divide d_model).", 1, 4096),
      int_key("model.seq_len", "128", "Training sequence length n (also the maximum for learned/sinusoidal positions).", 2, kMaxLength),
      choice_key("model.mlp", "gelu", "MLP: gelu (4·d hidden) or swiglu (8/3·d hidden).", {"gelu", "swiglu"}),
      int_key("model.mlp_hidden", "0", "MLP hidden width (0: the MLP kind's default).", 0, kMaxWidth),
      choice_key("model.norm", "layer", "Normalisation: layer (LayerNorm) or rms (RMSNorm).", {"layer", "rms"}),
      choice_key("model.norm_placement", "pre", "pre: x + f(n(x)); post: n(x + f(x)); hybrid: x + n2(f(n1(x))).", {"pre", "post", "hybrid"}),
      float_key("model.norm_eps", "1e-5", "Epsilon of every norm.", 0, 1, true),
      choice_key("model.position", "rope", "Positions: none, learned, sinusoidal, rope or alibi (standard geometric slopes).", {"none", "learned", "sinusoidal", "rope", "alibi"}),
      float_key("model.rope_base", "10000", "RoPE frequency base.", 1),
      bool_key("model.tied_head", "true", "Output head shares the token embedding."),
      float_key("model.init_std", "0.02", "Std of the normal init of weights and embeddings.", 0, 10, true),
      bool_key("model.scaled_residual_init", "true", "Output projections use init_std / sqrt(2·n_layers) (GPT-2)."),
      float_key("model.dropout", "0", "Dropout on each residual branch.", 0, 0.99),
      choice_key("attention.variant", "softmax", "softmax; sigmoid: σ(qk·s + b); softmax1: softmax with an extra zero logit (quiet attention).", {"softmax", "sigmoid", "softmax1"}),
      float_key("attention.sigmoid_bias", "auto", "b of sigmoid attention (auto: -ln(model.seq_len)). Unused by the other variants.", -1e6, 1e6),
      bool_key("attention.qk_norm", "false", "Normalise q and k per head (over the head dim) before the product."),
      choice_key("attention.qk_norm_kind", "layer", "QK-norm kind: layer or rms.", {"layer", "rms"}),
      bool_key("attention.layer_scale", "false", "LayerScale: a learned per-channel scale on each residual branch."),
      float_key("attention.layer_scale_init", "1e-4", "Initial LayerScale value.", 0, 10),
      int_key("train.steps", "2000", "Optimizer steps.", 1, kMaxCount),
      int_key("train.batch_size", "32", "Sequences per micro-batch.", 1, kMaxLength),
      int_key("train.grad_accum", "1", "Micro-batches per optimizer step.", 1, kMaxLength),
      float_key("train.lr", "2e-3", "Peak learning rate.", 0, 10, true),
      int_key("train.warmup_steps", "100", "Linear warm-up steps.", 0, kMaxCount),
      float_key("train.min_lr_ratio", "0.1", "Cosine decay ends at lr·min_lr_ratio.", 0, 1),
      below_max(float_key("train.beta1", "0.9", "AdamW β1.", 0, 1)),
      below_max(float_key("train.beta2", "0.95", "AdamW β2.", 0, 1)),
      float_key("train.eps", "1e-8", "AdamW ε.", 0, 1, true),
      float_key("train.weight_decay", "0.1", "Decoupled weight decay (not on norms, biases, embeddings, LayerScale).", 0, 10),
      float_key("train.clip", "1.0", "Global gradient-norm clip (0: off).", 0),
      int_key("log.every", "10", "Steps between metric rows (and progress lines).", 1, kMaxCount),
      int_key("eval.every", "200", "Steps between evaluations (and at the end).", 1, kMaxCount),
      int_key("eval.batches", "20", "Validation batches per evaluation (0: the whole split).", 0, kMaxCount),
      int_key("checkpoint.every", "500", "Steps between checkpoints (and at the end).", 1, kMaxCount),
      int_key("checkpoint.keep", "2", "Checkpoints kept.", 1, 1000000),
  };
  for (KeySpec& k : s) k.allow_auto = k.default_value == "auto";
  return s;
}

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

bool parse_bool(const std::string& v, bool& out) {
  if (v == "true" || v == "True" || v == "yes" || v == "on") return out = true, true;
  if (v == "false" || v == "False" || v == "no" || v == "off") return out = false, true;
  return false;
}

void check_value(const KeySpec& k, const std::string& v, const std::string& origin) {
  if (k.allow_auto && v == "auto") return;
  auto range = [&](double x) {
    bool low = k.min_exclusive ? x <= k.min : x < k.min;
    bool high = k.max_exclusive ? x >= k.max : x > k.max;
    if (low || high)
      fail(k.path, origin,
           fmt::format("{} is out of range (must be {} {}{})", v, k.min_exclusive ? ">" : ">=", k.min,
                       k.max < 1e299 ? fmt::format(" and {} {}", k.max_exclusive ? "<" : "<=", k.max) : ""));
  };
  switch (k.type) {
    case KeyType::Int: {
      int64_t x;
      if (!parse_int(v, x)) fail(k.path, origin, "expected an integer, got '" + v + "'");
      range(static_cast<double>(x));
      break;
    }
    case KeyType::Float: {
      double x;
      if (!parse_float(v, x)) fail(k.path, origin, "expected a number, got '" + v + "'");
      range(x);
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

const std::vector<KeySpec>& schema() {
  static const std::vector<KeySpec> s = build_schema();
  return s;
}

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
  values_[key] = value;
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

std::string Config::to_yaml() const {
  std::ostringstream os;
  std::string section;
  for (const KeySpec& k : schema()) {
    size_t dot = k.path.find('.');
    std::string sec = k.path.substr(0, dot), name = k.path.substr(dot + 1);
    if (sec != section) os << (section.empty() ? "" : "\n") << sec << ":\n";
    section = sec;
    const std::string& v = get_string(k.path);
    bool quote = k.type == KeyType::String;
    os << "  " << name << ": " << (quote ? YAML::Dump(YAML::Node(v)) : v) << "\n";
  }
  return os.str();
}

std::string schema_markdown() {
  std::ostringstream os;
  os << "# Configuration keys\n\n"
     << "Generated by `attnlab config --doc` from the schema in `src/train/config.cpp`; a test keeps\n"
     << "this file in step with it. Every run writes its fully resolved `config.yaml` (every key, with\n"
     << "`auto` values resolved) into its run directory. Override any key with `--set key=value`.\n"
     << "Unknown keys, wrong types and out-of-range values are errors that name the key (exit code 2).\n\n"
     << "| key | type | default | meaning |\n|---|---|---|---|\n";
  const char* names[] = {"int", "float", "bool", "string", "choice"};
  for (const KeySpec& k : schema()) {
    std::string type = names[static_cast<int>(k.type)];
    if (k.type == KeyType::Choice) type = fmt::format("{}", fmt::join(k.choices, " \\| "));
    os << "| `" << k.path << "` | " << type << " | `" << (k.default_value.empty() ? "\"\"" : k.default_value) << "` | "
       << k.doc << " |\n";
  }
  return os.str();
}

}  // namespace attn::train
