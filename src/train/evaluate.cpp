// attnlab eval RUN: the validation metrics of a run's checkpoint, exactly the model that was
// trained (saved_config.h says which --set an eval may give).
#include <filesystem>
#include <fmt/format.h>
#include <iostream>

#include "autograd/node.h"
#include "tasks/device.h"
#include "tasks/registry.h"
#include "train/checkpoint.h"
#include "train/run_setup.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace attn::train {

int run_eval(const std::string& run_dir, const std::string& checkpoint, const Config& requested) {
  Config cfg = reopen(requested, Reopen::Eval, run_dir);
  set_threads(cfg.get_int("run.threads"));
  std::string ckpt = checkpoint;
  if (ckpt.empty()) {
    VerifiedCheckpoint v = latest_verified_checkpoint(run_dir + "/checkpoints");
    for (const auto& [file, why] : v.rejected) fmt::print(stderr, "note: skipping checkpoint '{}': {}\n", file, why);
    if (v.path.empty()) throw ConfigError("eval: no usable checkpoint in '" + run_dir + "/checkpoints'");
    ckpt = v.path;
  }
  std::unique_ptr<tasks::Task> task = tasks::make_task(cfg.get_string("task"));
  task->prepare(cfg, run_dir, tasks::run_device(cfg));
  TrainState s = load_checkpoint(ckpt, task->model(), nullptr);
  NoGradGuard no_grad;
  task->model().set_training(false);
  nlohmann::json out = task->evaluate();
  out["checkpoint"] = ckpt;
  out["step"] = s.step;
  out["batches"] = task->validation_batches();
  std::cout << out.dump() << std::endl;
  return 0;
}

}  // namespace attn::train
