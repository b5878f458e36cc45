// Whole jobs of dist_probe, watched from outside (label dist): an abort ends a 2-rank job within
// seconds with the rank in its message, on the MPI backend and on the NCCL one (emulated device,
// fake NCCL); NCCL through the file rendezvous; a process not started by mpirun is refused.
// Env (set by ctest): DIST_PROBE, DIST_PROBE_EMU (the emulated build's probe; may be unset),
// DIST_MPIRUN (mpirun and its flags).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "scratch_dir.h"
#include "torch_ref.h"

namespace fs = std::filesystem;
using attn::testing::env_or;
using attn::testing::shell_quote;

namespace {

struct Job {
  int code;
  double seconds;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

// `timeout` bounds a job that hangs (the failure this suite looks for) at 60 s.
Job run(const std::string& command) {
  const fs::path dir = attn::testing::scratch_dir("dist-launch-");
  const fs::path out = dir / "out.txt", err = dir / "err.txt";
  const auto start = std::chrono::steady_clock::now();
  int status = std::system(("timeout -k 5 60 " + command + " > " + shell_quote(out.string()) +
                            " 2> " + shell_quote(err.string()))
                               .c_str());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return {code, s, slurp(out), slurp(err)};
}

std::string mpirun(int np) {
  return env_or("DIST_MPIRUN", "mpirun") + " -np " + std::to_string(np) + " ";
}
std::string probe() { return shell_quote(env_or("DIST_PROBE", "dist_probe")); }
std::string probe_emu() { return env_or("DIST_PROBE_EMU", ""); }

void expect_abort(const Job& j) {
  EXPECT_NE(j.code, 0) << j.err;
  EXPECT_NE(j.code, 124) << "the job hung until the timeout: " << j.err;
  EXPECT_LT(j.seconds, 10.0) << j.err;
  EXPECT_NE(j.err.find("rank 1: gave up on purpose"), std::string::npos) << j.err;
  EXPECT_EQ(j.err.find("the barrier returned"), std::string::npos) << j.err;
}

}  // namespace

TEST(DistLaunch, MpiAbortEndsTheJobNamingTheRank) {
  expect_abort(run(mpirun(2) + probe() + " abort cpu"));
}

TEST(DistLaunch, NcclAbortEndsTheJobNamingTheRank) {
  if (probe_emu().empty()) GTEST_SKIP() << "no emulated build (ATTNLAB_CUDA_EMULATION=OFF)";
  expect_abort(run(mpirun(2) + shell_quote(probe_emu()) + " abort cuda"));
}

TEST(DistLaunch, NcclThroughTheFileRendezvous) {
  if (probe_emu().empty()) GTEST_SKIP() << "no emulated build (ATTNLAB_CUDA_EMULATION=OFF)";
  const fs::path id = attn::testing::scratch_dir("dist-launch-") / "nccl.id";
  for (int np : {2, 3}) {
    Job j = run(mpirun(np) + shell_quote(probe_emu()) + " file cuda " + shell_quote(id.string()));
    EXPECT_EQ(j.code, 0) << j.err;
    for (int r = 0; r < np; ++r)
      EXPECT_NE(j.out.find("rank " + std::to_string(r) + " of " + std::to_string(np) + ": ok"),
                std::string::npos)
          << j.out << j.err;
    EXPECT_FALSE(fs::exists(id)) << "rank 0 removes the file once every rank has joined";
  }
  // A file left behind is refused by rank 0 (whose error ends the job), not reused.
  std::ofstream(id) << "stale";
  Job j = run(mpirun(2) + shell_quote(probe_emu()) + " file cuda " + shell_quote(id.string()));
  EXPECT_NE(j.code, 0);
  EXPECT_NE(j.err.find("already exists"), std::string::npos) << j.err;
  fs::remove(id);
}

TEST(DistLaunch, TwoRanksOnOneGpuAreRefused) {
  if (probe_emu().empty()) GTEST_SKIP() << "no emulated build (ATTNLAB_CUDA_EMULATION=OFF)";
  // Each process's emulated device is its own, unless ATTNLAB_EMU_SHARED_GPU=1 makes them one.
  Job ok = run(mpirun(2) + shell_quote(probe_emu()) + " place cuda");
  EXPECT_EQ(ok.code, 0) << ok.err;
  EXPECT_NE(ok.out.find("rank 1 of 2 (OMPI_COMM_WORLD_*)"), std::string::npos) << ok.out;
  Job j =
      run(mpirun(2) + "-x ATTNLAB_EMU_SHARED_GPU=1 " + shell_quote(probe_emu()) + " place cuda");
  EXPECT_EQ(j.code, 2) << j.err;
  EXPECT_NE(j.err.find("ranks 0 and 1 would drive the same GPU"), std::string::npos) << j.err;
  EXPECT_NE(j.err.find("one GPU per rank"), std::string::npos) << j.err;
}

TEST(DistLaunch, TorchrunStyleEnvironmentIsNotAnMpiJob) {
  Job j = run("env RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 LOCAL_WORLD_SIZE=2 " + probe() + " place cpu");
  EXPECT_EQ(j.code, 2) << j.err;
  EXPECT_NE(j.err.find("mpirun"), std::string::npos) << j.err;
  EXPECT_NE(j.err.find("RANK/WORLD_SIZE"), std::string::npos) << j.err;
}

TEST(DistLaunch, OneRankUnderMpirunIsLocal) {
  Job j = run(mpirun(1) + probe() + " place cpu");
  EXPECT_EQ(j.code, 0) << j.err;
  EXPECT_NE(j.out.find("rank 0 of 1 (single process)"), std::string::npos) << j.out;
}
