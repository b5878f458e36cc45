// `attnlab sweep --emit-slurm FILE`: a Slurm job-array script, one array task per run of the
// grid; task i runs `attnlab sweep GRID --only-index i` in the directory the sweep was asked from.
#pragma once
#include <string>

#include "studies/grid.h"

namespace attn::studies {

struct SlurmScript {
  std::string binary;   // absolute path of attnlab
  std::string workdir;  // absolute; the grid's relative paths are relative to it
  size_t runs = 0;
  bool gpu = false;  // the runs use run.device=cuda: one GPU per task
};

std::string slurm_script(const Grid& grid, const SlurmScript& s);

}  // namespace attn::studies
