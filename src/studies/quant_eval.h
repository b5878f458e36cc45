// The quantised evaluations of a study (the grid's `quant: [w8a8, ...]`): for each finished run and
// mode, `attnlab eval RUN --quant MODE`, its JSON checked and kept as RUN/eval-MODE.json. A result
// is current while it evaluated the run's last step and is newer than the run's newest
// checkpoint; an extended (or retrained) run makes it stale, and the sweep evaluates it again.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace attn::studies {

// RUN/eval-MODE.json.
std::string eval_path(const std::string& run_dir, const std::string& mode);

enum class EvalState { Missing, Stale, Current };
struct EvalStatus {
  EvalState state = EvalState::Missing;
  std::string why;  // for Missing and Stale: what is missing or older
};
// Current when eval-MODE.json is a checked result of the finished run's last step (summary.json's
// `steps`) and no checkpoint is newer than it.
EvalStatus eval_status(const std::string& run_dir, const std::string& mode);

// The suffix of the sweep's log and status files of a run's evaluation (run_plan.h's log_file):
// ".eval-MODE".
std::string eval_log_suffix(const std::string& mode);

// Where the sweep has the child's stdout written, beside eval-MODE.json (a temporary name of
// this process), after removing any such file an earlier sweep left.
std::string fresh_eval_output_file(const std::string& run_dir, const std::string& mode);

// The `attnlab eval` arguments after the program name: eval RUN --quant MODE.
std::vector<std::string> eval_args(const std::string& run_dir, const std::string& mode);

// The JSON `attnlab eval --quant MODE` printed, checked: an object with its `step` and a `quant`
// whose scheme is MODE's and which holds full_precision and quantised metrics. Throws
// std::runtime_error saying what is wrong.
nlohmann::json checked_eval_output(const std::string& text, const std::string& mode);

// The checked result into eval-MODE.json (a temporary name, then renamed over it).
void store_eval(const std::string& run_dir, const std::string& mode, const nlohmann::json& result);

// The task's quality metric among its validation metrics, from its compare columns (the summary
// keys final_val_<x>, in the task's order): the first that is not val_loss (val_bpc, val_acc,
// val_cer); val_loss when there is none.
std::string quality_metric(const std::vector<std::string>& compare_keys);

}  // namespace attn::studies
