// End-to-end runs of the speech task (task: asr) on a corpus synthesised by `attnlab data asr`
// with espeak-ng (label e2e): it learns to transcribe unseen voices, a killed run resumes to the
// same metrics, and its config and data errors name the key and the file.
//
// The corpus lives in the test cache (ATTNLAB_TEST_CACHE), so later runs of the suite reuse it:
// the synthesis is cached and resumable.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>

#include "e2e_util.h"

using namespace attn::e2e;

namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A few hundred utterances of the small preset (unseen voices and text in test).
const std::string& corpus() {
  static const std::string dir = [] {
    const std::string d = cache_dir() + "/asr-e2e";
    Result r = run("data asr --out " + d + " --size small --train-phrases 300 --test-phrases 60 --jobs 2");
    EXPECT_EQ(r.code, 0) << r.err;
    return d;
  }();
  return dir;
}

// A small recogniser: conv 16 channels, 2 × 64-wide blocks; SpecAugment and dropout on, so every
// random stream must survive a resume.
std::string tiny_asr(const std::string& dir, int steps, const std::string& more = "") {
  return "train -q --set task=asr --set run.dir=" + dir + " --set data.corpus_dir=" + corpus() +
         " --set data.cache_dir=" + cache_dir() +
         " --set model.conv_channels=16 --set model.d_model=64 --set model.n_layers=2 --set model.n_heads=2"
         " --set model.position=sinusoidal --set model.init=fan_in --set model.dropout=0.1"
         " --set train.batch_size=16 --set train.lr=3e-3 --set train.beta2=0.98 --set train.weight_decay=0.01"
         " --set train.warmup_steps=" + std::to_string(steps / 10) + " --set train.min_lr_ratio=0 --set log.every=5 --set eval.batches=0"
         " --set run.threads=2 --set checkpoint.every=10 --set eval.every=100 --set train.steps=" +
         std::to_string(steps) + " " + more;
}

}  // namespace

// Untrained, greedy CTC emits noise: test CER measured 0.869 (WER 0.995). After 300 steps (16
// epochs of the 300 training utterances, 18 s on 2 cores) test CER on unseen voices and unseen
// text measured 0.552 (val 0.454, the length-generalisation set 0.582). The thresholds leave
// room for another machine's rounding, not for a model that stopped learning.
TEST(AsrRun, LearnsToTranscribeUnseenVoices) {
  std::string untrained = scratch("asr-untrained"), trained = scratch("asr-trained");
  ASSERT_EQ(run(tiny_asr(untrained, 1)).code, 0);
  Result r = run(tiny_asr(trained, 300));
  ASSERT_EQ(r.code, 0) << r.err;
  auto s0 = nlohmann::json::parse(slurp(untrained + "/summary.json"));
  auto s1 = nlohmann::json::parse(slurp(trained + "/summary.json"));
  EXPECT_EQ(s1["task"], "asr");
  EXPECT_GT(s0["test_cer"].get<double>(), 0.8);
  EXPECT_LT(s1["test_cer"].get<double>(), 0.65) << "untrained " << s0["test_cer"];
  EXPECT_LT(s1["test_wer"].get<double>(), s0["test_wer"].get<double>());
  EXPECT_TRUE(s1.contains("test_long_cer"));
  EXPECT_GT(s1["frames_per_s"].get<double>(), 0);
  auto corpus_json = nlohmann::json::parse(slurp(trained + "/corpus.json"));
  EXPECT_GT(corpus_json["test_long"]["max_frames"].get<int64_t>(), corpus_json["train"]["max_frames"].get<int64_t>());
}

TEST(AsrRun, KillAndResumeGivesTheSameMetrics) {
  std::string a = scratch("asr-straight"), b = scratch("asr-killed");
  ASSERT_EQ(run(tiny_asr(a, 24)).code, 0);
  EXPECT_EQ(run(tiny_asr(b, 24) + " --abort-after-step 15").code, 128 + SIGKILL);
  Result r = run("train -q --set run.dir=" + b + " --resume");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(untimed_rows(b), untimed_rows(a));
  auto sa = nlohmann::json::parse(slurp(a + "/summary.json")), sb = nlohmann::json::parse(slurp(b + "/summary.json"));
  EXPECT_EQ(sa["test_cer"], sb["test_cer"]);
  EXPECT_EQ(sa["final_val_cer"], sb["final_val_cer"]);
}

TEST(AsrRun, ConfigAndDataErrorsNameTheKeyAndTheFile) {
  std::string d = scratch("asr-errors");
  expect_config_error(tiny_asr(d, 2, "--set data.corpus_dir=/nonexistent/asr"),
                      "config key 'data.corpus_dir': '/nonexistent/asr/train.jsonl' not found; synthesise the corpus first "
                      "with `attnlab data asr --out /nonexistent/asr`", d);
  expect_config_error(tiny_asr(d, 2, "--set model.position=learned"),
                      "config key 'model.position': 'learned' is not available for task asr", d);
  expect_config_error(tiny_asr(d, 2, "--set data.test_long=/nonexistent/long.jsonl"),
                      "config key 'data.test_long': '/nonexistent/long.jsonl' not found", d);
  // A manifest line whose audio is gone.
  const std::string m = scratch("asr-missing.jsonl");
  {
    std::ofstream f(m);
    f << R"({"id": "x1", "path": "/nonexistent/x1.wav", "transcript": "AND GOD SAID"})" << "\n";
  }
  expect_config_error(tiny_asr(d, 2, "--set data.val=" + m), "config key 'data.val': ", d);
  Result r = run(tiny_asr(d, 2, "--set data.val=" + m));
  EXPECT_TRUE(contains(r.err, "/nonexistent/x1.wav")) << r.err;
}

// The run keeps its corpus' fingerprints (corpus.json): once the corpus it was trained on has
// changed (here a transcript of the validation manifest), an eval is refused rather than
// silently scoring another data set (a resume goes through the same check, AsrTask::prepare).
TEST(AsrRun, AChangedCorpusIsRefused) {
  std::string d = scratch("asr-corpus-changed"), val = scratch("asr-val.jsonl");
  std::vector<nlohmann::json> rows;
  {
    std::ifstream in(corpus() + "/val.jsonl");
    for (std::string line; std::getline(in, line);) {
      nlohmann::json r = nlohmann::json::parse(line);
      r["path"] = corpus() + "/" + r["path"].get<std::string>();
      rows.push_back(r);
    }
  }
  auto write_val = [&] {
    std::ofstream out(val);
    for (const auto& r : rows) out << r.dump() << "\n";
  };
  write_val();
  ASSERT_EQ(run(tiny_asr(d, 4, "--set data.val=" + val)).code, 0);
  ASSERT_EQ(run("eval " + d).code, 0);
  rows[0]["transcript"] = "AND GOD SAW THE LIGHT";
  write_val();
  Result e = run("eval " + d);
  EXPECT_EQ(e.code, 2);
  EXPECT_TRUE(contains(e.err, "config key 'data.val': the corpus differs from the one this run was trained on")) << e.err;
}

// ---- on a GPU (skipped without one; run on the emulated device as emu_test_gpu_asr_e2e) -------

// The same speech run on the CPU and on CUDA, f32 and bf16: d 128 with 2 heads (head dim 64), so
// bf16 runs the flash kernels with key padding masks; the conv and CTC kernels in both. The
// tolerances are the LM's and the ViT's: f32 tracks the CPU to 1e-4 relative per step
// (summation order), bf16 to 2e-2 (8-bit mantissas).
std::string gpu_asr(const std::string& dir, const std::string& device_args) {
  return "train -q --set task=asr --set run.dir=" + dir + " --set data.corpus_dir=" + corpus() +
         " --set data.cache_dir=" + cache_dir() +
         " --set model.conv_channels=8 --set model.d_model=128 --set model.n_layers=2 --set model.n_heads=2"
         " --set model.position=sinusoidal --set train.batch_size=4 --set train.steps=3 --set train.warmup_steps=1"
         " --set eval.batches=1 --set eval.test_batches=1 --set log.every=1 --set eval.every=3 --set run.threads=2"
         " --set attention.variant=sigmoid" + device_args;
}

TEST(GpuAsrTrain, CudaRunsTrackTheCpuRun) {
  if (!binary_sees_a_gpu()) GTEST_SKIP() << "no CUDA device visible: GPU test skipped";
  CudaRuns d = expect_cuda_tracks_cpu(gpu_asr, "gpu-asr", 3);
  auto sc = nlohmann::json::parse(slurp(d.cpu + "/summary.json")), sf = nlohmann::json::parse(slurp(d.f32 + "/summary.json"));
  EXPECT_NEAR(sf["final_val_loss"].get<double>(), sc["final_val_loss"].get<double>(), 1e-4 * sc["final_val_loss"].get<double>());
  auto s = nlohmann::json::parse(slurp(d.bf16 + "/summary.json"));
  EXPECT_EQ(s["device"], "cuda:0");
  EXPECT_EQ(s["precision"], "bf16");
}
