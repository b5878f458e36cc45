#include "studies/report.h"

#include <fmt/format.h>
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "studies/divergence.h"
#include "studies/grid.h"
#include "studies/paired_stats.h"
#include "studies/process_pool.h"
#include "studies/quant_eval.h"
#include "studies/run_plan.h"
#include "train/compare.h"
#include "train/run_files.h"

#ifndef ATTNLAB_SCRIPTS_DIR
#define ATTNLAB_SCRIPTS_DIR "scripts"
#endif

namespace fs = std::filesystem;
using nlohmann::json;

namespace attn::studies {

namespace {

// What became of a run of the grid, from its directory and the sweep's status file.
struct Outcome {
  std::string state;  // finished, diverged, failed, interrupted, not run
  std::optional<int> exit;
  std::string log;                     // empty when the sweep left none
  std::optional<int64_t> diverged_at;  // diverged: the step of the non-finite loss
};

// The exit code in one of the sweep's status files (nullopt when there is none).
std::optional<int> status_exit(const std::string& path, std::string* error = nullptr) {
  if (!fs::exists(path)) return std::nullopt;
  const json s = json::parse(train::read_file(path), nullptr, false);
  if (error && s.is_object() && s.contains("error") && s["error"].is_string())
    *error = s["error"].get<std::string>();
  if (s.is_object() && s.contains("exit") && s["exit"].is_number_integer())
    return s["exit"].get<int>();
  return std::nullopt;
}

Outcome outcome_of(const Grid& g, const GridRun& r) {
  Outcome o;
  if (fs::exists(log_file(g, r))) o.log = log_file(g, r);
  o.exit = status_exit(status_file(g, r));
  o.diverged_at = diverged_at(r.dir);
  if (fs::exists(r.dir + "/summary.json"))
    o.state = "finished";
  else if (o.diverged_at)
    o.state = "diverged";
  else if (o.exit && *o.exit != 0)
    o.state = "failed";
  else if (fs::exists(r.dir + "/config.yaml"))
    o.state = "interrupted";
  else
    o.state = "not run";
  return o;
}

// A grid point: one combination of axis values, its runs (one per seed).
struct Point {
  std::vector<size_t> at;
  std::string name;
  std::vector<const GridRun*> runs;
};

std::vector<Point> points_of(const std::vector<GridRun>& runs) {
  std::vector<Point> points;
  for (const GridRun& r : runs) {
    auto it =
        std::find_if(points.begin(), points.end(), [&](const Point& p) { return p.at == r.at; });
    if (it == points.end())
      points.push_back({r.at, r.point, {&r}});
    else
      it->runs.push_back(&r);
  }
  return points;
}

// The paired baseline: the point with softmax on the axis that holds attention.variant, the
// other axes unchanged. -1 when the grid has no such axis.
struct Baseline {
  int axis = -1;
  size_t value = 0;
};

Baseline baseline_of(const Grid& g) {
  for (size_t i = 0; i < g.axes.size(); ++i) {
    const GridAxis& a = g.axes[i];
    auto k = std::find(a.keys.begin(), a.keys.end(), "attention.variant");
    if (k == a.keys.end()) continue;
    const size_t ki = static_cast<size_t>(k - a.keys.begin());
    for (size_t v = 0; v < a.values.size(); ++v)
      if (a.values[v][ki] == "softmax") return {static_cast<int>(i), v};
  }
  return {};
}

// One metric's values at one point, by seed.
struct Cell {
  std::vector<int64_t> seeds;
  std::vector<double> values;
};

std::string num(const std::string& format, double x) {
  return fmt::format(fmt::runtime(format), x);
}

struct MetricTable {
  std::string md;
  json rows = json::array();
};

// One metric's table: a row per point (its axis values, the seeds that have a value, mean ± std,
// the paired difference against the baseline). With diverged runs in the grid, a column
// "diverged" counts them per point (k/n of its seeds): what a stability study is about.
MetricTable metric_table(const Grid& g, const std::vector<Point>& points, const Baseline& base,
                         const std::map<std::string, double>& value_by_dir,
                         const std::string& format, const std::set<std::string>& diverged) {
  auto cell = [&](const Point& p) {
    Cell c;
    for (const GridRun* r : p.runs)
      if (auto it = value_by_dir.find(r->dir); it != value_by_dir.end())
        c.seeds.push_back(r->seed), c.values.push_back(it->second);
    return c;
  };
  const auto shorts = short_key_names(axis_keys(g));
  MetricTable t;
  std::string head = "|", rule = "|";
  for (const std::string& k : axis_keys(g)) head += " " + shorts.at(k) + " |", rule += "---|";
  head += " seeds |", rule += "---|";
  if (!diverged.empty()) head += " diverged |", rule += "---|";
  head += " mean ± std |", rule += "---|";
  if (base.axis >= 0) head += " Δ vs softmax (paired by seed) | 95% CI of Δ |", rule += "---|---|";
  t.md = head + "\n" + rule + "\n";
  for (const Point& p : points) {
    const Cell c = cell(p);
    json row = {
        {"point", p.name}, {"seeds", c.seeds}, {"values", c.values}, {"n", c.values.size()}};
    std::string line = "|";
    for (size_t i = 0; i < g.axes.size(); ++i) {
      const GridAxis& a = g.axes[i];
      for (size_t k = 0; k < a.keys.size(); ++k) {
        line += " " + a.values[p.at[i]][k] + " |";
        row["axes"][a.keys[k]] = a.values[p.at[i]][k];
      }
    }
    line += fmt::format(" {} |", c.values.size());
    if (!diverged.empty()) {
      const size_t k = std::count_if(p.runs.begin(), p.runs.end(),
                                     [&](const GridRun* r) { return diverged.count(r->dir) > 0; });
      row["diverged"] = k;
      line += fmt::format(" {}/{} |", k, p.runs.size());
    }
    if (c.values.empty()) {
      line += " — |";
    } else {
      const double m = mean_of(c.values);
      const std::optional<double> sd = sample_std(c.values);
      row["mean"] = m;
      row["std"] = sd ? json(*sd) : json(nullptr);
      line += " " + num(format, m) + (sd ? " ± " + num(format, *sd) : "") + " |";
    }
    if (base.axis >= 0) {
      std::vector<size_t> at = p.at;
      at[static_cast<size_t>(base.axis)] = base.value;
      const Point* bp =
          &*std::find_if(points.begin(), points.end(), [&](const Point& q) { return q.at == at; });
      row["baseline"] = bp->name;
      if (bp == &p) {
        line += " baseline | |";
      } else {
        const Cell bc = cell(*bp);
        std::vector<double> x, b;  // the seeds both have
        for (size_t i = 0; i < c.seeds.size(); ++i)
          for (size_t j = 0; j < bc.seeds.size(); ++j)
            if (c.seeds[i] == bc.seeds[j]) x.push_back(c.values[i]), b.push_back(bc.values[j]);
        if (x.empty()) {
          line += " no paired runs | |";
        } else {
          const PairedDifference d = paired_difference(x, b);
          row["diff"] = {{"n", d.n},
                         {"mean", d.mean},
                         {"std", d.std ? json(*d.std) : json(nullptr)},
                         {"ci_low", d.low ? json(*d.low) : json(nullptr)},
                         {"ci_high", d.high ? json(*d.high) : json(nullptr)}};
          line += fmt::format(" {} (n = {}) |", num(format, d.mean), d.n);
          line += d.low ? fmt::format(" [{}, {}] |", num(format, *d.low), num(format, *d.high))
                        : " n = 1, no interval |";
        }
      }
    }
    t.md += line + "\n";
    t.rows.push_back(std::move(row));
  }
  return t;
}

// The plots of scripts/report_plots.py into out/plots; the PNGs made, or why none were.
struct Plots {
  std::vector<std::string> files;  // relative to out
  std::string error;
};

Plots make_plots(const std::vector<Point>& points, const std::vector<train::CompareTable>& tables,
                 const std::map<std::string, std::string>& states, const fs::path& out) {
  const fs::path dir = out / "plots";
  fs::create_directories(dir);
  static const char* names[] = {"loss_curves.png", "final_metrics.png", "layer_stats.png"};
  for (const char* n : names) fs::remove(dir / n);  // never show a plot of an earlier report
  const char* py = std::getenv("ATTNLAB_PLOT_PYTHON");
  const char* script = std::getenv("ATTNLAB_REPORT_PLOTS");
  Job job{
      {py && *py ? py : "/usr/bin/python3",
       script && *script ? script : ATTNLAB_SCRIPTS_DIR "/report_plots.py", "--out", dir.string()},
      (dir / "report_plots.log").string()};
  fs::remove(job.log);
  for (const train::CompareTable& t : tables)
    for (size_t c = 0; c < t.keys.size(); ++c)
      if (t.keys[c] != "parameters")
        job.argv.insert(job.argv.end(), {"--metric", t.keys[c] + "=" + t.headers[c]});
  for (const Point& p : points) {
    std::vector<std::string> dirs;
    for (const GridRun* r : p.runs)
      if (states.at(r->dir) == "finished") dirs.push_back(r->dir);
    if (dirs.empty()) continue;
    job.argv.insert(job.argv.end(), {"--group", p.name.empty() ? "all" : p.name});
    job.argv.insert(job.argv.end(), dirs.begin(), dirs.end());
  }
  Plots pl;
  const JobResult r = run_jobs({job}, {}).front();
  if (r.exit_code != 0)
    pl.error =
        fmt::format("{} failed (exit {}); its output: {}", job.argv[1], r.exit_code, job.log);
  for (const char* n : names)
    if (fs::exists(dir / n)) pl.files.push_back((fs::path("plots") / n).string());
  return pl;
}

// Why a finished run has no current result of a quantised evaluation: the sweep's failure (its
// exit code or the check of its output, and its log) or the result's state.
std::string missing_eval(const Grid& g, const GridRun& r, const std::string& mode,
                         const EvalStatus& st) {
  std::string error;
  const std::optional<int> exit = status_exit(status_file(g, r, eval_log_suffix(mode)), &error);
  const std::string log = log_file(g, r, eval_log_suffix(mode));
  if (exit && *exit != 0) return fmt::format("failed (exit {}); log `{}`", *exit, log);
  if (!error.empty()) return fmt::format("failed ({}); log `{}`", error, log);
  return st.why;
}

struct QuantSection {
  std::string md;
  json metrics = json::array();
};

// One mode's `metric` of the runs of a compare table, by run directory: full precision,
// quantised, the change. A finished run without a current result adds a line to `missing`.
struct QuantValues {
  std::map<std::string, double> full, quant, change;
};

QuantValues quant_values(const Grid& g, const train::CompareTable& t, const std::string& mode,
                         const std::string& metric,
                         const std::map<std::string, const GridRun*>& run_by_dir,
                         std::string& missing) {
  QuantValues v;
  for (const train::CompareTable::Row& row : t.rows)
    for (const std::string& dir : row.dirs) {
      const GridRun* run = run_by_dir.at(dir);
      const EvalStatus st = eval_status(dir, mode);
      if (st.state != EvalState::Current) {
        missing +=
            fmt::format("| {} | {} | {} |\n", run->name, mode, missing_eval(g, *run, mode, st));
        continue;
      }
      const json e = json::parse(train::read_file(eval_path(dir, mode)));
      const json &fp = e["quant"]["full_precision"], &qu = e["quant"]["quantised"];
      if (!fp.contains(metric) || !fp[metric].is_number() || !qu.contains(metric) ||
          !qu[metric].is_number()) {
        missing += fmt::format("| {} | {} | {} has no number '{}' |\n", run->name, mode,
                               eval_path(dir, mode), metric);
        continue;
      }
      v.full[dir] = fp[metric].get<double>();
      v.quant[dir] = qu[metric].get<double>();
      v.change[dir] = v.quant[dir] - v.full[dir];
    }
  return v;
}

// Per mode of the grid's `quant:` and table (task) of compare: the task's quality metric from
// each finished run's eval-MODE.json, full precision, quantised, and the change, as metric tables.
QuantSection quant_section(const Grid& g, const std::vector<Point>& points, const Baseline& base,
                           const std::vector<train::CompareTable>& tables,
                           const std::set<std::string>& diverged) {
  QuantSection q;
  std::map<std::string, const GridRun*> run_by_dir;
  for (const Point& p : points)
    for (const GridRun* r : p.runs) run_by_dir[r->dir] = r;
  std::string missing;
  for (const std::string& mode : g.quant) {
    for (const train::CompareTable& t : tables) {
      const std::string metric = quality_metric(t.keys);
      const auto col = std::find(t.keys.begin(), t.keys.end(), "final_" + metric);
      const std::string format =
          col == t.keys.end() ? "{:.4f}" : t.formats[static_cast<size_t>(col - t.keys.begin())];
      const QuantValues v = quant_values(g, t, mode, metric, run_by_dir, missing);
      const std::string task = tables.size() > 1 ? ", task " + t.task : "";
      const struct {
        std::string key, header;
        const std::map<std::string, double>& values;
      } kinds[] = {
          {"quant." + mode + ".full." + metric,
           fmt::format("{}, full precision (the {} evaluation's)", metric, mode), v.full},
          {"quant." + mode + "." + metric, fmt::format("{}, {}", metric, mode), v.quant},
          {"quant." + mode + ".change." + metric,
           fmt::format("{} change, {} − full precision", metric, mode), v.change},
      };
      for (const auto& k : kinds) {
        // A change is small next to the metric: its own digits, not the metric's fixed ones.
        const MetricTable mt =
            metric_table(g, points, base, k.values, &k == &kinds[2] ? "{:.3g}" : format, diverged);
        q.md += fmt::format("### {} (`{}`{})\n\n{}\n", k.header, k.key, task, mt.md);
        q.metrics.push_back({{"key", k.key},
                             {"header", k.header},
                             {"task", t.task},
                             {"unit", t.unit},
                             {"mode", mode},
                             {"metric", metric},
                             {"rows", mt.rows}});
      }
    }
  }
  std::string intro = fmt::format("## Quantised evaluation ({})\n\n", fmt::join(g.quant, ", "));
  intro +=
      "`attnlab eval RUN --quant MODE` of each finished run's last checkpoint (the sweep keeps "
      "it in `RUN/eval-MODE.json`): the task's quality metric in full precision and "
      "fake-quantised, and the change (quantised − full precision), each with mean ± std over "
      "the seeds and Δ against softmax, paired by seed, as above.\n\n";
  if (!missing.empty())
    intro +=
        "Finished runs without a current result (left out of these tables):\n\n"
        "| run | mode | why |\n|---|---|---|\n" +
        missing + "\n";
  q.md = intro + q.md;
  return q;
}

std::string reproduce_section(const Grid& g, const std::vector<GridRun>& runs) {
  const std::string bin = display_path(attnlab_binary());
  std::string s = "## Reproduce\n\nFrom `" + fs::current_path().string() +
                  "` (the grid's paths are relative to it):\n\n```sh\n";
  s += shell_line({bin, "sweep", g.path, "--runs-dir", g.runs_dir}) +
       "   # trains what is missing, then this report\n";
  s += shell_line({bin, "report", g.path, "--runs-dir", g.runs_dir}) +
       "\n```\n\nEach run alone (what the sweep runs):\n\n```sh\n";
  for (const GridRun& r : runs) {
    std::vector<std::string> argv = {bin};
    for (const std::string& a : train_args(g, r)) argv.push_back(a);
    s += shell_line(argv) + "\n";
  }
  if (!g.quant.empty()) {
    s += "```\n\nThen each finished run's quantised evaluations (the sweep checks the output and "
         "keeps it in `RUN/eval-MODE.json`):\n\n```sh\n";
    for (const GridRun& r : runs)
      for (const std::string& mode : g.quant) {
        std::vector<std::string> argv = {bin};
        for (const std::string& a : eval_args(r.dir, mode)) argv.push_back(a);
        s += shell_line(argv) + "\n";
      }
  }
  return s + "```\n";
}

}  // namespace

int run_report(const ReportOptions& opt) {
  const Grid g = load_grid(opt.grid, opt.runs_dir);
  const std::vector<GridRun> runs = expand_grid(g);
  const fs::path out = opt.out.empty() ? fs::path(g.runs_dir) : fs::path(opt.out);
  fs::create_directories(out);

  std::map<std::string, std::string> states;
  std::vector<std::string> finished;
  std::set<std::string> diverged;
  json j_runs = json::array();
  std::string unfinished;
  for (const GridRun& r : runs) {
    const Outcome o = outcome_of(g, r);
    states[r.dir] = o.state;
    if (o.state == "finished")
      finished.push_back(r.dir);
    else
      unfinished += fmt::format(
          "| {} | {} | {} | {} |\n", r.name,
          o.diverged_at ? fmt::format("diverged at step {}", *o.diverged_at) : o.state,
          o.exit ? std::to_string(*o.exit) : "", o.log.empty() ? "" : "`" + o.log + "`");
    if (o.diverged_at) diverged.insert(r.dir);
    j_runs.push_back({{"name", r.name},
                      {"dir", r.dir},
                      {"seed", r.seed},
                      {"state", o.state},
                      {"exit", o.exit ? json(*o.exit) : json(nullptr)},
                      {"log", o.log},
                      {"diverged_at", o.diverged_at ? json(*o.diverged_at) : json(nullptr)}});
  }
  const std::vector<Point> points = points_of(runs);
  const std::vector<train::CompareTable> tables =
      finished.empty() ? std::vector<train::CompareTable>{} : train::compare_tables(finished);

  std::string md =
      fmt::format("# Study: {}\n\n{} runs ({} grid points × {} seeds) in `{}`: {} finished{}.\n\n",
                  g.name, runs.size(), points.size(), g.seeds.size(), g.runs_dir, finished.size(),
                  diverged.empty() ? "" : fmt::format(", {} diverged", diverged.size()));
  md += fmt::format("## Grid\n\n`{}`:\n\n```yaml\n{}{}```\n\n", g.path, g.text,
                    g.text.empty() || g.text.back() == '\n' ? "" : "\n");
  md += reproduce_section(g, runs) + "\n";
  md += "## Runs not finished\n\n";
  md += unfinished.empty()
            ? "None: every run of the grid finished.\n\n"
            : std::string(
                  "They are left out of the tables below; `attnlab sweep` resumes or "
                  "retrains them") +
                  (diverged.empty()
                       ? ".\n\n"
                       : ", except the diverged ones (a non-finite loss at that step): those are "
                         "a result, kept as they are and counted in each table's `diverged` "
                         "column.\n\n") +
                  "| run | state | exit | log |\n|---|---|---|---|\n" + unfinished + "\n";
  md += "## All runs (`attnlab compare`)\n\n" +
        (finished.empty() ? "No run has finished.\n" : train::compare_runs(finished, "md")) + "\n";

  const Baseline base = baseline_of(g);
  json j_metrics = json::array();
  if (!finished.empty()) {
    md += "## Per metric\n\nMean ± sample standard deviation over the seeds that finished; ";
    md += base.axis >= 0
              ? "Δ: the mean over seeds of (run − the softmax run with the same other axis values "
                "and seed), "
                "its 95% confidence interval from Student's t with n − 1 degrees of freedom.\n\n"
              : "no paired differences: the grid has no attention.variant axis with softmax among "
                "its values.\n\n";
  }
  for (const train::CompareTable& t : tables) {
    for (size_t c = 0; c < t.keys.size(); ++c) {
      if (t.keys[c] == "parameters") continue;
      std::map<std::string, double> by_dir;
      for (const train::CompareTable::Row& row : t.rows)
        for (size_t r = 0; r < row.dirs.size(); ++r) by_dir[row.dirs[r]] = row.values[c][r];
      const MetricTable mt = metric_table(g, points, base, by_dir, t.formats[c], diverged);
      md += fmt::format("### {} (`{}`{})\n\n{}\n", t.headers[c], t.keys[c],
                        tables.size() > 1 ? ", task " + t.task : "", mt.md);
      j_metrics.push_back({{"key", t.keys[c]},
                           {"header", t.headers[c]},
                           {"task", t.task},
                           {"unit", t.unit},
                           {"rows", mt.rows}});
    }
  }

  if (!g.quant.empty() && !finished.empty()) {
    QuantSection q = quant_section(g, points, base, tables, diverged);
    md += q.md;
    for (json& m : q.metrics) j_metrics.push_back(std::move(m));
  }

  Plots plots;
  if (opt.plots && !finished.empty()) plots = make_plots(points, tables, states, out);
  if (opt.plots && !finished.empty()) {
    md += "## Plots\n\n";
    if (!plots.error.empty()) md += "Not all plots were made: " + plots.error + "\n\n";
    for (const std::string& f : plots.files)
      md += fmt::format("![{}]({})\n\n", fs::path(f).stem().string(), f);
  }
  const json report = {{"grid", g.path}, {"name", g.name},       {"runs_dir", g.runs_dir},
                       {"runs", j_runs}, {"metrics", j_metrics}, {"plots", plots.files}};
  train::write_atomic((out / "report.json").string(), report.dump(2) + "\n");
  train::write_atomic((out / "report.md").string(), md);
  fmt::print(stderr, "report: {} ({} of {} runs finished{})\n", (out / "report.md").string(),
             finished.size(), runs.size(), plots.error.empty() ? "" : "; plots: " + plots.error);
  return plots.error.empty() ? 0 : 1;
}

}  // namespace attn::studies
