// Helpers of the end-to-end suites: run the attnlab binary (ATTNLAB_BIN) on the real KJV text in
// scratch directories and read what it wrote.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <algorithm>
#include <filesystem>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace attn::e2e {

inline std::string bin() {
  const char* b = std::getenv("ATTNLAB_BIN");
  return b ? b : "attnlab";
}

inline std::string scratch(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("attnlab-e2e-" + std::to_string(::getpid())) / name;
  fs::remove_all(p);
  fs::create_directories(p.parent_path());
  return p.string();
}

inline std::string cache_dir() {
  const char* c = std::getenv("ATTNLAB_TEST_CACHE");
  return c ? c : (fs::temp_directory_path() / "attnlab-kjv").string();
}

struct Result {
  int code;
  std::string out, err;
};

inline std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

inline Result run_with_prefix(const std::string& prefix, const std::string& args) {
  std::string o = scratch("stdout.txt"), e = scratch("stderr.txt");
  int status = std::system((prefix + bin() + " " + args + " > " + o + " 2> " + e).c_str());
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return {code, slurp(o), slurp(e)};
}

inline Result run(const std::string& args) { return run_with_prefix("", args); }

// A tiny LM on the real text: fast enough for a test, same code path as the real runs.
inline std::string tiny(const std::string& dir, int steps) {
  return "train -q --set run.dir=" + dir + " --set data.cache_dir=" + cache_dir() +
         " --set model.d_model=32 --set model.n_layers=2 --set model.n_heads=2 --set "
         "model.seq_len=32"
         " --set train.batch_size=8 --set train.warmup_steps=2 --set eval.batches=4 --set "
         "log.every=1"
         " --set run.threads=1 --set train.steps=" +
         std::to_string(steps);
}

inline std::vector<nlohmann::json> metrics(const std::string& dir) {
  std::vector<nlohmann::json> rows;
  std::ifstream f(dir + "/metrics.jsonl");
  for (std::string line; std::getline(f, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

inline std::vector<double> losses(const std::string& dir) {
  std::vector<double> v;
  for (auto& r : metrics(dir))
    if (r.contains("loss")) v.push_back(r["loss"].get<double>());
  return v;
}

inline void expect_config_error(const std::string& args, const std::string& message,
                                const std::string& dir) {
  Result r = run(args);
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find(message), std::string::npos) << "stderr: " << r.err;
  EXPECT_FALSE(fs::exists(dir)) << "a config error left a run directory behind";
}

// `run` with environment variables before the binary ("A=1 B=2").
inline Result run_env(const std::string& env, const std::string& args) {
  return run_with_prefix("env " + env + " ", args);
}

// `run` under the fault-injection shim (tests/fault_shim.c; its variables say what fails).
inline Result run_faulty(const std::string& fault_env, const std::string& args) {
  const char* shim = std::getenv("ATTNLAB_FAULT_SHIM");
  return run_env(
      std::string("LD_PRELOAD=") + (shim ? shim : "attnlab_fault_shim.so") + " " + fault_env, args);
}

// A run in the background (its stdout and stderr into files), to be signalled while it trains.
struct Spawned {
  pid_t pid = -1;
  std::string out, err;  // file paths
  // Waits for the exit; the code as `run` reports it.
  int wait() {
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
};

inline Spawned spawn(const std::string& args, const std::string& tag) {
  Spawned s;
  s.out = scratch(tag + "-stdout.txt");
  s.err = scratch(tag + "-stderr.txt");
  const std::string cmd = "exec " + bin() + " " + args + " > " + s.out + " 2> " + s.err;
  s.pid = ::fork();
  if (s.pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return s;
}

// The highest "step" of a training row in dir/metrics.jsonl so far (0 when none); tolerates a
// line being written.
inline int64_t steps_logged(const std::string& dir) {
  std::ifstream f(dir + "/metrics.jsonl");
  int64_t step = 0;
  for (std::string line; std::getline(f, line);) {
    auto row = nlohmann::json::parse(line, nullptr, false);
    if (!row.is_discarded() && row.contains("loss"))
      step = std::max(step, row["step"].get<int64_t>());
  }
  return step;
}

// Every line of dir/metrics.jsonl is one JSON object (no NUL padding, no torn line).
inline ::testing::AssertionResult valid_jsonl(const std::string& dir) {
  std::string text = slurp(dir + "/metrics.jsonl");
  if (text.find('\0') != std::string::npos)
    return ::testing::AssertionFailure() << "metrics.jsonl holds NUL bytes";
  if (!text.empty() && text.back() != '\n')
    return ::testing::AssertionFailure() << "metrics.jsonl ends mid-line";
  std::istringstream is(text);
  int n = 0;
  for (std::string line; std::getline(is, line); ++n)
    if (!nlohmann::json::accept(line))
      return ::testing::AssertionFailure()
             << "metrics.jsonl line " << n + 1 << " is not JSON: " << line;
  return ::testing::AssertionSuccess();
}

// The metrics rows with the wall-clock fields (elapsed, *_per_s) dropped, each re-dumped:
// two runs that computed the same thing give identical strings (doubles print round-trip exact).
inline std::vector<std::string> untimed_rows(const std::string& dir) {
  std::vector<std::string> rows;
  for (auto row : metrics(dir)) {
    for (auto it = row.begin(); it != row.end();) {  // tokens_per_s, images_per_s, elapsed
      const std::string& k = it.key();
      bool timed = k == "elapsed" || (k.size() > 6 && k.compare(k.size() - 6, 6, "_per_s") == 0);
      it = timed ? row.erase(it) : std::next(it);
    }
    rows.push_back(row.dump());
  }
  return rows;
}

// Whether the binary sees a CUDA device (`attnlab info`; the emulated one counts).
inline bool binary_sees_a_gpu() {
  static const bool yes = run("info").out.find("CUDA devices visible: 0") == std::string::npos;
  return yes;
}

// The same run on the CPU and on CUDA in f32 and in bf16 (train_args(dir, device_args) gives the
// command): every logged step's loss on CUDA within 1e-4 relative of the CPU's in f32 (summation
// order) and 2e-2 in bf16 (8-bit mantissas). Returns the three run directories {cpu, f32, bf16}.
struct CudaRuns {
  std::string cpu, f32, bf16;
};
inline CudaRuns expect_cuda_tracks_cpu(const std::function<std::string(const std::string&, const std::string&)>& train_args,
                                       const std::string& name, size_t steps) {
  CudaRuns d{scratch(name + "-cpu"), scratch(name + "-f32"), scratch(name + "-bf16")};
  Result rc = run(train_args(d.cpu, ""));
  EXPECT_EQ(rc.code, 0) << rc.err;
  Result rf = run(train_args(d.f32, " --set run.device=cuda"));
  EXPECT_EQ(rf.code, 0) << rf.err;
  Result rb = run(train_args(d.bf16, " --set run.device=cuda --set run.precision=bf16"));
  EXPECT_EQ(rb.code, 0) << rb.err;
  std::vector<double> lc = losses(d.cpu), lf = losses(d.f32), lb = losses(d.bf16);
  EXPECT_EQ(lc.size(), steps);
  EXPECT_EQ(lf.size(), steps);
  EXPECT_EQ(lb.size(), steps);
  for (size_t i = 0; i < std::min({lc.size(), lf.size(), lb.size()}); ++i) {
    EXPECT_NEAR(lf[i], lc[i], 1e-4 * lc[i]) << "f32, step " << i + 1;
    EXPECT_NEAR(lb[i], lc[i], 2e-2 * lc[i]) << "bf16, step " << i + 1;
  }
  return d;
}

}  // namespace attn::e2e
