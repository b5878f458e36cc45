#include "train/trainer.h"

#include <omp.h>
#include <unistd.h>

#include <Eigen/Core>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fmt/format.h>
#include <iostream>

#include "autograd/node.h"
#include "backend/cuda/cuda_api.h"
#include "data/batcher.h"
#include "models/lm/lm.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "train/checkpoint.h"
#include "train/lm_setup.h"
#include "train/run_dir.h"
#include "train/run_files.h"
#include "train/saved_config.h"
#include "train/stop_signal.h"

namespace fs = std::filesystem;

namespace attn::train {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string format_duration(double s) {
  int64_t t = static_cast<int64_t>(s);
  return t >= 3600 ? fmt::format("{}h{:02}m", t / 3600, t / 60 % 60) : fmt::format("{}m{:02}s", t / 60, t % 60);
}

// Batches on the model's device (once, for the validation set; per step for training).
data::TokenBatch on_device(data::TokenBatch b, Device dev) {
  if (!dev.is_cpu()) {
    b.x = b.x.to(dev);
    b.y = b.y.to(dev);
  }
  return b;
}

std::vector<data::TokenBatch> on_device(std::vector<data::TokenBatch> batches, Device dev) {
  for (auto& b : batches) b = on_device(std::move(b), dev);
  return batches;
}

// Mean loss over the batches in eval mode (no dropout, so the dropout generator is untouched and
// the training curve does not depend on eval.every); the model's mode is restored after.
double evaluate(models::DecoderLM& model, const std::vector<data::TokenBatch>& batches) {
  NoGradGuard no_grad;
  const bool was_training = model.training();
  model.set_training(false);
  double total = 0;
  for (const auto& b : batches) total += model.loss(b.x, b.y).item();
  model.set_training(was_training);
  return batches.empty() ? NAN : total / static_cast<double>(batches.size());
}

AdamWConfig adamw_config(const Config& c) {
  return {c.get_float("train.lr"), c.get_float("train.beta1"), c.get_float("train.beta2"), c.get_float("train.eps"),
          c.get_float("train.weight_decay")};
}

// Everything a run holds while it trains.
struct Run {
  Config cfg;
  std::string dir;
  LmData data;
  std::unique_ptr<models::DecoderLM> model;
  std::unique_ptr<AdamW> opt;
  std::unique_ptr<data::TokenBatcher> batcher;
  std::vector<data::TokenBatch> val_batches;
  LrSchedule schedule{};
  TrainState state;
  Device device = Device::cpu();
  int64_t checkpointed_step = -1;  // the step of the newest checkpoint on disk
};

std::unique_ptr<Run> prepare(Config cfg, const TrainOptions& opt) {
  auto run = std::make_unique<Run>();
  run->dir = cfg.get_string("run.dir");
  run->device = run_device(cfg);  // before the data: a missing GPU fails fast
  std::string tokenizer_json;
  if (opt.resume && fs::exists(run->dir + "/tokenizer.json")) tokenizer_json = read_file(run->dir + "/tokenizer.json");
  run->data = load_lm_data(cfg, tokenizer_json);
  check_lm_data_fits(cfg, run->data);
  int64_t T = cfg.get_int("model.seq_len"), B = cfg.get_int("train.batch_size");
  // Built (and initialised) on the CPU, then moved: the same initial weights on every device.
  run->model = std::make_unique<models::DecoderLM>(model_config(cfg, run->data.vocab_size), cfg.get_int("run.seed"));
  place_model(*run->model, cfg);
  run->opt = std::make_unique<AdamW>(run->model->parameters(), adamw_config(cfg));
  run->batcher = std::make_unique<data::TokenBatcher>(run->data.train, B, T, cfg.get_int("run.seed"));
  run->val_batches = on_device(data::eval_batches(*run->data.val, B, T, cfg.get_int("eval.batches")), run->device);
  run->schedule = {cfg.get_float("train.lr"), cfg.get_int("train.warmup_steps"), cfg.get_int("train.steps"),
                   cfg.get_float("train.min_lr_ratio")};
  run->cfg = std::move(cfg);
  return run;
}

void create_run_dir(Run& r) {
  write_atomic(r.dir + "/config.yaml", r.cfg.to_yaml());
  if (r.data.tokenizer) write_atomic(r.dir + "/tokenizer.json", r.data.tokenizer->to_json().dump() + "\n");
}

// Loads the newest checkpoint that verifies. One that does not is named with its fault, moved
// aside (NAME.corrupt) and the previous one tried; none usable is an error, never a silent restart.
void restore(Run& r) {
  const std::string dir = r.dir + "/checkpoints";
  std::vector<std::string> all = list_checkpoints(dir);
  if (all.empty()) {
    fmt::print(stderr, "note: {} has no checkpoint (the run stopped before its first one): starting again from step 0\n",
               dir);
    return;
  }
  std::vector<std::string> rejected;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    std::string why = verify_checkpoint(*it);
    if (!why.empty() && why.rfind("format 1", 0) != 0) {
      fs::rename(*it, *it + ".corrupt");
      rejected.push_back(fmt::format("'{}' ({})", *it, why));
      fmt::print(stderr, "error: checkpoint '{}' is unusable: {}; moved to '{}.corrupt'{}\n", *it, why, *it,
                 std::next(it) != all.rend() ? fmt::format("; falling back to '{}'", *std::next(it)) : "");
      continue;
    }
    r.state = load_checkpoint(*it, *r.model, r.opt.get());
    r.checkpointed_step = r.state.step;
    r.batcher->set_position(r.state.data_position);
    r.model->dropout_gen.offset = r.state.dropout_offset;
    fmt::print(stderr, "resuming {} from {} (step {})\n", r.dir, *it, r.state.step);
    return;
  }
  sync_directory(dir);
  throw CheckpointError(fmt::format("no usable checkpoint in '{}': {}", dir, fmt::join(rejected, "; ")));
}

void checkpoint(Run& r, MetricsLog& log) {
  log.sync();  // the rows this checkpoint counts are on disk before it is
  r.state.data_position = r.batcher->position();
  r.state.dropout_offset = r.model->dropout_gen.offset;
  r.state.metrics_bytes = log.bytes();
  save_checkpoint(fmt::format("{}/checkpoints/step-{:08}.ckpt", r.dir, r.state.step), *r.model, *r.opt, r.state);
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

nlohmann::json eval_row(Run& r) {
  double v = evaluate(*r.model, r.val_batches);
  r.state.best_val_loss = std::min(r.state.best_val_loss, v);
  return {{"step", r.state.step}, {"val_loss", v}, {"val_bpc", v / std::log(2.0)}, {"unit", r.data.unit}};
}

void write_summary(Run& r, const nlohmann::json& last_eval) {
  nlohmann::json s = {
      {"variant", r.cfg.get_string("attention.variant")},
      {"name", r.cfg.get_string("run.name")},
      {"seed", r.cfg.get_int("run.seed")},
      {"steps", r.state.step},
      {"final_val_loss", last_eval["val_loss"]},
      {"best_val_loss", r.state.best_val_loss},
      {"final_val_bpc", last_eval["val_bpc"]},
      {"unit", r.data.unit},
      {"tokens", r.state.tokens},
      {"tokens_per_s", r.state.tokens / std::max(r.state.elapsed_s, 1e-9)},
      {"parameters", r.model->parameter_count()},
      {"device", r.device.str()},
      {"precision", r.cfg.get_string("run.precision")},
      {"wall_time_s", r.state.elapsed_s},
  };
  write_atomic(r.dir + "/summary.json", s.dump(2) + "\n");
}

// One optimizer step over grad_accum micro-batches; returns {mean loss, grad norm}.
std::pair<double, double> train_step(Run& r, int64_t accum, double clip) {
  double loss_sum = 0;
  for (int64_t m = 0; m < accum; ++m) {
    data::TokenBatch b = on_device(r.batcher->next(), r.device);
    Tensor loss = r.model->loss(b.x, b.y);
    loss_sum += loss.item();
    (accum > 1 ? mul(loss, 1.0 / static_cast<double>(accum)) : loss).backward();
  }
  double norm = clip_grad_norm(r.opt->params(), clip);
  return {loss_sum / static_cast<double>(accum), norm};
}

bool is_finished(const Run& r) { return r.state.step >= r.cfg.get_int("train.steps"); }

// The first SIGINT/SIGTERM: the step in flight has finished; checkpoint it, say how to go on.
int stop_on_signal(Run& r, MetricsLog& log, int sig) {
  if (r.checkpointed_step != r.state.step) checkpoint(r, log);
  fmt::print(stderr, "\n{} at step {}: checkpoint {}/checkpoints/step-{:08}.ckpt written. Resume with:\n  attnlab train --set run.dir={} --resume\n",
             signal_name(sig), r.state.step, r.dir, r.state.step, r.dir);
  return 128 + sig;
}

int train_loop(Run& r, const TrainOptions& opt, MetricsLog& log) {
  const Config& c = r.cfg;
  int64_t steps = c.get_int("train.steps"), accum = c.get_int("train.grad_accum");
  int64_t tokens_per_step = accum * c.get_int("train.batch_size") * c.get_int("model.seq_len");
  int64_t log_every = c.get_int("log.every"), eval_every = c.get_int("eval.every"), ckpt_every = c.get_int("checkpoint.every");
  bool tty = isatty(STDERR_FILENO);
  std::string tag = c.get_string("attention.variant");
  nlohmann::json last_eval;
  r.model->set_training(true);
  StopSignal stop;
  while (r.state.step < steps) {
    if (int sig = StopSignal::pending()) return stop_on_signal(r, log, sig);
    auto t0 = Clock::now();
    double lr = r.schedule.at(r.state.step);
    auto [loss, norm] = train_step(r, accum, c.get_float("train.clip"));
    if (r.state.step + 1 == opt.nan_at_step) loss = NAN;
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      r.opt->zero_grad();
      log.write({{"step", r.state.step + 1}, {"error", "non-finite loss or gradient"}});
      fmt::print(stderr, "{}error: non-finite {} at step {} (loss {}, grad norm {}); stopping. Last good checkpoint: {}\n",
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
                 {"tokens_per_s", tokens_per_step / dt}, {"elapsed", r.state.elapsed_s}});
      if (!opt.quiet) {
        double rate = r.state.tokens / r.state.elapsed_s;
        double eta = (steps - r.state.step) * tokens_per_step / rate;
        fmt::print(stderr, "{}[{}] step {}/{} loss {:.4f} lr {:.2e} | {:.0f} tok/s | ETA {}{}", tty ? "\r" : "", tag,
                   r.state.step, steps, loss, lr, rate, format_duration(eta), tty ? "   " : "\n");
      }
    }
    if (r.state.step % eval_every == 0 || is_last) {
      last_eval = eval_row(r);
      log.write(last_eval);
      if (!opt.quiet)
        fmt::print(stderr, "{}[{}] step {} val_loss {:.4f} ({:.4f} bits/{})\n", tty ? "\n" : "", tag, r.state.step,
                   last_eval["val_loss"].get<double>(), last_eval["val_bpc"].get<double>(), r.data.unit);
    }
    if (r.state.step % ckpt_every == 0 || is_last) checkpoint(r, log);
    if (r.state.step == opt.abort_after_step) std::raise(SIGKILL);
  }
  if (int sig = StopSignal::pending(); sig && !is_finished(r)) return stop_on_signal(r, log, sig);
  if (last_eval.is_null()) last_eval = eval_row(r);  // resumed a run that had finished its steps
  write_summary(r, last_eval);
  if (!opt.quiet) fmt::print(stderr, "[{}] done: {}\n", tag, r.dir);
  return 0;
}

}  // namespace

void set_threads(int64_t n) {
  int threads = n > 0 ? static_cast<int>(n) : omp_get_num_procs();
  omp_set_num_threads(threads);
  Eigen::setNbThreads(threads);
}

namespace {

// The saved config of the run that `requested` (defaults + --config + --set) points at, with the
// overrides a resume or an eval may make; the notes go to stderr.
Config reopen(Config requested, Reopen mode, const std::string& dir_arg = "") {
  if (!dir_arg.empty()) requested.resolve("run.dir", dir_arg);
  resolve_run_dir(requested);
  const std::string dir = requested.get_string("run.dir");
  if (mode == Reopen::Resume) check_run_dir(dir, true);
  else if (!fs::exists(dir + "/config.yaml")) throw ConfigError("eval: '" + dir + "' has no config.yaml (not a run directory)");
  ReopenedConfig re = reopen_config(Config::from_file(dir + "/config.yaml"), requested, mode, dir);
  re.config.resolve("run.dir", dir);
  resolve_config(re.config);
  for (const std::string& n : re.notes) fmt::print(stderr, "note: {}\n", n);
  return re.config;
}

bool run_extended(const Run& r) {
  Config saved = Config::from_file(r.dir + "/config.yaml");
  return saved.get_int("train.steps") != r.cfg.get_int("train.steps");
}

}  // namespace

int run_training(Config cfg, const TrainOptions& opt) {
  if (opt.resume) {
    cfg = reopen(std::move(cfg), Reopen::Resume);
  } else {
    resolve_config(cfg);
    check_run_dir(cfg.get_string("run.dir"), false);
  }
  const std::string dir = cfg.get_string("run.dir");
  if (opt.resume && fs::exists(dir + "/summary.json") &&
      Config::from_file(dir + "/config.yaml").get_int("train.steps") == cfg.get_int("train.steps")) {
    fmt::print(stderr, "{} is finished ({} steps): nothing to resume (--set train.steps=N extends it)\n", dir,
               cfg.get_int("train.steps"));
    return 0;
  }
  set_threads(cfg.get_int("run.threads"));
  std::unique_ptr<Run> run = prepare(std::move(cfg), opt);
  fs::create_directories(dir + "/checkpoints");
  RunLock lock(dir);  // from here on this process alone writes the directory
  for (const std::string& sub : {dir, dir + "/checkpoints"})
    for (const std::string& f : remove_temp_files(sub))
      fmt::print(stderr, "note: removed '{}' (left by a write that did not finish)\n", f);
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

int run_eval(const std::string& run_dir, const std::string& checkpoint, const Config& requested) {
  Config cfg = reopen(requested, Reopen::Eval, run_dir);
  set_threads(cfg.get_int("run.threads"));
  std::string tok = fs::exists(run_dir + "/tokenizer.json") ? read_file(run_dir + "/tokenizer.json") : "";
  LmData data = load_lm_data(cfg, tok);
  models::DecoderLM model(model_config(cfg, data.vocab_size), cfg.get_int("run.seed"));
  std::string ckpt = checkpoint;
  if (ckpt.empty()) {
    VerifiedCheckpoint v = latest_verified_checkpoint(run_dir + "/checkpoints");
    for (const auto& [file, why] : v.rejected) fmt::print(stderr, "note: skipping checkpoint '{}': {}\n", file, why);
    if (v.path.empty()) throw ConfigError("eval: no usable checkpoint in '" + run_dir + "/checkpoints'");
    ckpt = v.path;
  }
  TrainState s = load_checkpoint(ckpt, model, nullptr);
  place_model(model, cfg);
  auto batches = on_device(data::eval_batches(*data.val, cfg.get_int("train.batch_size"), cfg.get_int("model.seq_len"),
                                              cfg.get_int("eval.batches")),
                           run_device(cfg));
  double v = evaluate(model, batches);
  nlohmann::json out = {{"checkpoint", ckpt}, {"step", s.step}, {"val_loss", v}, {"val_bpc", v / std::log(2.0)},
                        {"unit", data.unit}, {"batches", batches.size()}};
  std::cout << out.dump() << std::endl;
  return 0;
}

int run_train_bench(Config cfg, int64_t steps) {
  if (steps < 1) throw ConfigError(fmt::format("bench train --steps: {} (must be at least 1)", steps));
  resolve_config(cfg);
  set_threads(cfg.get_int("run.threads"));
  int64_t V = 65, B = cfg.get_int("train.batch_size"), T = cfg.get_int("model.seq_len");
  models::DecoderLM model(model_config(cfg, V), cfg.get_int("run.seed"));
  place_model(model, cfg);
  const Device dev = run_device(cfg);
  AdamW opt(model.parameters(), adamw_config(cfg));
  Generator g(7);
  Tensor ids = uniform({B, T + 1}, g, {DType::F64}, 0, V - 1e-9).to(DType::I32);
  Tensor x = slice(ids, 1, 0, T).to(dev), y = slice(ids, 1, 1, T + 1).to(dev);
  std::vector<double> rates;
  for (int64_t s = 0; s < steps + 2; ++s) {  // two warm-up steps
    if (s == 2) Storage::reset_peak(dev.kind);
    auto t0 = Clock::now();
    model.loss(x, y).backward();
    clip_grad_norm(opt.params(), 1.0);  // returns the norm: waits for the device
    opt.step(cfg.get_float("train.lr"));
    opt.zero_grad();
    if (dev.is_cuda()) cuda::synchronize(dev.index);  // the step's kernels are done
    if (s >= 2) rates.push_back(static_cast<double>(B * T) / seconds_since(t0));
  }
  std::sort(rates.begin(), rates.end());
  fmt::print("bench train: d_model {} layers {} heads {} seq {} batch {} variant {} device {} precision {} "
             "threads {} params {}\n",
             cfg.get_int("model.d_model"), cfg.get_int("model.n_layers"), cfg.get_int("model.n_heads"), T, B,
             cfg.get_string("attention.variant"), dev.str(), cfg.get_string("run.precision"), omp_get_max_threads(),
             model.parameter_count());
  fmt::print("tokens/s (forward + backward + AdamW): median {:.0f}, best {:.0f} over {} steps\n",
             rates[rates.size() / 2], rates.back(), rates.size());
  fmt::print(
      "peak tensor memory ({}): {:.1f} MiB (parameters, AdamW state, activations, gradients)\n",
      dev.is_cuda() ? "device" : "host",
      static_cast<double>(Storage::peak_bytes(dev.kind)) / (1 << 20));
  return 0;
}

}  // namespace attn::train
