// `attnlab compare`: reads run directories (summary.json + config.yaml) and prints a table per
// task, one row per configuration; runs that differ only in run.seed / run.name / run.dir are
// one row with mean ± std. Columns: the task's metrics, the inside-the-model statistics of the
// last evaluation when every run has them (kurtosis, max ∞-norm, sink and row mass), parameters,
// wall time. format: md (markdown), csv (means and stds as numbers) or json (every run's value).
#pragma once
#include <string>
#include <vector>

namespace attn::train {

std::string compare_runs(const std::vector<std::string>& run_dirs, const std::string& format = "md");

}  // namespace attn::train
