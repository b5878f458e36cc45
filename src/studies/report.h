// `attnlab report GRID.yaml`: what a study's runs found, in <out>/report.md (and the same numbers
// in report.json): the grid and the commands that reproduce it; the runs that are missing or
// failed; `attnlab compare`'s table; per metric (the task's compare columns and the statistics
// of the last evaluation) a table by the grid's axes of mean ± std over seeds with the seed count
// and the paired difference against softmax (same other axis values and seed; 95% t interval);
// the PNG plots of scripts/report_plots.py (loss curves, final metrics, per-layer statistics).
#pragma once
#include <string>

namespace attn::studies {

struct ReportOptions {
  std::string grid;
  std::string runs_dir;  // overrides the grid's runs_dir when not empty
  std::string out;       // default: the runs directory
  bool plots = true;
};

// 0; 1 when the plots could not be made (report.md says why). A bad grid or summary: ConfigError.
int run_report(const ReportOptions& opt);

}  // namespace attn::studies
