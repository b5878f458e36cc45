// Child processes, a few at a time: each job's program runs with its stdout and stderr appended
// to its log file (or its stdout into a file of its own, for a program's result), so a run that
// crashes takes only itself down. With devices, the job in slot i sees only devices[i]
// (CUDA_VISIBLE_DEVICES): one run per GPU.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace attn::studies {

struct Job {
  std::vector<std::string> argv;  // argv[0] is the program's path
  std::string log;                // appended to; its folder is created
  std::string stdout_file = "";   // when not empty: stdout goes here (truncated), stderr to log
};

struct JobResult {
  int exit_code = -1;  // the exit status, 128 + signal for a killed child; -1: never started
  double seconds = 0;
};

struct PoolOptions {
  size_t slots = 1;
  // CUDA_VISIBLE_DEVICES of the child in slot i (slots beyond the list wrap around); empty:
  // children inherit the environment unchanged.
  std::vector<std::string> devices;
  std::function<void(size_t job, size_t slot)> on_start;
  std::function<void(size_t job, const JobResult&)> on_finish;
  // Polled before each start: true stops starting jobs (the running ones are waited for).
  std::function<bool()> stop;
};

// Runs every job (in order, at most `slots` at once) and waits for them all. A job that cannot
// be started (no such program) gets exit code 127 and a line in its log. Throws (naming the file)
// only when a log cannot be written.
std::vector<JobResult> run_jobs(const std::vector<Job>& jobs, const PoolOptions& opt);

// The GPUs a sweep may use: CUDA_VISIBLE_DEVICES's entries when it is set, else 0 … count − 1.
std::vector<std::string> visible_gpus(int device_count);

}  // namespace attn::studies
