// `attnlab compare`: reads run directories (summary.json + config.yaml) and prints a table per
// task, one row per configuration; runs that differ only in run.seed / run.name / run.dir are
// one row with mean ± std. Columns: the task's metrics (a family such as the LM's
// final_val_loss@L: a column per suffix every run of the table has), the inside-the-model
// statistics of the last evaluation when every run has them (kurtosis, max ∞-norm, sink and row
// mass), parameters, wall time. format: md (markdown), csv (means and stds as numbers) or json
// (every run's value).
#pragma once
#include <string>
#include <vector>

namespace attn::train {

std::string compare_runs(const std::vector<std::string>& run_dirs, const std::string& format = "md");

// The same tables as data, for what builds on them (the studies' report): one per (task, unit),
// rows in order of first appearance.
struct CompareTable {
  std::string task, unit;
  // Columns after "variant" and "runs": summary keys, headers ("{unit}" replaced), formats.
  std::vector<std::string> keys, headers, formats;
  struct Row {
    std::string label;                        // the variant and the keys that differ between rows
    std::vector<std::string> dirs;            // its runs
    std::vector<std::vector<double>> values;  // per column, the runs' numbers in the order of dirs
  };
  std::vector<Row> rows;
};
// ConfigError when no directory holds a finished run (or a summary is not attnlab's).
std::vector<CompareTable> compare_tables(const std::vector<std::string>& run_dirs);

}  // namespace attn::train
