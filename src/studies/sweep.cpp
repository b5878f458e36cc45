#include "studies/sweep.h"

#include <fmt/format.h>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "backend/cuda/cuda_api.h"
#include "studies/divergence.h"
#include "studies/grid.h"
#include "studies/process_pool.h"
#include "studies/quant_eval.h"
#include "studies/report.h"
#include "studies/run_plan.h"
#include "studies/slurm_script.h"
#include "train/run_files.h"
#include "train/stop_signal.h"

namespace fs = std::filesystem;

namespace attn::studies {

using config::ConfigError;

namespace {

std::string duration(double s) {
  if (s < 60) return fmt::format("{:.1f}s", s);
  const int64_t t = static_cast<int64_t>(s + 0.5);
  return t >= 3600 ? fmt::format("{}h{:02}m", t / 3600, t / 60 % 60)
                   : fmt::format("{}m{:02}s", t / 60, t % 60);
}

// --threads N: `--set run.threads=N` for each child (training, resuming, evaluating). A run's
// numbers do not depend on its thread count, so a resume or a kept run is unaffected.
std::vector<std::string> thread_args(int64_t threads) {
  if (threads <= 0) return {};
  return {"--set", fmt::format("run.threads={}", threads)};
}

// One line per quantised evaluation of a run in --dry-run: its command, or why none is needed.
void print_evals(const Grid& g, const PlannedRun& p, const std::string& bin, int64_t threads) {
  for (const std::string& mode : g.quant) {
    std::vector<std::string> argv = {bin};
    for (const std::string& a : eval_args(p.run.dir, mode)) argv.push_back(a);
    for (const std::string& a : thread_args(threads)) argv.push_back(a);
    if (p.state == RunState::Diverged) {
      fmt::print("      eval {}: none (the run diverged)\n", mode);
    } else if (p.state != RunState::Finished) {
      fmt::print("      then  {}\n", shell_line(argv));
    } else {
      const EvalStatus st = eval_status(p.run.dir, mode);
      if (st.state == EvalState::Current)
        fmt::print("      eval {}: current ({}, kept)\n", mode, eval_path(p.run.dir, mode));
      else
        fmt::print("      then  {}   # {}\n", shell_line(argv), st.why);
    }
  }
}

void print_plan(const Grid& g, const std::vector<PlannedRun>& plan,
                const std::vector<size_t>& chosen, int64_t threads) {
  fmt::print(
      "{} runs of study '{}' into {} (a new run is trained, `resume` continues one, `finished` is "
      "kept, `diverged` is kept as a result){}:\n",
      chosen.size(), g.name, g.runs_dir,
      g.quant.empty() ? ""
                      : fmt::format("; each finished run is evaluated quantised ({})",
                                    fmt::join(g.quant, ", ")));
  const std::string bin = display_path(attnlab_binary());
  for (size_t i : chosen) {
    std::vector<std::string> argv = {bin};
    argv.insert(argv.end(), plan[i].train_args.begin(), plan[i].train_args.end());
    for (const std::string& a : thread_args(threads)) argv.push_back(a);
    fmt::print("{:>4}  {:<8}  {}{}\n      {}\n", plan[i].run.index, state_name(plan[i].state),
               plan[i].run.name,
               plan[i].state == RunState::Diverged
                   ? fmt::format(" (diverged at step {}: kept)", plan[i].diverged_step)
                   : "",
               shell_line(argv));
    print_evals(g, plan[i], bin, threads);
  }
}

int emit_slurm(const Grid& g, const std::vector<PlannedRun>& plan, const std::string& file) {
  SlurmScript s{attnlab_binary(), fs::current_path().string(), plan.size(),
                std::any_of(plan.begin(), plan.end(),
                            [](const PlannedRun& p) { return p.device == "cuda"; })};
  fs::create_directories(fs::path(g.runs_dir) /
                         "logs");  // Slurm does not create the --output folder
  train::write_atomic(file, slurm_script(g, s));
  fs::permissions(file, fs::perms::owner_exec | fs::perms::group_exec, fs::perm_options::add);
  fmt::print(stderr, "sweep {}: wrote {} (a job array of {} runs); submit it with: sbatch {}\n",
             g.name, file, plan.size(), file);
  return 0;
}

// How many runs at once, and the GPU each slot gives its child.
PoolOptions pool_options(const std::vector<PlannedRun>& plan, int64_t parallel) {
  PoolOptions p;
  const bool cuda =
      std::any_of(plan.begin(), plan.end(), [](const PlannedRun& r) { return r.device == "cuda"; });
  if (cuda) p.devices = visible_gpus(cuda::device_count());
  p.slots = parallel > 0 ? static_cast<size_t>(parallel) : std::max<size_t>(p.devices.size(), 1);
  if (p.devices.size() < 2 && parallel <= 0)
    p.devices.clear();  // one GPU: leave the environment as it is
  return p;
}

// The sweep's bookkeeping while the runs go: counts, the ETA, one line per event on stderr.
struct Progress {
  size_t total, done = 0, failed = 0, slots = 1, to_run = 0, diverged = 0;
  double seconds_ok = 0;
  size_t ok = 0;

  std::string eta() const {
    const size_t left = to_run;
    if (left == 0) return "";
    if (ok == 0) return fmt::format("; {} to go", left);
    const double per_run = seconds_ok / static_cast<double>(ok);
    const double waves = std::ceil(static_cast<double>(left) / static_cast<double>(slots));
    return fmt::format("; {} to go, ETA {}", left, duration(per_run * waves));
  }
};

void write_status(const Grid& g, const PlannedRun& p, const JobResult& r) {
  nlohmann::json s = {{"run", p.run.name},         {"dir", p.run.dir},
                      {"exit", r.exit_code},       {"seconds", r.seconds},
                      {"log", log_file(g, p.run)}, {"resumed", p.state == RunState::Resume}};
  if (r.exit_code == kDivergedExit)
    if (const std::optional<int64_t> at = diverged_at(p.run.dir)) s["diverged_at"] = *at;
  train::write_atomic(status_file(g, p.run), s.dump(2) + "\n");
}

// The quantised evaluations still to do (the grid's `quant:`) of the chosen runs that have
// finished by now: each one's plan index and mode; `current` counts those kept.
struct EvalJob {
  size_t plan;
  std::string mode, out;  // out: the child's stdout, checked, then stored as eval-MODE.json
};

std::vector<EvalJob> evals_to_run(const Grid& g, const std::vector<PlannedRun>& plan,
                                  const std::vector<size_t>& chosen, size_t& current) {
  std::vector<EvalJob> todo;
  current = 0;
  for (size_t i : chosen) {
    if (!fs::exists(plan[i].run.dir + "/summary.json")) continue;
    for (const std::string& mode : g.quant) {
      if (eval_status(plan[i].run.dir, mode).state == EvalState::Current) {
        ++current;
        continue;
      }
      todo.push_back({i, mode, fresh_eval_output_file(plan[i].run.dir, mode)});
    }
  }
  return todo;
}

// Runs the evaluations (as many at once as runs train, on the same GPUs); each one's stdout
// checked and stored, its outcome in logs/<name>.eval-MODE.status.json. Failures are added.
void run_evals(const Grid& g, const std::vector<PlannedRun>& plan,
               const std::vector<size_t>& chosen, PoolOptions pool, int64_t threads,
               std::vector<std::string>& failures) {
  size_t current = 0;
  const std::vector<EvalJob> todo = evals_to_run(g, plan, chosen, current);
  if (todo.empty() && current == 0) return;
  fmt::print(stderr, "sweep {}: quantised evaluations ({}): {} current (kept), {} to run\n", g.name,
             fmt::join(g.quant, ", "), current, todo.size());
  std::vector<Job> jobs;
  const std::string bin = attnlab_binary();
  for (const EvalJob& e : todo) {
    Job j{{bin}, log_file(g, plan[e.plan].run, eval_log_suffix(e.mode)), e.out};
    for (const std::string& a : eval_args(plan[e.plan].run.dir, e.mode)) j.argv.push_back(a);
    for (const std::string& a : thread_args(threads)) j.argv.push_back(a);
    jobs.push_back(std::move(j));
  }
  size_t done = 0;
  pool.on_start = [&](size_t j, size_t) {
    fmt::print(stderr, "sweep {}: [eval {}/{}] {} --quant {} (log {})\n", g.name, done, todo.size(),
               plan[todo[j].plan].run.name, todo[j].mode, jobs[j].log);
  };
  pool.on_finish = [&](size_t j, const JobResult& r) {
    const EvalJob& e = todo[j];
    const GridRun& run = plan[e.plan].run;
    ++done;
    std::string error;
    if (r.exit_code == 0) {
      try {
        store_eval(run.dir, e.mode, checked_eval_output(train::read_file(e.out), e.mode));
      } catch (const std::exception& ex) {
        error = ex.what();
      }
    }
    fs::remove(e.out);
    nlohmann::json s = {{"run", run.name},
                        {"mode", e.mode},
                        {"exit", r.exit_code},
                        {"seconds", r.seconds},
                        {"log", jobs[j].log}};
    if (!error.empty()) s["error"] = error;
    train::write_atomic(status_file(g, run, eval_log_suffix(e.mode)), s.dump(2) + "\n");
    if (r.exit_code == 0 && error.empty()) {
      fmt::print(stderr, "sweep {}: [eval {}/{}] {} --quant {}: {} in {}\n", g.name, done,
                 todo.size(), run.name, e.mode, eval_path(run.dir, e.mode), duration(r.seconds));
      return;
    }
    const std::string why = error.empty() ? fmt::format("exit {}", r.exit_code) : error;
    failures.push_back(
        fmt::format("{} eval --quant {} ({}; log {})", run.name, e.mode, why, jobs[j].log));
    fmt::print(stderr, "sweep {}: [eval {}/{}] {} --quant {} FAILED ({}) after {}; its log: {}\n",
               g.name, done, todo.size(), run.name, e.mode, why, duration(r.seconds), jobs[j].log);
  };
  run_jobs(jobs, pool);
}

}  // namespace

int run_sweep(const SweepOptions& opt) {
  const Grid g = load_grid(opt.grid, opt.runs_dir);
  const std::vector<GridRun> runs = expand_grid(g);
  if (opt.only_index >= static_cast<int64_t>(runs.size()))
    throw ConfigError(fmt::format("--only-index {}: the grid '{}' has {} runs (0 to {})",
                                  opt.only_index, g.path, runs.size(), runs.size() - 1));
  const std::vector<PlannedRun> plan = plan_runs(g, runs);  // every run checked before any starts
  if (!opt.emit_slurm.empty()) return emit_slurm(g, plan, opt.emit_slurm);
  std::vector<size_t> chosen;
  for (size_t i = 0; i < plan.size(); ++i)
    if (opt.only_index < 0 || static_cast<int64_t>(i) == opt.only_index) chosen.push_back(i);
  if (opt.dry_run) {
    print_plan(g, plan, chosen, opt.threads);
    return 0;
  }

  std::vector<size_t> todo;  // indices into plan
  size_t skipped = 0, diverged = 0;
  for (size_t i : chosen) {
    if (plan[i].state == RunState::Finished)
      ++skipped;
    else if (plan[i].state == RunState::Diverged)
      ++diverged;
    else
      todo.push_back(i);
  }
  PoolOptions pool = pool_options(plan, opt.parallel);
  Progress pr{chosen.size(), skipped + diverged, 0, pool.slots, todo.size(), diverged};
  const size_t resumes = std::count_if(todo.begin(), todo.end(),
                                       [&](size_t i) { return plan[i].state == RunState::Resume; });
  fmt::print(
      stderr,
      "sweep {}: {} runs into {}: {} finished earlier (kept), {}{} to resume, {} to train; {} "
      "at once{}\n",
      g.name, chosen.size(), g.runs_dir, skipped,
      diverged ? fmt::format("{} diverged earlier (kept), ", diverged) : "", resumes,
      todo.size() - resumes, pool.slots,
      pool.devices.empty() ? "" : fmt::format(" (GPUs {})", fmt::join(pool.devices, ",")));
  for (size_t i : chosen)
    if (plan[i].state == RunState::Diverged)
      fmt::print(stderr,
                 "sweep {}: {} diverged at step {} earlier: kept as a result (not resumed; a "
                 "different train.steps in the grid resumes it)\n",
                 g.name, plan[i].run.name, plan[i].diverged_step);

  std::vector<Job> jobs;
  const std::string bin = attnlab_binary();
  for (size_t i : todo) {
    Job j{{bin}, log_file(g, plan[i].run)};
    j.argv.insert(j.argv.end(), plan[i].train_args.begin(), plan[i].train_args.end());
    for (const std::string& a : thread_args(opt.threads)) j.argv.push_back(a);
    if (opt.child_abort_after_step >= 0)
      j.argv.insert(j.argv.end(),
                    {"--abort-after-step", std::to_string(opt.child_abort_after_step)});
    if (opt.child_nan_at_step >= 0)
      j.argv.insert(j.argv.end(), {"--nan-at-step", std::to_string(opt.child_nan_at_step)});
    jobs.push_back(std::move(j));
  }
  std::vector<std::string> failures;
  train::StopSignal stop;
  pool.stop = [] { return train::StopSignal::pending() != 0; };
  pool.on_start = [&](size_t j, size_t slot) {
    const PlannedRun& p = plan[todo[j]];
    fmt::print(stderr, "sweep {}: [{}/{}] {} {}{} (log {})\n", g.name, pr.done, pr.total,
               p.state == RunState::Resume ? "resuming" : "training", p.run.name,
               pool.devices.empty() ? "" : " on GPU " + pool.devices[slot % pool.devices.size()],
               jobs[j].log);
  };
  pool.on_finish = [&](size_t j, const JobResult& r) {
    const PlannedRun& p = plan[todo[j]];
    write_status(g, p, r);
    pr.done++, pr.to_run--;
    const std::optional<int64_t> diverged =
        r.exit_code == kDivergedExit ? diverged_at(p.run.dir) : std::nullopt;
    if (r.exit_code == 0) {
      pr.ok++, pr.seconds_ok += r.seconds;
      fmt::print(stderr, "sweep {}: [{}/{}] {} finished in {}{}\n", g.name, pr.done, pr.total,
                 p.run.name, duration(r.seconds), pr.eta());
    } else if (diverged) {  // a result, not a failure
      pr.diverged++;
      fmt::print(stderr,
                 "sweep {}: [{}/{}] {} diverged at step {} (non-finite loss) after {}: kept as a "
                 "result; its log: {}{}\n",
                 g.name, pr.done, pr.total, p.run.name, *diverged, duration(r.seconds), jobs[j].log,
                 pr.eta());
    } else {
      // A child that exits 128 + the signal the sweep got was stopped with it (and checkpointed).
      const int sig = train::StopSignal::pending();
      const bool stopped = sig && r.exit_code == 128 + sig;
      pr.failed++;
      failures.push_back(fmt::format("{} ({}exit {}; log {})", p.run.name,
                                     stopped ? "stopped, " : "", r.exit_code, jobs[j].log));
      fmt::print(stderr, "sweep {}: [{}/{}] {} {} with exit {} after {}; its log: {}{}\n", g.name,
                 pr.done, pr.total, p.run.name, stopped ? "stopped" : "FAILED", r.exit_code,
                 duration(r.seconds), jobs[j].log, pr.eta());
    }
  };
  const std::vector<JobResult> results = run_jobs(jobs, pool);
  const size_t not_started = std::count_if(results.begin(), results.end(),
                                           [](const JobResult& r) { return r.exit_code < 0; });
  if (!g.quant.empty() && !train::StopSignal::pending()) run_evals(g, plan, chosen, pool, opt.threads, failures);

  fmt::print(stderr, "sweep {}: {} of {} runs finished, {}{} failed{}\n", g.name, skipped + pr.ok,
             pr.total, pr.diverged ? fmt::format("{} diverged, ", pr.diverged) : "", pr.failed,
             not_started ? fmt::format(", {} not started (stopped)", not_started) : "");
  for (const std::string& f : failures) fmt::print(stderr, "  not finished: {}\n", f);
  if (int sig = train::StopSignal::pending()) {
    fmt::print(stderr, "sweep {}: stopped by {}; run the same command again to continue\n", g.name,
               train::signal_name(sig));
    return 128 + sig;
  }
  int code = failures.empty() ? 0 : 1;
  if (opt.report && opt.only_index < 0) {
    ReportOptions ro;
    ro.grid = opt.grid;
    ro.runs_dir = opt.runs_dir;
    code = std::max(code, run_report(ro));
  }
  return code;
}

}  // namespace attn::studies
