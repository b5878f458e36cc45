// attnlab eval RUN: the validation metrics (and the model statistics) of a run's checkpoint, exactly the model that was
// trained (saved_config.h says which --set an eval may give).
#include <filesystem>
#include <fmt/format.h>
#include <iostream>

#include "autograd/node.h"
#include "metrics/fake_quant.h"
#include "metrics/model_stats.h"
#include "metrics/param_stats.h"
#include "tasks/device.h"
#include "tasks/registry.h"
#include "train/checkpoint.h"
#include "train/run_setup.h"
#include "train/trainer.h"
#include "util/log.h"

namespace fs = std::filesystem;

namespace attn::train {

namespace {

// " max kurtosis 5.1 (Gaussian 3), max ∞-norm 12, sink mass 0.21, row mass 1.000".
std::string describe_stats_summary(const nlohmann::json& s) {
  std::string out = fmt::format(" max kurtosis {:.4g} (Gaussian 3), max ∞-norm {:.4g}", s["max_kurtosis"].get<double>(),
                                s["max_inf_norm"].get<double>());
  if (s.contains("sink_mass"))
    out += fmt::format(", sink mass {:.3f}, row mass {:.3f}", s["sink_mass"].get<double>(), s["row_mass"].get<double>());
  return out;
}

// Fake-quantises `task`'s model in place and evaluates it: calibration over the training stream
// (from the checkpoint's position), then the validation set with every point quantised.
nlohmann::json quantised_eval(tasks::Task& task, const QuantEval& q, const nlohmann::json& fp) {
  metrics::QuantScheme scheme = metrics::parse_quant_scheme(q.scheme);
  scheme.per_channel = q.per_channel;
  nn::Module& model = task.model();
  const std::vector<std::string> keep = task.full_precision_modules();
  nlohmann::json weights = metrics::quantize_weights(model.parameters(), scheme, keep);
  metrics::ActivationFakeQuant acts(scheme.act_bits, keep);
  model.set_quantizer(&acts);
  logging::info("calibrating {} activation ranges on {} training batches ...\n", scheme.name(), q.calibration_batches);
  for (int64_t b = 0; b < q.calibration_batches; ++b) task.next_train_loss();
  acts.set_mode(metrics::ActivationFakeQuant::Mode::Quantize);
  nlohmann::json after = task.evaluate();
  model.set_quantizer(nullptr);
  logging::info("full precision: {}\n{}: {}\n", task.describe(fp), scheme.name(), task.describe(after));
  return {{"scheme", scheme.name()}, {"calibration_batches", q.calibration_batches}, {"full_precision", fp},
          {"quantised", after}, {"weight_rel_error", weights}, {"activations", acts.report()},
          {"full_precision_modules", keep}};
}

}  // namespace

int run_eval(const std::string& run_dir, const std::string& checkpoint, const Config& requested, const QuantEval& quant) {
  if (!quant.scheme.empty()) {  // a bad scheme fails before any work, as a usage error (exit 2)
    try {
      metrics::parse_quant_scheme(quant.scheme);
    } catch (const std::invalid_argument& e) {
      throw ConfigError(std::string("eval --quant: ") + e.what());
    }
  }
  Config cfg = reopen(requested, Reopen::Eval, run_dir);
  logging::init(0, 1, "", log_level(cfg));
  set_threads(cfg.get_int("run.threads"));
  std::string ckpt = checkpoint;
  if (ckpt.empty()) {
    VerifiedCheckpoint v = latest_verified_checkpoint(run_dir + "/checkpoints");
    for (const auto& [file, why] : v.rejected) logging::info("note: skipping checkpoint '{}': {}\n", file, why);
    if (v.path.empty()) throw ConfigError("eval: no usable checkpoint in '" + run_dir + "/checkpoints'");
    ckpt = v.path;
  }
  std::unique_ptr<tasks::Task> task = tasks::make_task(cfg.get_string("task"));
  task->prepare(cfg, run_dir, tasks::run_device(cfg));
  TrainState s = load_checkpoint(ckpt, task->model(), nullptr);
  task->set_position(s.data_position);  // calibration batches: the stream where training stopped
  NoGradGuard no_grad;
  task->model().set_training(false);
  // The full-precision evaluation also gives the model's statistics over the same batches.
  metrics::ModelStats stats(cfg.get_int("stats.attention_rows"));
  task->model().set_tap(&stats);
  nlohmann::json out = task->evaluate();
  task->model().set_tap(nullptr);
  out["stats"] = stats.report();
  out["stats"]["weights"] = metrics::weight_kurtosis(task->model().parameters());
  if (out["stats"]["summary"].contains("max_kurtosis"))
    logging::info("statistics:{}\n", describe_stats_summary(out["stats"]["summary"]));
  if (!quant.scheme.empty()) {
    nlohmann::json fp = out;
    fp.erase("stats");
    out["quant"] = quantised_eval(*task, quant, fp);
  }
  out["checkpoint"] = ckpt;
  out["step"] = s.step;
  out["batches"] = task->validation_batches();
  std::cout << out.dump() << std::endl;
  return 0;
}

}  // namespace attn::train
