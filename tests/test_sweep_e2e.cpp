// `attnlab sweep` and `attnlab report` end to end on a tiny LM grid (the real KJV text): a sweep
// whose children are killed mid-run resumes to exactly the metrics of an uninterrupted sweep,
// finished runs are skipped, a failing run does not stop the others, grid errors start nothing,
// --emit-slurm / --only-index / --dry-run.
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

  Result r = run("sweep " + g + " --runs-dir " + killed);
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
