#include "studies/sweep.h"

#include <fmt/format.h>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "backend/cuda/cuda_api.h"
#include "studies/grid.h"
#include "studies/process_pool.h"
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

std::string log_path(const Grid& g, const GridRun& r) {
  return (fs::path(g.runs_dir) / "logs" / (r.name + ".log")).string();
}

std::string status_path(const Grid& g, const GridRun& r) {
  return (fs::path(g.runs_dir) / "logs" / (r.name + ".status.json")).string();
}

void print_plan(const Grid& g, const std::vector<PlannedRun>& plan,
                const std::vector<size_t>& chosen) {
  fmt::print(
      "{} runs of study '{}' into {} (a new run is trained, `resume` continues one, `finished` is "
      "kept):\n",
      chosen.size(), g.name, g.runs_dir);
  const std::string bin = display_path(attnlab_binary());
  for (size_t i : chosen) {
    std::vector<std::string> argv = {bin};
    argv.insert(argv.end(), plan[i].train_args.begin(), plan[i].train_args.end());
    fmt::print("{:>4}  {:<8}  {}\n      {}\n", plan[i].run.index, state_name(plan[i].state),
               plan[i].run.name, shell_line(argv));
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
  size_t total, done = 0, failed = 0, slots = 1, to_run = 0;
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
                      {"log", log_path(g, p.run)}, {"resumed", p.state == RunState::Resume}};
  train::write_atomic(status_path(g, p.run), s.dump(2) + "\n");
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
    print_plan(g, plan, chosen);
    return 0;
  }

  std::vector<size_t> todo;  // indices into plan
  size_t skipped = 0;
  for (size_t i : chosen) {
    if (plan[i].state == RunState::Finished)
      ++skipped;
    else
      todo.push_back(i);
  }
  PoolOptions pool = pool_options(plan, opt.parallel);
  Progress pr{chosen.size(), skipped, 0, pool.slots, todo.size()};
  const size_t resumes = std::count_if(todo.begin(), todo.end(),
                                       [&](size_t i) { return plan[i].state == RunState::Resume; });
  fmt::print(stderr,
             "sweep {}: {} runs into {}: {} finished earlier (kept), {} to resume, {} to train; {} "
             "at once{}\n",
             g.name, chosen.size(), g.runs_dir, skipped, resumes, todo.size() - resumes, pool.slots,
             pool.devices.empty() ? "" : fmt::format(" (GPUs {})", fmt::join(pool.devices, ",")));

  std::vector<Job> jobs;
  const std::string bin = attnlab_binary();
  for (size_t i : todo) {
    Job j{{bin}, log_path(g, plan[i].run)};
    j.argv.insert(j.argv.end(), plan[i].train_args.begin(), plan[i].train_args.end());
    if (opt.child_abort_after_step >= 0)
      j.argv.insert(j.argv.end(),
                    {"--abort-after-step", std::to_string(opt.child_abort_after_step)});
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
    if (r.exit_code == 0) {
      pr.ok++, pr.seconds_ok += r.seconds;
      fmt::print(stderr, "sweep {}: [{}/{}] {} finished in {}{}\n", g.name, pr.done, pr.total,
                 p.run.name, duration(r.seconds), pr.eta());
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

  fmt::print(stderr, "sweep {}: {} of {} runs finished, {} failed{}\n", g.name, skipped + pr.ok,
             pr.total, pr.failed,
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
