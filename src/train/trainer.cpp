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
#include "train/lm_setup.h"
#include "train/run_files.h"

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

double evaluate(const models::DecoderLM& model, const std::vector<data::TokenBatch>& batches) {
  NoGradGuard no_grad;
  double total = 0;
  for (const auto& b : batches) total += model.loss(b.x, b.y).item();
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
};

// A directory that holds a run already (config, checkpoints or a summary) is not overwritten.
void check_run_dir(const std::string& dir, bool resume) {
  bool used = fs::exists(dir + "/config.yaml") || fs::exists(dir + "/summary.json") || !latest_checkpoint(dir + "/checkpoints").empty();
  if (!resume && used)
    throw ConfigError("run directory '" + dir + "' already holds a run: pass --resume to continue it, or set run.dir");
  if (resume && !fs::exists(dir + "/config.yaml"))
    throw ConfigError("--resume: '" + dir + "' has no config.yaml (no run to resume)");
}

std::unique_ptr<Run> prepare(Config cfg, const TrainOptions& opt) {
  resolve_config(cfg);
  auto run = std::make_unique<Run>();
  run->dir = cfg.get_string("run.dir");
  check_run_dir(run->dir, opt.resume);
  run->device = run_device(cfg);  // before the data: a missing GPU fails fast
  std::string tokenizer_json;
  if (opt.resume && fs::exists(run->dir + "/tokenizer.json")) tokenizer_json = read_file(run->dir + "/tokenizer.json");
  run->data = load_lm_data(cfg, tokenizer_json);
  int64_t T = cfg.get_int("model.seq_len"), B = cfg.get_int("train.batch_size");
  if (static_cast<int64_t>(run->data.val->size()) < B * T + 1)
    throw ConfigError(fmt::format("config key 'train.batch_size': the validation split ({} tokens) is shorter than one "
                                  "batch of {}×{}", run->data.val->size(), B, T));
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
  fs::create_directories(r.dir + "/checkpoints");
  write_atomic(r.dir + "/config.yaml", r.cfg.to_yaml());
  if (r.data.tokenizer) write_atomic(r.dir + "/tokenizer.json", r.data.tokenizer->to_json().dump() + "\n");
}

void restore(Run& r) {
  std::string ckpt = latest_checkpoint(r.dir + "/checkpoints");
  if (ckpt.empty()) return;  // crashed before the first checkpoint: start over
  r.state = load_checkpoint(ckpt, *r.model, r.opt.get());
  r.batcher->set_position(r.state.data_position);
  r.model->dropout_gen.offset = r.state.dropout_offset;
  fmt::print(stderr, "resuming {} from {} (step {})\n", r.dir, ckpt, r.state.step);
}

void checkpoint(Run& r, uint64_t metrics_bytes) {
  r.state.data_position = r.batcher->position();
  r.state.dropout_offset = r.model->dropout_gen.offset;
  r.state.metrics_bytes = metrics_bytes;
  save_checkpoint(fmt::format("{}/checkpoints/step-{:08}.ckpt", r.dir, r.state.step), *r.model, *r.opt, r.state);
  prune_checkpoints(r.dir + "/checkpoints", r.cfg.get_int("checkpoint.keep"));
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

int train_loop(Run& r, const TrainOptions& opt, MetricsLog& log) {
  const Config& c = r.cfg;
  int64_t steps = c.get_int("train.steps"), accum = c.get_int("train.grad_accum");
  int64_t tokens_per_step = accum * c.get_int("train.batch_size") * c.get_int("model.seq_len");
  int64_t log_every = c.get_int("log.every"), eval_every = c.get_int("eval.every"), ckpt_every = c.get_int("checkpoint.every");
  bool tty = isatty(STDERR_FILENO);
  std::string tag = c.get_string("attention.variant");
  nlohmann::json last_eval;
  r.model->set_training(true);
  while (r.state.step < steps) {
    auto t0 = Clock::now();
    double lr = r.schedule.at(r.state.step);
    auto [loss, norm] = train_step(r, accum, c.get_float("train.clip"));
    if (r.state.step + 1 == opt.nan_at_step) loss = NAN;
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      r.opt->zero_grad();
      std::string last = latest_checkpoint(r.dir + "/checkpoints");
      fmt::print(stderr, "{}error: non-finite {} at step {} (loss {}, grad norm {}); stopping. Last good checkpoint: {}\n",
                 tty ? "\n" : "", std::isfinite(loss) ? "gradient" : "loss", r.state.step + 1, loss, norm,
                 last.empty() ? "none" : last);
      log.write({{"step", r.state.step + 1}, {"error", "non-finite loss or gradient"}});
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
    if (r.state.step % ckpt_every == 0 || is_last) checkpoint(r, log.bytes());
    if (r.state.step == opt.abort_after_step) std::raise(SIGKILL);
  }
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

int run_training(Config cfg, const TrainOptions& opt) {
  if (opt.resume) {
    resolve_config(cfg);
    std::string dir = cfg.get_string("run.dir");
    check_run_dir(dir, true);
    Config saved = Config::from_file(dir + "/config.yaml");
    saved.resolve("train.steps", cfg.get_string("train.steps"));  // a resume may extend the run
    cfg = saved;
  }
  set_threads(cfg.get_int("run.threads"));
  std::unique_ptr<Run> run = prepare(std::move(cfg), opt);
  if (opt.resume) restore(*run);
  else create_run_dir(*run);
  MetricsLog log(run->dir + "/metrics.jsonl", opt.resume ? run->state.metrics_bytes : 0);
  return train_loop(*run, opt, log);
}

int run_eval(const std::string& run_dir, const std::string& checkpoint, const std::vector<std::string>& sets) {
  Config cfg = Config::from_file(run_dir + "/config.yaml");
  for (const std::string& s : sets) cfg.set(s);
  resolve_config(cfg);  // checks the overrides (bf16 on the CPU: set run.precision=f32 too)
  set_threads(cfg.get_int("run.threads"));
  std::string tok = fs::exists(run_dir + "/tokenizer.json") ? read_file(run_dir + "/tokenizer.json") : "";
  LmData data = load_lm_data(cfg, tok);
  models::DecoderLM model(model_config(cfg, data.vocab_size), cfg.get_int("run.seed"));
  std::string ckpt = checkpoint.empty() ? latest_checkpoint(run_dir + "/checkpoints") : checkpoint;
  if (ckpt.empty()) throw ConfigError("eval: no checkpoint in '" + run_dir + "/checkpoints'");
  TrainState s = load_checkpoint(ckpt, model, nullptr);
  place_model(model, cfg);
  model.set_training(false);
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
