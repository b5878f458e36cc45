// Runs you can trust (label e2e): what a run directory holds after each way a run can go wrong —
// a resume that would change the run, unsafe run directories, a full disk, corrupt checkpoints,
// SIGKILL at several points, SIGINT/SIGTERM — and that a resume then continues exactly the saved
// run: its metrics are the uninterrupted run's, row for row (wall-clock fields aside). Faults in
// system calls come from the LD_PRELOAD shim tests/fault_shim.c.
#include <gtest/gtest.h>

#include <csignal>
#include <cstring>
#include <map>
#include <thread>

#include "e2e_util.h"

using namespace attn::e2e;

namespace {

// The tiny LM with checkpoints every 3 steps.
std::string tiny3(const std::string& dir, int steps) {
  return tiny(dir, steps) + " --set checkpoint.every=3";
}

// A finished uninterrupted run of the tiny LM (made once per name and process).
const std::string& straight(int steps, const std::string& extra = "") {
  static std::map<std::string, std::string> done;
  const std::string key = std::to_string(steps) + extra;
  auto it = done.find(key);
  if (it != done.end()) return it->second;
  std::string d = scratch("straight-" + std::to_string(done.size()));
  Result r = run(tiny3(d, steps) + extra);
  EXPECT_EQ(r.code, 0) << r.err;
  return done[key] = d;
}

std::string resume_cmd(const std::string& dir) {
  return "train -q --set run.dir=" + dir + " --resume";
}

// Resumes dir (only --set run.dir, and `resume_sets`) and checks it ends as the straight run of
// `steps` (with `extra` settings) did.
void expect_resume_matches_straight(const std::string& dir, int steps,
                                    const std::string& extra = "",
                                    const std::string& resume_sets = "") {
  Result r = run(resume_cmd(dir) + resume_sets);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(valid_jsonl(dir));
  EXPECT_EQ(untimed_rows(dir), untimed_rows(straight(steps, extra)))
      << "the resumed run's metrics differ";
  auto a = nlohmann::json::parse(slurp(dir + "/summary.json"));
  auto b = nlohmann::json::parse(slurp(straight(steps, extra) + "/summary.json"));
  EXPECT_EQ(a["final_val_loss"], b["final_val_loss"]);
  EXPECT_EQ(a["steps"], steps);
}

// A run of 8 steps killed after step 7: checkpoints at steps 3 and 6.
std::string killed_after_7(const std::string& name) {
  std::string d = scratch(name);
  EXPECT_EQ(run(tiny3(d, 8) + " --abort-after-step 7").code, 128 + SIGKILL);
  return d;
}

std::string ckpt(const std::string& dir, int step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08d.ckpt", step);
  return dir + "/checkpoints/" + name;
}

bool has_temp_files(const std::string& dir) {
  for (const std::string& sub : {dir, dir + "/checkpoints"})
    if (fs::is_directory(sub))
      for (const auto& e : fs::directory_iterator(sub))
        if (e.path().filename().string().find(".tmp.") != std::string::npos) return true;
  return false;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Waits (up to a minute) until the spawned run has logged `steps` steps; false if it ended first.
bool wait_for_steps(const Spawned& s, const std::string& dir, int64_t steps) {
  for (int i = 0; i < 12000 && steps_logged(dir) < steps; ++i) {
    if (::waitpid(s.pid, nullptr, WNOHANG) != 0) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return steps_logged(dir) >= steps;
}

}  // namespace

// ---- 1. a resume continues exactly the saved run --------------------------------------------

TEST(Resume, WithOnlyTheRunDirContinuesTheSavedRun) {
  std::string d = killed_after_7("resume-plain");
  expect_resume_matches_straight(d, 8);  // not the default train.steps (2000), nor its schedule
}

TEST(Resume, RefusesKeysThatChangeWhatIsTrained) {
  std::string d = killed_after_7("resume-refuse");
  const std::string cfg = slurp(d + "/config.yaml"), rows = slurp(d + "/metrics.jsonl");
  for (auto [set, saved] : {std::pair{"attention.variant=sigmoid", "softmax"},
                            {"train.lr=0.01", "2e-3"},
                            {"model.d_model=64", "32"},
                            {"eval.batches=2", "4"}}) {
    const std::string key = std::string(set).substr(0, std::string(set).find('='));
    Result r = run(resume_cmd(d) + " --set " + set);
    EXPECT_EQ(r.code, 2) << set << ": " << r.err;
    EXPECT_TRUE(contains(
        r.err, "config key '" + key + "': the run in '" + d + "' was trained with '" + saved + "'"))
        << r.err;
    EXPECT_TRUE(contains(r.err, std::string(set).substr(key.size() + 1)))
        << "the asked value is not named: " << r.err;
  }
  EXPECT_EQ(slurp(d + "/config.yaml"), cfg);
  EXPECT_EQ(slurp(d + "/metrics.jsonl"), rows) << "a refused resume touched the metrics";
  // The same values spelled otherwise, and keys that do not change the run, are accepted.
  expect_resume_matches_straight(d, 8, "",
                                 " --set train.lr=0.002 --set run.threads=2 --set log.every=1");
}

TEST(Resume, ExtendsTrainStepsOnlyWhenAskedAndSaysSo) {
  std::string d = scratch("resume-extend");
  ASSERT_EQ(run(tiny3(d, 6)).code, 0);
  const std::string rows = slurp(d + "/metrics.jsonl");
  Result again = run(resume_cmd(d));
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_TRUE(contains(again.err, "is finished (6 steps)")) << again.err;
  EXPECT_EQ(slurp(d + "/metrics.jsonl"), rows);
  Result shorter = run(resume_cmd(d) + " --set train.steps=4");
  EXPECT_EQ(shorter.code, 2);
  EXPECT_TRUE(contains(shorter.err, "can only extend it, not shorten it to 4")) << shorter.err;
  Result longer = run(resume_cmd(d) + " --set train.steps=9");
  ASSERT_EQ(longer.code, 0) << longer.err;
  EXPECT_TRUE(contains(longer.err, "extending the run from 6 to 9 steps")) << longer.err;
  EXPECT_TRUE(contains(slurp(d + "/config.yaml"), "steps: 9"));
  EXPECT_EQ(nlohmann::json::parse(slurp(d + "/summary.json"))["steps"], 9);
  EXPECT_EQ(losses(d).size(), 9u);
}

TEST(Resume, WithoutACheckpointSaysItStartsOver) {
  std::string d = scratch("resume-none");
  EXPECT_EQ(run(tiny3(d, 8) + " --set checkpoint.every=5 --abort-after-step 2").code,
            128 + SIGKILL);
  Result r = run(resume_cmd(d));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "has no checkpoint")) << r.err;
  EXPECT_TRUE(contains(r.err, "starting again from step 0")) << r.err;
  EXPECT_EQ(untimed_rows(d), untimed_rows(straight(8, " --set checkpoint.every=5")));
}

TEST(Resume, ASecondProcessOnTheSameRunIsRefused) {
  std::string d = scratch("resume-locked");
  Spawned first = spawn(tiny3(d, 3000), "locked");
  ASSERT_TRUE(wait_for_steps(first, d, 2)) << slurp(first.err);
  Result second = run(resume_cmd(d));
  EXPECT_EQ(second.code, 2) << second.err;
  EXPECT_TRUE(contains(
      second.err, "is in use by another attnlab process (pid " + std::to_string(first.pid) + ")"))
      << second.err;
  ::kill(first.pid, SIGKILL);
  first.wait();
}

// ---- 2. eval measures the model that was trained --------------------------------------------

TEST(Eval, RefusesOverridesThatChangeTheModel) {
  const std::string& d = straight(6);
  for (const char* set : {"attention.variant=sigmoid", "model.position=alibi", "model.norm=rms"}) {
    Result r = run("eval " + d + " --set " + set);
    EXPECT_EQ(r.code, 2) << set;
    EXPECT_TRUE(contains(r.err, "an eval cannot change it")) << r.err;
    EXPECT_TRUE(r.out.empty()) << "a loss was reported: " << r.out;
  }
  Result ok = run("eval " + d + " --set eval.batches=2 --set run.threads=2");
  EXPECT_EQ(ok.code, 0) << ok.err;
  EXPECT_EQ(nlohmann::json::parse(ok.out)["batches"], 2);
}

// ---- 3. run directories that are not safe to write ------------------------------------------

TEST(RunDir, UnsafeDirectoriesAreConfigErrors) {
  std::string file = scratch("a-file"), foreign = scratch("foreign");
  std::ofstream(file) << "x";
  fs::create_directories(foreign);
  std::ofstream(foreign + "/notes.txt") << "mine";
  for (auto [dir, why] : {std::pair<std::string, std::string>{"", "is empty"},
                          {"/", "is the filesystem root"},
                          {".", "is the current directory or one above it"},
                          {"..", "is the current directory or one above it"},
                          {file, "exists and is not a directory"},
                          {foreign, "holds files that are not a run's (such as 'notes.txt')"}}) {
    Result r = run(tiny3("'" + dir + "'", 2));
    EXPECT_EQ(r.code, 2) << "run.dir '" << dir << "': " << r.err;
    EXPECT_TRUE(contains(r.err, "config key 'run.dir': '" + dir + "' " + why)) << r.err;
  }
  EXPECT_EQ(slurp(file), "x");
  EXPECT_EQ(std::distance(fs::directory_iterator(foreign), fs::directory_iterator{}), 1);
}

// ---- 4, 6. a full disk: the run stops, names the file, and resumes ---------------------------

TEST(FullDisk, MetricsWriteFailureStopsTheRunAndItResumes) {
  std::string d = scratch("enospc-metrics");
  Result r =
      run_faulty("ATTNLAB_FAULT_PATH=metrics.jsonl ATTNLAB_FAULT_ENOSPC_AFTER=1000", tiny3(d, 8));
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(contains(
      r.err, "cannot write a metrics row to '" + d + "/metrics.jsonl': No space left on device"))
      << r.err;
  EXPECT_FALSE(fs::exists(d + "/summary.json")) << "a run that lost metrics looks finished";
  expect_resume_matches_straight(d, 8);
}

TEST(FullDisk, CheckpointWriteFailureLeavesNoTempFileAndTheOldCheckpoint) {
  std::string d = scratch("enospc-ckpt");
  Result r = run_faulty("ATTNLAB_FAULT_PATH=step-00000006.ckpt ATTNLAB_FAULT_ENOSPC_AFTER=4096",
                        tiny3(d, 8));
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "cannot write '" + ckpt(d, 6) + "': No space left on device"))
      << r.err;
  EXPECT_FALSE(has_temp_files(d)) << "the failed write left its temporary file";
  EXPECT_TRUE(fs::exists(ckpt(d, 3)));
  EXPECT_FALSE(fs::exists(ckpt(d, 6)));
  EXPECT_FALSE(fs::exists(d + "/summary.json"));
  expect_resume_matches_straight(d, 8);
}

TEST(FullDisk, ResumeNeverPadsMetricsWithNulBytes) {
  std::string d = killed_after_7("metrics-short");
  fs::resize_file(d + "/metrics.jsonl",
                  150);  // rows lost (and a torn line) outside attnlab's control
  Result r = run(resume_cmd(d));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "rows after byte")) << r.err;
  EXPECT_TRUE(valid_jsonl(d));
  EXPECT_EQ(losses(d).back(), losses(straight(8)).back());
}

// ---- 5. corrupt checkpoints are found, named, and passed over --------------------------------

void corrupt(const std::string& path, const std::string& how) {
  std::string bytes = slurp(path);
  const size_t mid = bytes.size() / 2;
  if (how == "zeroed") std::fill(bytes.begin() + mid, bytes.begin() + mid + 4096, '\0');
  if (how == "truncated") bytes.resize(mid);
  if (how == "flipped") bytes[mid] ^= 0x01;
  if (how == "appended") bytes += "trailing garbage";
  if (how == "nan") {
    const uint32_t nan = 0x7fc00000;
    for (int i = 0; i < 64; ++i) std::memcpy(&bytes[mid + 4 * i], &nan, 4);
  }
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

class CorruptCheckpoint : public ::testing::TestWithParam<const char*> {};

TEST_P(CorruptCheckpoint, ResumeFallsBackToThePreviousGoodOne) {
  const std::string how = GetParam();
  std::string d = killed_after_7(std::string("corrupt-") + how);
  corrupt(ckpt(d, 6), how);
  Result r = run(resume_cmd(d));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "checkpoint '" + ckpt(d, 6) + "' is unusable")) << r.err;
  EXPECT_TRUE(contains(r.err, "falling back to '" + ckpt(d, 3) + "'")) << r.err;
  EXPECT_TRUE(contains(r.err, "resuming " + d + " from " + ckpt(d, 3) + " (step 3)")) << r.err;
  EXPECT_TRUE(fs::exists(ckpt(d, 6) + ".corrupt"))
      << "the corrupt file is kept aside for inspection";
  EXPECT_TRUE(valid_jsonl(d));
  EXPECT_EQ(untimed_rows(d), untimed_rows(straight(8)));
}

INSTANTIATE_TEST_SUITE_P(Kinds, CorruptCheckpoint,
                         ::testing::Values("zeroed", "truncated", "flipped", "appended", "nan"));

TEST(CorruptCheckpoints, NoneUsableIsAnErrorNamingEachFile) {
  std::string d = killed_after_7("corrupt-all");
  corrupt(ckpt(d, 6), "flipped");
  corrupt(ckpt(d, 3), "truncated");
  Result r = run(resume_cmd(d));
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "no usable checkpoint in '" + d + "/checkpoints'")) << r.err;
  EXPECT_TRUE(contains(r.err, ckpt(d, 6) + "' (checksum mismatch")) << r.err;
  EXPECT_TRUE(contains(r.err, ckpt(d, 3) + "' (truncated")) << r.err;
  EXPECT_FALSE(fs::exists(d + "/summary.json"));
  Result e = run("eval " + d);
  EXPECT_NE(e.code, 0);
  EXPECT_TRUE(e.out.empty());
}

TEST(CorruptCheckpoints, NonFiniteStopNamesOnlyAVerifiedCheckpoint) {
  std::string d = scratch("nan-corrupt");
  // The write of step 6's checkpoint is silently corrupted on its way to the disk.
  Result r = run_faulty("ATTNLAB_FAULT_PATH=step-00000006.ckpt ATTNLAB_FAULT_CORRUPT=1",
                        tiny3(d, 10) + " --nan-at-step 8");
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_TRUE(contains(r.err, "Last good checkpoint: " + ckpt(d, 3) + " (newer '" + ckpt(d, 6) +
                                  "' failed verification: checksum mismatch"))
      << r.err;
}

TEST(CorruptCheckpoints, FormatOneLoadsWithANote) {
  std::string d = killed_after_7("format1");
  // Format 1 is format 2's payload behind the length-prefixed string "ATTNLAB-CKPT-1".
  std::string v2 = slurp(ckpt(d, 6)), magic = "ATTNLAB-CKPT-1";
  uint64_t len = magic.size();
  std::string v1(reinterpret_cast<const char*>(&len), 8);
  std::ofstream(ckpt(d, 6), std::ios::binary | std::ios::trunc) << v1 + magic + v2.substr(32);
  Result r = run(resume_cmd(d));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "is format 1 (no checksum): loaded unverified")) << r.err;
  EXPECT_EQ(untimed_rows(d), untimed_rows(straight(8)));
}

// ---- 6, SIGKILL at several points: every one resumes to the uninterrupted run ----------------

class KilledAt : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(KilledAt, ResumeContinuesExactly) {
  auto [path, call] = GetParam();
  std::string d = scratch(std::string("kill-") + call + "-" +
                          std::string(path).substr(0, 4));  // not matching `path`
  Result r = run_faulty(std::string("ATTNLAB_FAULT_PATH=") + path + " ATTNLAB_FAULT_KILL=" + call,
                        tiny3(d, 8));
  EXPECT_EQ(r.code, 128 + SIGKILL) << r.err;
  EXPECT_FALSE(fs::exists(d + "/summary.json"));
  Result resumed = run(resume_cmd(d));
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  if (std::string(path) == "step-00000006.ckpt") {  // the temporary file of the unfinished write
    EXPECT_TRUE(contains(resumed.err, "(left by a write that did not finish)")) << resumed.err;
  }
  EXPECT_FALSE(has_temp_files(d));
  EXPECT_TRUE(valid_jsonl(d));
  EXPECT_EQ(untimed_rows(d), untimed_rows(straight(8)));
}

INSTANTIATE_TEST_SUITE_P(
    Points, KilledAt,
    ::testing::Values(std::pair{"step-00000006.ckpt", "write:1"},   // a torn checkpoint write
                      std::pair{"step-00000006.ckpt", "fsync:1"},   // written, not yet durable
                      std::pair{"step-00000006.ckpt", "rename:1"},  // complete, not yet in place
                      std::pair{"metrics.jsonl", "write:5"},        // a torn metrics row
                      std::pair{"metrics.jsonl", "write:9"}));      // the final evaluation's row

// Killed before the run had its config.yaml: nothing to resume, and a new start in the same
// directory is allowed (what is there is the run's own leftovers), cleaning them.
TEST(KilledAtStart, BeforeTheConfigIsWrittenTheDirectoryCanStartAgain) {
  std::string d = scratch("kill-config");
  Result r = run_faulty("ATTNLAB_FAULT_PATH=config.yaml ATTNLAB_FAULT_KILL=rename:1", tiny3(d, 8));
  EXPECT_EQ(r.code, 128 + SIGKILL) << r.err;
  EXPECT_TRUE(has_temp_files(d));
  Result resumed = run(resume_cmd(d));
  EXPECT_EQ(resumed.code, 2);
  EXPECT_TRUE(contains(resumed.err, "has no config.yaml (no run to resume)")) << resumed.err;
  Result again = run(tiny3(d, 8));
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_FALSE(has_temp_files(d));
  EXPECT_EQ(untimed_rows(d), untimed_rows(straight(8)));
}

// ---- 7. SIGINT / SIGTERM: checkpoint, say how to resume, exit 128 + signal --------------------

// A run long enough to be signalled while it trains.
const std::string kLong = " --set checkpoint.every=50 --set eval.every=100";

int signal_after_steps(const std::string& d, int steps, const std::vector<int>& signals,
                       std::string* err) {
  Spawned s = spawn(tiny3(d, 300) + kLong, "signal");
  if (!wait_for_steps(s, d, steps)) {
    ::kill(s.pid, SIGKILL);
    s.wait();
    *err = slurp(s.err);
    return -1;
  }
  for (int sig : signals) ::kill(s.pid, sig);
  int code = s.wait();
  *err = slurp(s.err);
  return code;
}

class Signalled : public ::testing::TestWithParam<int> {};

TEST_P(Signalled, FinishesTheStepCheckpointsAndResumes) {
  const int sig = GetParam();
  std::string d = scratch("signal-" + std::to_string(sig)), err;
  EXPECT_EQ(signal_after_steps(d, 20, {sig}, &err), 128 + sig) << err;
  EXPECT_FALSE(fs::exists(d + "/summary.json"));
  if (sig != SIGKILL) {
    EXPECT_TRUE(contains(err, "Resume with:\n  attnlab train --set run.dir=" + d + " --resume"))
        << err;
    int64_t at = steps_logged(d);
    EXPECT_TRUE(fs::exists(ckpt(d, static_cast<int>(at))))
        << "no checkpoint of the last step " << at;
  }
  Result r = run(resume_cmd(d));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(untimed_rows(d), untimed_rows(straight(300, kLong)));
}

INSTANTIATE_TEST_SUITE_P(Signals, Signalled, ::testing::Values(SIGINT, SIGTERM, SIGKILL));

TEST(Signals, ASecondSignalExitsAtOnceAndTheRunStillResumes) {
  std::string d = scratch("signal-twice"), err;
  EXPECT_EQ(signal_after_steps(d, 20, {SIGINT, SIGINT}, &err), 128 + SIGINT) << err;
  Result r = run(resume_cmd(d));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(valid_jsonl(d));
  EXPECT_EQ(losses(d).size(), 300u);
}

// ---- 8. evaluation does not change training -------------------------------------------------

TEST(Eval, RunsInEvalModeWithoutTouchingTheDropoutGenerator) {
  std::string a = scratch("evalmode-a"), b = scratch("evalmode-b");
  const std::string drop = " --set model.dropout=0.2";
  ASSERT_EQ(run(tiny3(a, 6) + drop + " --set eval.every=1").code, 0);
  ASSERT_EQ(run(tiny3(b, 6) + drop + " --set eval.every=6").code, 0);
  EXPECT_EQ(losses(a), losses(b)) << "the training curve depends on eval.every";
  // The logged validation loss is the model's (no dropout): eval of the checkpoint reproduces it.
  Result e = run("eval " + a);
  ASSERT_EQ(e.code, 0) << e.err;
  EXPECT_EQ(nlohmann::json::parse(e.out)["val_loss"],
            nlohmann::json::parse(slurp(a + "/summary.json"))["final_val_loss"]);
}

// ---- 9. smaller defects ---------------------------------------------------------------------

TEST(ConfigChecks, AdamBetasMustBeBelowOne) {
  for (const char* key : {"train.beta1", "train.beta2"}) {
    std::string d = scratch("beta");
    expect_config_error(
        tiny3(d, 2) + " --set " + key + "=1",
        std::string("config key '") + key + "' (--set): 1 is out of range (must be >= 0 and < 1)",
        d);
  }
}

TEST(ConfigChecks, DuplicateYamlKeysAreRefused) {
  std::string d = scratch("dup"), cfg = scratch("dup.yaml");
  std::ofstream(cfg) << "train:\n  steps: 3\n  lr: 0.001\n  steps: 5\n";
  expect_config_error("train --config " + cfg + " --set run.dir=" + d,
                      "config key 'train.steps' (" + cfg + "): given twice", d);
}

TEST(ConfigChecks, HugeSizesAreRangeErrorsNotOverflows) {
  std::string d = scratch("huge");
  expect_config_error(tiny3(d, 2) + " --set train.batch_size=4611686018427387904",
                      "config key 'train.batch_size' (--set): 4611686018427387904 is out of range",
                      d);
  Result r = run(tiny3(d, 2) + " --set train.batch_size=1048576 --set model.seq_len=1048576");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.err, "= 1099511627777)")) << r.err;
  EXPECT_FALSE(contains(r.err, "-")) << "a negative size in: " << r.err;
}

TEST(ConfigChecks, SetTrimsWhiteSpace) {
  std::string d = scratch("trim");
  Result r = run(tiny3(d, 2) + " --set 'attention.variant= sigmoid ' --set ' train.steps=3'");
  ASSERT_EQ(r.code, 0) << r.err;
  auto s = nlohmann::json::parse(slurp(d + "/summary.json"));
  EXPECT_EQ(s["variant"], "sigmoid");
  EXPECT_EQ(s["steps"], 3);
}

TEST(DataErrors, EmptyBinaryAndShortTextsNameTheFile) {
  std::string d = scratch("text"), empty = scratch("empty.txt"), binary = scratch("binary.bin"),
              tiny_text = scratch("short.txt");
  std::ofstream(empty).flush();
  std::ofstream(binary, std::ios::binary) << std::string("abc\0\x01\x02\xff def", 11);
  std::ofstream(tiny_text) << "In the beginning God created the heaven and the earth.\n";
  const std::string text = " --set data.corpus=text --set data.path=";
  expect_config_error(tiny3(d, 2) + text + empty,
                      "config key 'data.path': text file '" + empty + "' is empty", d);
  expect_config_error(
      tiny3(d, 2) + text + binary,
      "config key 'data.path': '" + binary + "' has a NUL byte at offset 3: not a text file", d);
  expect_config_error(
      tiny3(d, 2) + text + tiny_text,
      "config key 'data.path': the validation split of text file '" + tiny_text + "' has", d);
}

TEST(Bench, ZeroStepsIsAUsageError) {
  Result r = run("bench train --steps 0");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "--steps")) << r.err;
}

TEST(Compare, CountsARunOnceAndKeepsUnitsApart) {
  const std::string& a = straight(6);
  Result twice = run("compare " + a + " " + a);
  ASSERT_EQ(twice.code, 0) << twice.err;
  EXPECT_TRUE(contains(twice.out, "| softmax | 1 | ")) << twice.out;
  EXPECT_TRUE(contains(twice.err, "is given twice: counted once")) << twice.err;
  // A run measured in tokens (its summary says so) gets its own table.
  std::string tok = scratch("cmp-token");
  fs::copy(a, tok, fs::copy_options::recursive);
  auto s = nlohmann::json::parse(slurp(tok + "/summary.json"));
  s["unit"] = "token";
  std::ofstream(tok + "/summary.json") << s.dump();
  Result mixed = run("compare " + a + " " + tok);
  ASSERT_EQ(mixed.code, 0) << mixed.err;
  EXPECT_TRUE(contains(
      mixed.out,
      "lm runs, measured per char:\n\n| variant | runs | final val loss | best val loss | bits/char"))
      << mixed.out;
  EXPECT_TRUE(contains(
      mixed.out,
      "lm runs, measured per token:\n\n| variant | runs | final val loss | best val loss | bits/token"))
      << mixed.out;
  // A bad summary is named.
  std::ofstream(tok + "/summary.json") << "{\"final_val_loss\": ";
  Result bad = run("compare " + a + " " + tok);
  EXPECT_EQ(bad.code, 2);
  EXPECT_TRUE(contains(bad.err, "compare: '" + tok + "/summary.json' is not valid JSON"))
      << bad.err;
}
