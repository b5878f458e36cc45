// Data-parallel training end to end (label dist): the attnlab binary under mpirun with 2 and 3
// ranks against one process with the same global batch and seed — the LM, the ViT and the
// speech task (uneven length buckets), with gradient accumulation and with ZeRO-1 — a job killed
// with 2 ranks resumed with 3 and with 1, signals, a rank that dies or stalls, and what only rank
// 0 writes.
//
// Env (set by ctest): ATTNLAB_MPIRUN (the launcher and its flags, without -np), ATTNLAB_BIN,
// ATTNLAB_TEST_CACHE (the KJV text, the speech corpus of test_asr_e2e).
//
// Tolerance: the runs compute in f32 and differ in the order of their sums (a rank's loss is the
// mean over its rows; the mean over ranks is taken in f64; the gradient buckets are averaged in
// f32). Measured here (each comparison prints its largest relative difference), losses, gradient
// norms and validation metrics over 6-8 steps agree to at most 1.7e-7 relative (the ViT's
// gradient norm); kLossTol = 2e-6 leaves a factor 12 for other machines' rounding and still
// fails for any wrong weighting or sharding (which moves the loss by 1e-3 or more).
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "e2e_util.h"

using namespace attn::e2e;

namespace {

constexpr double kLossTol = 2e-6;

std::string mpirun(int np) {
  const char* m = std::getenv("ATTNLAB_MPIRUN");
  return std::string(m ? m : "mpirun --allow-run-as-root --oversubscribe") + " -np " +
         std::to_string(np) + " ";
}

// A whole command line (another binary than ATTNLAB_BIN), as e2e_util's run().
Result run_command(const std::string& cmd) {
  const std::string o = scratch("cmd-stdout.txt"), e = scratch("cmd-stderr.txt");
  const int status = std::system((cmd + " > " + o + " 2> " + e).c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), slurp(o), slurp(e)};
}

// One process (np 1: no mpirun at all, the single-process path) or a job of np ranks.
Result run_np(int np, const std::string& args) {
  return np == 1 ? run(args) : run_with_prefix(mpirun(np), args);
}

// The tiny LM of test_train_e2e with a batch of 12 rows (divisible by 1, 2, 3), one thread per
// rank, no dropout.
std::string lm(const std::string& dir, int steps, const std::string& more = "") {
  return tiny(dir, steps) +
         " --set train.batch_size=12 --set eval.every=3 --set checkpoint.every=2 " + more;
}

std::string vit(const std::string& dir, int steps) {
  return "train -q --set task=vit --set run.dir=" + dir +
         " --set model.d_model=32 --set model.n_layers=2 --set model.n_heads=2 --set "
         "model.patch_size=7"
         " --set train.batch_size=12 --set train.warmup_steps=2 --set eval.batches=3 --set "
         "log.every=1"
         " --set data.flip=true --set data.max_shift=2 --set run.threads=1 --set eval.every=3"
         " --set checkpoint.every=3 --set train.steps=" +
         std::to_string(steps);
}

std::vector<double> column(const std::string& dir, const std::string& key) {
  std::vector<double> v;
  for (auto& r : metrics(dir))
    if (r.contains(key)) v.push_back(r[key].get<double>());
  return v;
}

::testing::AssertionResult close(const std::vector<double>& a, const std::vector<double>& b,
                                 double tol) {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << a.size() << " values vs " << b.size();
  if (a.empty()) return ::testing::AssertionFailure() << "no values";
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double rel = std::abs(a[i] - b[i]) / std::max(1e-12, std::abs(b[i]));
    worst = std::max(worst, rel);
    if (!(rel <= tol))
      return ::testing::AssertionFailure() << "value " << i << ": " << a[i] << " vs " << b[i]
                                           << " (relative " << rel << " > " << tol << ")";
  }
  std::printf("    (largest relative difference %.3g over %zu values)\n", worst, a.size());
  return ::testing::AssertionSuccess();
}

// The same training curve and validation metrics.
void expect_same_run(const std::string& got, const std::string& want,
                     const std::vector<std::string>& keys) {
  for (const std::string& k : keys)
    EXPECT_TRUE(close(column(got, k), column(want, k), kLossTol)) << k;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string fmt_step(int64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "step-%08lld.ckpt", static_cast<long long>(step));
  return name;
}

// Only what rank 0 writes is there, and each rank's own log file: no second metrics log, no
// stray temporary file.
void expect_only_run_files(const std::string& dir, int world_size) {
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    EXPECT_TRUE(n == "config.yaml" || n == "tokenizer.json" || n == "corpus.json" ||
                n == "metrics.jsonl" || n == "summary.json" || n == "checkpoints" || n == "logs" ||
                n == ".lock")
        << "unexpected " << n << " in " << dir;
  }
  std::vector<std::string> logs, want;
  for (const auto& e : fs::directory_iterator(dir + "/logs"))
    logs.push_back(e.path().filename().string());
  std::sort(logs.begin(), logs.end());
  for (int r = 0; r < world_size; ++r) want.push_back("rank-" + std::to_string(r) + ".log");
  EXPECT_EQ(logs, want) << dir;
}

// The lines of a rank's log file, each checked for the prefix "[UTC time] [level] [rank R] ",
// with that prefix cut.
std::vector<std::string> rank_log(const std::string& dir, int rank) {
  const std::regex prefix(
      R"(^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] \[(trace|debug|info|warn|error)\] \[rank )" +
      std::to_string(rank) + R"(\] )");
  std::vector<std::string> lines;
  std::ifstream in(dir + "/logs/rank-" + std::to_string(rank) + ".log");
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    EXPECT_TRUE(std::regex_search(line, m, prefix)) << "rank " << rank << ": " << line;
    lines.push_back(m.empty() ? line : line.substr(m.length(0)));
  }
  return lines;
}

size_t count_starting(const std::vector<std::string>& lines, const std::string& start) {
  return static_cast<size_t>(std::count_if(
      lines.begin(), lines.end(), [&](const std::string& l) { return l.rfind(start, 0) == 0; }));
}

// "step 4/4 loss 5.1234" out of a progress line "[softmax] step 4/4 loss 5.1234 lr ... | ETA ...":
// what the ranks agree on (their rates and ETAs are their own).
std::vector<std::string> progress(const std::vector<std::string>& lines) {
  std::vector<std::string> out;
  for (const std::string& l : lines)
    if (l.rfind("[softmax] step ", 0) == 0 && l.find(" loss ") != std::string::npos)
      out.push_back(l.substr(0, l.find(" lr ")));
  return out;
}

}  // namespace

TEST(DistLm, TwoAndThreeRanksMatchOneProcess) {
  const std::string one = scratch("lm-w1"), two = scratch("lm-w2"), three = scratch("lm-w3");
  ASSERT_EQ(run_np(1, lm(one, 6)).code, 0);
  Result r2 = run_np(2, lm(two, 6)), r3 = run_np(3, lm(three, 6));
  ASSERT_EQ(r2.code, 0) << r2.err;
  ASSERT_EQ(r3.code, 0) << r3.err;
  for (const std::string& d : {two, three}) {
    expect_same_run(d, one, {"loss", "grad_norm", "val_loss"});
    EXPECT_EQ(column(d, "loss").size(), 6u);  // one row per step: rank 0 alone logs
    expect_only_run_files(d, d == two ? 2 : 3);
    for (auto& row : metrics(d))
      if (row.contains("loss")) {
        EXPECT_GE(row["comm_s"].get<double>(), 0);
        EXPECT_GE(row["comm_hidden"].get<double>(), 0);
        EXPECT_LE(row["comm_hidden"].get<double>(), 1);
      }
  }
  for (auto& row : metrics(one)) EXPECT_FALSE(row.contains("comm_s"));  // one process: today's rows
  auto s3 = nlohmann::json::parse(slurp(three + "/summary.json"));
  EXPECT_EQ(s3["world_size"], 3);
  EXPECT_EQ(s3["zero"], false);
}

TEST(DistLm, GradientAccumulationAndZeroMatchOneProcess) {
  const std::string one = scratch("lm-acc-w1"), two = scratch("lm-acc-w2"),
                    z3 = scratch("lm-zero-w3"), z2 = scratch("lm-zero-w2"),
                    plain = scratch("lm-plain-w1");
  const std::string acc = "--set train.grad_accum=2";
  ASSERT_EQ(run_np(1, lm(one, 6, acc)).code, 0);
  Result r = run_np(2, lm(two, 6, acc + " --set dist.bucket_mb=0.01"));  // many small buckets
  ASSERT_EQ(r.code, 0) << r.err;
  expect_same_run(two, one, {"loss", "grad_norm", "val_loss"});
  r = run_np(3, lm(z3, 6, acc + " --set dist.zero=1 --set dist.bucket_mb=0.01"));
  ASSERT_EQ(r.code, 0) << r.err;
  expect_same_run(z3, one, {"loss", "grad_norm", "val_loss"});

  ASSERT_EQ(run_np(1, lm(plain, 6)).code, 0);
  r = run_np(2, lm(z2, 6, "--set dist.zero=1"));
  ASSERT_EQ(r.code, 0) << r.err;
  expect_same_run(z2, plain, {"loss", "grad_norm", "val_loss"});
  // The state per rank: about half (one bucket: padding of at most one element per bucket).
  auto s1 = nlohmann::json::parse(slurp(plain + "/summary.json")),
       s2 = nlohmann::json::parse(slurp(z2 + "/summary.json")),
       s3 = nlohmann::json::parse(slurp(z3 + "/summary.json"));
  const double full = s1["optimizer_state_bytes"].get<double>();
  EXPECT_GT(full, 0);
  EXPECT_EQ(s2["zero"], true);
  EXPECT_NEAR(s2["optimizer_state_bytes"].get<double>(), full / 2, 64) << "ZeRO with 2 ranks";
  EXPECT_NEAR(s3["optimizer_state_bytes"].get<double>(), full / 3, 0.01 * full)
      << "ZeRO with 3 ranks";
}

TEST(DistLm, KilledWithTwoRanksResumesWithThreeAndWithOne) {
  const std::string straight = scratch("lm-straight"), to3 = scratch("lm-2to3"),
                    to1 = scratch("lm-2to1");
  ASSERT_EQ(run_np(1, lm(straight, 8)).code, 0);
  for (const auto& [dir, np] : {std::pair{to3, 3}, std::pair{to1, 1}}) {
    Result k = run_np(2, lm(dir, 8, "--set dist.zero=1") + " --abort-after-step 4");
    EXPECT_NE(k.code, 0);
    EXPECT_TRUE(fs::exists(dir + "/checkpoints/step-00000004.ckpt")) << k.err;
    EXPECT_FALSE(fs::exists(dir + "/summary.json"));
    Result r = run_np(np, "train -q --set run.dir=" + dir + " --resume");
    ASSERT_EQ(r.code, 0) << r.err;
    expect_same_run(dir, straight, {"loss", "grad_norm", "val_loss"});
    EXPECT_EQ(column(dir, "loss").size(), 8u);
  }
}

TEST(DistLm, ASignalToOneRankStopsEveryRankWithOneCheckpoint) {
  const std::string d = scratch("lm-signal"), err = scratch("signal-stderr.txt");
  const std::string cmd = "exec " + mpirun(2) + bin() + " " +
                          lm(d, 100000, "--set checkpoint.every=100000 --set eval.every=100000") +
                          " 2> " + err;
  const pid_t launcher = ::fork();
  if (launcher == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  for (int i = 0; i < 600 && steps_logged(d) < 3; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_GE(steps_logged(d), 3) << slurp(err);
  // The ranks are the launcher's children; signal the last one (rank 1 as mpirun starts them).
  std::string children;
  if (FILE* p = ::popen(("pgrep -P " + std::to_string(launcher)).c_str(), "r")) {
    char buf[256];
    while (std::fgets(buf, sizeof buf, p)) children += buf;
    ::pclose(p);
  }
  std::istringstream is(children);
  std::vector<pid_t> pids;
  for (pid_t pid; is >> pid;) pids.push_back(pid);
  ASSERT_EQ(pids.size(), 2u) << children;
  ::kill(pids.back(), SIGTERM);
  int status = 0;
  ::waitpid(launcher, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGTERM) << status << "\n"
                                                                         << slurp(err);
  const auto ckpts = fs::directory_iterator(d + "/checkpoints");
  std::vector<std::string> names;
  for (const auto& e : ckpts) names.push_back(e.path().filename().string());
  ASSERT_EQ(names.size(), 1u) << "one checkpoint, of the step every rank stopped after";
  const int64_t stopped = steps_logged(d);
  EXPECT_EQ(names[0], fmt_step(stopped));
  EXPECT_TRUE(contains(slurp(err), "SIGTERM at step")) << slurp(err);
  EXPECT_FALSE(fs::exists(d + "/summary.json"));
}

TEST(DistLm, ABatchTheRanksCannotShareIsAConfigError) {
  const std::string d = scratch("lm-indivisible");
  Result r = run_np(3, tiny(d, 3));  // batch 8, 3 ranks
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_TRUE(
      contains(r.err, "config key 'train.batch_size': 8 is not divisible by the world size 3"))
      << r.err;
  EXPECT_FALSE(fs::exists(d));
}

// Rank 0 alone checks the run directory: its refusal ends every rank with its exit code.
TEST(DistLm, ASetupFailureOfRankZeroStopsEveryRank) {
  const std::string d = scratch("lm-used");
  ASSERT_EQ(run_np(1, lm(d, 2)).code, 0);
  const auto rows = untimed_rows(d);
  Result r = run_np(2, lm(d, 2));
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "already holds a run")) << r.err;
  EXPECT_TRUE(contains(r.err, "rank 1: stopping: another rank of the job failed to set up"))
      << r.err;
  EXPECT_EQ(untimed_rows(d), rows);  // untouched
}

TEST(DistLm, ARankThatDiesEndsTheJobNamingIt) {
  const std::string d = scratch("lm-dies");
  const auto t0 = std::chrono::steady_clock::now();
  Result r =
      run_np(2, lm(d, 50, "--set dist.timeout_s=20") + " --abort-after-step 2 --abort-rank 1");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.code, 0);
  EXPECT_LT(s, 60) << "the job should end well within the timeout";
  EXPECT_TRUE(contains(r.err, "rank 1")) << r.err;
}

TEST(DistLm, ARankThatStallsTimesOutNamingTheRankThatNoticed) {
  const std::string d = scratch("lm-stalls");
  const auto t0 = std::chrono::steady_clock::now();
  Result r = run_np(
      2, lm(d, 50, "--set dist.timeout_s=3") + " --abort-after-step 2 --abort-rank 1 --stall");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.code, 0);
  EXPECT_LT(s, 40);
  EXPECT_TRUE(contains(r.err, "rank 0: collective")) << r.err;
  EXPECT_TRUE(contains(r.err, "did not finish within dist.timeout_s = 3 s")) << r.err;
}

// Each rank logs to its own logs/rank-N.log (util/log.h): who opened it, its progress and
// evaluation lines (the same losses as rank 0's), and on resume a second opening and the
// checkpoint it resumed from; the console has rank 0's lines alone, exactly once each.
TEST(DistLm, EveryRankLogsToItsOwnFile) {
  const std::string d = scratch("lm-logs");
  std::string args = lm(d, 4);
  args.replace(args.find("train -q "), 9, "train ");
  Result r = run_np(2, args);
  ASSERT_EQ(r.code, 0) << r.err;
  expect_only_run_files(d, 2);
  std::vector<std::vector<std::string>> logs;
  for (int rank : {0, 1}) {
    logs.push_back(rank_log(d, rank));
    const std::vector<std::string>& l = logs.back();
    ASSERT_FALSE(l.empty()) << "rank " << rank;
    EXPECT_TRUE(std::regex_match(l[0], std::regex("log opened by pid \\d+: rank " +
                                                  std::to_string(rank) + " of 2, level info")))
        << l[0];
    EXPECT_EQ(count_starting(l, "log opened by pid "), 1u);
    EXPECT_EQ(count_starting(l, "[softmax] step 4/4 loss "), 1u) << "rank " << rank;
    EXPECT_EQ(count_starting(l, "[softmax] step 3 val_loss "), 1u) << "rank " << rank;
    EXPECT_EQ(count_starting(l, "[softmax] done: " + d), 1u) << "rank " << rank;
    EXPECT_EQ(progress(l).size(), 4u) << "rank " << rank;  // log.every = 1
  }
  EXPECT_EQ(progress(logs[1]), progress(logs[0]));
  // The console: one process's lines (rank 0's), none of rank 1's.
  const auto occurrences = [&](const std::string& part) {
    size_t n = 0;
    for (size_t at = r.err.find(part); at != std::string::npos; at = r.err.find(part, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(occurrences("[softmax] step 4/4 loss "), 1u) << r.err;
  EXPECT_EQ(occurrences("[softmax] done: " + d + "\n"), 1u) << r.err;
  EXPECT_EQ(occurrences("[rank "), 0u) << r.err;

  // A resume appends to the same files.
  std::string more = "train --set run.dir=" + d + " --set train.steps=6 --resume";
  r = run_np(2, more);
  ASSERT_EQ(r.code, 0) << r.err;
  for (int rank : {0, 1}) {
    const std::vector<std::string> l = rank_log(d, rank);
    EXPECT_EQ(count_starting(l, "log opened by pid "), 2u) << "rank " << rank;
    EXPECT_EQ(count_starting(l, "resuming " + d + " from "), 1u) << "rank " << rank;
    EXPECT_EQ(count_starting(l, "[softmax] step 6/6 loss "), 1u) << "rank " << rank;
  }
  expect_only_run_files(d, 2);
}

// Rank 0 opens its log file as soon as it holds the lock, before config.yaml is written: a start
// that died in between leaves logs/ alone, which must not make the directory look foreign.
TEST(DistLm, LogsLeftByAStartThatDiedDoNotBlockANewOne) {
  const std::string d = scratch("lm-logs-left");
  fs::create_directories(d + "/logs");
  const std::string left =
      "[2026-01-01T00:00:00.000Z] [info] [rank 0] log opened by pid 1: rank 0 of 2, level info\n";
  std::ofstream(d + "/logs/rank-0.log") << left;
  Result r = run_np(2, lm(d, 2));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(slurp(d + "/logs/rank-0.log").rfind(left, 0), 0u) << "appended to, not replaced";
  EXPECT_EQ(count_starting(rank_log(d, 0), "log opened by pid "), 2u);
  EXPECT_EQ(count_starting(rank_log(d, 1), "log opened by pid "), 1u);
}

TEST(DistVit, TwoAndThreeRanksMatchOneProcess) {
  const std::string one = scratch("vit-w1"), two = scratch("vit-w2"), three = scratch("vit-w3");
  ASSERT_EQ(run_np(1, vit(one, 6)).code, 0);
  Result r = run_np(2, vit(two, 6));
  ASSERT_EQ(r.code, 0) << r.err;
  r = run_np(3, vit(three, 6) + " --set dist.zero=1");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const std::string& d : {two, three}) {
    expect_same_run(d, one, {"loss", "grad_norm", "val_loss", "val_acc"});
    auto s = nlohmann::json::parse(slurp(d + "/summary.json")),
         s1 = nlohmann::json::parse(slurp(one + "/summary.json"));
    EXPECT_TRUE(close({s["test_loss"].get<double>(), s["test_acc"].get<double>()},
                      {s1["test_loss"].get<double>(), s1["test_acc"].get<double>()}, kLossTol));
    expect_only_run_files(d, d == two ? 2 : 3);
  }
}

namespace {

// The speech corpus of test_asr_e2e (synthesised once into the test cache), with a training
// manifest of its first 13 utterances: buckets of 4, 4, 4 and 1 (batch 4) or 6, 6, 1 (batch 6),
// so with 2 or 3 ranks every epoch has a bucket the ranks split unevenly, one some of them have
// no utterance of.
std::string speech_corpus() {
  static const std::string dir = [] {
    const std::string d = cache_dir() + "/asr-e2e";
    Result r =
        run("data asr --out " + d + " --size small --train-phrases 300 --test-phrases 60 --jobs 2");
    EXPECT_EQ(r.code, 0) << r.err;
    std::ifstream in(d + "/train.jsonl");
    std::ofstream out(d + "/train-13.jsonl");
    std::string line;
    for (int i = 0; i < 13 && std::getline(in, line); ++i) out << line << "\n";
    return d;
  }();
  return dir;
}

std::string asr(const std::string& dir, int batch) {
  const std::string c = speech_corpus();
  return "train -q --set task=asr --set run.dir=" + dir + " --set data.corpus_dir=" + c +
         " --set data.train=" + c + "/train-13.jsonl --set data.cache_dir=" + cache_dir() +
         " --set model.conv_channels=8 --set model.d_model=32 --set model.n_layers=1 --set "
         "model.n_heads=2"
         " --set model.position=sinusoidal --set train.batch_size=" +
         std::to_string(batch) +
         " --set train.lr=3e-3 --set train.warmup_steps=1 --set log.every=1 --set eval.batches=4"
         " --set eval.test_batches=2 --set run.threads=1 --set eval.every=4 --set "
         "checkpoint.every=4 --set train.steps=8";
}

}  // namespace

TEST(DistAsr, UnevenBucketsAreWeightedAsOneProcess) {
  for (const auto& [batch, np] : {std::pair{4, 2}, std::pair{6, 3}}) {
    const std::string one = scratch("asr-w1-b" + std::to_string(batch)),
                      many = scratch("asr-wn-b" + std::to_string(batch));
    Result r1 = run_np(1, asr(one, batch));
    ASSERT_EQ(r1.code, 0) << r1.err;
    Result rn = run_np(np, asr(many, batch));
    ASSERT_EQ(rn.code, 0) << rn.err;
    expect_same_run(many, one, {"loss", "grad_norm", "val_loss", "val_cer", "val_wer"});
    auto s1 = nlohmann::json::parse(slurp(one + "/summary.json")),
         sn = nlohmann::json::parse(slurp(many + "/summary.json"));
    for (const char* k : {"test_loss", "test_cer", "test_wer"})
      EXPECT_TRUE(close({sn[k].get<double>()}, {s1[k].get<double>()}, kLossTol)) << k;
    expect_only_run_files(many, np);
  }
}

// The same job on the emulated CUDA device (attnlab_emu, the NCCL backend over the fake NCCL):
// the gradient buckets live on the device, the trainer's small collectives are staged there.
TEST(DistEmulatedCuda, TwoRanksMatchOneProcessWithAndWithoutZero) {
  const char* emu = std::getenv("ATTNLAB_EMU_BIN");
  if (!emu) GTEST_SKIP() << "no emulated build (ATTNLAB_EMU_BIN)";
  const std::string b = std::string(emu) + " ";
  const auto args = [&](const std::string& dir, const std::string& more) {
    return "train -q --set run.device=cuda --set run.dir=" + dir +
           " --set data.cache_dir=" + cache_dir() +
           " --set model.d_model=32 --set model.n_layers=1 --set model.n_heads=2 --set "
           "model.seq_len=16"
           " --set train.batch_size=4 --set train.warmup_steps=1 --set eval.batches=1 --set "
           "log.every=1"
           " --set run.threads=1 --set train.steps=3 --set eval.every=3 " +
           more;
  };
  const std::string one = scratch("emu-w1"), two = scratch("emu-w2"), zero = scratch("emu-zero-w2");
  Result r = run_command(b + args(one, ""));
  ASSERT_EQ(r.code, 0) << r.err;
  r = run_command(mpirun(2) + b + args(two, ""));
  ASSERT_EQ(r.code, 0) << r.err;
  expect_same_run(two, one, {"loss", "grad_norm", "val_loss"});
  r = run_command(mpirun(2) + b + args(zero, "--set dist.zero=1"));
  ASSERT_EQ(r.code, 0) << r.err;
  expect_same_run(zero, one, {"loss", "grad_norm", "val_loss"});
  // NCCL's id through a rendezvous file instead of MPI (dist.init=file): the same job, and the
  // file is gone afterwards.
  const std::string via_file = scratch("emu-file-w2"), rendezvous = scratch("emu-rendezvous");
  r = run_command(mpirun(2) + b + args(via_file, "--set dist.init=file --set dist.init_file=" + rendezvous));
  ASSERT_EQ(r.code, 0) << r.err;
  expect_same_run(via_file, one, {"loss", "grad_norm", "val_loss"});
  EXPECT_FALSE(fs::exists(rendezvous));
}

// dist.init=file is NCCL's rendezvous: a CPU job of several ranks is refused with the reason;
// and a CUDA job without the file's path names the key it needs.
TEST(DistLm, TheFileRendezvousIsForCudaJobsOnly) {
  const std::string d = scratch("file-init-cpu");
  Result r = run_np(2, lm(d, 2, "--set dist.init=file --set dist.init_file=" + scratch("rdv")));
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.err, "config key 'dist.init': file is NCCL's rendezvous (CUDA)")) << r.err;
}
