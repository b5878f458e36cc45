// What every trainer command does before it runs: threads, resolving a config (the task's rules
// and the trainer's), reopening a saved run's config for a resume or an eval, the log level.
#pragma once
#include <string>

#include "config/config.h"
#include "optim/adamw.h"
#include "train/saved_config.h"
#include "util/log.h"

namespace attn::train {

using config::Config;
using config::ConfigError;

// Sets OpenMP and Eigen threads (0: all cores).
void set_threads(int64_t n);

// run.dir auto -> runs/<name>-<variant>-s<seed>; nothing else.
void resolve_run_dir(Config& c);
// The task's auto values and rules, run.dir, and the trainer's rules between keys; a given key
// the task does not have is an error.
void resolve_run_config(Config& c);

// The saved config of the run `requested` (defaults + --config + --set) points at — run_dir when
// given, else its run.dir — with the overrides saved_config.h allows; notes go to stderr.
Config reopen(Config requested, Reopen mode, const std::string& run_dir = "");

AdamWConfig adamw_config(const Config& c);
// log.level (ATTNLAB_LOG_LEVEL, which beats it, is applied by logging::init).
logging::Level log_level(const Config& c);

}  // namespace attn::train
