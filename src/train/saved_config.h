// What a resume or an eval may change in a saved run's config. The run directory's config.yaml is
// the truth about what was trained: a resume continues exactly that run, an eval measures exactly
// that model. Keys that only say where, how fast or how often (threads, device, log and checkpoint
// cadence, the log level) may differ; train.steps may grow on resume (an explicit extension); any other key the
// user gives with a different value is a ConfigError naming the key and both values.
#pragma once
#include <string>
#include <vector>

#include "config/config.h"

namespace attn::train {

using config::Config;
using config::ConfigError;

enum class Reopen { Resume, Eval };

struct ReopenedConfig {
  Config config;                   // the saved config with the allowed overrides applied
  std::vector<std::string> notes;  // one line each, for stderr (device moved, steps extended)
  bool extended = false;           // train.steps grew
};

// `requested` is what the user asked for (defaults + --config file + --set); only its given keys
// count. `run_dir` names the directory in messages.
ReopenedConfig reopen_config(const Config& saved, const Config& requested, Reopen mode,
                             const std::string& run_dir);

// The keys a resume (or an eval) may change, for docs and messages.
const std::vector<std::string>& keys_changeable_on(Reopen mode);

}  // namespace attn::train
