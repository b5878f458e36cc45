// The LM evaluated at lengths other than the training one (eval.lengths): the list key of the
// config, the windows and their loss against a reference computed here window by window, the
// sharded evaluation, the positions at L > n (a causal prefix cannot see the rest, so the first n
// logits at 2n are those at n), and the error for learned positions. On the real KJV text.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include "autograd/node.h"
#include "data/batcher.h"
#include "metrics/model_stats.h"
#include "models/lm/lm.h"
#include "nn/positional.h"
#include "tasks/lm/lm_task.h"
#include "test_util.h"
#include "thread_communicator.h"

namespace fs = std::filesystem;
using namespace attn;
using attn::config::Config;
using attn::config::ConfigError;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// A tiny LM on the KJV text (the cache the data tests share): n = 32, batches of 4, 3 of them.
Config tiny_config(const std::string& lengths) {
  Config c = Config::defaults();
  for (const std::string& s :
       {"data.cache_dir=" + (fs::temp_directory_path() / "attnlab-kjv").string(),
        std::string("model.d_model=32"), std::string("model.n_layers=2"),
        std::string("model.n_heads=2"), std::string("model.seq_len=32"),
        std::string("train.batch_size=4"), std::string("eval.batches=3"),
        "eval.lengths=" + lengths})
    c.set(s);
  tasks::LmTask().resolve(c);
  return c;
}

nlohmann::json evaluate(tasks::LmTask& task) {
  NoGradGuard no_grad;
  task.model().set_training(false);
  return task.evaluate();
}

// Cross-entropy of next-token prediction from logits [1, L, V] in f64, by hand: the mean over
// positions [from, L) of logsumexp(z) − z[y].
double reference_ce(const std::vector<double>& z, const std::vector<int32_t>& y, int64_t V,
                    int64_t from) {
  const int64_t L = static_cast<int64_t>(y.size());
  double sum = 0;
  for (int64_t t = from; t < L; ++t) {
    const double* row = z.data() + t * V;
    const double m = *std::max_element(row, row + V);
    double s = 0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(row[v] - m);
    sum += m + std::log(s) - row[y[static_cast<size_t>(t)]];
  }
  return sum / static_cast<double>(L - from);
}

}  // namespace

// ---- the list key
// --------------------------------------------------------------------------------

TEST(IntListKey, ParsesChecksAndKeepsACanonicalText) {
  Config c = Config::defaults();
  EXPECT_TRUE(c.get_int_list("eval.lengths").empty());  // default []
  c.set("eval.lengths=[256,512]");
  EXPECT_EQ(c.get_int_list("eval.lengths"), (std::vector<int64_t>{256, 512}));
  EXPECT_EQ(c.get_string("eval.lengths"), "[256, 512]");
  EXPECT_TRUE(Config::same_value("eval.lengths", "[256,512]", "[ 256, 512 ]"));
  EXPECT_FALSE(Config::same_value("eval.lengths", "[256, 512]", "[512, 256]"));
  EXPECT_NE(error_of([&] { c.set("eval.lengths=[256, x]"); })
                .find("config key 'eval.lengths' (--set): expected a list of integers such as "
                      "[256, 512], got '[256, x]'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { c.set("eval.lengths=256"); }).find("expected a list of integers"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              c.set("eval.lengths=[1]");
            }).find("config key 'eval.lengths' (--set): 1 (in [1]) is out of range (must be >= 2"),
            std::string::npos);
  EXPECT_EQ(c.get_string("eval.lengths"), "[256, 512]");  // a refused value changes nothing
}

TEST(IntListKey, YamlBlockAndFlowListsAndTheSavedConfigRoundTrip) {
  const fs::path dir =
      fs::temp_directory_path() / ("attnlab-lengths-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "block.yaml") << "eval:\n  lengths:\n    - 64\n    - 128\n";
  std::ofstream(dir / "flow.yaml") << "eval:\n  lengths: [64, 128]\n";
  std::ofstream(dir / "bad.yaml") << "eval:\n  lengths: [64, {a: 1}]\n";
  for (const char* f : {"block.yaml", "flow.yaml"}) {
    Config c = Config::from_file((dir / f).string());
    EXPECT_EQ(c.get_int_list("eval.lengths"), (std::vector<int64_t>{64, 128})) << f;
    // config.yaml as a run writes it reads back to the same list.
    std::ofstream(dir / "saved.yaml") << c.to_yaml();
    EXPECT_EQ(Config::from_file((dir / "saved.yaml").string()).get_string("eval.lengths"),
              "[64, 128]")
        << f;
  }
  EXPECT_NE(error_of([&] {
              Config::from_file((dir / "bad.yaml").string());
            }).find("config key 'eval.lengths' ("),
            std::string::npos);
  fs::remove_all(dir);
}

// ---- the task's rules
// ----------------------------------------------------------------------------

TEST(EvalLengths, LearnedPositionsBeyondTheTrainingLengthAreAConfigError) {
  Config c = Config::defaults();
  c.set("model.position=learned");
  c.set("model.seq_len=32");
  c.set("eval.lengths=[16, 64]");
  const std::string msg = error_of([&] { tasks::LmTask().resolve(c); });
  EXPECT_NE(msg.find("config key 'eval.lengths': 64 is longer than model.seq_len = 32"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("model.position = learned"), std::string::npos) << msg;
  c.set("eval.lengths=[16, 32]");  // within the learned positions: fine
  EXPECT_NO_THROW(tasks::LmTask().resolve(c));
  c.set("eval.lengths=[16, 16]");
  EXPECT_NE(error_of([&] {
              tasks::LmTask().resolve(c);
            }).find("config key 'eval.lengths': 16 is given twice"),
            std::string::npos);
  for (const char* pos : {"rope", "alibi", "sinusoidal", "none"}) {
    c.set(std::string("model.position=") + pos);
    c.set("eval.lengths=[64, 128]");
    EXPECT_NO_THROW(tasks::LmTask().resolve(c)) << pos;
  }
}

TEST(EvalLengths, SigmoidBiasStaysTheTrainingOne) {
  Config c = Config::defaults();
  c.set("attention.variant=sigmoid");
  c.set("model.seq_len=32");
  c.set("eval.lengths=[64, 128]");
  tasks::LmTask().resolve(c);
  EXPECT_DOUBLE_EQ(c.get_float("attention.sigmoid_bias"), -std::log(32.0));
}

// ---- the windows and their loss
// ------------------------------------------------------------------

TEST(WindowBatches, ConsecutiveWindowsAndAShortLastBatch) {
  std::vector<int32_t> tokens(100);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i);
  const std::vector<data::TokenBatch> b = data::window_batches(tokens, 10, 7, 3);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[2].x.size(0), 1);  // 3 + 3 + 1 windows
  for (int64_t w = 0; w < 7; ++w) {
    const std::vector<double> x = slice(b[w / 3].x, 0, w % 3, w % 3 + 1).to_vector(),
                              y = slice(b[w / 3].y, 0, w % 3, w % 3 + 1).to_vector();
    for (int64_t t = 0; t < 10; ++t) {
      EXPECT_EQ(x[t], w * 10 + t);
      EXPECT_EQ(y[t], w * 10 + t + 1);
    }
  }
  EXPECT_NO_THROW(data::window_batches(tokens, 11, 9, 4));  // 9·11 + 1 = 100 tokens: just enough
  EXPECT_THROW(data::window_batches(tokens, 10, 10, 4), std::invalid_argument);  // needs 101
}

// val_loss@L and val_tail_loss@L against windows cut here from the validation text, each scored
// alone with a cross-entropy computed by hand: as many windows as the 3 × 4 × 32 tokens of the
// training-length evaluation hold (36: 10 windows, 3 per forward, the last batch with one).
TEST(EvalLengths, LongWindowLossEqualsAWindowByWindowReference) {
  const Config c = tiny_config("[36, 64, 128, 1000]");
  tasks::LmTask task;
  task.prepare(c, "", Device::cpu());
  const nlohmann::json m = evaluate(task);
  const tasks::LmData d = tasks::load_lm_data(c);
  auto& lm = dynamic_cast<models::DecoderLM&>(task.model());
  NoGradGuard no_grad;
  for (int64_t L : {36, 64, 128, 1000}) {
    const int64_t windows = std::max<int64_t>(1, 3 * 4 * 32 / L),
                  tail = std::max<int64_t>(1, L / 4);
    double all = 0, last = 0;
    for (int64_t w = 0; w < windows; ++w) {
      const auto at = d.val->begin() + w * L;
      const std::vector<int32_t> x(at, at + L), y(at + 1, at + L + 1);
      const Tensor logits =
          lm.forward(from_vector(std::vector<double>(x.begin(), x.end()), {1, L}, {DType::I32}));
      const std::vector<double> z = logits.to_vector();
      all += reference_ce(z, y, logits.size(-1), 0);
      last += reference_ce(z, y, logits.size(-1), L - tail);
    }
    // f32 model: batched and single-window forwards round differently, ~1e-6 on a loss near 4.
    EXPECT_NEAR(m.at(fmt::format("val_loss@{}", L)).get<double>(),
                all / static_cast<double>(windows), 2e-5)
        << L;
    EXPECT_NEAR(m.at(fmt::format("val_tail_loss@{}", L)).get<double>(),
                last / static_cast<double>(windows), 2e-5)
        << L;
  }
}

// The training-length loss and the model's statistics (the tap) are those of the n-token batches
// alone, whatever eval.lengths adds.
TEST(EvalLengths, TheTrainingLengthMetricsAndStatisticsAreUnchanged) {
  tasks::LmTask with, without;
  with.prepare(tiny_config("[64, 128]"), "", Device::cpu());
  without.prepare(tiny_config("[]"), "", Device::cpu());
  metrics::ModelStats s_with(4), s_without(4);
  with.model().set_tap(&s_with);
  without.model().set_tap(&s_without);
  const nlohmann::json a = evaluate(with), b = evaluate(without);
  EXPECT_EQ(a["val_loss"], b["val_loss"]);
  EXPECT_TRUE(a.contains("val_loss@128"));
  EXPECT_FALSE(b.contains("val_loss@128"));
  EXPECT_EQ(s_with.report().dump(), s_without.report().dump());
  EXPECT_EQ(with.model().tap(), &s_with);  // handed back after the long windows
}

// Three ranks share each batch of windows (at 128, one window per forward: two ranks have no
// row of it) and agree with the whole job.
TEST(EvalLengths, ShardedEvaluationEqualsTheWholeOne) {
  const Config c = tiny_config("[64, 128]");
  tasks::LmTask whole;
  whole.prepare(c, "", Device::cpu());
  const nlohmann::json ref = evaluate(whole);
  test::ThreadJob job(3);
  std::vector<nlohmann::json> got(3);
  job.run([&](test::ThreadJob::Comm& comm) {
    tasks::LmTask task;
    task.prepare(c, "", Device::cpu());
    task.set_shard({comm.rank(), 3, [&comm](std::vector<double>& v) {
                      Tensor t = from_vector(v, {static_cast<int64_t>(v.size())}, {DType::F64});
                      comm.all_reduce(t);
                      v = t.to_vector();
                    }});
    got[static_cast<size_t>(comm.rank())] = evaluate(task);
  });
  for (const nlohmann::json& g : got)
    for (const char* k : {"val_loss@64", "val_tail_loss@64", "val_loss@128", "val_tail_loss@128"})
      EXPECT_NEAR(g.at(k).get<double>(), ref.at(k).get<double>(), 1e-6) << k;
}

TEST(EvalLengths, AValidationSplitShorterThanOneWindowNamesTheKey) {
  Config c = tiny_config("[64]");
  c.set("data.train_fraction=0.99995");  // a few hundred characters of validation text
  const tasks::LmData d = tasks::load_lm_data(c);
  ASSERT_GT(static_cast<int64_t>(d.val->size()), 4 * 32 + 1);
  ASSERT_LT(static_cast<int64_t>(d.val->size()), 100000);
  c.set("eval.lengths=[100000]");
  const std::string msg = error_of([&] { tasks::check_lm_data_fits(c, d); });
  EXPECT_NE(msg.find("config key 'eval.lengths': the validation split of the KJV text has"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("fewer than one window of 100000 + 1"), std::string::npos) << msg;
}

// ---- positions at L > n
// --------------------------------------------------------------------------

struct PrefixCase {
  nn::PositionKind position;
  AttentionVariant variant;
  const char* name;
};

void PrintTo(const PrefixCase& c, std::ostream* os) { *os << c.name; }

class LongerPrefix : public ::testing::TestWithParam<PrefixCase> {};

// Causal attention: position t sees tokens 0..t only, so a window of 2n starts with the logits of
// its first n tokens alone, if positions beyond n are what they are at n (RoPE's angles, ALiBi's
// distances, the sinusoidal rows) and the sigmoid bias is the trained one. In f64.
TEST_P(LongerPrefix, TheFirstNLogitsAtTwoNAreThoseAtN) {
  const int64_t n = 16, V = 13;
  nn::ModelConfig mc;
  mc.vocab_size = V;
  mc.d_model = 16;
  mc.n_heads = 2;
  mc.n_layers = 2;
  mc.max_seq_len = n;
  mc.attention.position = GetParam().position;
  mc.attention.variant = GetParam().variant;
  mc.attention.sigmoid_bias = -std::log(static_cast<double>(n));
  models::DecoderLM lm(mc, 7, DType::F64);
  std::vector<int64_t> ids(2 * 2 * n);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 7 + i / 5) % V);
  const Tensor x = attn::testing::ids_tensor(ids, {2, 2 * n});
  NoGradGuard no_grad;
  const Tensor at_2n = lm.forward(x), at_n = lm.forward(slice(x, 1, 0, n));
  EXPECT_TRUE(attn::testing::all_close(slice(at_2n, 1, 0, n), at_n, 1e-12, 0));
}

INSTANTIATE_TEST_SUITE_P(
    Positions, LongerPrefix,
    ::testing::Values(
        PrefixCase{nn::PositionKind::Rope, AttentionVariant::Softmax, "rope_softmax"},
        PrefixCase{nn::PositionKind::Rope, AttentionVariant::Sigmoid, "rope_sigmoid"},
        PrefixCase{nn::PositionKind::Alibi, AttentionVariant::Softmax, "alibi_softmax"},
        PrefixCase{nn::PositionKind::Alibi, AttentionVariant::Sigmoid, "alibi_sigmoid"},
        PrefixCase{nn::PositionKind::Sinusoidal, AttentionVariant::Softmax, "sinusoidal_softmax"},
        PrefixCase{nn::PositionKind::None, AttentionVariant::Softmax, "none_softmax"}),
    [](const auto& info) { return std::string(info.param.name); });

// Beyond the stored table the sinusoidal rows are the formula's: sin/cos(t·10000^(−2⌊j/2⌋/D)).
namespace {

// A 1-layer d 8 model with a 4-row position table.
nn::ModelConfig four_position_model(nn::PositionKind position) {
  nn::ModelConfig mc;
  mc.vocab_size = 5;
  mc.d_model = 8;
  mc.n_heads = 2;
  mc.n_layers = 1;
  mc.max_seq_len = 4;
  mc.attention.position = position;
  return mc;
}

}  // namespace

TEST(LongerPositions, SinusoidalRowsBeyondTheTableFollowTheFormula) {
  models::DecoderLM lm(four_position_model(nn::PositionKind::Sinusoidal), 1, DType::F64);
  ASSERT_EQ(lm.sinusoidal.size(0), 4);
  const std::vector<double> rows = lm.sinusoidal_rows(10).to_vector();
  ASSERT_EQ(rows.size(), 80u);
  for (int64_t t = 0; t < 10; ++t)
    for (int64_t j = 0; j < 8; ++j) {
      const double a =
          static_cast<double>(t) * std::pow(10000.0, -static_cast<double>(j / 2 * 2) / 8.0);
      EXPECT_NEAR(rows[t * 8 + j], j % 2 ? std::cos(a) : std::sin(a), 1e-15) << t << "," << j;
    }
}

TEST(LongerPositions, LearnedPositionsRefuseALongerSequence) {
  models::DecoderLM lm(four_position_model(nn::PositionKind::Learned), 1, DType::F64);
  NoGradGuard no_grad;
  EXPECT_NO_THROW(lm.forward(attn::testing::ids_tensor({1, 2, 3, 4}, {1, 4})));
  EXPECT_NE(error_of([&] {
              lm.forward(attn::testing::ids_tensor({1, 2, 3, 4, 0}, {1, 5}));
            }).find("longer than the 4 learned positions (model.seq_len)"),
            std::string::npos);
}
