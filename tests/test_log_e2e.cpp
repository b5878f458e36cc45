// The log through the binary (util/log.h): log.level and ATTNLAB_LOG_LEVEL filter the console, a
// bad level is a usage error, a resume may change the level, a single process writes no log file.
// The console text itself is what test_train_e2e, test_vit_e2e, test_run_safety and test_asr_e2e
// compare; tests/test_log.cpp has the rank files.
#include "e2e_util.h"

using namespace attn::e2e;

namespace {

// tiny() without -q: the progress, evaluation and done lines are on.
std::string loud(const std::string& dir, int steps) {
  std::string args = tiny(dir, steps) + " --set eval.every=2";
  args.replace(args.find("train -q "), 9, "train ");
  return args;
}

TEST(LogLevel, TheConfigKeyFiltersTheConsoleAndIsSaved) {
  const std::string info = scratch("level-info"), warn = scratch("level-warn");
  Result a = run(loud(info, 3));
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_NE(a.err.find("[softmax] step 3/3 loss "), std::string::npos) << a.err;
  EXPECT_NE(a.err.find("[softmax] step 2 val_loss "), std::string::npos) << a.err;
  EXPECT_NE(a.err.find("[softmax] done: " + info + "\n"), std::string::npos) << a.err;
  Result b = run(loud(warn, 3) + " --set log.level=warn");
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_EQ(b.err, "");
  EXPECT_NE(slurp(warn + "/config.yaml").find("  level: warn\n"), std::string::npos);
  EXPECT_EQ(losses(warn), losses(info)) << "the level changed what was trained";
  EXPECT_FALSE(fs::exists(info + "/logs")) << "a single process wrote a log folder";
}

TEST(LogLevel, TheEnvironmentVariableBeatsTheConfigKey) {
  const std::string louder = scratch("env-info"), quieter = scratch("env-error");
  Result a = run_env("ATTNLAB_LOG_LEVEL=info", loud(louder, 2) + " --set log.level=error");
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_NE(a.err.find("[softmax] done: " + louder + "\n"), std::string::npos) << a.err;
  Result b = run_env("ATTNLAB_LOG_LEVEL=error", loud(quieter, 2));
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_EQ(b.err, "");
}

TEST(LogLevel, ABadLevelIsAUsageErrorNamingWhereItCameFrom) {
  const std::string d = scratch("bad-level");
  Result a = run_env("ATTNLAB_LOG_LEVEL=loud", loud(d, 2));
  EXPECT_EQ(a.code, 2);
  EXPECT_EQ(a.err,
            "attnlab: environment variable ATTNLAB_LOG_LEVEL: 'loud' is not a log level (expected "
            "trace, debug, info, warn or error)\n");
  EXPECT_FALSE(fs::exists(d));
  expect_config_error(loud(d, 2) + " --set log.level=verbose", "log.level", d);
}

// A resume may change the level (saved_config.cpp); its notes and "resuming" line obey it.
TEST(LogLevel, AResumeMayChangeTheLevel) {
  const std::string d = scratch("resume-level");
  Result killed = run(tiny(d, 4) + " --set checkpoint.every=2 --abort-after-step 3");
  ASSERT_EQ(killed.code, 137) << killed.err;
  Result quiet = run(loud(d, 4) + " --resume --set log.level=warn");
  ASSERT_EQ(quiet.code, 0) << quiet.err;
  EXPECT_EQ(quiet.err, "");
  // The note that a resume extends the run comes before the log starts: it obeys the level too.
  Result extended = run(loud(d, 6) + " --resume --set log.level=warn");
  ASSERT_EQ(extended.code, 0) << extended.err;
  EXPECT_EQ(extended.err, "");
  // The extension wrote config.yaml with level warn: info must be asked for again.
  Result more = run(loud(d, 8) + " --resume --set log.level=info");
  ASSERT_EQ(more.code, 0) << more.err;
  EXPECT_NE(more.err.find("note: extending the run from 6 to 8 steps"), std::string::npos)
      << more.err;
  EXPECT_NE(more.err.find("resuming " + d + " from "), std::string::npos) << more.err;
}

}  // namespace
