// Studies (src/studies/): grid expansion (product, zip, names, collisions, errors), the t quantile
// and the paired difference against hand-computed values, the process pool's scheduling with a
// fake GPU list, the Slurm script, diverged runs and quantised evaluations on disk, and the report
// on fixture run directories with known numbers (quantised metrics and diverged seeds included).
#include <gtest/gtest.h>
#include <unistd.h>

#include <fmt/format.h>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "config/config.h"
#include "scratch_dir.h"
#include "studies/divergence.h"
#include "studies/grid.h"
#include "studies/paired_stats.h"
#include "studies/process_pool.h"
#include "studies/quant_eval.h"
#include "studies/report.h"
#include "studies/run_plan.h"
#include "studies/slurm_script.h"

namespace fs = std::filesystem;
using attn::config::ConfigError;
using namespace attn::studies;

namespace {

fs::path scratch(const std::string& name) {
  fs::path p = attn::testing::scratch_dir("attnlab-studies-") / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

// A base config (the tiny LM) and a grid file in dir; returns the grid's path.
std::string grid_file(const fs::path& dir, const std::string& body) {
  write(dir / "base.yaml",
        "model:\n  d_model: 32\n  n_layers: 2\n  n_heads: 2\n  seq_len: 32\ntrain:\n  steps: 6\n"
        "  warmup_steps: 2\nrun:\n  seed: 7\n");
  write(dir / "grid.yaml", "base: " + (dir / "base.yaml").string() + "\n" + body);
  return (dir / "grid.yaml").string();
}

// The ConfigError message of loading (and, with plan, checking every run of) a grid; "" if none.
std::string grid_error(const std::string& body, bool plan = false) {
  const fs::path d = scratch("err");
  try {
    Grid g = load_grid(grid_file(d, body), (d / "runs").string());
    if (plan) plan_runs(g, expand_grid(g));
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// ---- Grid expansion --------------------------------------------------------------------------

TEST(Grid, ProductOfAxesTimesSeedsInOrder) {
  const fs::path d = scratch("product");
  Grid g = load_grid(
      grid_file(d,
                "name: p\naxes:\n  - key: attention.variant\n    values: [softmax, sigmoid]\n"
                "  - key: model.position\n    values: [rope, alibi, learned]\nseeds: [1, 2]\n"));
  EXPECT_EQ(g.name, "p");
  EXPECT_EQ(g.runs_dir, "runs/p");
  const std::vector<GridRun> runs = expand_grid(g);
  ASSERT_EQ(runs.size(), 12u);
  // Seeds outermost, then the first axis the slowest.
  EXPECT_EQ(runs[0].name, "variant=softmax,position=rope,s1");
  EXPECT_EQ(runs[1].name, "variant=softmax,position=alibi,s1");
  EXPECT_EQ(runs[3].name, "variant=sigmoid,position=rope,s1");
  EXPECT_EQ(runs[5].name, "variant=sigmoid,position=learned,s1");
  EXPECT_EQ(runs[6].name, "variant=softmax,position=rope,s2");
  EXPECT_EQ(runs[11].name, "variant=sigmoid,position=learned,s2");
  EXPECT_EQ(runs[4].point, "variant=sigmoid,position=alibi");
  EXPECT_EQ(runs[4].seed, 1);
  EXPECT_EQ(runs[10].seed, 2);
  EXPECT_EQ(runs[4].dir, "runs/p/variant=sigmoid,position=alibi,s1");
  const std::vector<std::pair<std::string, std::string>> sets = {{"attention.variant", "sigmoid"},
                                                                 {"model.position", "alibi"}};
  EXPECT_EQ(runs[4].sets, sets);
  for (size_t i = 0; i < runs.size(); ++i) EXPECT_EQ(runs[i].index, i);
  // The command trains exactly that point.
  const std::vector<std::string> args = train_args(g, runs[4]);
  const std::vector<std::string> want = {"train",
                                         "--config",
                                         g.base,
                                         "--set",
                                         "attention.variant=sigmoid",
                                         "--set",
                                         "model.position=alibi",
                                         "--set",
                                         "run.seed=1",
                                         "--set",
                                         "run.dir=runs/p/variant=sigmoid,position=alibi,s1"};
  EXPECT_EQ(args, want);
}

TEST(Grid, ZipAxesMoveTogether) {
  const fs::path d = scratch("zip");
  Grid g = load_grid(grid_file(d,
                               "set: [train.steps=4]\naxes:\n  - key: attention.variant\n    "
                               "values: [softmax, sigmoid]\n"
                               "  - zip:\n      - {key: model.position, values: [rope, alibi]}\n"
                               "      - {key: train.lr, values: [1e-3, 3e-4]}\nseeds: [5]\n"),
                     "elsewhere");
  EXPECT_EQ(g.runs_dir, "elsewhere");  // --runs-dir wins
  const std::vector<GridRun> runs = expand_grid(g);
  ASSERT_EQ(runs.size(), 4u);
  EXPECT_EQ(runs[0].name, "variant=softmax,position=rope,lr=1e-3,s5");
  EXPECT_EQ(runs[1].name, "variant=softmax,position=alibi,lr=3e-4,s5");
  EXPECT_EQ(runs[3].name, "variant=sigmoid,position=alibi,lr=3e-4,s5");
  const std::vector<std::pair<std::string, std::string>> sets = {
      {"attention.variant", "sigmoid"}, {"model.position", "alibi"}, {"train.lr", "3e-4"}};
  EXPECT_EQ(runs[3].sets, sets);
  // The config of a run is base + set + axes + seed + dir, resolved.
  const attn::config::Config c = run_config(g, runs[3]);
  EXPECT_EQ(c.get_string("attention.variant"), "sigmoid");
  EXPECT_EQ(c.get_string("model.position"), "alibi");
  EXPECT_DOUBLE_EQ(c.get_float("train.lr"), 3e-4);
  EXPECT_EQ(c.get_int("train.steps"), 4);
  EXPECT_EQ(c.get_int("run.seed"), 5);
  EXPECT_EQ(c.get_string("run.dir"), "elsewhere/variant=sigmoid,position=alibi,lr=3e-4,s5");
}

// A zip member's values may repeat (a softmax point and sigmoid at several biases); only a whole
// tuple given twice is an error (the same run name).
TEST(Grid, ZipMembersMayRepeatAValue) {
  const fs::path d = scratch("zip-repeat");
  Grid g = load_grid(grid_file(d,
                               "axes:\n  - zip:\n      - {key: attention.variant, values: [softmax, sigmoid, sigmoid]}\n"
                               "      - {key: attention.sigmoid_bias, values: [auto, 0, auto]}\nseeds: [1]\n"));
  const std::vector<GridRun> runs = expand_grid(g);
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[1].name, "variant=sigmoid,sigmoid_bias=0,s1");
  EXPECT_EQ(runs[2].name, "variant=sigmoid,sigmoid_bias=auto,s1");
  const std::string twice = grid_file(d,
                                      "axes:\n  - zip:\n      - {key: attention.variant, values: [sigmoid, sigmoid]}\n"
                                      "      - {key: attention.sigmoid_bias, values: [0, 0]}\nseeds: [1]\n");
  try {
    load_grid(twice);
    ADD_FAILURE() << "a zip tuple given twice was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("give the same run name part 'variant=sigmoid,sigmoid_bias=0'"), std::string::npos)
        << e.what();
  }
}

TEST(Grid, SeedsDefaultToTheBaseConfigsAndNameToTheFile) {
  const fs::path d = scratch("defaults");
  Grid g = load_grid(grid_file(d, "axes:\n  - key: attention.variant\n    values: [softmax]\n"));
  EXPECT_EQ(g.seeds, std::vector<int64_t>{7});  // base.yaml says run.seed: 7
  EXPECT_EQ(g.name, "grid");
  EXPECT_EQ(g.runs_dir, "runs/grid");
  EXPECT_EQ(expand_grid(g)[0].name, "variant=softmax,s7");
  Grid none = load_grid(grid_file(d, "seeds: [3]\n"));
  ASSERT_EQ(expand_grid(none).size(), 1u);
  EXPECT_EQ(expand_grid(none)[0].name, "s3");
}

TEST(Grid, ShortNamesGrowWhereTheyWouldCollide) {
  auto s = short_key_names({"attention.dropout", "model.dropout", "train.lr"});
  EXPECT_EQ(s["attention.dropout"], "attention.dropout");
  EXPECT_EQ(s["model.dropout"], "model.dropout");
  EXPECT_EQ(s["train.lr"], "lr");
  auto deep = short_key_names({"a.b.c", "x.b.c", "y.c", "task"});
  EXPECT_EQ(deep["a.b.c"], "a.b.c");
  EXPECT_EQ(deep["x.b.c"], "x.b.c");
  EXPECT_EQ(deep["y.c"], "y.c");
  EXPECT_EQ(deep["task"], "task");
  // In a grid: the names carry the longer form.
  const fs::path d = scratch("collide");
  Grid g = load_grid(grid_file(d,
                               "axes:\n  - key: model.dropout\n    values: [0.1]\n"
                               "  - key: attention.dropout\n    values: [0.0, 0.2]\nseeds: [1]\n"));
  EXPECT_EQ(expand_grid(g)[1].name, "model.dropout=0.1,attention.dropout=0.2,s1");
}

TEST(Grid, ValuesAreSanitisedForDirectoryNames) {
  EXPECT_EQ(sanitise_value("/data/my corpus.txt"), "_data_my_corpus.txt");
  EXPECT_EQ(sanitise_value("1e-3"), "1e-3");
  EXPECT_EQ(sanitise_value("a,b=c"), "a_b_c");  // never the name's own separators
  const fs::path d = scratch("sanitise");
  Grid g = load_grid(
      grid_file(d, "axes:\n  - key: data.path\n    values: [/tmp/x y.txt]\nseeds: [1]\n"));
  const GridRun r = expand_grid(g)[0];
  EXPECT_EQ(r.name, "path=_tmp_x_y.txt,s1");
  EXPECT_EQ(r.sets[0].second, "/tmp/x y.txt");  // the value itself is untouched
}

TEST(Grid, ErrorsNameTheGridAndTheAxis) {
  struct Case {
    std::string body, expect;
    bool plan = false;
  };
  const std::vector<Case> cases = {
      {"axes:\n  - zip:\n      - {key: model.position, values: [rope, alibi]}\n      - {key: "
       "train.lr, values: [1e-3]}\n",
       "axis 1 (zip of model.position, train.lr): 'model.position' has 2 values but 'train.lr' has "
       "1"},
      {"axes:\n  - zip:\n      - {key: model.position, values: [rope]}\n",
       "axis 1 (zip): expected a list of two or more"},
      {"axes:\n  - key: data.path\n    values: [a/b, a_b]\n",
       "values 'a/b' and 'a_b' give the same run name part 'path=a_b'"},
      {"axes:\n  - key: attention.variant\n    values: [softmax, softmax]\n",
       "value 'softmax' is given twice"},
      {"axes:\n  - key: attention.variant\n    values: []\n",
       "axis 1 ('attention.variant'): expected `values:`"},
      {"axes:\n  - key: run.seed\n    values: [1, 2]\n",
       "run.seed is set by the grid's `seeds:` list"},
      {"set: [run.dir=x]\n", "run.dir is set by the sweep"},
      {"set: [train.lr=1e-3]\naxes:\n  - key: train.lr\n    values: [1e-3, 2e-3]\n",
       "key 'train.lr' is in set and in axis 1"},
      {"axes:\n  - key: train.lr\n    values: [1]\n  - key: train.lr\n    values: [2]\n",
       "key 'train.lr' is in axis 1 and in axis 2"},
      {"axis:\n  - key: train.lr\n", "unknown entry 'axis'"},
      {"axes:\n  - key: train.lr\n    vals: [1]\n", "axis 1: unknown entry 'vals'"},
      {"seeds: [1, x]\n", "seeds: 'x' is not a non-negative integer"},
      {"seeds: [1, 1]\n", "seeds: 1 is given twice"},
      {"axes: [ {key: a\n", "YAML error"},
      {"axes:\n  - key: attention.varaint\n    values: [softmax]\n",
       "axis key 'attention.varaint' value 'softmax': unknown config key 'attention.varaint'",
       true},
      {"axes:\n  - key: attention.variant\n    values: [softmax, tanh]\n",
       "axis key 'attention.variant' value 'tanh': config key 'attention.variant'", true},
      {"axes:\n  - key: model.n_heads\n    values: [2, 3]\n",
       "run n_heads=3,s7: config key 'model.n_heads'", true},
      {"set: [train.stepz=3]\n", "set 'train.stepz=3': unknown config key 'train.stepz'", true},
      {"quant: [w8a8, w9]\n", "quant: quantisation scheme 'w9': expected wNaM"},
      {"quant: [w8a1]\n", "quant: quantisation scheme 'w8a1': bits must be in [2, 16]"},
      {"quant: w8a8\n", "quant: expected a list of quantisation modes"},
      {"quant: [w8a8, w8a8]\n", "quant: 'w8a8' is given twice"},
  };
  for (const Case& c : cases) {
    const std::string e = grid_error(c.body, c.plan);
    EXPECT_NE(e.find("grid '"), std::string::npos) << c.body << " -> " << e;
    EXPECT_NE(e.find(c.expect), std::string::npos) << c.body << " -> " << e;
  }
  const fs::path d = scratch("nobase");
  write(d / "g.yaml", "base: " + (d / "missing.yaml").string() + "\n");
  try {
    load_grid((d / "g.yaml").string());
    ADD_FAILURE() << "a missing base was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("missing.yaml' not found"), std::string::npos) << e.what();
  }
  write(d / "g2.yaml", "axes: []\n");
  try {
    load_grid((d / "g2.yaml").string());
    ADD_FAILURE() << "a grid without base was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("has no `base:`"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_grid((d / "nothere.yaml").string()), ConfigError);
}

TEST(Grid, PlanSeesFinishedInterruptedAndEditedRuns) {
  const fs::path d = scratch("plan");
  Grid g = load_grid(grid_file(d,
                               "axes:\n  - key: attention.variant\n    values: [softmax, sigmoid, "
                               "softmax1]\nseeds: [1]\n"),
                     (d / "runs").string());
  const std::vector<GridRun> runs = expand_grid(g);
  write(fs::path(runs[0].dir) / "config.yaml", run_config(g, runs[0]).to_yaml());
  write(fs::path(runs[0].dir) / "summary.json", "{}");
  write(fs::path(runs[1].dir) / "config.yaml", run_config(g, runs[1]).to_yaml());
  std::vector<PlannedRun> plan = plan_runs(g, runs);
  EXPECT_EQ(plan[0].state, RunState::Finished);
  EXPECT_EQ(plan[1].state, RunState::Resume);
  EXPECT_EQ(plan[1].train_args.back(), "--resume");
  EXPECT_EQ(plan[2].state, RunState::New);
  EXPECT_EQ(plan[2].train_args.back(), "run.dir=" + runs[2].dir);
  // A run on disk that the grid no longer describes (a key the grid gives has another value) is
  // refused before anything starts.
  attn::config::Config other = run_config(g, runs[1]);
  other.set("model.d_model=64");
  write(fs::path(runs[1].dir) / "config.yaml", other.to_yaml());
  try {
    plan_runs(g, runs);
    ADD_FAILURE() << "an edited run was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("run variant=sigmoid,s1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model.d_model"), std::string::npos) << e.what();
  }
}

TEST(Grid, QuantModesParse) {
  const fs::path d = scratch("quant-grid");
  EXPECT_TRUE(load_grid(grid_file(d, "seeds: [1]\n")).quant.empty());  // default: none
  const Grid g = load_grid(grid_file(d, "seeds: [1]\nquant: [w8a8, w8a16]\n"));
  EXPECT_EQ(g.quant, (std::vector<std::string>{"w8a8", "w8a16"}));
  // The error names the grid file and the key.
  const std::string path = grid_file(d, "seeds: [1]\nquant: [int8]\n");
  try {
    load_grid(path);
    ADD_FAILURE() << "quant: [int8] was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "grid '" + path +
                                         "': quant: quantisation scheme 'int8': expected wNaM "
                                         "(weight and activation bits), e.g. w8a8 or w8a16");
  }
}

// ---- Diverged runs and quantised evaluations on disk -----------------------------------------

namespace {

// The rows of a run that diverged at `step` (the trainer's rows: losses, then its error row).
std::string diverged_rows(int step) {
  std::string rows;
  for (int s = 1; s < step; ++s)
    rows += nlohmann::json{{"step", s}, {"loss", 4.0 - 0.1 * s}}.dump() + "\n";
  return rows + nlohmann::json{{"step", step}, {"error", "non-finite loss or gradient"}}.dump() +
         "\n";
}

}  // namespace

TEST(Divergence, TheLastRowDecides) {
  const fs::path d = scratch("divergence");
  EXPECT_FALSE(diverged_at((d / "none").string()));  // no directory
  write(d / "a/metrics.jsonl", diverged_rows(7));
  EXPECT_EQ(diverged_at((d / "a").string()), std::optional<int64_t>(7));
  write(d / "a/summary.json", "{}");  // finished after all (an extension that went through)
  EXPECT_FALSE(diverged_at((d / "a").string()));
  // The error row followed by more rows (a resume that got past it) is no divergence.
  write(d / "b/metrics.jsonl",
        diverged_rows(3) + nlohmann::json{{"step", 3}, {"loss", 1.0}}.dump() + "\n");
  EXPECT_FALSE(diverged_at((d / "b").string()));
  // Another error text, or a last line too long to be the error row, is not it either.
  write(d / "c/metrics.jsonl", nlohmann::json{{"step", 2}, {"error", "disk full"}}.dump() + "\n");
  EXPECT_FALSE(diverged_at((d / "c").string()));
  write(d / "e/metrics.jsonl",
        nlohmann::json{
            {"step", 2}, {"error", "non-finite loss or gradient"}, {"pad", std::string(5000, 'x')}}
                .dump() +
            "\n");
  EXPECT_FALSE(diverged_at((d / "e").string()));
  // A long history before the error row is read from its end.
  std::string history;
  for (int i = 0; i < 200; ++i)
    history += nlohmann::json{{"pad", std::string(100, 'y')}}.dump() + "\n";
  write(d / "f/metrics.jsonl", history + diverged_rows(12));
  EXPECT_EQ(diverged_at((d / "f").string()), std::optional<int64_t>(12));
}

TEST(Grid, PlanKeepsDivergedRunsUnlessTheStepsChange) {
  const fs::path d = scratch("plan-diverged");
  const std::string body =
      "axes:\n  - key: attention.variant\n    values: [softmax, sigmoid]\nseeds: [1]\n";
  Grid g = load_grid(grid_file(d, body), (d / "runs").string());
  const std::vector<GridRun> runs = expand_grid(g);
  for (const GridRun& r : runs) write(fs::path(r.dir) / "config.yaml", run_config(g, r).to_yaml());
  write(fs::path(runs[1].dir) / "metrics.jsonl", diverged_rows(4));
  write(fs::path(runs[0].dir) / "metrics.jsonl",
        nlohmann::json{{"step", 2}, {"loss", 3.0}}.dump() + "\n");  // interrupted
  std::vector<PlannedRun> plan = plan_runs(g, runs);
  EXPECT_EQ(plan[0].state, RunState::Resume);
  EXPECT_EQ(plan[1].state, RunState::Diverged);
  EXPECT_EQ(plan[1].diverged_step, 4);
  EXPECT_STREQ(state_name(plan[1].state), "diverged");
  // Another train.steps in the grid (an extension) resumes it.
  write(d / "grid.yaml", "base: " + (d / "base.yaml").string() + "\nset: [train.steps=8]\n" + body);
  Grid longer = load_grid((d / "grid.yaml").string(), (d / "runs").string());
  plan = plan_runs(longer, expand_grid(longer));
  EXPECT_EQ(plan[1].state, RunState::Resume);
  EXPECT_EQ(plan[1].train_args.back(), "--resume");
}

namespace {

// What `attnlab eval --quant MODE` prints, reduced to what the sweep and the report read.
nlohmann::json eval_result(int64_t step, const std::string& scheme, double full, double quant) {
  return {{"step", step},
          {"val_loss", full * std::log(2.0)},
          {"quant",
           {{"scheme", scheme},
            {"full_precision", {{"val_loss", full * std::log(2.0)}, {"val_bpc", full}}},
            {"quantised", {{"val_loss", quant * std::log(2.0)}, {"val_bpc", quant}}}}}};
}

}  // namespace

TEST(QuantEval, CurrentWhileItEvaluatedTheLastCheckpoint) {
  const fs::path d = scratch("eval-status");
  const std::string run = (d / "run").string();
  EXPECT_EQ(eval_path(run, "w8a8"), run + "/eval-w8a8.json");
  EXPECT_EQ(eval_args(run, "w8a16"), (std::vector<std::string>{"eval", run, "--quant", "w8a16"}));
  EXPECT_EQ(eval_status(run, "w8a8").state, EvalState::Missing);
  write(d / "run/summary.json", nlohmann::json{{"steps", 6}}.dump());
  write(d / "run/checkpoints/step-00000006.ckpt", "x");
  store_eval(run, "w8a8", eval_result(6, "w8a8", 2.0, 2.1));
  EXPECT_EQ(nlohmann::json::parse(slurp(eval_path(run, "w8a8"))), eval_result(6, "w8a8", 2.0, 2.1));
  EXPECT_EQ(eval_status(run, "w8a8").state, EvalState::Current);
  EXPECT_EQ(eval_status(run, "w8a16").state, EvalState::Missing);  // each mode its own file
  // A checkpoint written after the result (the run trained again) makes it stale.
  const auto t = fs::last_write_time(eval_path(run, "w8a8"));
  fs::last_write_time(d / "run/checkpoints/step-00000006.ckpt", t + std::chrono::seconds(2));
  EvalStatus st = eval_status(run, "w8a8");
  EXPECT_EQ(st.state, EvalState::Stale);
  EXPECT_NE(st.why.find("step-00000006.ckpt is newer"), std::string::npos) << st.why;
  fs::last_write_time(d / "run/checkpoints/step-00000006.ckpt", t - std::chrono::seconds(2));
  EXPECT_EQ(eval_status(run, "w8a8").state, EvalState::Current);
  // An extended run: its summary is at another step than the result.
  write(d / "run/summary.json", nlohmann::json{{"steps", 9}}.dump());
  fs::last_write_time(d / "run/checkpoints/step-00000006.ckpt", t - std::chrono::seconds(2));
  st = eval_status(run, "w8a8");
  EXPECT_EQ(st.state, EvalState::Stale);
  EXPECT_EQ(st.why, "it evaluated step 6, the run is at step 9");
  // A result of another mode under this mode's name is no result of it.
  write(d / "run/summary.json", nlohmann::json{{"steps", 6}}.dump());
  write(eval_path(run, "w8a16"), eval_result(6, "w8a8", 2.0, 2.1).dump());
  EXPECT_EQ(eval_status(run, "w8a16").state, EvalState::Stale);
  // Not finished (no summary): stale.
  fs::remove(d / "run/summary.json");
  EXPECT_EQ(eval_status(run, "w8a8").state, EvalState::Stale);
  // The child's stdout goes to a temporary name of this process; what an earlier sweep left there
  // is removed, other files are not.
  write(d / "run/eval-w8a8.json.out.tmp.1", "{");
  const std::string out = fresh_eval_output_file(run, "w8a8");
  EXPECT_EQ(out, run + "/eval-w8a8.json.out.tmp." + std::to_string(::getpid()));
  EXPECT_FALSE(fs::exists(d / "run/eval-w8a8.json.out.tmp.1"));
  EXPECT_TRUE(fs::exists(eval_path(run, "w8a8")));
  EXPECT_EQ(eval_log_suffix("w8a16"), ".eval-w8a16");
}

TEST(QuantEval, TheOutputIsChecked) {
  const nlohmann::json good = eval_result(6, "w8a8", 2.0, 2.1);
  EXPECT_EQ(checked_eval_output(good.dump() + "\n", "w8a8"), good);
  auto error = [](const std::string& text, const std::string& mode) -> std::string {
    try {
      checked_eval_output(text, mode);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(error("", "w8a8"), "its output is not a JSON object");
  EXPECT_EQ(error("step 6", "w8a8"), "its output is not a JSON object");
  nlohmann::json j = good;
  j.erase("step");
  EXPECT_EQ(error(j.dump(), "w8a8"), "its output has no integer `step`");
  j = good;
  j.erase("quant");
  EXPECT_EQ(error(j.dump(), "w8a8"), "its output has no `quant` object");
  EXPECT_EQ(error(good.dump(), "w8a16"), "its quant.scheme is \"w8a8\", not 'w8a16'");
  j = good;
  j["quant"].erase("quantised");
  EXPECT_EQ(error(j.dump(), "w8a8"), "its quant has no full_precision and quantised metrics");
}

TEST(QuantEval, QualityMetricOfEachTask) {
  // The tasks' compare columns (lm, vit, asr), with the statistics columns compare adds.
  EXPECT_EQ(quality_metric({"final_val_loss", "best_val_loss", "final_val_bpc", "tokens_per_s",
                            "final_max_kurtosis", "parameters"}),
            "val_bpc");
  EXPECT_EQ(quality_metric({"final_val_loss", "best_val_loss", "final_val_acc", "test_acc"}),
            "val_acc");
  EXPECT_EQ(quality_metric({"final_val_loss", "final_val_cer", "test_cer", "test_wer"}), "val_cer");
  EXPECT_EQ(quality_metric({"final_val_loss", "final_max_kurtosis", "wall_time_s"}), "val_loss");
}

// ---- Statistics ------------------------------------------------------------------------------

TEST(PairedStats, StudentTQuantilesMatchTheTables) {
  // Two-sided 95% (p = 0.975) and 99% (p = 0.995) critical values from the standard t tables.
  const std::vector<std::pair<int, double>> t975 = {
      {1, 12.706204736}, {2, 4.302652730},  {3, 3.182446305},  {4, 2.776445105},
      {9, 2.262157163},  {29, 2.045229642}, {100, 1.983971519}};
  for (const auto& [df, t] : t975)
    EXPECT_NEAR(student_t_quantile(0.975, df), t, 1e-8 * t) << "df " << df;
  EXPECT_NEAR(student_t_quantile(0.995, 5), 4.032142984, 1e-8);
  EXPECT_NEAR(student_t_quantile(0.025, 4), -2.776445105, 1e-8);
  EXPECT_NEAR(student_t_quantile(0.75, 1), 1.0, 1e-10);  // Cauchy: tan(π/4)
  EXPECT_DOUBLE_EQ(student_t_quantile(0.5, 3), 0.0);
  EXPECT_THROW(student_t_quantile(1.0, 3), std::invalid_argument);
  EXPECT_THROW(student_t_quantile(0.9, 0), std::invalid_argument);
}

TEST(PairedStats, PairedDifferenceByHand) {
  // d = (−0.1, −0.2, −0.05): d̄ = −7/60; deviations 1/60, −5/60, 4/60, so sd = √(42/3600 / 2) =
  // √21/60 and the half-width t₀.₉₇₅,₂ · sd/√3 = 4.30265273 · √7/60.
  const PairedDifference d = paired_difference({0.9, 1.0, 1.05}, {1.0, 1.2, 1.1});
  EXPECT_EQ(d.n, 3u);
  EXPECT_NEAR(d.mean, -7.0 / 60, 1e-14);
  ASSERT_TRUE(d.std && d.low && d.high);
  EXPECT_NEAR(*d.std, std::sqrt(21.0) / 60, 1e-14);
  const double half = 4.302652730 * std::sqrt(7.0) / 60;
  EXPECT_NEAR(*d.low, -7.0 / 60 - half, 1e-9);
  EXPECT_NEAR(*d.high, -7.0 / 60 + half, 1e-9);
  const PairedDifference one = paired_difference({2.5}, {2.0});
  EXPECT_EQ(one.n, 1u);
  EXPECT_DOUBLE_EQ(one.mean, 0.5);
  EXPECT_FALSE(one.std || one.low || one.high);
  EXPECT_THROW(paired_difference({1, 2}, {1}), std::invalid_argument);
  EXPECT_NEAR(*sample_std({1.0, 1.2, 1.1}), 0.1, 1e-14);
  EXPECT_FALSE(sample_std({1.0}));
}

// ---- Child processes -------------------------------------------------------------------------

// Six jobs on two fake GPUs: never more than two at once, two at once on different GPUs, each
// job's output in its log, failures reported per job without stopping the others.
TEST(ProcessPool, OneJobPerDeviceAtATime) {
  const fs::path d = scratch("pool");
  std::vector<Job> jobs;
  for (int i = 0; i < 6; ++i) {
    const std::string rec = (d / fmt::format("job{}.txt", i)).string();
    const std::string script = fmt::format(
        "echo $CUDA_VISIBLE_DEVICES $(date +%s%N) > {0}; echo out-{1}; echo err-{1} >&2; sleep "
        "0.3; "
        "date +%s%N >> {0}; exit {2}",
        rec, i, i == 2 ? 7 : 0);
    jobs.push_back({{"/bin/sh", "-c", script}, (d / fmt::format("logs/job{}.log", i)).string()});
  }
  jobs.push_back({{(d / "no-such-program").string()}, (d / "logs/missing.log").string()});
  PoolOptions opt;
  opt.slots = 2;
  opt.devices = {"3", "5"};
  size_t started = 0, finished = 0;
  opt.on_start = [&](size_t, size_t slot) {
    EXPECT_LT(slot, 2u);
    ++started;
  };
  opt.on_finish = [&](size_t, const JobResult&) { ++finished; };
  const std::vector<JobResult> r = run_jobs(jobs, opt);
  ASSERT_EQ(r.size(), 7u);
  EXPECT_EQ(started, 7u);
  EXPECT_EQ(finished, 7u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(r[i].exit_code, i == 2 ? 7 : 0) << "job " << i;
  EXPECT_EQ(r[6].exit_code, 127);
  EXPECT_NE(slurp(d / "logs/missing.log").find("cannot start"), std::string::npos);
  struct Span {
    std::string gpu;
    long long t0, t1;
  };
  std::vector<Span> spans;
  for (int i = 0; i < 6; ++i) {
    std::istringstream is(slurp(d / fmt::format("job{}.txt", i)));
    Span s;
    is >> s.gpu >> s.t0 >> s.t1;
    ASSERT_TRUE(is) << "job " << i << " left no record";
    EXPECT_TRUE(s.gpu == "3" || s.gpu == "5") << s.gpu;
    spans.push_back(s);
    const std::string log = slurp(d / fmt::format("logs/job{}.log", i));
    EXPECT_NE(log.find(fmt::format("out-{}", i)), std::string::npos) << log;
    EXPECT_NE(log.find(fmt::format("err-{}", i)), std::string::npos) << log;
    EXPECT_NE(log.find(fmt::format("exit {}", i == 2 ? 7 : 0)), std::string::npos) << log;
  }
  size_t most = 0;
  for (const Span& a : spans) {
    size_t at_once = 0;  // jobs running when a started
    for (const Span& b : spans)
      if (b.t0 <= a.t0 && a.t0 < b.t1) {
        ++at_once;
        if (&a != &b) {
          EXPECT_NE(a.gpu, b.gpu) << "two jobs at once on GPU " << a.gpu;
        }
      }
    most = std::max(most, at_once);
  }
  EXPECT_EQ(most, 2u) << "two slots: two jobs at once, never three";
}

TEST(ProcessPool, StopStartsNothingMore) {
  const fs::path d = scratch("stop");
  std::vector<Job> jobs;
  for (int i = 0; i < 3; ++i)
    jobs.push_back({{"/bin/true"}, (d / fmt::format("j{}.log", i)).string()});
  PoolOptions opt;
  size_t done = 0;
  opt.on_finish = [&](size_t, const JobResult&) { ++done; };
  opt.stop = [&] { return done >= 1; };
  const std::vector<JobResult> r = run_jobs(jobs, opt);
  EXPECT_EQ(r[0].exit_code, 0);
  EXPECT_EQ(r[1].exit_code, -1);
  EXPECT_EQ(r[2].exit_code, -1);
  EXPECT_FALSE(fs::exists(d / "j1.log"));
}

TEST(ProcessPool, VisibleGpusFollowCudaVisibleDevices) {
  const char* old = std::getenv("CUDA_VISIBLE_DEVICES");
  const std::string saved = old ? old : "";
  ::setenv("CUDA_VISIBLE_DEVICES", "2, 7,", 1);
  EXPECT_EQ(visible_gpus(8), (std::vector<std::string>{"2", "7"}));
  ::setenv("CUDA_VISIBLE_DEVICES", "", 1);
  EXPECT_TRUE(visible_gpus(8).empty());
  ::unsetenv("CUDA_VISIBLE_DEVICES");
  EXPECT_EQ(visible_gpus(3), (std::vector<std::string>{"0", "1", "2"}));
  if (old) ::setenv("CUDA_VISIBLE_DEVICES", saved.c_str(), 1);
}

TEST(Slurm, OneArrayTaskPerRun) {
  const fs::path d = scratch("slurm");
  Grid g = load_grid(grid_file(d,
                               "name: study-x\naxes:\n  - key: attention.variant\n    values: "
                               "[softmax, sigmoid]\nseeds: [1, 2, 3]\n"),
                     "runs/x");
  const std::string s =
      slurm_script(g, {"/opt/attnlab", "/work/here", expand_grid(g).size(), false});
  EXPECT_EQ(s.rfind("#!/bin/bash\n", 0), 0u);
  EXPECT_NE(s.find("#SBATCH --array=0-5\n"), std::string::npos) << s;
  EXPECT_NE(s.find("#SBATCH --job-name=study-x\n"), std::string::npos) << s;
  EXPECT_NE(s.find("#SBATCH --output=/work/here/runs/x/logs/slurm-%A_%a.out\n"), std::string::npos)
      << s;
  EXPECT_NE(s.find("cd /work/here\n"), std::string::npos) << s;
  EXPECT_NE(s.find("exec /opt/attnlab sweep " + g.path +
                   " --runs-dir /work/here/runs/x --only-index \"$SLURM_ARRAY_TASK_ID\"\n"),
            std::string::npos)
      << s;
  EXPECT_EQ(s.find("--gres"), std::string::npos);
  EXPECT_NE(slurm_script(g, {"/opt/attnlab", "/work/here", 6, true}).find("#SBATCH --gres=gpu:1\n"),
            std::string::npos);
}

// ---- The report on fixture runs --------------------------------------------------------------

namespace {

// A finished LM run directory as the trainer writes it, with the given final validation loss.
void fixture_run(const Grid& g, const GridRun& r, double val_loss) {
  const fs::path dir = r.dir;
  write(dir / "config.yaml", run_config(g, r).to_yaml());
  const nlohmann::json summary = {{"task", "lm"},
                                  {"unit", "char"},
                                  {"variant", r.sets[0].second},
                                  {"seed", r.seed},
                                  {"steps", 6},
                                  {"final_val_loss", val_loss},
                                  {"best_val_loss", val_loss},
                                  {"final_val_bpc", val_loss / std::log(2.0)},
                                  {"tokens_per_s", 1000.0 + r.seed},
                                  {"parameters", 27488},
                                  {"wall_time_s", 2.0},
                                  {"final_max_kurtosis", 3.0 + r.seed},
                                  {"final_max_inf_norm", 10.0},
                                  {"final_sink_mass", 0.25},
                                  {"final_row_mass", 1.0}};
  write(dir / "summary.json", summary.dump(2));
  std::string rows;
  for (int s = 1; s <= 6; ++s)
    rows += nlohmann::json{{"step", s},
                           {"loss", 4.0 - 0.1 * s + 0.01 * r.seed},
                           {"lr", 1e-3},
                           {"elapsed", 0.1 * s}}
                .dump() +
            "\n";
  rows += nlohmann::json{{"step", 6}, {"val_loss", val_loss}, {"unit", "char"}}.dump() + "\n";
  nlohmann::json stats = {
      {"stats", "val"}, {"step", 6}, {"summary", {{"max_kurtosis", 3.0 + r.seed}}}};
  for (int l = 0; l < 3; ++l) {
    stats["activations"][fmt::format("blocks.{}", l)] = {
        {"kurtosis", 3.0 + l}, {"inf_norm", 5.0 + l}, {"samples", 4}};
    stats["attention"][fmt::format("blocks.{}.attn", l)] = {{"sink_mass", {0.1 * l, 0.2}},
                                                            {"row_mass", {1.0, 1.0}}};
  }
  rows += stats.dump() + "\n";
  write(dir / "metrics.jsonl", rows);
}

struct Fixture {
  fs::path dir;
  Grid grid;
  std::vector<GridRun> runs;
};

// softmax: 1.0, 1.2, 1.1 (seeds 1–3); sigmoid: 0.9, 1.0, 1.05; softmax1: 0.95 (seed 1), seed 2
// failed (exit 3, a config.yaml and a status), seed 3 never ran.
Fixture report_fixture(const std::string& name) {
  Fixture f;
  f.dir = scratch(name);
  f.grid = load_grid(
      grid_file(
          f.dir,
          "name: fx\naxes:\n  - key: attention.variant\n    values: [softmax, sigmoid, softmax1]\n"
          "seeds: [1, 2, 3]\n"),
      (f.dir / "runs").string());
  f.runs = expand_grid(f.grid);
  const std::map<std::string, double> loss = {
      {"variant=softmax,s1", 1.0},  {"variant=softmax,s2", 1.2}, {"variant=softmax,s3", 1.1},
      {"variant=sigmoid,s1", 0.9},  {"variant=sigmoid,s2", 1.0}, {"variant=sigmoid,s3", 1.05},
      {"variant=softmax1,s1", 0.95}};
  for (const GridRun& r : f.runs)
    if (loss.count(r.name)) fixture_run(f.grid, r, loss.at(r.name));
  const GridRun& failed = f.runs[5];  // variant=softmax1,s2
  EXPECT_EQ(failed.name, "variant=softmax1,s2");
  write(fs::path(failed.dir) / "config.yaml", run_config(f.grid, failed).to_yaml());
  const std::string log = (fs::path(f.grid.runs_dir) / "logs" / (failed.name + ".log")).string();
  write(log, "boom\n");
  write(fs::path(f.grid.runs_dir) / "logs" / (failed.name + ".status.json"),
        nlohmann::json{{"exit", 3}, {"log", log}}.dump());
  return f;
}

const nlohmann::json& metric(const nlohmann::json& report, const std::string& key) {
  for (const nlohmann::json& m : report["metrics"])
    if (m["key"] == key) return m;
  throw std::runtime_error("no metric " + key);
}

const nlohmann::json& row(const nlohmann::json& m, const std::string& point) {
  for (const nlohmann::json& r : m["rows"])
    if (r["point"] == point) return r;
  throw std::runtime_error("no row " + point);
}

}  // namespace

TEST(Report, TablesOverSeedsAndPairedDifferencesMatchHandValues) {
  const Fixture f = report_fixture("report-numbers");
  ReportOptions o{f.grid.path, f.grid.runs_dir, "", false};
  ASSERT_EQ(run_report(o), 0);
  const nlohmann::json rep =
      nlohmann::json::parse(slurp(fs::path(f.grid.runs_dir) / "report.json"));
  const nlohmann::json& m = metric(rep, "final_val_loss");
  const nlohmann::json& soft = row(m, "variant=softmax");
  EXPECT_EQ(soft["n"], 3);
  EXPECT_NEAR(soft["mean"].get<double>(), 1.1, 1e-12);
  EXPECT_NEAR(soft["std"].get<double>(), 0.1, 1e-12);  // deviations −0.1, 0.1, 0
  EXPECT_FALSE(soft.contains("diff"));
  const nlohmann::json& sig = row(m, "variant=sigmoid");
  EXPECT_NEAR(sig["mean"].get<double>(), 2.95 / 3, 1e-12);
  EXPECT_NEAR(sig["std"].get<double>(), std::sqrt(21.0) / 60,
              1e-12);                                     // deviations −5/60, 1/60, 4/60
  const double half = 4.302652730 * std::sqrt(7.0) / 60;  // PairedDifferenceByHand
  EXPECT_EQ(sig["diff"]["n"], 3);
  EXPECT_NEAR(sig["diff"]["mean"].get<double>(), -7.0 / 60, 1e-12);
  EXPECT_NEAR(sig["diff"]["ci_low"].get<double>(), -7.0 / 60 - half, 1e-9);
  EXPECT_NEAR(sig["diff"]["ci_high"].get<double>(), -7.0 / 60 + half, 1e-9);
  const nlohmann::json& one = row(m, "variant=softmax1");
  EXPECT_EQ(one["n"], 1);
  EXPECT_TRUE(one["std"].is_null());
  EXPECT_EQ(one["diff"]["n"], 1);
  EXPECT_NEAR(one["diff"]["mean"].get<double>(), -0.05, 1e-12);
  EXPECT_TRUE(one["diff"]["ci_low"].is_null());
  // The statistics of the model are tables too (final_max_kurtosis = 3 + seed, so mean 5, std 1).
  EXPECT_NEAR(row(metric(rep, "final_max_kurtosis"), "variant=sigmoid")["mean"].get<double>(), 5.0,
              1e-12);
  EXPECT_NEAR(row(metric(rep, "final_max_kurtosis"), "variant=sigmoid")["std"].get<double>(), 1.0,
              1e-12);

  const std::string md = slurp(fs::path(f.grid.runs_dir) / "report.md");
  const std::string sig_line =
      fmt::format("| sigmoid | 3 | {:.4f} ± {:.4f} | {:.4f} (n = 3) | [{:.4f}, {:.4f}] |", 2.95 / 3,
                  std::sqrt(21.0) / 60, -7.0 / 60, -7.0 / 60 - half, -7.0 / 60 + half);
  EXPECT_NE(md.find(sig_line), std::string::npos) << sig_line << "\n" << md;
  EXPECT_NE(md.find("| softmax | 3 | 1.1000 ± 0.1000 | baseline |"), std::string::npos) << md;
  EXPECT_NE(md.find("| softmax1 | 1 | 0.9500 | -0.0500 (n = 1) | n = 1, no interval |"),
            std::string::npos)
      << md;
  // Missing and failed runs are listed, with the exit code and log of the failed one.
  EXPECT_NE(md.find("| variant=softmax1,s2 | failed | 3 | `" + f.grid.runs_dir +
                    "/logs/variant=softmax1,s2.log` |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| variant=softmax1,s3 | not run |"), std::string::npos) << md;
  // The grid and the commands that reproduce it.
  EXPECT_NE(md.find(f.grid.text), std::string::npos);
  EXPECT_NE(md.find("--set attention.variant=softmax1 --set run.seed=3 --set run.dir=" +
                    f.grid.runs_dir + "/variant=softmax1,s3"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| softmax | 3 | 1.1000 ± 0.1000 | 1.1000 ± 0.1000 |"), std::string::npos)
      << "compare's table\n"
      << md;
}

// The LM's metrics at extra eval lengths (final_val_loss@L, a family of compare's columns) are
// tables like any other: here final_val_loss@256 = 2·final_val_loss and @1024 = 3·, so their
// means and paired differences are those of final_val_loss times 2 and 3; @1024 after @256.
TEST(Report, MetricsAtEvalLengthsGetTheirOwnTables) {
  const Fixture f = report_fixture("report-lengths");
  for (const GridRun& r : f.runs) {
    const fs::path file = fs::path(r.dir) / "summary.json";
    if (!fs::exists(file)) continue;
    nlohmann::json s = nlohmann::json::parse(slurp(file));
    s["final_val_loss@256"] = 2 * s["final_val_loss"].get<double>();
    s["final_val_loss@1024"] = 3 * s["final_val_loss"].get<double>();
    write(file, s.dump(2));
  }
  ReportOptions o{f.grid.path, f.grid.runs_dir, "", false};
  ASSERT_EQ(run_report(o), 0);
  const nlohmann::json rep =
      nlohmann::json::parse(slurp(fs::path(f.grid.runs_dir) / "report.json"));
  for (const auto& [key, k] :
       {std::pair{"final_val_loss@256", 2.0}, std::pair{"final_val_loss@1024", 3.0}}) {
    const nlohmann::json& m = metric(rep, key);
    EXPECT_EQ(m["header"], std::string("val loss @") + (k == 2.0 ? "256" : "1024"));
    EXPECT_NEAR(row(m, "variant=softmax")["mean"].get<double>(), k * 1.1, 1e-12) << key;
    EXPECT_NEAR(row(m, "variant=softmax")["std"].get<double>(), k * 0.1, 1e-12) << key;
    EXPECT_NEAR(row(m, "variant=sigmoid")["diff"]["mean"].get<double>(), k * -7.0 / 60, 1e-12)
        << key;
  }
  const std::string md = slurp(fs::path(f.grid.runs_dir) / "report.md");
  const size_t at256 = md.find("### val loss @256 (`final_val_loss@256`)"),
               at1024 = md.find("### val loss @1024 (`final_val_loss@1024`)");
  ASSERT_NE(at256, std::string::npos) << md;
  ASSERT_NE(at1024, std::string::npos) << md;
  EXPECT_LT(at256, at1024);
  EXPECT_NE(md.find("| softmax | 3 | 2.2000 ± 0.2000 | baseline |", at256), std::string::npos)
      << md;
  EXPECT_NE(md.find(" val loss @256 | val loss @1024 |"), std::string::npos) << "compare's header\n"
                                                                             << md;
}

TEST(Report, GridWithoutVariantAxisHasNoDifferences) {
  const fs::path d = scratch("report-novariant");
  Grid g =
      load_grid(grid_file(d, "axes:\n  - key: train.lr\n    values: [1e-3, 2e-3]\nseeds: [1]\n"),
                (d / "runs").string());
  for (const GridRun& r : expand_grid(g)) fixture_run(g, r, r.sets[0].second == "1e-3" ? 2.0 : 3.0);
  ReportOptions o{g.path, g.runs_dir, (d / "out").string(), false};
  ASSERT_EQ(run_report(o), 0);
  const std::string md = slurp(d / "out/report.md");
  EXPECT_NE(md.find("no paired differences"), std::string::npos) << md;
  EXPECT_EQ(md.find("Δ vs softmax"), std::string::npos) << md;
  EXPECT_NE(md.find("| 2e-3 | 1 | 3.0000 |"), std::string::npos) << md;
}

TEST(Report, PlotsArePngs) {
  static const bool have =
      std::system("/usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1") == 0;
  if (!have)
    GTEST_SKIP()
        << "/usr/bin/python3 cannot import matplotlib (apt-get install python3-matplotlib)";
  const Fixture f = report_fixture("report-plots");
  ReportOptions o;
  o.grid = f.grid.path;
  o.runs_dir = f.grid.runs_dir;
  ASSERT_EQ(run_report(o), 0) << slurp(fs::path(f.grid.runs_dir) / "plots/report_plots.log");
  const std::string md = slurp(fs::path(f.grid.runs_dir) / "report.md");
  for (const char* name : {"loss_curves.png", "final_metrics.png", "layer_stats.png"}) {
    const fs::path p = fs::path(f.grid.runs_dir) / "plots" / name;
    ASSERT_TRUE(fs::exists(p)) << name;
    EXPECT_GT(fs::file_size(p), 10000u) << name;
    const std::string bytes = slurp(p);
    EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << name;
    EXPECT_NE(md.find(std::string("(plots/") + name + ")"), std::string::npos) << name;
  }
  // A broken script is said in the report and in the exit code, never silently.
  ::setenv("ATTNLAB_REPORT_PLOTS", (f.dir / "no-such-script.py").c_str(), 1);
  EXPECT_EQ(run_report(o), 1);
  ::unsetenv("ATTNLAB_REPORT_PLOTS");
  EXPECT_NE(slurp(fs::path(f.grid.runs_dir) / "report.md").find("Not all plots were made"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(fs::path(f.grid.runs_dir) / "plots/loss_curves.png"))
      << "a stale plot was kept";
}

TEST(Report, QuantisedMetricsMatchHandValues) {
  // The fixture of TablesOverSeeds…, with `quant: [w8a8]` and each finished run's result:
  // val_bpc full → quantised, softmax 1.0→1.1, 1.2→1.25, 1.1→1.2 (change 0.1, 0.05, 0.1), sigmoid
  // 0.9→0.92, 1.0→1.01, 1.05→1.06 (change 0.02, 0.01, 0.01); softmax1,s1's evaluation failed.
  Fixture f = report_fixture("report-quant");
  write(f.grid.path, f.grid.text + "quant: [w8a8]\n");
  f.grid = load_grid(f.grid.path, f.grid.runs_dir);
  const std::map<std::string, std::pair<double, double>> bpc = {
      {"variant=softmax,s1", {1.0, 1.1}},  {"variant=softmax,s2", {1.2, 1.25}},
      {"variant=softmax,s3", {1.1, 1.2}},  {"variant=sigmoid,s1", {0.9, 0.92}},
      {"variant=sigmoid,s2", {1.0, 1.01}}, {"variant=sigmoid,s3", {1.05, 1.06}}};
  for (const GridRun& r : f.runs)
    if (bpc.count(r.name))
      store_eval(r.dir, "w8a8",
                 eval_result(6, "w8a8", bpc.at(r.name).first, bpc.at(r.name).second));
  const GridRun& failed = f.runs[2];  // variant=softmax1,s1: finished, its evaluation failed
  ASSERT_EQ(failed.name, "variant=softmax1,s1");
  write(fs::path(f.grid.runs_dir) / "logs" / (failed.name + ".eval-w8a8.status.json"),
        nlohmann::json{{"exit", 2}}.dump());
  ReportOptions o{f.grid.path, f.grid.runs_dir, "", false};
  ASSERT_EQ(run_report(o), 0);
  const nlohmann::json rep =
      nlohmann::json::parse(slurp(fs::path(f.grid.runs_dir) / "report.json"));

  const nlohmann::json& full = metric(rep, "quant.w8a8.full.val_bpc");
  EXPECT_EQ(full["mode"], "w8a8");
  EXPECT_EQ(full["metric"], "val_bpc");  // the LM's quality metric
  EXPECT_NEAR(row(full, "variant=softmax")["mean"].get<double>(), 1.1, 1e-12);
  EXPECT_NEAR(row(full, "variant=softmax")["std"].get<double>(), 0.1, 1e-12);
  const nlohmann::json& quant = metric(rep, "quant.w8a8.val_bpc");
  EXPECT_NEAR(row(quant, "variant=softmax")["mean"].get<double>(), 3.55 / 3, 1e-12);
  EXPECT_NEAR(row(quant, "variant=sigmoid")["mean"].get<double>(), 2.99 / 3, 1e-12);

  const nlohmann::json& change = metric(rep, "quant.w8a8.change.val_bpc");
  const nlohmann::json& soft = row(change, "variant=softmax");
  EXPECT_EQ(soft["n"], 3);
  EXPECT_NEAR(soft["mean"].get<double>(), 0.25 / 3, 1e-12);
  EXPECT_NEAR(soft["std"].get<double>(), std::sqrt(1.0 / 1200), 1e-12);  // deviations 1, −2, 1 /60
  const nlohmann::json& sig = row(change, "variant=sigmoid");
  EXPECT_NEAR(sig["mean"].get<double>(), 0.04 / 3, 1e-12);
  // Paired by seed: d = (0.02 − 0.1, 0.01 − 0.05, 0.01 − 0.1) = (−0.08, −0.04, −0.09), d̄ = −0.07,
  // deviations −0.01, 0.03, −0.02: sd = √(0.0014 / 2).
  const double sd = std::sqrt(0.0007), half = 4.302652730 * sd / std::sqrt(3.0);
  EXPECT_EQ(sig["diff"]["n"], 3);
  EXPECT_NEAR(sig["diff"]["mean"].get<double>(), -0.07, 1e-12);
  EXPECT_NEAR(sig["diff"]["std"].get<double>(), sd, 1e-12);
  EXPECT_NEAR(sig["diff"]["ci_low"].get<double>(), -0.07 - half, 1e-9);
  EXPECT_NEAR(sig["diff"]["ci_high"].get<double>(), -0.07 + half, 1e-9);
  EXPECT_EQ(row(change, "variant=softmax1")["n"], 0);  // its one finished run has no result

  const std::string md = slurp(fs::path(f.grid.runs_dir) / "report.md");
  EXPECT_NE(md.find("## Quantised evaluation (w8a8)"), std::string::npos) << md;
  const std::string change_line =
      fmt::format("| sigmoid | 3 | {:.3g} ± {:.3g} | {:.3g} (n = 3) | [{:.3g}, {:.3g}] |", 0.04 / 3,
                  std::sqrt(1.0 / 3e4), -0.07, -0.07 - half, -0.07 + half);
  EXPECT_NE(md.find(change_line), std::string::npos) << change_line << "\n" << md;
  EXPECT_NE(md.find("| variant=softmax1,s1 | w8a8 | failed (exit 2); log `" + f.grid.runs_dir +
                    "/logs/variant=softmax1,s1.eval-w8a8.log` |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find(" eval " + f.grid.runs_dir + "/variant=sigmoid,s2 --quant w8a8\n"),
            std::string::npos)
      << "the reproduce section\n"
      << md;

  // A result older than the run's last checkpoint is left out, and said so.
  const GridRun& s1 = f.runs[0];
  write(fs::path(s1.dir) / "checkpoints/step-00000006.ckpt", "x");
  fs::last_write_time(fs::path(s1.dir) / "checkpoints/step-00000006.ckpt",
                      fs::last_write_time(eval_path(s1.dir, "w8a8")) + std::chrono::seconds(2));
  ASSERT_EQ(run_report(o), 0);
  const nlohmann::json again =
      nlohmann::json::parse(slurp(fs::path(f.grid.runs_dir) / "report.json"));
  const nlohmann::json& soft2 = row(metric(again, "quant.w8a8.change.val_bpc"), "variant=softmax");
  EXPECT_EQ(soft2["seeds"], (std::vector<int64_t>{2, 3}));
  EXPECT_NEAR(soft2["mean"].get<double>(), 0.075, 1e-12);
  EXPECT_NE(slurp(fs::path(f.grid.runs_dir) / "report.md")
                .find("| variant=softmax,s1 | w8a8 | " + s1.dir +
                      "/checkpoints/step-00000006.ckpt is newer |"),
            std::string::npos);
}

TEST(Report, DivergedRunsAreCountedPerPoint) {
  // A stability study: lr 1e-3 finishes (2.0, 2.1, 2.2), lr 0.5 diverges for seed 2 (at step 5;
  // the others give 2.0, 2.2), lr 1 diverges for every seed (at steps 2, 3, 2).
  const fs::path d = scratch("report-diverged");
  Grid g = load_grid(grid_file(d,
                               "axes:\n  - key: train.lr\n    values: [1e-3, 0.5, 1]\n"
                               "seeds: [1, 2, 3]\n"),
                     (d / "runs").string());
  const std::vector<GridRun> runs = expand_grid(g);
  const std::map<std::string, double> loss = {{"lr=1e-3,s1", 2.0},
                                              {"lr=1e-3,s2", 2.1},
                                              {"lr=1e-3,s3", 2.2},
                                              {"lr=0.5,s1", 2.0},
                                              {"lr=0.5,s3", 2.2}};
  const std::map<std::string, int> diverged = {
      {"lr=0.5,s2", 5}, {"lr=1,s1", 2}, {"lr=1,s2", 3}, {"lr=1,s3", 2}};
  for (const GridRun& r : runs) {
    if (loss.count(r.name)) {
      fixture_run(g, r, loss.at(r.name));
      continue;
    }
    ASSERT_TRUE(diverged.count(r.name)) << r.name;
    write(fs::path(r.dir) / "config.yaml", run_config(g, r).to_yaml());
    write(fs::path(r.dir) / "metrics.jsonl", diverged_rows(diverged.at(r.name)));
    write(fs::path(g.runs_dir) / "logs" / (r.name + ".status.json"),
          nlohmann::json{{"exit", 3}}.dump());
  }
  ReportOptions o{g.path, g.runs_dir, (d / "out").string(), false};
  ASSERT_EQ(run_report(o), 0);
  const std::string md = slurp(d / "out/report.md");
  EXPECT_NE(
      md.find("9 runs (3 grid points × 3 seeds) in `" + g.runs_dir + "`: 5 finished, 4 diverged."),
      std::string::npos)
      << md;
  for (const auto& [name, step] : diverged)
    EXPECT_NE(md.find(fmt::format("| {} | diverged at step {} | 3 |", name, step)),
              std::string::npos)
        << name << "\n"
        << md;
  EXPECT_NE(md.find("| lr | seeds | diverged | mean ± std |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 1e-3 | 3 | 0/3 | 2.1000 ± 0.1000 |"), std::string::npos) << md;
  EXPECT_NE(md.find(fmt::format("| 0.5 | 2 | 1/3 | 2.1000 ± {:.4f} |", std::sqrt(0.02))),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| 1 | 0 | 3/3 | — |"), std::string::npos) << md;
  const nlohmann::json rep = nlohmann::json::parse(slurp(d / "out/report.json"));
  const nlohmann::json& m = metric(rep, "final_val_loss");
  EXPECT_EQ(row(m, "lr=1")["diverged"], 3);
  EXPECT_EQ(row(m, "lr=0.5")["diverged"], 1);
  EXPECT_EQ(row(m, "lr=1e-3")["diverged"], 0);
  for (const nlohmann::json& r : rep["runs"]) {
    if (!diverged.count(r["name"])) {
      EXPECT_TRUE(r["diverged_at"].is_null()) << r;
      continue;
    }
    EXPECT_EQ(r["state"], "diverged") << r;
    EXPECT_EQ(r["diverged_at"], diverged.at(r["name"])) << r;
  }
  // Without a diverged run there is no such column (the earlier tables stay as they were).
  const Fixture f = report_fixture("report-plain");
  ReportOptions fo{f.grid.path, f.grid.runs_dir, "", false};
  ASSERT_EQ(run_report(fo), 0);
  const std::string fmd = slurp(fs::path(f.grid.runs_dir) / "report.md");
  EXPECT_EQ(fmd.find("diverged"), std::string::npos) << fmd;
  // Exit 3 without the trainer's error row (softmax1,s2 there) stays a failed run.
  EXPECT_NE(fmd.find("| variant=softmax1,s2 | failed | 3 |"), std::string::npos) << fmd;
}
