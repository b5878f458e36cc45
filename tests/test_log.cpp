// The log (util/log.h): levels and their override, rank 0's console byte for byte, the other
// ranks' consoles, the rank files (names, timestamps, levels, ranks), and a failing file.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "scratch_dir.h"
#include "util/log.h"

namespace fs = std::filesystem;
using namespace attn;
using logging::Level;

namespace {

fs::path scratch(const std::string& name) {
  fs::path p = attn::testing::scratch_dir("attnlab-test-log-") / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string slurp(const fs::path& path) {
  std::ifstream f(path);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream is(text);
  for (std::string line; std::getline(is, line);) out.push_back(line);
  return out;
}

// Everything written to file descriptor 2 while `fn` runs.
template <class Fn>
std::string stderr_of(Fn fn) {
  const fs::path file = attn::testing::scratch_dir("attnlab-test-log-") / "stderr.txt";
  std::fflush(stderr);
  const int saved = ::dup(2);
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ::dup2(fd, 2);
  ::close(fd);
  try {
    fn();
  } catch (...) {
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
    throw;
  }
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  return slurp(file);
}

// Each test starts from the default log, without the environment's override, and leaves it so.
class Log : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const char* v = std::getenv(logging::kLevelVariable)) saved_env_ = v;
    ::unsetenv(logging::kLevelVariable);
    logging::reset();
  }
  void TearDown() override {
    if (saved_env_.empty())
      ::unsetenv(logging::kLevelVariable);
    else
      ::setenv(logging::kLevelVariable, saved_env_.c_str(), 1);
    logging::reset();
  }
  std::string saved_env_;
};

TEST_F(Log, LevelNamesRoundTripAndOthersAreRefusedNamingTheSource) {
  for (Level l : {Level::Trace, Level::Debug, Level::Info, Level::Warn, Level::Error})
    EXPECT_EQ(logging::parse_level(logging::level_name(l), "test"), l);
  EXPECT_STREQ(logging::level_name(Level::Warn), "warn");
  try {
    logging::parse_level("warning", "config key 'log.level'");
    FAIL() << "'warning' was accepted";
  } catch (const logging::LevelError& e) {
    EXPECT_STREQ(e.what(),
                 "config key 'log.level': 'warning' is not a log level (expected trace, debug, "
                 "info, warn or error)");
  }
}

TEST_F(Log, TheLevelFiltersLessSevereMessages) {
  logging::init(0, 1, "", Level::Warn);
  EXPECT_EQ(logging::level(), Level::Warn);
  EXPECT_FALSE(logging::enabled(Level::Info));
  EXPECT_TRUE(logging::enabled(Level::Error));
  std::string err = stderr_of([] {
    logging::trace("t\n");
    logging::debug("d\n");
    logging::info("i\n");
    logging::warn("w {}\n", 1);
    logging::error("e {}\n", 2);
  });
  EXPECT_EQ(err, "w 1\ne 2\n");
  logging::init(0, 1, "", Level::Trace);
  err = stderr_of([] {
    logging::trace("t\n");
    logging::debug("d\n");
    logging::info("i\n");
  });
  EXPECT_EQ(err, "t\nd\ni\n");
}

// The trainer's progress line on a terminal: "\r" before, blanks after, no line end; the eval line
// starts with the "\n" that ends it. The console must get exactly these bytes.
TEST_F(Log, RankZerosConsoleIsTheTextExactlyAsGiven) {
  const std::string progress =
      "\r[softmax] step 3/8 loss 2.5000 lr 1.00e-03 | 900 tok/s | ETA 0m01s   ";
  const std::string eval = "\n[softmax] step 4 val_loss 2.4 {not a format}\n";
  for (int world : {1, 4}) {
    const fs::path dir = scratch("console-" + std::to_string(world));
    logging::init(0, world, dir.string(), Level::Info);
    std::string err = stderr_of([&] {
      logging::info("{}", progress);
      logging::write(Level::Info, eval);
      logging::info("{}[{}] done: {}\n", "", "softmax", "runs/x");
    });
    EXPECT_EQ(err, progress + eval + "[softmax] done: runs/x\n") << "world size " << world;
  }
}

TEST_F(Log, OtherRanksConsolesCarryOnlyTheirErrorsMarkedWithTheRank) {
  const fs::path dir = scratch("ranks");
  logging::init(2, 3, dir.string(), Level::Trace);
  std::string err = stderr_of([] {
    logging::info("\r[softmax] step 1/2 loss 1.0   ");
    logging::warn("warning: something\n");
    logging::error("\nerror: non-finite loss\nsecond line\n");
  });
  EXPECT_EQ(err, "[rank 2] error: non-finite loss\n[rank 2] second line\n");
}

// A UTC timestamp within a minute of now; the time zone is set far from UTC so that a local time
// would be hours off.
void expect_recent_utc(const std::string& stamp) {
  std::tm tm{};
  ASSERT_NE(strptime(stamp.c_str(), "%Y-%m-%dT%H:%M:%S", &tm), nullptr) << stamp;
  const double off = std::difftime(timegm(&tm), std::time(nullptr));
  EXPECT_LT(std::abs(off), 60) << stamp << " is not now in UTC";
}

TEST_F(Log, EveryRankOfAJobAppendsToItsOwnFileWithTimeLevelAndRank) {
  const fs::path dir = scratch("files");
  const char* tz = std::getenv("TZ");
  const std::string saved_tz = tz ? tz : "";
  ::setenv("TZ", "Asia/Kolkata", 1);  // UTC+5:30
  ::tzset();
  const std::regex line(
      R"(\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\d{3}Z\] \[(trace|debug|info|warn|error)\] \[rank (\d+)\] (.*))");
  for (int rank : {0, 1}) {
    logging::init(rank, 2, dir.string(), Level::Info);
    EXPECT_EQ(logging::file_path(),
              (dir / "logs" / ("rank-" + std::to_string(rank) + ".log")).string());
    stderr_of([&] {
      logging::debug("hidden at info\n");
      logging::info("\r[sigmoid] step 1/2 loss 1.5000   ");
      logging::info("\r[sigmoid] step 2/2 loss 1.2500   ");
      logging::warn("\nSIGTERM at step 2: written. Resume with:\n  attnlab train --resume\n");
      logging::error("from rank {}\n", rank);
    });
  }
  logging::reset();
  if (saved_tz.empty())
    ::unsetenv("TZ");
  else
    ::setenv("TZ", saved_tz.c_str(), 1);
  ::tzset();
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir / "logs")) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"rank-0.log", "rank-1.log"}));
  for (int rank : {0, 1}) {
    const std::vector<std::string> got = lines_of(slurp(dir / "logs" / names[rank]));
    const std::vector<std::pair<std::string, std::string>> want = {
        {"info", "log opened by pid " + std::to_string(::getpid()) + ": rank " +
                     std::to_string(rank) + " of 2, level info"},
        {"info", "[sigmoid] step 1/2 loss 1.5000"},
        {"info", "[sigmoid] step 2/2 loss 1.2500"},
        {"warn", "SIGTERM at step 2: written. Resume with:"},
        {"warn", "  attnlab train --resume"},
        {"error", "from rank " + std::to_string(rank)}};
    ASSERT_EQ(got.size(), want.size()) << slurp(dir / "logs" / names[rank]);
    for (size_t i = 0; i < got.size(); ++i) {
      std::smatch m;
      ASSERT_TRUE(std::regex_match(got[i], m, line)) << got[i];
      expect_recent_utc(m[1]);
      EXPECT_EQ(m[2], want[i].first) << got[i];
      EXPECT_EQ(m[3], std::to_string(rank)) << got[i];
      EXPECT_EQ(m[4], want[i].second);
    }
  }
  // A second init of the same rank (a resume) appends.
  logging::init(1, 2, dir.string(), Level::Info);
  logging::info("resumed\n");
  logging::reset();
  const std::vector<std::string> after = lines_of(slurp(dir / "logs/rank-1.log"));
  ASSERT_EQ(after.size(), 8u);
  EXPECT_NE(after.back().find("] [info] [rank 1] resumed"), std::string::npos) << after.back();
}

TEST_F(Log, ASingleProcessWritesNoFile) {
  const fs::path dir = scratch("single");
  logging::init(0, 1, dir.string(), Level::Trace);
  stderr_of([] { logging::error("e\n"); });
  EXPECT_EQ(logging::file_path(), "");
  EXPECT_FALSE(fs::exists(dir / "logs"));
}

TEST_F(Log, TheEnvironmentVariableBeatsTheConfiguredLevel) {
  ::setenv(logging::kLevelVariable, "error", 1);
  logging::init(0, 1, "", Level::Trace);
  EXPECT_EQ(logging::level(), Level::Error);
  EXPECT_EQ(stderr_of([] {
              logging::warn("w\n");
              logging::error("e\n");
            }),
            "e\n");
  ::setenv(logging::kLevelVariable, "debug", 1);
  logging::init(0, 1, "", Level::Error);
  EXPECT_EQ(logging::level(), Level::Debug);
  EXPECT_EQ(stderr_of([] { logging::debug("d\n"); }), "d\n");
  ::setenv(logging::kLevelVariable, "", 1);  // empty: as if unset
  logging::init(0, 1, "", Level::Warn);
  EXPECT_EQ(logging::level(), Level::Warn);
  ::setenv(logging::kLevelVariable, "loud", 1);
  try {
    logging::init(0, 1, "", Level::Info);
    FAIL() << "ATTNLAB_LOG_LEVEL=loud was accepted";
  } catch (const logging::LevelError& e) {
    EXPECT_STREQ(e.what(),
                 "environment variable ATTNLAB_LOG_LEVEL: 'loud' is not a log level (expected "
                 "trace, debug, info, warn or error)");
  }
  EXPECT_EQ(logging::level(), Level::Warn) << "a refused init changed the log";
}

TEST_F(Log, SetLevelKeepsTheSinksAndYieldsToTheEnvironment) {
  const fs::path dir = scratch("set-level");
  logging::init(0, 2, dir.string(), Level::Info);
  const std::string file = logging::file_path();
  logging::set_level(Level::Error);
  EXPECT_EQ(logging::file_path(), file);
  EXPECT_EQ(stderr_of([] {
              logging::info("i\n");
              logging::error("e\n");
            }),
            "e\n");
  const std::string text = slurp(file);
  EXPECT_EQ(text.find("] i"), std::string::npos) << text;
  EXPECT_NE(text.find("] [error] [rank 0] e\n"), std::string::npos) << text;
  ::setenv(logging::kLevelVariable, "debug", 1);
  logging::set_level(Level::Error);
  EXPECT_EQ(logging::level(), Level::Debug);
  EXPECT_EQ(stderr_of([] { logging::debug("d\n"); }), "d\n");
}

TEST_F(Log, ARankOutsideTheJobIsRefused) {
  EXPECT_THROW(logging::init(2, 2, "", Level::Info), std::invalid_argument);
  EXPECT_THROW(logging::init(-1, 2, "", Level::Info), std::invalid_argument);
  EXPECT_THROW(logging::init(0, 0, "", Level::Info), std::invalid_argument);
}

TEST_F(Log, AFileThatCannotBeWrittenAtTheStartIsAnErrorNamingIt) {
  const fs::path dir = scratch("full");
  fs::create_directories(dir / "logs");
  fs::create_symlink("/dev/full", dir / "logs/rank-1.log");
  try {
    logging::init(1, 2, dir.string(), Level::Info);
    FAIL() << "a log file on a full device was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "cannot write a log line to '" +
                                         (dir / "logs/rank-1.log").string() +
                                         "': No space left on device");
  }
  EXPECT_EQ(logging::file_path(), "") << "a failed init left its file in place";
  fs::remove_all(dir / "logs");
  fs::create_directories(dir);
  { std::ofstream(dir / "logs") << "a file where the folder goes"; }
  EXPECT_THROW(logging::init(1, 2, dir.string(), Level::Info), std::runtime_error);
}

// The disk fills mid-run (here: a file size limit): the failing write throws once, naming the
// file and the reason; the file is dropped, so the error can still reach the console.
TEST_F(Log, AFailedWriteThrowsOnceNamingTheFileAndTheConsoleCarriesOn) {
  const fs::path dir = scratch("limit");
  logging::init(0, 2, dir.string(), Level::Info);
  const std::string path = logging::file_path();
  const auto size = static_cast<rlim_t>(fs::file_size(path));
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto* old_handler = std::signal(SIGXFSZ, SIG_IGN);  // a write past the limit fails EFBIG
  rlimit limit = saved;
  limit.rlim_cur = size + 100;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limit), 0);
  std::string thrown;
  const std::string err = stderr_of([&] {
    for (int i = 0; i < 10 && thrown.empty(); ++i) {
      try {
        logging::info("line {} of a log that fills its disk\n", i);
      } catch (const std::runtime_error& e) {
        thrown = e.what();
      }
    }
    EXPECT_NO_THROW(logging::error("after the failure\n"));
  });
  ::setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_EQ(thrown, "cannot write a log line to '" + path + "': File too large");
  EXPECT_NE(err.find("line 0 of a log"), std::string::npos) << err;
  EXPECT_TRUE(err.size() >= 18 && err.substr(err.size() - 18) == "after the failure\n") << err;
  EXPECT_EQ(slurp(path).find("after the failure"), std::string::npos);
}

}  // namespace
