// attnlab bench train: training throughput of the config's task (forward + backward + clip +
// AdamW on its real training stream), median over timed steps after two warm-up steps.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <fmt/format.h>

#include "backend/cuda/cuda_api.h"
#include "optim/clip.h"
#include "tasks/device.h"
#include "tasks/registry.h"
#include "train/run_setup.h"
#include "train/trainer.h"

namespace attn::train {

int run_train_bench(Config cfg, int64_t steps) {
  if (steps < 1) throw ConfigError(fmt::format("bench train --steps: {} (must be at least 1)", steps));
  resolve_run_config(cfg);
  set_threads(cfg.get_int("run.threads"));
  const Device dev = tasks::run_device(cfg);
  std::unique_ptr<tasks::Task> task = tasks::make_task(cfg.get_string("task"));
  task->prepare(cfg, "", dev);
  nn::Module& model = task->model();
  AdamW opt(model.parameters(), adamw_config(cfg));
  const auto [items, unit] = task->items_per_micro_batch();
  std::vector<double> rates;
  for (int64_t s = 0; s < steps + 2; ++s) {  // two warm-up steps
    if (s == 2) Storage::reset_peak(dev.kind);
    auto t0 = std::chrono::steady_clock::now();
    task->next_train_loss().backward();
    clip_grad_norm(opt.params(), 1.0);  // returns the norm: waits for the device
    opt.step(cfg.get_float("train.lr"));
    opt.zero_grad();
    if (dev.is_cuda()) cuda::synchronize(dev.index);  // the step's kernels are done
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s >= 2) rates.push_back(static_cast<double>(items) / dt);
  }
  std::sort(rates.begin(), rates.end());
  fmt::print("bench train: task {} d_model {} layers {} heads {} batch {} variant {} device {} precision {} "
             "threads {} params {}\n",
             cfg.get_string("task"), cfg.get_int("model.d_model"), cfg.get_int("model.n_layers"),
             cfg.get_int("model.n_heads"), cfg.get_int("train.batch_size"), cfg.get_string("attention.variant"),
             dev.str(), cfg.get_string("run.precision"), omp_get_max_threads(), model.parameter_count());
  fmt::print("{}/s (forward + backward + AdamW): median {:.0f}, best {:.0f} over {} steps\n", unit,
             rates[rates.size() / 2], rates.back(), rates.size());
  fmt::print("peak tensor memory ({}): {:.1f} MiB (parameters, AdamW state, activations, gradients)\n",
             dev.is_cuda() ? "device" : "host", static_cast<double>(Storage::peak_bytes(dev.kind)) / (1 << 20));
  return 0;
}

}  // namespace attn::train
