#include "train/saved_config.h"

#include <fmt/format.h>
#include <algorithm>

namespace attn::train {

namespace {

bool contains(const std::vector<std::string>& v, const std::string& k) {
  return std::find(v.begin(), v.end(), k) != v.end();
}

}  // namespace

const std::vector<std::string>& keys_changeable_on(Reopen mode) {
  // run.dir and run.name locate the run (run.dir auto is resolved from the name); data.cache_dir is
  // where the prepared corpus lives, not what it is. run.precision changes the numerics of
  // training (a run half in f32, half in bf16 is neither), so only an eval may change it. The
  // dist.* keys say how a job shares the work (a checkpoint holds the whole state, whatever the
  // world size or ZeRO), not what is computed.
  static const std::vector<std::string> resume = {
      "run.dir",        "run.name",  "run.threads",   "run.device",       "data.cache_dir",
      "log.every",      "log.level", "eval.every",    "checkpoint.every", "checkpoint.keep",
      "dist.bucket_mb", "dist.zero", "dist.timeout_s", "dist.init", "dist.init_file"};
  static const std::vector<std::string> eval = [] {
    std::vector<std::string> e = resume;
    e.insert(e.end(), {"run.precision", "eval.batches", "eval.lengths"});
    return e;
  }();
  return mode == Reopen::Resume ? resume : eval;
}

ReopenedConfig reopen_config(const Config& saved, const Config& requested, Reopen mode,
                             const std::string& run_dir) {
  ReopenedConfig out{saved, {}, false};
  const char* what = mode == Reopen::Resume ? "a resume" : "an eval";
  for (const std::string& key : requested.given_keys()) {
    const std::string &want = requested.get_string(key), &have = saved.get_string(key);
    // "auto" asks for the rule's value, which the saved run resolved from its own keys (a change
    // of those keys is refused on its own).
    if (Config::same_value(key, want, have) || want == "auto" || key == "run.dir" ||
        key == "run.name")
      continue;
    if (mode == Reopen::Resume && key == "train.steps") {
      int64_t done_steps = saved.get_int(key), asked = requested.get_int(key);
      if (asked < done_steps)
        throw ConfigError(fmt::format(
            "config key 'train.steps': the run in '{}' was set to {} steps; {} can only "
            "extend it, not shorten it to {}",
            run_dir, done_steps, what, asked));
      out.config.resolve(key, want);
      out.extended = true;
      out.notes.push_back(
          fmt::format("extending the run from {} to {} steps (written to {}/config.yaml; the "
                      "learning-rate schedule now ends at step {})",
                      done_steps, asked, run_dir, asked));
      continue;
    }
    if (!contains(keys_changeable_on(mode), key))
      throw ConfigError(fmt::format(
          "config key '{}': the run in '{}' was trained with '{}'; {} cannot change it to "
          "'{}' (its config.yaml is the truth; {} may change only {}{})",
          key, run_dir, have, what, want, what, fmt::join(keys_changeable_on(mode), ", "),
          mode == Reopen::Resume ? ", and extend train.steps" : ""));
    out.config.resolve(key, want);
    if (key == "run.device" || key == "run.precision")
      out.notes.push_back(fmt::format(
          "{} = {} (the run was trained with {}): results agree to rounding, not bit for bit", key,
          want, have));
  }
  return out;
}

}  // namespace attn::train
