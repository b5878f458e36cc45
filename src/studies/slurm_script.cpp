#include "studies/slurm_script.h"

#include <fmt/format.h>
#include <filesystem>

#include "studies/run_plan.h"

namespace fs = std::filesystem;

namespace attn::studies {

std::string slurm_script(const Grid& grid, const SlurmScript& s) {
  const fs::path runs = fs::absolute(fs::path(s.workdir) / grid.runs_dir).lexically_normal();
  const fs::path grid_path = fs::absolute(fs::path(s.workdir) / grid.path).lexically_normal();
  std::string out = "#!/bin/bash\n";
  out += fmt::format(
      "# Written by `attnlab sweep {} --emit-slurm`: one array task per run of the study '{}' ({} "
      "runs).\n",
      grid.path, grid.name, s.runs);
  out += fmt::format(
      "# Submit with `sbatch FILE`; when the array is done: attnlab report {} --runs-dir {}\n",
      shell_line({grid_path.string()}), shell_line({runs.string()}));
  out += fmt::format("#SBATCH --job-name={}\n", grid.name);
  out += fmt::format("#SBATCH --array=0-{}\n", s.runs - 1);
  out += fmt::format("#SBATCH --output={}/logs/slurm-%A_%a.out\n", runs.string());
  if (s.gpu) out += "#SBATCH --gres=gpu:1\n";
  out += "set -euo pipefail\n";
  out += "cd " + shell_line({s.workdir}) + "\n";
  out += shell_line({"exec", s.binary, "sweep", grid_path.string(), "--runs-dir", runs.string(),
                     "--only-index"}) +
         " \"$SLURM_ARRAY_TASK_ID\"\n";
  return out;
}

}  // namespace attn::studies
