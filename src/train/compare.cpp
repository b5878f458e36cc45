#include "train/compare.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <map>
#include <nlohmann/json.hpp>

#include "train/config.h"
#include "train/run_files.h"

namespace fs = std::filesystem;

namespace attn::train {

namespace {

struct RunRecord {
  std::string dir;
  nlohmann::json summary;
  std::map<std::string, std::string> config;  // flat, without run.* but device and precision
};

// run.* keys say where a run was written, its seed, its threads: not what was compared. Device and
// precision change the numbers (bf16) and the speed, so they separate groups.
bool compared_key(const std::string& key) {
  return key.rfind("run.", 0) != 0 || key == "run.device" || key == "run.precision";
}

// A key's value, "(none)" for a key the run's config does not have (one no longer in the schema).
std::string value_of(const std::map<std::string, std::string>& config, const std::string& key) {
  auto it = config.find(key);
  return it != config.end() ? it->second : "(none)";
}

void flatten(const YAML::Node& n, const std::string& prefix, std::map<std::string, std::string>& out) {
  for (auto it = n.begin(); it != n.end(); ++it) {
    std::string key = prefix.empty() ? it->first.as<std::string>() : prefix + "." + it->first.as<std::string>();
    if (it->second.IsMap()) flatten(it->second, key, out);
    else if (compared_key(key)) out[key] = it->second.Scalar();
  }
}

// summary.json with the fields a table needs, or a ConfigError naming the file.
nlohmann::json read_summary(const std::string& path) {
  nlohmann::json s;
  try {
    s = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(fmt::format("compare: '{}' is not valid JSON: {}", path, e.what()));
  }
  for (const char* key : {"final_val_loss", "best_val_loss", "final_val_bpc", "tokens_per_s", "wall_time_s"})
    if (!s.is_object() || !s.contains(key) || !s[key].is_number())
      throw ConfigError(fmt::format("compare: '{}' has no number '{}' (not a summary attnlab wrote?)", path, key));
  if (!s.contains("parameters") || !s["parameters"].is_number_integer())
    throw ConfigError(fmt::format("compare: '{}' has no integer 'parameters'", path));
  return s;
}

std::vector<RunRecord> load_runs(const std::vector<std::string>& dirs) {
  std::vector<RunRecord> runs;
  std::vector<fs::path> seen;
  for (const std::string& d : dirs) {
    if (!fs::exists(d + "/summary.json")) {
      fmt::print(stderr, "compare: skipping '{}' (no summary.json: not a finished run)\n", d);
      continue;
    }
    const fs::path canonical = fs::canonical(d);
    if (std::find(seen.begin(), seen.end(), canonical) != seen.end()) {
      fmt::print(stderr, "compare: '{}' is given twice: counted once\n", d);
      continue;
    }
    seen.push_back(canonical);
    RunRecord r{d, read_summary(d + "/summary.json"), {}};
    try {
      flatten(YAML::LoadFile(d + "/config.yaml"), "", r.config);
    } catch (const YAML::Exception& e) {
      throw ConfigError(fmt::format("compare: '{}/config.yaml': {}", d, e.what()));
    }
    for (const KeySpec& k : schema())  // fill keys that did not exist when the run was written
      if (compared_key(k.path) && !r.config.count(k.path)) r.config[k.path] = k.default_value;
    runs.push_back(std::move(r));
  }
  if (runs.empty()) throw ConfigError("compare: no finished runs among the given directories");
  return runs;
}

std::string mean_std(const std::vector<double>& v, const char* fmt_one) {
  double m = 0;
  for (double x : v) m += x;
  m /= static_cast<double>(v.size());
  if (v.size() == 1) return fmt::format(fmt::runtime(fmt_one), m);
  double var = 0;
  for (double x : v) var += (x - m) * (x - m);
  double sd = std::sqrt(var / static_cast<double>(v.size() - 1));  // sample std
  return fmt::format(fmt::runtime(fmt_one), m) + " ± " + fmt::format(fmt::runtime(fmt_one), sd);
}

// Keys whose values differ between groups (besides the variant), to label the rows.
std::vector<std::string> differing_keys(const std::vector<std::vector<const RunRecord*>>& groups) {
  std::vector<std::string> keys;
  for (const auto& [k, v] : groups[0][0]->config) {
    if (k == "attention.variant") continue;
    for (const auto& g : groups)
      if (value_of(g[0]->config, k) != v) {
        keys.push_back(k);
        break;
      }
  }
  return keys;
}


// One table: runs of one unit (bits per char and per token are different measures).
std::string table(const std::vector<const RunRecord*>& runs) {
  std::vector<std::vector<const RunRecord*>> groups;
  for (const RunRecord* rp : runs) {
    const RunRecord& r = *rp;
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g[0]->config == r.config; });
    if (it == groups.end()) groups.push_back({&r});
    else it->push_back(&r);
  }
  std::vector<std::string> diff = differing_keys(groups);
  const std::string unit = runs[0]->summary.value("unit", "char");
  std::string out = fmt::format("| variant | runs | final val loss | best val loss | bits/{} | tokens/s | parameters | wall time (s) |\n",
                                unit);
  out += "|---|---|---|---|---|---|---|---|\n";
  for (const auto& g : groups) {
    auto col = [&](const char* key) {
      std::vector<double> v;
      for (const RunRecord* r : g) v.push_back(r->summary.at(key).get<double>());
      return v;
    };
    std::string label = g[0]->config.at("attention.variant");
    for (const std::string& k : diff) label += fmt::format(" {}={}", k, value_of(g[0]->config, k));
    out += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} |\n", label, g.size(), mean_std(col("final_val_loss"), "{:.4f}"),
                       mean_std(col("best_val_loss"), "{:.4f}"), mean_std(col("final_val_bpc"), "{:.4f}"),
                       mean_std(col("tokens_per_s"), "{:.0f}"), g[0]->summary.at("parameters").get<int64_t>(),
                       mean_std(col("wall_time_s"), "{:.0f}"));
  }
  return out;
}

}  // namespace

std::string compare_runs(const std::vector<std::string>& run_dirs) {
  const std::vector<RunRecord> runs = load_runs(run_dirs);
  std::vector<std::string> units;
  for (const RunRecord& r : runs)
    if (std::string u = r.summary.value("unit", "char"); std::find(units.begin(), units.end(), u) == units.end())
      units.push_back(u);
  std::string out;
  for (const std::string& unit : units) {
    std::vector<const RunRecord*> of_unit;
    for (const RunRecord& r : runs)
      if (r.summary.value("unit", "char") == unit) of_unit.push_back(&r);
    if (units.size() > 1) out += fmt::format("{}Runs measured per {}:\n\n", out.empty() ? "" : "\n", unit);
    out += table(of_unit);
  }
  return out;
}

}  // namespace attn::train
