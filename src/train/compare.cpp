#include "train/compare.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <map>
#include <nlohmann/json.hpp>

#include "config/config.h"
#include "tasks/registry.h"
#include "train/run_files.h"
#include "util/log.h"

namespace fs = std::filesystem;

namespace attn::train {

using config::ConfigError;
using config::KeySpec;
using config::schema;

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

// A list (eval.lengths) as the config's own text of it, "[256, 512]".
std::string value_text(const YAML::Node& n) {
  if (!n.IsSequence()) return n.Scalar();
  std::vector<std::string> items;
  for (const YAML::Node& e : n) items.push_back(e.Scalar());
  return fmt::format("[{}]", fmt::join(items, ", "));
}

void flatten(const YAML::Node& n, const std::string& prefix, std::map<std::string, std::string>& out) {
  for (auto it = n.begin(); it != n.end(); ++it) {
    std::string key = prefix.empty() ? it->first.as<std::string>() : prefix + "." + it->first.as<std::string>();
    if (it->second.IsMap()) flatten(it->second, key, out);
    else if (compared_key(key)) out[key] = value_text(it->second);
  }
}

// The task a summary belongs to (runs written before tasks existed are LM runs).
std::string task_of(const nlohmann::json& summary) { return summary.value("task", "lm"); }

std::vector<tasks::Column> columns_of(const std::string& task) {
  std::vector<tasks::Column> cols = tasks::make_task(task)->compare_columns();
  cols.push_back({"parameters", "parameters", "{:.0f}"});
  cols.push_back({"wall_time_s", "wall time (s)", "{:.0f}"});
  return cols;
}

// "final_val_loss@*": a family of columns, one per suffix (tasks/task.h).
bool is_family(const tasks::Column& c) {
  return c.key.size() > 2 && c.key.compare(c.key.size() - 2, 2, "@*") == 0;
}

// A family's columns: the suffixes whose key every run has as a number, shortest first, then in
// text order (integers in their numeric order).
std::vector<tasks::Column> family_columns(const tasks::Column& c,
                                          const std::vector<const RunRecord*>& runs) {
  const std::string prefix = c.key.substr(0, c.key.size() - 1);  // "final_val_loss@"
  std::vector<std::string> suffixes;
  for (const auto& item : runs[0]->summary.items()) {
    const std::string& key = item.key();
    if (key.size() <= prefix.size() || key.compare(0, prefix.size(), prefix) != 0) continue;
    if (std::all_of(runs.begin(), runs.end(), [&](const RunRecord* r) {
          return r->summary.contains(key) && r->summary[key].is_number();
        }))
      suffixes.push_back(key.substr(prefix.size()));
  }
  std::sort(suffixes.begin(), suffixes.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() < b.size() : a < b;
  });
  std::vector<tasks::Column> out;
  for (const std::string& s : suffixes) {
    tasks::Column e{prefix + s, c.header, c.format};
    if (size_t at = e.header.find("{at}"); at != std::string::npos) e.header.replace(at, 4, s);
    out.push_back(std::move(e));
  }
  return out;
}

// summary.json with the numbers its task's table needs, or a ConfigError naming the file.
nlohmann::json read_summary(const std::string& path) {
  nlohmann::json s;
  try {
    s = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(fmt::format("compare: '{}' is not valid JSON: {}", path, e.what()));
  }
  if (!s.is_object()) throw ConfigError(fmt::format("compare: '{}' is not a JSON object", path));
  const std::string task = task_of(s);
  const auto& names = tasks::task_names();
  if (std::find(names.begin(), names.end(), task) == names.end())
    throw ConfigError(fmt::format("compare: '{}' is of task '{}', which this attnlab does not know", path, task));
  for (const tasks::Column& c : columns_of(task))
    if (!is_family(c) && (!s.contains(c.key) || !s[c.key].is_number()))
      throw ConfigError(fmt::format("compare: '{}' has no number '{}' (not a summary attnlab wrote?)", path, c.key));
  return s;
}

std::vector<RunRecord> load_runs(const std::vector<std::string>& dirs) {
  std::vector<RunRecord> runs;
  std::vector<fs::path> seen;
  for (const std::string& d : dirs) {
    if (!fs::exists(d + "/summary.json")) {
      logging::warn("compare: skipping '{}' (no summary.json: not a finished run)\n", d);
      continue;
    }
    const fs::path canonical = fs::canonical(d);
    if (std::find(seen.begin(), seen.end(), canonical) != seen.end()) {
      logging::warn("compare: '{}' is given twice: counted once\n", d);
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


// The inside-the-model statistics of the last evaluation (summary.json's final_* from
// stats.eval); a column is shown when every run of the table has it.
const std::vector<tasks::Column>& stats_columns() {
  static const std::vector<tasks::Column> cols = {
      {"final_max_kurtosis", "kurtosis (Gaussian 3)", "{:.3g}"},
      {"final_max_inf_norm", "max ∞-norm", "{:.3g}"},
      {"final_sink_mass", "sink mass", "{:.3f}"},
      {"final_row_mass", "row mass", "{:.3f}"},
  };
  return cols;
}

// One table as cells: runs of one task and one unit (bits per char and per token are different
// measures). Each cell keeps its numbers (the runs' values) for the JSON output.
struct Table {
  std::string task, unit;
  std::vector<std::string> headers, keys;  // keys: "variant", "runs", then the summary keys
  std::vector<std::string> formats;        // one per summary key
  struct Row {
    std::string label;
    size_t runs;
    std::vector<std::string> cells;             // formatted, one per column after variant and runs
    std::vector<std::vector<double>> values;    // the runs' numbers, one list per such column
    std::vector<std::string> dirs;
  };
  std::vector<Row> rows;
};

Table table(const std::vector<const RunRecord*>& runs) {
  std::vector<std::vector<const RunRecord*>> groups;
  for (const RunRecord* rp : runs) {
    const RunRecord& r = *rp;
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g[0]->config == r.config; });
    if (it == groups.end()) groups.push_back({&r});
    else it->push_back(&r);
  }
  std::vector<std::string> diff = differing_keys(groups);
  Table t{task_of(runs[0]->summary), runs[0]->summary.value("unit", ""), {"variant", "runs"}, {"variant", "runs"}, {}, {}};
  std::vector<tasks::Column> cols;
  for (const tasks::Column& c : columns_of(t.task)) {
    if (!is_family(c))
      cols.push_back(c);
    else
      for (tasks::Column& e : family_columns(c, runs)) cols.push_back(std::move(e));
  }
  for (const tasks::Column& c : stats_columns())
    if (std::all_of(runs.begin(), runs.end(), [&](const RunRecord* r) { return r->summary.contains(c.key) && r->summary[c.key].is_number(); }))
      cols.insert(cols.end() - 2, c);  // before parameters and wall time
  for (const tasks::Column& c : cols) {
    std::string h = c.header;
    if (size_t at = h.find("{unit}"); at != std::string::npos) h.replace(at, 6, t.unit);
    t.headers.push_back(h);
    t.keys.push_back(c.key);
    t.formats.push_back(c.format);
  }
  for (const auto& g : groups) {
    Table::Row row{g[0]->config.at("attention.variant"), g.size(), {}, {}, {}};
    for (const std::string& k : diff) row.label += fmt::format(" {}={}", k, value_of(g[0]->config, k));
    for (const RunRecord* r : g) row.dirs.push_back(r->dir);
    for (const tasks::Column& c : cols) {
      std::vector<double> v;
      for (const RunRecord* r : g) v.push_back(r->summary.at(c.key).get<double>());
      row.cells.push_back(c.key == "parameters" ? fmt::format("{:.0f}", v[0]) : mean_std(v, c.format.c_str()));
      row.values.push_back(std::move(v));
    }
    t.rows.push_back(std::move(row));
  }
  return t;
}

std::string markdown(const Table& t) {
  std::string out = "|", rule = "|";
  for (const std::string& h : t.headers) out += " " + h + " |", rule += "---|";
  out += "\n" + rule + "\n";
  for (const Table::Row& r : t.rows) {
    out += fmt::format("| {} | {} |", r.label, r.runs);
    for (const std::string& c : r.cells) out += " " + c + " |";
    out += "\n";
  }
  return out;
}

// RFC 4180: a field with a comma, quote or newline is quoted, its quotes doubled.
std::string csv_field(const std::string& f) {
  if (f.find_first_of(",\"\n") == std::string::npos) return f;
  std::string q = "\"";
  for (char ch : f) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return q + "\"";
}

// One line per configuration: task, unit, then the columns, means only (a std is a column of its
// own, <key>_std, empty for a single run), so a spreadsheet reads numbers.
std::string csv(const std::vector<Table>& tables) {
  std::string out;
  for (const Table& t : tables) {
    out += "task,unit,variant,runs";
    for (size_t i = 2; i < t.keys.size(); ++i) out += fmt::format(",{},{}", csv_field(t.keys[i]), csv_field(t.keys[i] + "_std"));
    out += "\n";
    for (const Table::Row& r : t.rows) {
      out += fmt::format("{},{},{},{}", csv_field(t.task), csv_field(t.unit), csv_field(r.label), r.runs);
      for (const std::vector<double>& v : r.values) {
        double m = 0, var = 0;
        for (double x : v) m += x;
        m /= static_cast<double>(v.size());
        for (double x : v) var += (x - m) * (x - m);
        out += fmt::format(",{}", m);
        out += v.size() > 1 ? fmt::format(",{}", std::sqrt(var / static_cast<double>(v.size() - 1))) : ",";
      }
      out += "\n";
    }
  }
  return out;
}

std::string json(const std::vector<Table>& tables) {
  nlohmann::json out = nlohmann::json::array();
  for (const Table& t : tables) {
    nlohmann::json jt = {{"task", t.task}, {"unit", t.unit}, {"rows", nlohmann::json::array()}};
    for (const Table::Row& r : t.rows) {
      nlohmann::json jr = {{"label", r.label}, {"runs", r.dirs}};
      for (size_t i = 2; i < t.keys.size(); ++i) jr["values"][t.keys[i]] = r.values[i - 2];
      jt["rows"].push_back(std::move(jr));
    }
    out.push_back(std::move(jt));
  }
  return out.dump(2) + "\n";
}

std::vector<Table> tables_of(const std::vector<std::string>& run_dirs) {
  const std::vector<RunRecord> runs = load_runs(run_dirs);
  // One table per (task, unit), in order of first appearance; never two tasks in one table.
  std::vector<std::pair<std::string, std::string>> kinds;
  auto kind_of = [](const RunRecord& r) { return std::pair{task_of(r.summary), r.summary.value("unit", "")}; };
  for (const RunRecord& r : runs)
    if (std::find(kinds.begin(), kinds.end(), kind_of(r)) == kinds.end()) kinds.push_back(kind_of(r));
  std::vector<Table> tables;
  for (const auto& kind : kinds) {
    std::vector<const RunRecord*> of_kind;
    for (const RunRecord& r : runs)
      if (kind_of(r) == kind) of_kind.push_back(&r);
    tables.push_back(table(of_kind));
  }
  return tables;
}

}  // namespace

std::vector<CompareTable> compare_tables(const std::vector<std::string>& run_dirs) {
  std::vector<CompareTable> out;
  for (const Table& t : tables_of(run_dirs)) {
    CompareTable c{t.task, t.unit, {t.keys.begin() + 2, t.keys.end()}, {t.headers.begin() + 2, t.headers.end()}, t.formats, {}};
    for (const Table::Row& r : t.rows) c.rows.push_back({r.label, r.dirs, r.values});
    out.push_back(std::move(c));
  }
  return out;
}

std::string compare_runs(const std::vector<std::string>& run_dirs, const std::string& format) {
  if (format != "md" && format != "csv" && format != "json")
    throw ConfigError("compare: --format must be md, csv or json, got '" + format + "'");
  const std::vector<Table> tables = tables_of(run_dirs);
  if (format == "csv") return csv(tables);
  if (format == "json") return json(tables);
  std::string out;
  for (const Table& t : tables) {
    if (tables.size() > 1)
      out += fmt::format("{}{} runs{}:\n\n", out.empty() ? "" : "\n", t.task, t.unit.empty() ? "" : ", measured per " + t.unit);
    out += markdown(t);
  }
  return out;
}

}  // namespace attn::train
