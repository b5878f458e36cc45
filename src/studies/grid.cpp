#include "studies/grid.h"

#include <yaml-cpp/yaml.h>

#include <fmt/format.h>
#include <algorithm>
#include <filesystem>
#include <set>

#include "config/config.h"
#include "metrics/fake_quant.h"
#include "train/run_files.h"

namespace fs = std::filesystem;

namespace attn::studies {

using config::Config;
using config::ConfigError;

namespace {

[[noreturn]] void fail(const Grid& g, const std::string& what) {
  throw ConfigError(fmt::format("grid '{}': {}", g.path, what));
}

std::string scalar(const Grid& g, const YAML::Node& n, const std::string& where) {
  if (!n.IsScalar()) fail(g, where + ": expected a single value");
  return n.Scalar();
}

// The keys the sweep itself sets, or that name the study's own entries.
void check_axis_key(const Grid& g, const std::string& key, const std::string& where) {
  if (key.empty() || key.find('=') != std::string::npos ||
      key.find_first_of(" \t") != std::string::npos)
    fail(g, fmt::format("{}: '{}' is not a config key", where, key));
  if (key == "run.seed") fail(g, where + ": run.seed is set by the grid's `seeds:` list");
  if (key == "run.dir") fail(g, where + ": run.dir is set by the sweep (runs_dir/<run name>)");
}

// One `{key: K, values: [...]}` entry (an axis, or a member of a zip). An axis's values are
// distinct; a zip member's may repeat (sigmoid at three biases), its tuples being checked by
// the run names (check_names).
std::pair<std::string, std::vector<std::string>> key_values(const Grid& g, const YAML::Node& n,
                                                            const std::string& where, bool distinct) {
  if (!n.IsMap()) fail(g, where + ": expected {key: K, values: [...]}");
  for (auto it = n.begin(); it != n.end(); ++it) {
    const std::string k = it->first.as<std::string>();
    if (k != "key" && k != "values")
      fail(g, fmt::format("{}: unknown entry '{}' (expected key and values)", where, k));
  }
  if (!n["key"]) fail(g, where + ": has no `key:`");
  const std::string key = scalar(g, n["key"], where + " key");
  const std::string named = fmt::format("{} ('{}')", where, key);
  check_axis_key(g, key, named);
  const YAML::Node vs = n["values"];
  if (!vs || !vs.IsSequence() || vs.size() == 0)
    fail(g, named + ": expected `values:`, a non-empty list");
  std::vector<std::string> values;
  for (const YAML::Node& v : vs) {
    std::string s = scalar(g, v, named + " values");
    if (distinct && std::find(values.begin(), values.end(), s) != values.end())
      fail(g, fmt::format("{}: value '{}' is given twice", named, s));
    values.push_back(std::move(s));
  }
  return {key, values};
}

GridAxis parse_axis(const Grid& g, const YAML::Node& n, size_t i) {
  const std::string where = fmt::format("axis {}", i + 1);
  if (!n.IsMap()) fail(g, where + ": expected {key: K, values: [...]} or {zip: [...]}");
  GridAxis a;
  if (!n["zip"]) {
    auto [key, values] = key_values(g, n, where, true);
    a.keys = {key};
    for (std::string& v : values) a.values.push_back({std::move(v)});
    return a;
  }
  if (n.size() != 1) fail(g, where + ": a zip axis has only `zip:`");
  const YAML::Node z = n["zip"];
  if (!z.IsSequence() || z.size() < 2)
    fail(g, where + " (zip): expected a list of two or more {key, values}");
  std::vector<std::vector<std::string>> columns;
  for (size_t j = 0; j < z.size(); ++j) {
    auto [key, values] = key_values(g, z[j], fmt::format("{} (zip) entry {}", where, j + 1), false);
    a.keys.push_back(key);
    columns.push_back(std::move(values));
  }
  for (size_t j = 1; j < columns.size(); ++j)
    if (columns[j].size() != columns[0].size())
      fail(g, fmt::format(
                  "{} (zip of {}): '{}' has {} values but '{}' has {} (a zip needs equal lengths)",
                  where, fmt::join(a.keys, ", "), a.keys[0], columns[0].size(), a.keys[j],
                  columns[j].size()));
  a.values.resize(columns[0].size());
  for (size_t v = 0; v < columns[0].size(); ++v)
    for (const auto& col : columns) a.values[v].push_back(col[v]);
  return a;
}

// The name part of one value of an axis: "variant=sigmoid" or "variant=sigmoid,position=rope".
std::string name_part(const GridAxis& a, size_t v,
                      const std::map<std::string, std::string>& shorts) {
  std::string out;
  for (size_t k = 0; k < a.keys.size(); ++k)
    out += std::string(k ? "," : "") + shorts.at(a.keys[k]) + "=" + sanitise_value(a.values[v][k]);
  return out;
}

// Two values of one axis must not give one directory name.
void check_names(const Grid& g) {
  const auto shorts = short_key_names(axis_keys(g));
  for (size_t i = 0; i < g.axes.size(); ++i) {
    const GridAxis& a = g.axes[i];
    std::map<std::string, size_t> seen;
    for (size_t v = 0; v < a.values.size(); ++v) {
      auto [it, fresh] = seen.emplace(name_part(a, v, shorts), v);
      if (!fresh)
        fail(g, fmt::format("axis {} ('{}'): values '{}' and '{}' give the same run name part '{}'",
                            i + 1, fmt::join(a.keys, ", "), fmt::join(a.values[it->second], ", "),
                            fmt::join(a.values[v], ", "), it->first));
    }
  }
}

std::vector<int64_t> parse_seeds(const Grid& g, const YAML::Node& n) {
  if (!n.IsSequence() || n.size() == 0) fail(g, "seeds: expected a non-empty list of integers");
  std::vector<int64_t> seeds;
  for (const YAML::Node& s : n) {
    const std::string text = scalar(g, s, "seeds");
    int64_t x = 0;
    size_t used = 0;
    try {
      x = std::stoll(text, &used);
    } catch (...) {
      used = 0;
    }
    if (used != text.size() || text.empty() || x < 0)
      fail(g, fmt::format("seeds: '{}' is not a non-negative integer", text));
    if (std::find(seeds.begin(), seeds.end(), x) != seeds.end())
      fail(g, fmt::format("seeds: {} is given twice", x));
    seeds.push_back(x);
  }
  return seeds;
}

// `quant: [w8a8, ...]`: modes `attnlab eval --quant` accepts, each once.
std::vector<std::string> parse_quant(const Grid& g, const YAML::Node& n) {
  if (!n.IsSequence()) fail(g, "quant: expected a list of quantisation modes (e.g. [w8a8, w8a16])");
  std::vector<std::string> modes;
  for (const YAML::Node& m : n) {
    const std::string mode = scalar(g, m, "quant");
    try {
      metrics::parse_quant_scheme(mode);
    } catch (const std::invalid_argument& e) {
      fail(g, std::string("quant: ") + e.what());
    }
    if (std::find(modes.begin(), modes.end(), mode) != modes.end())
      fail(g, fmt::format("quant: '{}' is given twice", mode));
    modes.push_back(mode);
  }
  return modes;
}

void parse_top(Grid& g, const YAML::Node& root) {
  static const std::set<std::string> known = {"name",  "base",     "set",  "axes",
                                              "seeds", "runs_dir", "quant"};
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string k = it->first.as<std::string>();
    if (!known.count(k))
      fail(g, fmt::format("unknown entry '{}' (expected {})", k, fmt::join(known, ", ")));
  }
  if (!root["base"]) fail(g, "has no `base:` (the config file every run starts from)");
  g.base = scalar(g, root["base"], "base");
  if (!fs::is_regular_file(g.base))
    fail(g,
         fmt::format("base '{}' not found (paths are relative to the current directory)", g.base));
  g.name = root["name"] ? scalar(g, root["name"], "name") : fs::path(g.path).stem().string();
  if (g.name.empty() ||
      g.name.find_first_not_of(
          "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != std::string::npos)
    fail(g, fmt::format("name '{}': use letters, digits, '.', '_' and '-' only", g.name));
  if (const YAML::Node s = root["set"]) {
    if (!s.IsSequence()) fail(g, "set: expected a list of key=value");
    for (const YAML::Node& e : s) {
      std::string a = scalar(g, e, "set");
      const size_t eq = a.find('=');
      if (eq == std::string::npos || eq == 0) fail(g, fmt::format("set: '{}' is not key=value", a));
      check_axis_key(g, a.substr(0, a.find_last_not_of(" \t", eq - 1) + 1),
                     fmt::format("set '{}'", a));
      g.sets.push_back(std::move(a));
    }
  }
  if (const YAML::Node a = root["axes"]) {
    if (!a.IsSequence()) fail(g, "axes: expected a list");
    for (size_t i = 0; i < a.size(); ++i) g.axes.push_back(parse_axis(g, a[i], i));
  }
  g.runs_dir = root["runs_dir"] ? scalar(g, root["runs_dir"], "runs_dir") : "runs/" + g.name;
  if (root["quant"]) g.quant = parse_quant(g, root["quant"]);
}

// A key given twice (two axes, or an axis and `set:`) would leave one of them meaningless.
void check_unique_keys(const Grid& g) {
  std::map<std::string, std::string> where;
  for (const std::string& s : g.sets) {
    std::string key = s.substr(0, s.find('='));
    key.erase(key.find_last_not_of(" \t") + 1);
    where.emplace(key, "set");
  }
  for (size_t i = 0; i < g.axes.size(); ++i)
    for (const std::string& k : g.axes[i].keys) {
      auto [it, fresh] = where.emplace(k, fmt::format("axis {}", i + 1));
      if (!fresh)
        fail(g,
             fmt::format("key '{}' is in {} and in axis {}: give it once", k, it->second, i + 1));
    }
}

}  // namespace

std::string sanitise_value(const std::string& value) {
  std::string out = value;
  for (char& c : out)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '+' &&
        c != '-')
      c = '_';
  return out;
}

std::map<std::string, std::string> short_key_names(const std::vector<std::string>& keys) {
  // The last n dot-separated components of a key (the whole key when it has fewer).
  auto suffix = [](const std::string& key, size_t n) {
    size_t at = key.size();
    for (size_t i = 0; i < n; ++i) {
      if (at == 0 || (at = key.rfind('.', at - 1)) == std::string::npos) return key;
    }
    return key.substr(at + 1);
  };
  std::map<std::string, std::string> out;
  for (const std::string& k : keys) {
    size_t n = 1;
    auto collides = [&] {
      return std::any_of(keys.begin(), keys.end(), [&](const std::string& o) {
        return o != k && suffix(o, n) == suffix(k, n);
      });
    };
    while (collides() && suffix(k, n) != k) ++n;
    out[k] = suffix(k, n);
  }
  return out;
}

std::vector<std::string> axis_keys(const Grid& grid) {
  std::vector<std::string> keys;
  for (const GridAxis& a : grid.axes) keys.insert(keys.end(), a.keys.begin(), a.keys.end());
  return keys;
}

Grid load_grid(const std::string& path, const std::string& runs_dir_override) {
  Grid g;
  g.path = path;
  if (!fs::is_regular_file(path)) throw ConfigError(fmt::format("grid file '{}' not found", path));
  g.text = train::read_file(path);
  YAML::Node root;
  try {
    root = YAML::Load(g.text);
  } catch (const YAML::Exception& e) {
    fail(g, std::string("YAML error: ") + e.what());
  }
  if (!root.IsMap())
    fail(g, "the top level must be a mapping (base, set, axes, seeds, name, runs_dir, quant)");
  parse_top(g, root);
  check_unique_keys(g);
  check_names(g);
  if (!runs_dir_override.empty()) g.runs_dir = runs_dir_override;
  if (root["seeds"]) {
    g.seeds = parse_seeds(g, root["seeds"]);
  } else {
    std::string where = "base";  // the seed the runs would have without a sweep
    try {
      Config c = Config::from_file(g.base);
      for (const std::string& s : g.sets) where = "set '" + s + "'", c.set(s);
      g.seeds = {c.get_int("run.seed")};
    } catch (const ConfigError& e) {
      fail(g, where + ": " + e.what());
    }
  }
  return g;
}

std::vector<GridRun> expand_grid(const Grid& g) {
  const auto shorts = short_key_names(axis_keys(g));
  size_t points = 1;
  for (const GridAxis& a : g.axes) points *= a.values.size();
  std::vector<GridRun> runs;
  for (int64_t seed : g.seeds) {
    for (size_t p = 0; p < points; ++p) {
      GridRun r;
      r.index = runs.size();
      r.seed = seed;
      r.at.resize(g.axes.size());
      size_t rest = p;  // mixed radix, the first axis the slowest
      for (size_t i = g.axes.size(); i-- > 0;) {
        r.at[i] = rest % g.axes[i].values.size();
        rest /= g.axes[i].values.size();
      }
      for (size_t i = 0; i < g.axes.size(); ++i) {
        const GridAxis& a = g.axes[i];
        if (i) r.point += ',';
        r.point += name_part(a, r.at[i], shorts);
        for (size_t k = 0; k < a.keys.size(); ++k)
          r.sets.emplace_back(a.keys[k], a.values[r.at[i]][k]);
      }
      r.name = (r.point.empty() ? "" : r.point + ",") + "s" + std::to_string(seed);
      if (r.name.size() > 255)
        fail(g, fmt::format("run name '{}' is longer than a file name may be", r.name));
      r.dir = (fs::path(g.runs_dir) / r.name).string();
      runs.push_back(std::move(r));
    }
  }
  return runs;
}

}  // namespace attn::studies
