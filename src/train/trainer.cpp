#include "train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <functional>
#include <optional>
#include <fmt/format.h>

#include "autograd/node.h"
#include "dist/launch_env.h"
#include "metrics/model_stats.h"
#include "metrics/param_stats.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "train/checkpoint.h"
#include "train/data_parallel.h"
#include "train/grad_reducer.h"
#include "train/zero_optimizer.h"
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

// Everything a run holds while it trains. In a data-parallel job (world size > 1) every rank
// holds one; rank 0 alone writes the run directory (log is null on the others).
struct Run {
  Config cfg;
  std::string dir;
  dist::Communicator* comm = nullptr;
  std::unique_ptr<tasks::Task> task;
  std::unique_ptr<AdamW> opt;             // without ZeRO
  std::unique_ptr<GradReducer> reducer;   // world size > 1
  std::unique_ptr<ZeroOptimizer> zero;    // dist.zero = 1 and world size > 1
  LrSchedule schedule{};
  TrainState state;
  Device device = Device::cpu();
  int64_t checkpointed_step = -1;  // the step of the newest checkpoint on disk
  MetricsLog* log = nullptr;

  bool root() const { return comm->rank() == 0; }
  bool parallel() const { return comm->world_size() > 1; }
  void write(const nlohmann::json& row) {
    if (log) log->write(row);
  }
};

// The job's parts of a run: the task's shard, parameters equal on every rank (rank 0's), the
// gradient reducer and, with dist.zero, the sharded optimizer instead of the full one.
void prepare_parallel(Run& r) {
  nn::Module& model = r.task->model();
  r.task->set_shard(task_shard(*r.comm));
  // Each rank its own dropout stream (rank 0 keeps the single process's): the same seed would
  // give every rank's rows the same masks.
  if (const uint64_t rank = static_cast<uint64_t>(r.comm->rank()); rank > 0)
    r.task->dropout_generator().seed ^= rank * 0x9E3779B97F4A7C15ull;
  broadcast_parameters(*r.comm, model.parameters());
  if (!r.parallel()) {
    r.opt = std::make_unique<AdamW>(model.parameters(), adamw_config(r.cfg));
    return;
  }
  const bool zero = r.cfg.get_int("dist.zero") == 1;
  const auto bucket_bytes = static_cast<int64_t>(r.cfg.get_float("dist.bucket_mb") * (1 << 20));
  r.reducer = std::make_unique<GradReducer>(*r.comm, model.parameters(), std::max<int64_t>(1, bucket_bytes),
                                            zero ? GradReducer::Mode::ReduceScatter : GradReducer::Mode::AllReduce);
  if (zero) r.zero = std::make_unique<ZeroOptimizer>(*r.comm, *r.reducer, adamw_config(r.cfg));
  else r.opt = std::make_unique<AdamW>(model.parameters(), adamw_config(r.cfg));
}

std::unique_ptr<Run> prepare(Config cfg, const TrainOptions& opt, dist::Communicator& comm) {
  auto run = std::make_unique<Run>();
  run->comm = &comm;
  run->dir = cfg.get_string("run.dir");
  run->device = tasks::run_device(cfg);  // before the data: a missing GPU fails fast
  run->task = tasks::make_task(cfg.get_string("task"));
  run->task->prepare(cfg, opt.resume ? run->dir : "", run->device);
  run->schedule = {cfg.get_float("train.lr"), cfg.get_int("train.warmup_steps"), cfg.get_int("train.steps"),
                   cfg.get_float("train.min_lr_ratio")};
  run->cfg = std::move(cfg);
  return run;
}

// The optimizer's whole state, as a checkpoint holds it: the full AdamW, or (ZeRO) one the
// shards were gathered into (collective).
const AdamW& full_optimizer(Run& r, std::optional<AdamW>& gathered) {
  if (!r.zero) return *r.opt;
  gathered.emplace(r.task->model().parameters(), adamw_config(r.cfg));
  r.zero->gather_state(*gathered);
  return *gathered;
}

// Bytes of AdamW state (m and v) this rank holds.
int64_t optimizer_state_bytes(const Run& r) {
  if (r.zero) return r.zero->state_bytes();
  int64_t bytes = 0;
  for (const AdamW::State& s : r.opt->state()) bytes += static_cast<int64_t>(s.m.nbytes() + s.v.nbytes());
  return bytes;
}

void create_run_dir(Run& r) {
  write_atomic(r.dir + "/config.yaml", r.cfg.to_yaml());
  for (const auto& [name, content] : r.task->artifacts()) write_atomic(r.dir + "/" + name, content);
}

// The newest checkpoint that verifies, or "" when there is none. One that does not is named with
// its fault, moved aside (NAME.corrupt) and the previous one tried; none usable is an error,
// never a silent restart.
std::string choose_checkpoint(const Run& r) {
  const std::string dir = r.dir + "/checkpoints";
  std::vector<std::string> all = list_checkpoints(dir);
  if (all.empty()) {
    logging::info("note: {} has no checkpoint (the run stopped before its first one): starting again from step 0\n",
                  dir);
    return "";
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
    return *it;
  }
  sync_directory(dir);
  throw CheckpointError(fmt::format("no usable checkpoint in '{}': {}", dir, fmt::join(rejected, "; ")));
}

// Rank 0's choice of checkpoint (choose_checkpoint): 1 + its index in list_checkpoints as the
// other ranks will see it once the bad ones are moved aside, 0 for none.
int64_t choose_checkpoint_index(const Run& r) {
  const std::string path = choose_checkpoint(r);
  const std::vector<std::string> all = list_checkpoints(r.dir + "/checkpoints");
  return path.empty() ? 0 : std::find(all.begin(), all.end(), path) - all.begin() + 1;
}

// Every rank loads rank 0's choice, whatever the world size it was saved with: the data
// position is global, the optimizer state whole.
void restore(Run& r, int64_t root_choice) {
  Tensor chosen = from_vector({static_cast<double>(root_choice)}, {1}, {DType::I64});
  if (r.parallel()) r.comm->broadcast(chosen, 0);
  const int64_t index = chosen.data<int64_t>()[0];
  if (index == 0) return;
  const std::string path = list_checkpoints(r.dir + "/checkpoints").at(index - 1);
  if (r.zero) {
    AdamW full(r.task->model().parameters(), adamw_config(r.cfg));
    r.state = load_checkpoint(path, r.task->model(), &full);
    r.zero->scatter_state(full);
    r.zero->load_params();
  } else {
    r.state = load_checkpoint(path, r.task->model(), r.opt.get());
  }
  if (r.parallel()) check_parameters_equal(*r.comm, r.task->model().parameters());
  r.checkpointed_step = r.state.step;
  r.task->set_position(r.state.data_position);
  r.task->dropout_generator().offset = r.state.dropout_offset;
  logging::info("resuming {} from {} (step {})\n", r.dir, path, r.state.step);
}

// Collective with ZeRO (the optimizer's shards are gathered); rank 0 writes.
void checkpoint(Run& r) {
  std::optional<AdamW> gathered;
  const AdamW& opt = full_optimizer(r, gathered);
  r.checkpointed_step = r.state.step;
  if (!r.root()) return;
  r.log->sync();  // the rows this checkpoint counts are on disk before it is
  r.state.data_position = r.task->position();
  r.state.dropout_offset = r.task->dropout_generator().offset;
  r.state.metrics_bytes = r.log->bytes();
  save_checkpoint(fmt::format("{}/checkpoints/step-{:08}.ckpt", r.dir, r.state.step), r.task->model(), opt, r.state);
  prune_checkpoints(r.dir + "/checkpoints", r.cfg.get_int("checkpoint.keep"));
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
  if (!row.is_object()) return "";  // stats.eval off: no statistics row
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
  const nlohmann::json final_metrics = r.task->final_metrics();  // collective: every rank scores its shard
  for (const auto& [key, value] : final_metrics.items()) s[key] = value;
  s["world_size"] = r.comm->world_size();
  s["zero"] = r.zero != nullptr;
  s["optimizer_state_bytes"] = optimizer_state_bytes(r);  // per rank (rank 0's)
  if (r.root()) write_atomic(r.dir + "/summary.json", s.dump(2) + "\n");
}

struct StepResult {
  double loss, grad_norm;
  nlohmann::json stats;  // a stats row when this step collected one
  CommStats comm;
};

// One optimizer step over grad_accum micro-batches. With `stats`, the first micro-batch's
// forward is shown to it and the per-layer gradient norms (before clipping) join its row. In a
// job the gradients are reduced during the last micro-batch's backward only (the earlier ones
// accumulate locally), and the loss is the mean over the ranks: the global micro-batches'.
StepResult train_step(Run& r, int64_t accum, double clip, metrics::ModelStats* stats) {
  double loss_sum = 0;
  for (int64_t m = 0; m < accum; ++m) {
    if (stats && m == 0) r.task->model().set_tap(stats);
    Tensor loss = r.task->next_train_loss();
    r.task->model().set_tap(nullptr);
    loss_sum += loss.item();
    if (r.reducer && m == accum - 1) r.reducer->arm();
    (accum > 1 ? mul(loss, 1.0 / static_cast<double>(accum)) : loss).backward();
  }
  CommStats comm = r.reducer ? r.reducer->finish() : CommStats{};
  const ParamList& params = r.task->model().parameters();
  // (With ZeRO the gradients are this rank's own, not yet averaged: the per-layer norms are too.)
  nlohmann::json grad_norms = stats ? metrics::grad_norms_by_layer(params) : nlohmann::json();
  double norm = r.zero ? r.zero->load_grads_and_clip(clip) : clip_grad_norm(params, clip);
  StepResult out{mean_over_ranks(*r.comm, loss_sum / static_cast<double>(accum)), norm, nlohmann::json(), comm};
  if (stats) {
    // The row is the step's, as the loss row is: the one this optimizer step completes.
    out.stats = stats_row(r, r.state.step + 1, "train", *stats, std::move(grad_norms));
  }
  return out;
}

bool is_finished(const Run& r) { return r.state.step >= r.cfg.get_int("train.steps"); }

// The first SIGINT/SIGTERM (on any rank: all agree on it): the step in flight has finished;
// checkpoint it, say how to go on (every rank, in its log; the console has rank 0's).
int stop_on_signal(Run& r, int sig) {
  if (r.checkpointed_step != r.state.step) checkpoint(r);
  // No rank exits before rank 0's checkpoint is on disk: a launcher ends a job's other ranks
  // once one exits non-zero.
  if (r.parallel()) r.comm->barrier();
  logging::warn("\n{} at step {}: checkpoint {}/checkpoints/step-{:08}.ckpt written. Resume with:\n  attnlab train --set run.dir={} --resume\n",
                signal_name(sig), r.state.step, r.dir, r.state.step, r.dir);
  return 128 + sig;
}

// The signal this process or any rank of its job received (0: none); collective in a job.
int pending_signal(Run& r) { return r.parallel() ? first_nonzero(*r.comm, StopSignal::pending()) : StopSignal::pending(); }

// Testing (--abort-after-step): this rank, or every rank, dies here as a crash would, or (--stall)
// stops answering; the others find out through the launcher or dist.timeout_s. A whole job dies
// only once rank 0's checkpoint of this step is on disk.
void simulate_failure(Run& r, const TrainOptions& opt) {
  if (opt.abort_rank >= 0 && opt.abort_rank != r.comm->rank()) return;
  if (opt.abort_rank < 0 && r.parallel()) r.comm->barrier();
  if (opt.stall)
    for (;;) ::pause();
  std::raise(SIGKILL);
}

int train_loop(Run& r, const TrainOptions& opt) {
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
  // The progress line's rate is over the steps since the previous line, in this process: a
  // resumed run's cumulative rate would carry the speed of earlier sessions (another machine,
  // other load) into the rate and the ETA.
  int64_t window_tokens = 0;
  double window_s = 0;
  while (r.state.step < steps) {
    if (int sig = pending_signal(r)) return stop_on_signal(r, sig);
    auto t0 = Clock::now();
    double lr = r.schedule.at(r.state.step);
    std::optional<metrics::ModelStats> stats;
    if (stats_every > 0 && (r.state.step + 1) % stats_every == 0) stats.emplace(stats_rows);
    auto [loss, norm, stats_train, comm] = train_step(r, accum, c.get_float("train.clip"), stats ? &*stats : nullptr);
    if (r.state.step + 1 == opt.nan_at_step) loss = NAN;
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      r.write({{"step", r.state.step + 1}, {"error", "non-finite loss or gradient"}});
      // Rank 0's report (it reads the run directory); every rank's loss and norm are the same.
      if (r.root())
        logging::error("{}error: non-finite {} at step {} (loss {}, grad norm {}); stopping. Last good checkpoint: {}\n",
                       tty ? "\n" : "", std::isfinite(loss) ? "gradient" : "loss", r.state.step + 1, loss, norm,
                       last_good_checkpoint(r.dir + "/checkpoints"));
      if (r.parallel()) r.comm->barrier();  // (as stop_on_signal: rank 0's row is written first)
      return 3;
    }
    if (r.zero) {
      comm.comm_s += r.zero->step(lr);  // the all-gather of the parameters: not hidden
      r.zero->zero_grad();
    } else {
      r.opt->step(lr);
      r.opt->zero_grad();
    }
    double dt = seconds_since(t0);
    r.state.step += 1;
    r.state.tokens += tokens_per_step;
    r.state.elapsed_s += dt;
    window_tokens += tokens_per_step;
    window_s += dt;
    bool is_last = r.state.step == steps;
    if (r.state.step % log_every == 0 || is_last) {
      nlohmann::json row = {{"step", r.state.step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm},
                            {rate_key, tokens_per_step / dt}, {"elapsed", r.state.elapsed_s}};
      if (r.parallel()) {  // rank 0's seconds inside the step's collectives, and the share hidden behind backward
        row["comm_s"] = comm.comm_s;
        row["comm_hidden"] = comm.hidden_fraction();
      }
      r.write(row);
      // Every rank logs its progress line, the same numbers (the loss is the mean over the ranks):
      // the console shows rank 0's, the others' go to their logs/rank-N.log (util/log.h).
      if (!opt.quiet) {
        double rate = window_tokens / std::max(window_s, 1e-9);
        double eta = (steps - r.state.step) * tokens_per_step / rate;
        logging::info("{}[{}] step {}/{} loss {:.4f} lr {:.2e} | {:.0f} {} | ETA {}{}", tty ? "\r" : "", tag,
                      r.state.step, steps, loss, lr, rate, rate_unit, format_duration(eta), tty ? "   " : "\n");
      }
      window_tokens = 0;
      window_s = 0;
    }
    if (!stats_train.is_null()) r.write(stats_train);
    if (r.state.step % eval_every == 0 || is_last) {
      last_stats = nlohmann::json();
      last_eval = eval_row(r, &last_stats);
      r.write(last_eval);
      if (!last_stats.is_null()) r.write(last_stats);
      if (!opt.quiet)
        logging::info("{}[{}] step {} {}{}\n", tty ? "\n" : "", tag, r.state.step, r.task->describe(last_eval),
                      describe_stats(last_stats));
    }
    if (r.state.step % ckpt_every == 0 || is_last) checkpoint(r);
    if (r.state.step == opt.abort_after_step) simulate_failure(r, opt);
  }
  if (int sig = pending_signal(r); sig && !is_finished(r)) return stop_on_signal(r, sig);
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

namespace {

// Runs one step of the setup and makes the ranks of a job agree on its outcome: a rank that
// failed rethrows (its message, its exit code); the others return that rank's exit code (2 for
// a ConfigError, 1 otherwise) instead of waiting for it in the next collective. nullopt: every
// rank succeeded.
std::optional<int> agree(dist::Communicator& comm, const std::function<void()>& step) {
  std::exception_ptr error;
  int code = 0;
  try {
    step();
  } catch (const ConfigError&) {
    error = std::current_exception();
    code = 2;
  } catch (const std::exception&) {
    error = std::current_exception();
    code = 1;
  }
  const int any = first_nonzero(comm, code);
  if (error) std::rethrow_exception(error);
  if (any == 0) return std::nullopt;
  logging::error("attnlab: rank {}: stopping: another rank of the job failed to set up (its message above)\n",
                 comm.rank());
  return any;
}

// The run directory as rank 0 takes it over: created (or reopened), locked, its log file opened
// (in a job), cleaned.
std::unique_ptr<RunLock> open_run_dir(Run& r, const TrainOptions& opt) {
  const std::string& dir = r.dir;
  fs::create_directories(dir + "/checkpoints");
  auto lock = std::make_unique<RunLock>(dir);  // from here on this process alone writes the directory
  logging::init(r.comm->rank(), r.comm->world_size(), dir, log_level(r.cfg));
  for (const std::string& sub : {dir, dir + "/checkpoints"})
    for (const std::string& f : remove_temp_files(sub))
      logging::info("note: removed '{}' (left by a write that did not finish)\n", f);
  if (!opt.resume) {
    create_run_dir(r);
  } else if (run_extended(r)) {
    fs::remove(dir + "/summary.json");  // no longer finished
    write_atomic(dir + "/config.yaml", r.cfg.to_yaml());
  }
  return lock;
}

void check_world_size(const Config& c, const dist::Communicator& comm) {
  const int64_t batch = c.get_int("train.batch_size");
  if (batch % comm.world_size() != 0)
    throw ConfigError(fmt::format("config key 'train.batch_size': {} is not divisible by the world size {} (every "
                                  "rank computes batch_size / world_size rows of each micro-batch)",
                                  batch, comm.world_size()));
}

// In a job a failure on one rank (a write of rank 0, a collective that failed) ends every rank
// at once, with its message, rather than leaving the others to time out.
int train_or_abort(Run& r, const TrainOptions& opt) {
  if (!r.parallel()) return train_loop(r, opt);
  try {
    return train_loop(r, opt);
  } catch (const std::exception& e) {
    r.comm->abort(1, e.what());  // prints "rank R: what"
  }
  return 1;  // (not reached: abort ends the job)
}

}  // namespace

int run_training(Config cfg, const TrainOptions& opt) {
  // This process's place in its job (the launcher's environment; one process: rank 0 of 1), for
  // the log first: from here on only rank 0's messages reach the console, the others' errors.
  const dist::ProcessPlace place = dist::detect_process_place();
  logging::init(place.rank, place.world_size, "", logging::Level::Info);
  if (opt.resume) {
    cfg = reopen(std::move(cfg), Reopen::Resume);
  } else {
    resolve_run_config(cfg);
  }
  const std::string dir = cfg.get_string("run.dir");
  const logging::Level level = log_level(cfg);
  logging::set_level(level);
  if (opt.resume && fs::exists(dir + "/summary.json") &&
      Config::from_file(dir + "/config.yaml").get_int("train.steps") == cfg.get_int("train.steps")) {
    logging::info("{} is finished ({} steps): nothing to resume (--set train.steps=N extends it)\n", dir,
                  cfg.get_int("train.steps"));
    return 0;
  }
  // The job (world size 1: the identity, no MPI) before anything is read or written.
  std::unique_ptr<dist::Communicator> comm = open_job(cfg, place, tasks::run_device(cfg));
  check_world_size(cfg, *comm);
  // Steps whose failure may be one rank's alone (rank 0's files, a rank's data) end in agree();
  // the collectives between them run only once every rank got there.
  if (auto failed = agree(*comm, [&] {
        if (!opt.resume && comm->rank() == 0) check_run_dir(dir, false);
      }))
    return *failed;
  set_threads(cfg.get_int("run.threads"));
  std::unique_ptr<Run> run;
  if (auto failed = agree(*comm, [&] { run = prepare(std::move(cfg), opt, *comm); })) return *failed;
  prepare_parallel(*run);
  std::unique_ptr<RunLock> lock;
  int64_t choice = 0;
  if (auto failed = agree(*comm, [&] {
        if (run->root()) lock = open_run_dir(*run, opt);
        if (run->root() && opt.resume) choice = choose_checkpoint_index(*run);
      }))
    return *failed;
  // The other ranks' logs/rank-N.log, once rank 0 holds the directory: they do not lock it, and
  // each appends to its own file only (docs/runs.md). One that cannot is a setup failure.
  if (run->parallel())
    if (auto failed = agree(*comm, [&] {
          if (!run->root()) logging::init(comm->rank(), comm->world_size(), dir, level);
        }))
      return *failed;
  if (opt.resume) restore(*run, choice);
  std::optional<MetricsLog> log;
  if (run->root()) {
    log.emplace(dir + "/metrics.jsonl", run->state.metrics_bytes);
    run->log = &*log;
  }
  return train_or_abort(*run, opt);
}

}  // namespace attn::train
