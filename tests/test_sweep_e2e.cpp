// `attnlab sweep` and `attnlab report` end to end on a tiny LM grid (the real KJV text): a sweep
// whose children are killed mid-run resumes to exactly the metrics of an uninterrupted sweep,
// finished runs are skipped, a failing run does not stop the others, grid errors start nothing,
// --emit-slurm / --only-index / --dry-run; the grid's quantised evaluations (written, kept while
// current, redone for an extended run, a failed one reported) and diverged runs (a result: kept,
// not retried, until the grid's train.steps changes).
#include <fmt/format.h>

#include "e2e_util.h"

using namespace attn::e2e;

namespace {

// The tiny LM of e2e_util.h's tiny() as a base config (checkpoints every 3 of 6 steps).
std::string base_config(const std::string& dir) {
  fs::create_directories(dir);
  const std::string path = dir + "/base.yaml";
  std::ofstream(path) << "data:\n  cache_dir: " << cache_dir()
                      << "\nmodel:\n  d_model: 32\n  n_layers: 2\n  n_heads: 2\n  seq_len: 32\n"
                         "train:\n  batch_size: 8\n  warmup_steps: 2\n  steps: 6\n"
                         "eval:\n  batches: 4\n  every: 3\nlog:\n  every: 1\ncheckpoint:\n  every: "
                         "3\nrun:\n  threads: 1\n";
  return path;
}

std::string grid(const std::string& dir, const std::string& body) {
  const std::string base = base_config(dir);
  const std::string path = dir + "/grid.yaml";
  std::ofstream(path) << "name: tiny\nbase: " << base << "\n" << body;
  return path;
}

const char* kVariants =
    "axes:\n  - key: attention.variant\n    values: [softmax, sigmoid]\nseeds: [1, 2]\n";
const std::vector<std::string> kRuns = {"variant=softmax,s1", "variant=sigmoid,s1",
                                        "variant=softmax,s2", "variant=sigmoid,s2"};

}  // namespace

TEST(Sweep, KilledRunsResumeToTheUninterruptedMetricsAndFinishedOnesAreSkipped) {
  const std::string d = scratch("sweep-resume"), g = grid(d, kVariants);
  const std::string straight = d + "/straight", killed = d + "/killed";
  Result a = run("sweep " + g + " --runs-dir " + straight + " --parallel 2 --no-report");
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_NE(a.err.find("2 at once"), std::string::npos) << a.err;

  Result k =
      run("sweep " + g + " --runs-dir " + killed + " --child-abort-after-step 4 --no-report");
  EXPECT_EQ(k.code, 1) << "killed runs are failures: " << k.err;
  for (const std::string& name : kRuns) {
    EXPECT_FALSE(fs::exists(killed + "/" + name + "/summary.json")) << name;
    EXPECT_NE(k.err.find(name + " FAILED with exit 137"), std::string::npos) << k.err;
    EXPECT_NE(k.err.find(killed + "/logs/" + name + ".log"), std::string::npos) << k.err;
  }

  // Resumed with --threads 2 (the base config says 1): the thread count changes no number, so
  // the metrics still equal the uninterrupted 1-thread sweep's.
  Result r = run("sweep " + g + " --runs-dir " + killed + " --threads 2");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("0 finished earlier (kept), 4 to resume, 0 to train"), std::string::npos)
      << r.err;
  for (const std::string& name : kRuns) {
    const std::vector<std::string> ra = untimed_rows(straight + "/" + name),
                                   rk = untimed_rows(killed + "/" + name);
    ASSERT_FALSE(ra.empty()) << name;
    EXPECT_EQ(ra, rk) << name << ": the resumed run's metrics differ from the uninterrupted run's";
    auto sa = nlohmann::json::parse(slurp(straight + "/" + name + "/summary.json"));
    auto sk = nlohmann::json::parse(slurp(killed + "/" + name + "/summary.json"));
    EXPECT_EQ(sa["final_val_loss"], sk["final_val_loss"]) << name;
    // The log keeps both attempts: the kill and the resume.
    const std::string log = slurp(killed + "/logs/" + name + ".log");
    EXPECT_NE(log.find("exit 137"), std::string::npos) << log;
    EXPECT_NE(log.find("--resume"), std::string::npos) << log;
    EXPECT_NE(log.find("--set run.threads=2"), std::string::npos) << log;
  }
  EXPECT_TRUE(fs::exists(killed + "/report.md"));

  // Everything finished: a third sweep trains nothing and changes nothing.
  const std::string before = slurp(killed + "/" + kRuns[0] + "/metrics.jsonl");
  Result again = run("sweep " + g + " --runs-dir " + killed + " --no-report");
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.err.find("4 finished earlier (kept), 0 to resume, 0 to train"), std::string::npos)
      << again.err;
  EXPECT_EQ(again.err.find("training "), std::string::npos) << again.err;
  EXPECT_EQ(slurp(killed + "/" + kRuns[0] + "/metrics.jsonl"), before);
}

TEST(Sweep, AFailingRunDoesNotStopTheOthers) {
  // corpus=text fails at start (its data.path does not exist); corpus=kjv ignores data.path.
  const std::string d = scratch("sweep-fail");
  const std::string g =
      grid(d,
           "set: [data.path=/nonexistent/corpus.txt]\naxes:\n  - key: data.corpus\n"
           "    values: [text, kjv]\nseeds: [1]\n");
  Result r = run("sweep " + g + " --runs-dir " + d + "/runs");
  EXPECT_EQ(r.code, 1) << r.err;
  const std::string log = d + "/runs/logs/corpus=text,s1.log";
  EXPECT_NE(r.err.find("corpus=text,s1 FAILED with exit 2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(log), std::string::npos) << r.err;
  EXPECT_NE(slurp(log).find("cannot read text file '/nonexistent/corpus.txt'"), std::string::npos)
      << slurp(log);
  EXPECT_TRUE(fs::exists(d + "/runs/corpus=kjv,s1/summary.json"))
      << "the run after the failure was not trained";
  const std::string md = slurp(d + "/runs/report.md");
  EXPECT_NE(md.find("| corpus=text,s1 | failed | 2 |"), std::string::npos) << md;
}

TEST(Sweep, GridErrorsStartNothing) {
  const std::string d = scratch("sweep-errors");
  struct Case {
    std::string body, message;
  };
  const std::vector<Case> cases = {
      {"axes:\n  - key: attention.varaint\n    values: [softmax]\n",
       "unknown config key 'attention.varaint'"},
      {"axes:\n  - zip:\n      - {key: model.position, values: [rope, alibi]}\n      - {key: "
       "train.lr, values: [1e-3]}\n",
       "axis 1 (zip of model.position, train.lr)"},
      {"axes:\n  - key: attention.variant\n    values: [softmax, sigmoid]\n  - key: "
       "model.n_heads\n    values: [2, 3]\n",
       "run variant=softmax,n_heads=3,s1: config key 'model.n_heads'"},
      {"axes: [ {key: a\n", "YAML error"},
  };
  for (const Case& c : cases) {
    const std::string g = grid(d, c.body);
    Result r = run("sweep " + g + " --runs-dir " + d + "/runs");
    EXPECT_EQ(r.code, 2) << c.body << r.err;
    EXPECT_NE(r.err.find("grid '" + g + "'"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(d + "/runs")) << "a grid error started something: " << c.body;
  }
  std::ofstream(d + "/nobase.yaml") << "base: " << d << "/missing.yaml\n";
  Result r = run("sweep " + d + "/nobase.yaml --runs-dir " + d + "/runs");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("missing.yaml' not found"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(d + "/runs"));
}

TEST(Sweep, EmitSlurmOnlyIndexAndDryRun) {
  const std::string d = scratch("sweep-slurm"), g = grid(d, kVariants), runs = d + "/runs";
  Result dry = run("sweep " + g + " --runs-dir " + runs + " --dry-run");
  ASSERT_EQ(dry.code, 0) << dry.err;
  for (const std::string& name : kRuns)
    EXPECT_NE(dry.out.find("new       " + name), std::string::npos) << dry.out;
  EXPECT_NE(dry.out.find("--set attention.variant=sigmoid --set run.seed=2 --set run.dir=" + runs +
                         "/variant=sigmoid,s2"),
            std::string::npos)
      << dry.out;
  EXPECT_FALSE(fs::exists(runs)) << "a dry run wrote something";

  const std::string script = d + "/array.sh";
  Result e = run("sweep " + g + " --runs-dir " + runs + " --emit-slurm " + script);
  ASSERT_EQ(e.code, 0) << e.err;
  const std::string s = slurp(script);
  EXPECT_NE(s.find("#SBATCH --array=0-3\n"), std::string::npos) << s;
  EXPECT_NE(s.find("sweep " + g + " --runs-dir " + runs + " --only-index \"$SLURM_ARRAY_TASK_ID\""),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("#SBATCH --output=" + runs + "/logs/slurm-%A_%a.out"), std::string::npos) << s;
  for (const std::string& name : kRuns)
    EXPECT_FALSE(fs::exists(runs + "/" + name)) << "--emit-slurm trained " << name;
  EXPECT_EQ(std::system(("bash -n " + script).c_str()), 0) << "not a valid bash script";

  // What array task 1 does.
  Result one = run("sweep " + g + " --runs-dir " + runs + " --only-index 1");
  ASSERT_EQ(one.code, 0) << one.err;
  for (size_t i = 0; i < kRuns.size(); ++i)
    EXPECT_EQ(fs::exists(runs + "/" + kRuns[i] + "/summary.json"), i == 1) << kRuns[i];
  EXPECT_FALSE(fs::exists(runs + "/report.md")) << "an array task wrote the report";
  Result out_of_range = run("sweep " + g + " --runs-dir " + runs + " --only-index 4");
  EXPECT_EQ(out_of_range.code, 2);
  EXPECT_NE(out_of_range.err.find("--only-index 4: the grid '" + g + "' has 4 runs"),
            std::string::npos)
      << out_of_range.err;

  // The report of a partial study lists what is missing.
  Result rep = run("report " + g + " --runs-dir " + runs + " --out " + d + "/report --no-plots");
  ASSERT_EQ(rep.code, 0) << rep.err;
  const std::string md = slurp(d + "/report/report.md");
  EXPECT_NE(md.find("| variant=softmax,s1 | not run |"), std::string::npos) << md;
  EXPECT_NE(md.find("| sigmoid | 1 |"), std::string::npos) << md;
}

TEST(Sweep, QuantisedEvaluationsAreWrittenKeptAndRedone) {
  const std::string d = scratch("sweep-quant"), runs = d + "/runs";
  const std::string body =
      "axes:\n  - key: attention.variant\n    values: [softmax, sigmoid]\nseeds: [1]\n"
      "quant: [w8a8]\n";
  const std::string g = grid(d, body);
  const std::vector<std::string> names = {"variant=softmax,s1", "variant=sigmoid,s1"};
  Result dry = run("sweep " + g + " --runs-dir " + runs + " --dry-run");
  ASSERT_EQ(dry.code, 0) << dry.err;
  for (const std::string& name : names)
    EXPECT_NE(dry.out.find(" eval " + runs + "/" + name + " --quant w8a8\n"), std::string::npos)
        << dry.out;

  Result a = run("sweep " + g + " --runs-dir " + runs + " --no-report");
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_NE(a.err.find("quantised evaluations (w8a8): 0 current (kept), 2 to run"),
            std::string::npos)
      << a.err;
  std::vector<std::string> results;
  for (const std::string& name : names) {
    const std::string dir = runs + "/" + name, file = dir + "/eval-w8a8.json";
    ASSERT_TRUE(fs::exists(file)) << a.err;
    const auto e = nlohmann::json::parse(slurp(file));
    const auto summary = nlohmann::json::parse(slurp(dir + "/summary.json"));
    EXPECT_EQ(e["step"], 6);
    EXPECT_EQ(e["quant"]["scheme"], "w8a8");
    // The evaluation is of the run's last checkpoint: its full precision is the run's own last
    // validation loss, and the quantised model's is another number.
    EXPECT_EQ(e["quant"]["full_precision"]["val_loss"], summary["final_val_loss"]) << name;
    EXPECT_NE(e["quant"]["quantised"]["val_loss"], summary["final_val_loss"]) << name;
    // What `attnlab eval` prints is what the sweep kept.
    Result direct = run("eval " + dir + " --quant w8a8");
    ASSERT_EQ(direct.code, 0) << direct.err;
    EXPECT_EQ(nlohmann::json::parse(direct.out)["quant"]["quantised"], e["quant"]["quantised"]);
    results.push_back(slurp(file));
  }
  for (const auto& e : fs::directory_iterator(runs + "/" + names[0]))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();

  // Current results are kept: nothing is evaluated again.
  const auto mtime = fs::last_write_time(runs + "/" + names[0] + "/eval-w8a8.json");
  Result b = run("sweep " + g + " --runs-dir " + runs);
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_NE(b.err.find("quantised evaluations (w8a8): 2 current (kept), 0 to run"),
            std::string::npos)
      << b.err;
  EXPECT_EQ(fs::last_write_time(runs + "/" + names[0] + "/eval-w8a8.json"), mtime);
  const std::string md = slurp(runs + "/report.md");
  const double q = nlohmann::json::parse(results[1])["quant"]["quantised"]["val_bpc"];
  char line[64];  // (this suite links no fmt)
  std::snprintf(line, sizeof line, "| sigmoid | 1 | %.4f |", q);
  EXPECT_NE(md.find(line), std::string::npos) << line << "\n" << md;
  EXPECT_NE(md.find("### val_bpc change, w8a8 − full precision (`quant.w8a8.change.val_bpc`)"),
            std::string::npos)
      << md;

  // A failed evaluation is reported like a failed run; the others go on. (softmax's result is
  // removed and its checkpoints broken, so its evaluation cannot load them.)
  fs::remove(runs + "/" + names[0] + "/eval-w8a8.json");
  for (const auto& e : fs::directory_iterator(runs + "/" + names[0] + "/checkpoints"))
    std::ofstream(e.path()) << "broken";
  Result c = run("sweep " + g + " --runs-dir " + runs + " --no-report");
  EXPECT_EQ(c.code, 1) << c.err;
  EXPECT_NE(c.err.find(names[0] + " --quant w8a8 FAILED (exit 2)"), std::string::npos) << c.err;
  EXPECT_NE(c.err.find(runs + "/logs/" + names[0] + ".eval-w8a8.log"), std::string::npos) << c.err;
  EXPECT_NE(slurp(runs + "/logs/" + names[0] + ".eval-w8a8.log").find("no usable checkpoint"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(runs + "/" + names[0] + "/eval-w8a8.json"));
  EXPECT_EQ(slurp(runs + "/" + names[1] + "/eval-w8a8.json"), results[1]);

  // An extended run (train.steps 6 → 9 in the grid) is resumed, then evaluated again.
  const std::string longer = grid(d, "set: [train.steps=9]\n" + body);
  fs::remove_all(runs + "/" + names[0]);
  Result e = run("sweep " + longer + " --runs-dir " + runs + " --no-report");
  ASSERT_EQ(e.code, 0) << e.err;
  EXPECT_NE(e.err.find("resuming " + names[1]), std::string::npos) << e.err;
  EXPECT_NE(e.err.find("quantised evaluations (w8a8): 0 current (kept), 2 to run"),
            std::string::npos)
      << e.err;
  for (const std::string& name : names)
    EXPECT_EQ(nlohmann::json::parse(slurp(runs + "/" + name + "/eval-w8a8.json"))["step"], 9)
        << name;
}

TEST(Sweep, ADivergedRunIsAResultAndIsNotRetried) {
  const std::string d = scratch("sweep-diverged"), g = grid(d, kVariants), runs = d + "/runs";
  const std::string dir = runs + "/" + kRuns[1];  // variant=sigmoid,s1
  // Run 1 alone, its loss poisoned at step 4 (the trainer's test hook): it diverges there.
  Result a = run("sweep " + g + " --runs-dir " + runs + " --only-index 1 --child-nan-at-step 4");
  EXPECT_EQ(a.code, 0) << "a divergence is a result, not a failure: " << a.err;
  EXPECT_NE(a.err.find(kRuns[1] + " diverged at step 4 (non-finite loss)"), std::string::npos)
      << a.err;
  const auto status = nlohmann::json::parse(slurp(runs + "/logs/" + kRuns[1] + ".status.json"));
  EXPECT_EQ(status["exit"], 3);
  EXPECT_EQ(status["diverged_at"], 4);
  EXPECT_FALSE(fs::exists(dir + "/summary.json"));
  const std::string rows = slurp(dir + "/metrics.jsonl");

  Result dry = run("sweep " + g + " --runs-dir " + runs + " --dry-run");
  ASSERT_EQ(dry.code, 0) << dry.err;
  EXPECT_NE(dry.out.find("diverged  " + kRuns[1] + " (diverged at step 4: kept)"),
            std::string::npos)
      << dry.out;
  EXPECT_NE(dry.out.find("new       " + kRuns[0]), std::string::npos) << dry.out;

  // The whole grid: the others are trained, the diverged run is kept as it is.
  Result b = run("sweep " + g + " --runs-dir " + runs);
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_NE(b.err.find("0 finished earlier (kept), 1 diverged earlier (kept), 0 to resume, 3 to "
                       "train"),
            std::string::npos)
      << b.err;
  EXPECT_NE(b.err.find(kRuns[1] + " diverged at step 4 earlier: kept"), std::string::npos) << b.err;
  EXPECT_EQ(b.err.find("training " + kRuns[1]), std::string::npos) << b.err;
  EXPECT_EQ(b.err.find("resuming " + kRuns[1]), std::string::npos) << b.err;
  EXPECT_EQ(slurp(dir + "/metrics.jsonl"), rows);
  const std::string md = slurp(runs + "/report.md");
  EXPECT_NE(md.find("| " + kRuns[1] + " | diverged at step 4 | 3 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| sigmoid | 1 | 1/2 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| softmax | 2 | 0/2 |"), std::string::npos) << md;

  // Again: nothing to do.
  Result c = run("sweep " + g + " --runs-dir " + runs + " --no-report");
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_NE(c.err.find("3 finished earlier (kept), 1 diverged earlier (kept), 0 to resume, 0 to "
                       "train"),
            std::string::npos)
      << c.err;
  EXPECT_EQ(slurp(dir + "/metrics.jsonl"), rows);

  // Another train.steps in the grid resumes it (from its last good checkpoint, step 3; without
  // the hook it now trains through).
  const std::string longer = grid(d, "set: [train.steps=8]\n" + std::string(kVariants));
  Result e = run("sweep " + longer + " --runs-dir " + runs + " --no-report");
  ASSERT_EQ(e.code, 0) << e.err;
  EXPECT_NE(e.err.find("resuming " + kRuns[1]), std::string::npos) << e.err;
  EXPECT_EQ(nlohmann::json::parse(slurp(dir + "/summary.json"))["steps"], 8);
}
