#include "studies/quant_eval.h"

#include <fmt/format.h>
#include <unistd.h>
#include <filesystem>
#include <stdexcept>

#include "metrics/fake_quant.h"
#include "train/checkpoint.h"
#include "train/run_files.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace attn::studies {

namespace {

json read_json(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return json();
  return json::parse(train::read_file(path), nullptr, false);
}

bool is_object_at(const json& j, const char* key) { return j.contains(key) && j[key].is_object(); }

}  // namespace

std::string eval_path(const std::string& run_dir, const std::string& mode) {
  return (fs::path(run_dir) / ("eval-" + mode + ".json")).string();
}

std::string eval_log_suffix(const std::string& mode) { return ".eval-" + mode; }

std::string fresh_eval_output_file(const std::string& run_dir, const std::string& mode) {
  const std::string prefix = "eval-" + mode + ".json.out.tmp.";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run_dir, ec))
    if (e.path().filename().string().rfind(prefix, 0) == 0) fs::remove(e.path(), ec);
  return (fs::path(run_dir) / (prefix + std::to_string(::getpid()))).string();
}

std::vector<std::string> eval_args(const std::string& run_dir, const std::string& mode) {
  return {"eval", run_dir, "--quant", mode};
}

json checked_eval_output(const std::string& text, const std::string& mode) {
  const json j = json::parse(text, nullptr, false);
  if (!j.is_object()) throw std::runtime_error("its output is not a JSON object");
  if (!j.contains("step") || !j["step"].is_number_integer())
    throw std::runtime_error("its output has no integer `step`");
  if (!is_object_at(j, "quant")) throw std::runtime_error("its output has no `quant` object");
  const json& q = j["quant"];
  const std::string scheme = metrics::parse_quant_scheme(mode).name();
  if (!q.contains("scheme") || q["scheme"] != scheme)
    throw std::runtime_error(fmt::format("its quant.scheme is {}, not '{}'",
                                         q.contains("scheme") ? q["scheme"].dump() : "missing",
                                         scheme));
  if (!is_object_at(q, "full_precision") || !is_object_at(q, "quantised"))
    throw std::runtime_error("its quant has no full_precision and quantised metrics");
  return j;
}

void store_eval(const std::string& run_dir, const std::string& mode, const json& result) {
  train::write_atomic(eval_path(run_dir, mode), result.dump(2) + "\n");
}

EvalStatus eval_status(const std::string& run_dir, const std::string& mode) {
  const std::string path = eval_path(run_dir, mode);
  if (!fs::exists(path)) return {EvalState::Missing, "not evaluated"};
  const json summary = read_json(run_dir + "/summary.json");
  if (!summary.is_object() || !summary.contains("steps") || !summary["steps"].is_number_integer())
    return {EvalState::Stale, "the run has not finished"};
  json result;
  try {
    result = checked_eval_output(train::read_file(path), mode);
  } catch (const std::exception& e) {
    return {EvalState::Stale, fmt::format("{} is not a result of this mode: {}", path, e.what())};
  }
  const int64_t step = result["step"].get<int64_t>(), steps = summary["steps"].get<int64_t>();
  if (step != steps)
    return {EvalState::Stale,
            fmt::format("it evaluated step {}, the run is at step {}", step, steps)};
  const std::string ckpt = train::latest_checkpoint(run_dir + "/checkpoints");
  std::error_code ec;
  if (!ckpt.empty() && fs::last_write_time(ckpt, ec) > fs::last_write_time(path, ec))
    return {EvalState::Stale, fmt::format("{} is newer", ckpt)};
  return {EvalState::Current, ""};
}

std::string quality_metric(const std::vector<std::string>& compare_keys) {
  for (const std::string& k : compare_keys)
    if (k.rfind("final_", 0) == 0 && k != "final_val_loss" && k.rfind("final_val_", 0) == 0)
      return k.substr(6);
  return "val_loss";
}

}  // namespace attn::studies
