#include "train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <optional>
#include <fmt/format.h>

#include "autograd/node.h"
#include "metrics/model_stats.h"
#include "metrics/param_stats.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "train/checkpoint.h"
#include "tasks/device.h"
#include "tasks/registry.h"
#include "train/run_dir.h"
#include "train/run_files.h"
#include "train/run_setup.h"
#include "train/saved_config.h"
#include "train/stop_signal.h"
#include "util/log.h"

namespace fs = std::filesystem;

namespace attn::train {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string format_duration(double s) {
  int64_t t = static_cast<int64_t>(s);
  return t >= 3600 ? fmt::format("{}h{:02}m", t / 3600, t / 60 % 60) : fmt::format("{}m{:02}s", t / 60, t % 60);
}

// The task's validation metrics in eval mode (no dropout, so the dropout generator is untouched
// and the training curve does not depend on eval.every); the model's mode is restored after.
nlohmann::json evaluate(tasks::Task& task) {
  NoGradGuard no_grad;
  nn::Module& model = task.model();
  const bool was_training = model.training();
  model.set_training(false);
  nlohmann::json m = task.evaluate();
  model.set_training(was_training);
  return m;
}

// Everything a run holds while it trains.
struct Run {
  Config cfg;
  std::string dir;
  std::unique_ptr<tasks::Task> task;
  std::unique_ptr<AdamW> opt;
  LrSchedule schedule{};
  TrainState state;
  Device device = Device::cpu();
  int64_t checkpointed_step = -1;  // the step of the newest checkpoint on disk
};

std::unique_ptr<Run> prepare(Config cfg, const TrainOptions& opt) {
  auto run = std::make_unique<Run>();
  run->dir = cfg.get_string("run.dir");
  run->device = tasks::run_device(cfg);  // before the data: a missing GPU fails fast
  run->task = tasks::make_task(cfg.get_string("task"));
  run->task->prepare(cfg, opt.resume ? run->dir : "", run->device);
  run->opt = std::make_unique<AdamW>(run->task->model().parameters(), adamw_config(cfg));
  run->schedule = {cfg.get_float("train.lr"), cfg.get_int("train.warmup_steps"), cfg.get_int("train.steps"),
                   cfg.get_float("train.min_lr_ratio")};
  run->cfg = std::move(cfg);
  return run;
}

void create_run_dir(Run& r) {
  write_atomic(r.dir + "/config.yaml", r.cfg.to_yaml());
  for (const auto& [name, content] : r.task->artifacts()) write_atomic(r.dir + "/" + name, content);
}

// Loads the newest checkpoint that verifies. One that does not is named with its fault, moved
// aside (NAME.corrupt) and the previous one tried; none usable is an error, never a silent restart.
void restore(Run& r) {
  const std::string dir = r.dir + "/checkpoints";
  std::vector<std::string> all = list_checkpoints(dir);
  if (all.empty()) {
    logging::info("note: {} has no checkpoint (the run stopped before its first one): starting again from step 0\n",
                  dir);
    return;
  }
  std::vector<std::string> rejected;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    std::string why = verify_checkpoint(*it);
    if (!why.empty() && why.rfind("format 1", 0) != 0) {
      fs::rename(*it, *it + ".corrupt");
      rejected.push_back(fmt::format("'{}' ({})", *it, why));
      logging::error("error: checkpoint '{}' is unusable: {}; moved to '{}.corrupt'{}\n", *it, why, *it,
                     std::next(it) != all.rend() ? fmt::format("; falling back to '{}'", *std::next(it)) : "");
      continue;
    }
    r.state = load_checkpoint(*it, r.task->model(), r.opt.get());
    r.checkpointed_step = r.state.step;
    r.task->set_position(r.state.data_position);
    r.task->dropout_generator().offset = r.state.dropout_offset;
    logging::info("resuming {} from {} (step {})\n", r.dir, *it, r.state.step);
    return;
  }
  sync_directory(dir);
  throw CheckpointError(fmt::format("no usable checkpoint in '{}': {}", dir, fmt::join(rejected, "; ")));
}

void checkpoint(Run& r, MetricsLog& log) {
  log.sync();  // the rows this checkpoint counts are on disk before it is
  r.state.data_position = r.task->position();
  r.state.dropout_offset = r.task->dropout_generator().offset;
  r.state.metrics_bytes = log.bytes();
  save_checkpoint(fmt::format("{}/checkpoints/step-{:08}.ckpt", r.dir, r.state.step), r.task->model(), *r.opt, r.state);
  prune_checkpoints(r.dir + "/checkpoints", r.cfg.get_int("checkpoint.keep"));
  r.checkpointed_step = r.state.step;
}

// What "the last good checkpoint" may say: the newest one that verifies now.
std::string last_good_checkpoint(const std::string& dir) {
  VerifiedCheckpoint v = latest_verified_checkpoint(dir);
  std::string out = v.path.empty() ? "none" : v.path;
  for (const auto& [file, why] : v.rejected) out += fmt::format(" (newer '{}' failed verification: {})", file, why);
  return out;
}

// A row of inside-the-model statistics for metrics.jsonl: {"step", "stats": "train" | "val",
// "summary", "activations", "attention", "weights" (kurtosis per matrix), "grad_norms" (per
// layer; training rows)}.
nlohmann::json stats_row(const Run& r, int64_t step, const char* of, const metrics::ModelStats& stats,
                         nlohmann::json grad_norms) {
  nlohmann::json row = stats.report();
  row["step"] = step;
  row["stats"] = of;
  row["weights"] = metrics::weight_kurtosis(r.task->model().parameters());
  if (!grad_norms.is_null()) row["grad_norms"] = std::move(grad_norms);
  return row;
}

// The validation metrics; with stats.eval, the model's statistics over the same batches
// (`stats_out`: their row).
nlohmann::json eval_row(Run& r, nlohmann::json* stats_out = nullptr) {
  std::optional<metrics::ModelStats> stats;
  if (stats_out && r.cfg.get_bool("stats.eval")) {
    stats.emplace(r.cfg.get_int("stats.attention_rows"));
    r.task->model().set_tap(&*stats);
  }
  nlohmann::json row = evaluate(*r.task);
  r.task->model().set_tap(nullptr);
  r.state.best_val_loss = std::min(r.state.best_val_loss, row["val_loss"].get<double>());
  row["step"] = r.state.step;
  if (stats) *stats_out = stats_row(r, r.state.step, "val", *stats, nullptr);
  return row;
}

// "kurtosis 5.1 (Gaussian 3) | max ∞-norm 12 | sink 0.21" from a stats row, for the progress line.
std::string describe_stats(const nlohmann::json& row) {
  const nlohmann::json& s = row.value("summary", nlohmann::json::object());
  std::string out;
  if (s.contains("max_kurtosis"))
    out += fmt::format(" | kurtosis {:.3g} (Gaussian 3), ∞-norm {:.3g}", s["max_kurtosis"].get<double>(),
                       s["max_inf_norm"].get<double>());
  if (s.contains("sink_mass"))
    out += fmt::format(" | sink {:.3f}, row mass {:.3f}", s["sink_mass"].get<double>(), s["row_mass"].get<double>());
  return out;
}

// summary.json: what compare reads. final_<metric> for each number of the last evaluation, the
// task's final metrics (a test set), throughput in the task's items.
void write_summary(Run& r, const nlohmann::json& last_eval, const nlohmann::json& last_stats) {
  const std::string items = r.task->items_per_micro_batch().second;
  nlohmann::json s = {
      {"task", r.cfg.get_string("task")},
      {"variant", r.cfg.get_string("attention.variant")},
      {"name", r.cfg.get_string("run.name")},
      {"seed", r.cfg.get_int("run.seed")},
      {"steps", r.state.step},
      {"best_val_loss", r.state.best_val_loss},
      {items, r.state.tokens},
      {items + "_per_s", r.state.tokens / std::max(r.state.elapsed_s, 1e-9)},
      {"parameters", r.task->model().parameter_count()},
      {"device", r.device.str()},
      {"precision", r.cfg.get_string("run.precision")},
      {"wall_time_s", r.state.elapsed_s},
  };
  for (const auto& [key, value] : last_eval.items()) {
    if (key == "step") continue;
    if (value.is_number()) s["final_" + key] = value;
    else s[key] = value;  // the unit
  }
  // The last evaluation's statistics summary: final_max_kurtosis, final_sink_mass, ...
  if (last_stats.contains("summary"))
    for (const auto& [key, value] : last_stats["summary"].items()) s["final_" + key] = value;
  const nlohmann::json final_metrics = r.task->final_metrics();
  for (const auto& [key, value] : final_metrics.items()) s[key] = value;
  write_atomic(r.dir + "/summary.json", s.dump(2) + "\n");
}

struct StepResult {
  double loss, grad_norm;
  nlohmann::json stats;  // a stats row when this step collected one
};

// One optimizer step over grad_accum micro-batches. With `stats`, the first micro-batch's
// forward is shown to it and the per-layer gradient norms (before clipping) join its row.
StepResult train_step(Run& r, int64_t accum, double clip, metrics::ModelStats* stats) {
  double loss_sum = 0;
  for (int64_t m = 0; m < accum; ++m) {
    if (stats && m == 0) r.task->model().set_tap(stats);
    Tensor loss = r.task->next_train_loss();
    r.task->model().set_tap(nullptr);
    loss_sum += loss.item();
    (accum > 1 ? mul(loss, 1.0 / static_cast<double>(accum)) : loss).backward();
  }
  nlohmann::json grad_norms = stats ? metrics::grad_norms_by_layer(r.opt->params()) : nlohmann::json();
  double norm = clip_grad_norm(r.opt->params(), clip);
  StepResult out{loss_sum / static_cast<double>(accum), norm, nlohmann::json()};
  if (stats) {
    // The row is the step's, as the loss row is: the one this optimizer step completes.
    out.stats = stats_row(r, r.state.step + 1, "train", *stats, std::move(grad_norms));
  }
  return out;
}

bool is_finished(const Run& r) { return r.state.step >= r.cfg.get_int("train.steps"); }

// The first SIGINT/SIGTERM: the step in flight has finished; checkpoint it, say how to go on.
int stop_on_signal(Run& r, MetricsLog& log, int sig) {
  if (r.checkpointed_step != r.state.step) checkpoint(r, log);
  logging::warn("\n{} at step {}: checkpoint {}/checkpoints/step-{:08}.ckpt written. Resume with:\n  attnlab train --set run.dir={} --resume\n",
                signal_name(sig), r.state.step, r.dir, r.state.step, r.dir);
  return 128 + sig;
}

int train_loop(Run& r, const TrainOptions& opt, MetricsLog& log) {
  const Config& c = r.cfg;
  int64_t steps = c.get_int("train.steps"), accum = c.get_int("train.grad_accum");
  const auto [items_per_micro_batch, items] = r.task->items_per_micro_batch();
  const int64_t tokens_per_step = accum * items_per_micro_batch;
  const std::string rate_key = items + "_per_s", rate_unit = items == "tokens" ? "tok/s" : items == "images" ? "img/s" : items + "/s";
  int64_t log_every = c.get_int("log.every"), eval_every = c.get_int("eval.every"), ckpt_every = c.get_int("checkpoint.every");
  const int64_t stats_every = c.get_int("stats.every"), stats_rows = c.get_int("stats.attention_rows");
  bool tty = isatty(STDERR_FILENO);
  std::string tag = c.get_string("attention.variant");
  nlohmann::json last_eval, last_stats;
  r.task->model().set_training(true);
  StopSignal stop;
  while (r.state.step < steps) {
    if (int sig = StopSignal::pending()) return stop_on_signal(r, log, sig);
    auto t0 = Clock::now();
    double lr = r.schedule.at(r.state.step);
    std::optional<metrics::ModelStats> stats;
    if (stats_every > 0 && (r.state.step + 1) % stats_every == 0) stats.emplace(stats_rows);
    auto [loss, norm, stats_train] = train_step(r, accum, c.get_float("train.clip"), stats ? &*stats : nullptr);
    if (r.state.step + 1 == opt.nan_at_step) loss = NAN;
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      r.opt->zero_grad();
      log.write({{"step", r.state.step + 1}, {"error", "non-finite loss or gradient"}});
      logging::error("{}error: non-finite {} at step {} (loss {}, grad norm {}); stopping. Last good checkpoint: {}\n",
                     tty ? "\n" : "", std::isfinite(loss) ? "gradient" : "loss", r.state.step + 1, loss, norm,
                     last_good_checkpoint(r.dir + "/checkpoints"));
      return 3;
    }
    r.opt->step(lr);
    r.opt->zero_grad();
    double dt = seconds_since(t0);
    r.state.step += 1;
    r.state.tokens += tokens_per_step;
    r.state.elapsed_s += dt;
    bool is_last = r.state.step == steps;
    if (r.state.step % log_every == 0 || is_last) {
      log.write({{"step", r.state.step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm},
                 {rate_key, tokens_per_step / dt}, {"elapsed", r.state.elapsed_s}});
      if (!opt.quiet) {
        double rate = r.state.tokens / r.state.elapsed_s;
        double eta = (steps - r.state.step) * tokens_per_step / rate;
        logging::info("{}[{}] step {}/{} loss {:.4f} lr {:.2e} | {:.0f} {} | ETA {}{}", tty ? "\r" : "", tag,
                      r.state.step, steps, loss, lr, rate, rate_unit, format_duration(eta), tty ? "   " : "\n");
      }
    }
    if (!stats_train.is_null()) log.write(stats_train);
    if (r.state.step % eval_every == 0 || is_last) {
      last_stats = nlohmann::json();
      last_eval = eval_row(r, &last_stats);
      log.write(last_eval);
      if (!last_stats.is_null()) log.write(last_stats);
      if (!opt.quiet)
        logging::info("{}[{}] step {} {}{}\n", tty ? "\n" : "", tag, r.state.step, r.task->describe(last_eval),
                      describe_stats(last_stats));
    }
    if (r.state.step % ckpt_every == 0 || is_last) checkpoint(r, log);
    if (r.state.step == opt.abort_after_step) std::raise(SIGKILL);
  }
  if (int sig = StopSignal::pending(); sig && !is_finished(r)) return stop_on_signal(r, log, sig);
  if (last_eval.is_null()) last_eval = eval_row(r, &last_stats);  // resumed a run that had finished its steps
  write_summary(r, last_eval, last_stats);
  if (!opt.quiet) logging::info("[{}] done: {}\n", tag, r.dir);
  return 0;
}

}  // namespace

namespace {

bool run_extended(const Run& r) {
  Config saved = Config::from_file(r.dir + "/config.yaml");
  return saved.get_int("train.steps") != r.cfg.get_int("train.steps");
}

}  // namespace

int run_training(Config cfg, const TrainOptions& opt) {
  if (opt.resume) {
    cfg = reopen(std::move(cfg), Reopen::Resume);
  } else {
    resolve_run_config(cfg);
    check_run_dir(cfg.get_string("run.dir"), false);
  }
  const std::string dir = cfg.get_string("run.dir");
  // The console at the config's level now; the rank files once the directory is this process's.
  const logging::Level level = log_level(cfg);
  logging::init(opt.place.rank, opt.place.world_size, "", level);
  if (opt.resume && fs::exists(dir + "/summary.json") &&
      Config::from_file(dir + "/config.yaml").get_int("train.steps") == cfg.get_int("train.steps")) {
    logging::info("{} is finished ({} steps): nothing to resume (--set train.steps=N extends it)\n", dir,
                  cfg.get_int("train.steps"));
    return 0;
  }
  set_threads(cfg.get_int("run.threads"));
  std::unique_ptr<Run> run = prepare(std::move(cfg), opt);
  fs::create_directories(dir + "/checkpoints");
  RunLock lock(dir);  // from here on this process alone writes the directory
  logging::init(opt.place.rank, opt.place.world_size, dir, level);
  for (const std::string& sub : {dir, dir + "/checkpoints"})
    for (const std::string& f : remove_temp_files(sub))
      logging::info("note: removed '{}' (left by a write that did not finish)\n", f);
  if (!opt.resume) {
    create_run_dir(*run);
  } else {
    if (run_extended(*run)) {
      fs::remove(dir + "/summary.json");  // no longer finished
      write_atomic(dir + "/config.yaml", run->cfg.to_yaml());
    }
    restore(*run);
  }
  MetricsLog log(dir + "/metrics.jsonl", run->state.metrics_bytes);
  return train_loop(*run, opt, log);
}

}  // namespace attn::train
