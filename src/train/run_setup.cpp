#include "train/run_setup.h"

#include <omp.h>

#include <Eigen/Core>
#include <filesystem>
#include <fmt/format.h>

#include "tasks/registry.h"
#include "train/run_dir.h"
#include "util/log.h"

namespace fs = std::filesystem;

namespace attn::train {

void set_threads(int64_t n) {
  int threads = n > 0 ? static_cast<int>(n) : omp_get_num_procs();
  omp_set_num_threads(threads);
  Eigen::setNbThreads(threads);
}

void resolve_run_dir(Config& c) {
  if (c.is_auto("run.dir"))
    c.resolve("run.dir", fmt::format("runs/{}-{}-s{}", c.get_string("run.name"), c.get_string("attention.variant"),
                                     c.get_int("run.seed")));
}

void resolve_run_config(Config& c) {
  c.check_keys_of_task();
  tasks::make_task(c.get_string("task"))->resolve(c);
  resolve_run_dir(c);
  if (c.get_string("run.precision") == "bf16" && c.get_string("run.device") != "cuda")
    throw ConfigError("config key 'run.precision': bf16 needs run.device = cuda (the CPU backend computes in f32)");
  if (c.get_int("train.warmup_steps") > c.get_int("train.steps"))
    throw ConfigError(fmt::format("config key 'train.warmup_steps': {} is more than train.steps = {}",
                                  c.get_int("train.warmup_steps"), c.get_int("train.steps")));
}

Config reopen(Config requested, Reopen mode, const std::string& run_dir) {
  if (!run_dir.empty()) requested.resolve("run.dir", run_dir);
  resolve_run_dir(requested);
  const std::string dir = requested.get_string("run.dir");
  if (mode == Reopen::Resume) check_run_dir(dir, true);
  else if (!fs::exists(dir + "/config.yaml")) throw ConfigError("eval: '" + dir + "' has no config.yaml (not a run directory)");
  ReopenedConfig re = reopen_config(Config::from_file(dir + "/config.yaml"), requested, mode, dir);
  re.config.resolve("run.dir", dir);
  resolve_run_config(re.config);
  logging::set_level(log_level(re.config));  // the run's level (or the --set one) for its notes
  for (const std::string& n : re.notes) logging::info("note: {}\n", n);
  return re.config;
}

logging::Level log_level(const Config& c) {
  return logging::parse_level(c.get_string("log.level"), "config key 'log.level'");
}

AdamWConfig adamw_config(const Config& c) {
  return {c.get_float("train.lr"), c.get_float("train.beta1"), c.get_float("train.beta2"), c.get_float("train.eps"),
          c.get_float("train.weight_decay")};
}

}  // namespace attn::train
