// `attnlab compare`: reads run directories (summary.json + config.yaml) and prints a markdown
// table, one row per configuration; runs that differ only in run.seed / run.name / run.dir are
// one row with mean ± std.
#pragma once
#include <string>
#include <vector>

namespace attn::train {

std::string compare_runs(const std::vector<std::string>& run_dirs);

}  // namespace attn::train
