// The dist layer without MPI (label unit): the launcher environment parser, the GPU-sharing
// check, the file rendezvous (two threads), the single-process communicator and the factory.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "dist/file_rendezvous.h"
#include "dist/launch_env.h"
#include "dist/local_communicator.h"
#include "dist/make_communicator.h"
#include "scratch_dir.h"

namespace fs = std::filesystem;
using namespace attn;
using namespace attn::dist;
using namespace std::chrono_literals;

namespace {

// The message of the error f throws (fails the test if it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error thrown";
  return "";
}

const Environment kOmpi = {{"OMPI_COMM_WORLD_RANK", "5"},
                           {"OMPI_COMM_WORLD_SIZE", "8"},
                           {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                           {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}};
const Environment kSlurm = {{"SLURM_PROCID", "6"},
                            {"SLURM_NTASKS", "7"},
                            {"SLURM_LOCALID", "2"},
                            {"SLURM_TASKS_PER_NODE", "4,3"},
                            {"SLURM_NODEID", "1"}};
const Environment kTorch = {
    {"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"}};

Environment merged(std::initializer_list<const Environment*> parts) {
  Environment out;
  for (const Environment* p : parts) out.insert(p->begin(), p->end());
  return out;
}

void expect_place(const ProcessPlace& p, int rank, int size, int local_rank, int local_size,
                  const std::string& source) {
  EXPECT_EQ(p.rank, rank);
  EXPECT_EQ(p.world_size, size);
  EXPECT_EQ(p.local_rank, local_rank);
  EXPECT_EQ(p.local_size, local_size);
  EXPECT_EQ(p.source, source);
}

}  // namespace

TEST(LaunchEnv, EachLauncherAlone) {
  expect_place(detect_process_place(kOmpi), 5, 8, 1, 4, "OMPI_COMM_WORLD_*");
  expect_place(detect_process_place(kSlurm), 6, 7, 2, 3, "SLURM_*");
  expect_place(detect_process_place(kTorch), 3, 4, 1, 2, "RANK/WORLD_SIZE");
  expect_place(detect_process_place(Environment{{"PATH", "/bin"}}), 0, 1, 0, 1, "single process");
}

TEST(LaunchEnv, PrecedenceOmpiThenSlurmThenTorchrun) {
  // mpirun inside a Slurm allocation that also has torchrun-style variables around.
  expect_place(detect_process_place(merged({&kOmpi, &kSlurm, &kTorch})), 5, 8, 1, 4,
               "OMPI_COMM_WORLD_*");
  expect_place(detect_process_place(merged({&kSlurm, &kTorch})), 6, 7, 2, 3, "SLURM_*");
}

TEST(LaunchEnv, SlurmTasksPerNode) {
  Environment e = kSlurm;
  e["SLURM_TASKS_PER_NODE"] = "2(x3),1";  // nodes 0..2 have 2 tasks, node 3 has 1
  e["SLURM_NTASKS"] = "7";
  e["SLURM_PROCID"] = "6";
  e["SLURM_LOCALID"] = "0";
  e["SLURM_NODEID"] = "3";
  EXPECT_EQ(detect_process_place(e).local_size, 1);
  e["SLURM_NODEID"] = "2";
  EXPECT_EQ(detect_process_place(e).local_size, 2);
  e["SLURM_NTASKS_PER_NODE"] = "5";  // takes precedence over SLURM_TASKS_PER_NODE
  EXPECT_EQ(detect_process_place(e).local_size, 5);
  // Without SLURM_NODEID only a uniform count can be read.
  Environment u = {{"SLURM_PROCID", "3"},
                   {"SLURM_NTASKS", "4"},
                   {"SLURM_LOCALID", "1"},
                   {"SLURM_TASKS_PER_NODE", "2(x2)"}};
  EXPECT_EQ(detect_process_place(u).local_size, 2);
  u["SLURM_TASKS_PER_NODE"] = "3,1";
  EXPECT_NE(error_of([&] { detect_process_place(u); }).find("SLURM_NODEID"), std::string::npos);
  u["SLURM_TASKS_PER_NODE"] = "2(x2";
  EXPECT_NE(error_of([&] { detect_process_place(u); }).find("SLURM_TASKS_PER_NODE='2(x2'"),
            std::string::npos);
  u.erase("SLURM_TASKS_PER_NODE");
  EXPECT_NE(error_of([&] { detect_process_place(u); }).find("SLURM_NTASKS_PER_NODE"),
            std::string::npos);
}

TEST(LaunchEnv, BadValuesNameTheVariable) {
  struct Case {
    Environment env;
    std::string names;
  };
  std::vector<Case> cases;
  auto with = [](Environment e, const std::string& k, const std::string& v) {
    e[k] = v;
    return e;
  };
  cases.push_back({with(kOmpi, "OMPI_COMM_WORLD_RANK", "8"), "OMPI_COMM_WORLD_RANK='8'"});
  cases.push_back({with(kOmpi, "OMPI_COMM_WORLD_SIZE", "eight"), "OMPI_COMM_WORLD_SIZE='eight'"});
  cases.push_back(
      {with(kOmpi, "OMPI_COMM_WORLD_LOCAL_RANK", "4"), "OMPI_COMM_WORLD_LOCAL_RANK='4'"});
  cases.push_back(
      {with(kOmpi, "OMPI_COMM_WORLD_LOCAL_SIZE", "9"), "OMPI_COMM_WORLD_LOCAL_SIZE='9'"});
  cases.push_back({with(kSlurm, "SLURM_PROCID", "-1"), "SLURM_PROCID='-1'"});
  cases.push_back({with(kSlurm, "SLURM_NTASKS", "7x"), "SLURM_NTASKS='7x'"});
  cases.push_back({with(kTorch, "WORLD_SIZE", "0"), "WORLD_SIZE='0'"});
  cases.push_back({with(kTorch, "LOCAL_RANK", ""), "LOCAL_RANK=''"});
  cases.push_back({with(kTorch, "RANK", "99999999999"), "RANK='99999999999'"});
  Environment missing = kTorch;
  missing.erase("LOCAL_WORLD_SIZE");
  cases.push_back({missing, "LOCAL_WORLD_SIZE is not"});
  missing = kOmpi;
  missing.erase("OMPI_COMM_WORLD_SIZE");
  cases.push_back({missing, "OMPI_COMM_WORLD_SIZE is not"});
  for (const Case& c : cases) {
    std::string msg = error_of([&] { detect_process_place(c.env); });
    EXPECT_NE(msg.find(c.names), std::string::npos) << msg;
  }
}

TEST(LaunchEnv, ReadsThisProcessEnvironment) {
  ::setenv("RANK", "1", 1);
  ::setenv("WORLD_SIZE", "3", 1);
  ::setenv("LOCAL_RANK", "0", 1);
  ::setenv("LOCAL_WORLD_SIZE", "1", 1);
  ProcessPlace p = detect_process_place();
  for (const char* k : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"}) ::unsetenv(k);
  if (std::getenv("OMPI_COMM_WORLD_RANK") || std::getenv("SLURM_PROCID"))
    GTEST_SKIP() << "run under a launcher: its variables take precedence";
  expect_place(p, 1, 3, 0, 1, "RANK/WORLD_SIZE");
}

TEST(GpuPlacement, FindsTheFirstSharedGpu) {
  EXPECT_FALSE(ranks_sharing_a_gpu({}).has_value());
  EXPECT_FALSE(ranks_sharing_a_gpu({7, 8, 9, 10}).has_value());
  auto p = ranks_sharing_a_gpu({7, 8, 9, 8, 7});
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->first, 1);
  EXPECT_EQ(p->second, 3);
}

TEST(FileRendezvous, TwoThreads) {
  const fs::path path = attn::testing::scratch_dir("dist-unit-") / "two-threads.id";
  std::string payload(128, '\0');
  for (int i = 0; i < 128; ++i) payload[i] = static_cast<char>(i * 37);  // every byte value kind
  std::string got;
  std::thread other([&] { got = exchange_through_file(path, 1, "", 10s); });
  std::this_thread::sleep_for(100ms);  // the reader polls before the file exists
  EXPECT_EQ(exchange_through_file(path, 0, payload, 10s), payload);
  other.join();
  EXPECT_EQ(got, payload);
  // A second job on the same path is refused, not given the stale id.
  std::string msg = error_of([&] { publish_rendezvous(path, "other"); });
  EXPECT_NE(msg.find("already exists"), std::string::npos) << msg;
  remove_rendezvous(path);
  EXPECT_FALSE(fs::exists(path));
  remove_rendezvous(path);  // gone already: fine
  // No temporary file is left next to it.
  for (const auto& e : fs::directory_iterator(path.parent_path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(FileRendezvous, TimeoutAndGarbageAreNamed) {
  const fs::path dir = attn::testing::scratch_dir("dist-unit-");
  const auto start = std::chrono::steady_clock::now();
  std::string msg = error_of([&] { await_rendezvous(dir / "never.id", 200ms); });
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_NE(msg.find("never.id"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did not appear"), std::string::npos) << msg;
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 5s);
  for (const std::string& bad :
       {std::string("hello\n"), std::string("attnlab-rendezvous 1 2\nzz\n"),
        std::string("attnlab-rendezvous 1 3\nab\n")}) {
    std::ofstream(dir / "garbage.id") << bad;
    msg = error_of([&] { await_rendezvous(dir / "garbage.id", 1s); });
    EXPECT_NE(msg.find("garbage.id"), std::string::npos) << msg;
    EXPECT_NE(msg.find("expected"), std::string::npos) << msg;
  }
  EXPECT_NE(
      error_of([&] { publish_rendezvous(dir / "no-such-dir" / "x.id", "x"); }).find("no-such-dir"),
      std::string::npos);
}

TEST(LocalCommunicator, CollectivesAreTheIdentity) {
  LocalCommunicator c;
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.world_size(), 1);
  Tensor t = from_vector({1.5, -2.0, 3.25}, {3});
  c.all_reduce(t, ReduceOp::Avg);
  c.broadcast(t, 0);
  EXPECT_EQ(t.to_vector(), (std::vector<double>{1.5, -2.0, 3.25}));
  Tensor g;
  c.all_gather(t, g);
  EXPECT_FALSE(g.same(t));
  EXPECT_EQ(g.to_vector(), t.to_vector());
  Tensor s = zeros({3});
  c.reduce_scatter(t, s);
  EXPECT_EQ(s.to_vector(), t.to_vector());
  c.barrier();
  // The same argument errors as the real backends.
  EXPECT_THROW(c.broadcast(t, 1), std::invalid_argument);
  Tensor i = from_vector({1, 2}, {2}, {DType::I64});
  EXPECT_THROW(c.all_reduce(i, ReduceOp::Avg), std::invalid_argument);
  Tensor wrong = zeros({2});
  EXPECT_THROW(c.all_gather(t, wrong), std::invalid_argument);
}

TEST(LocalCommunicator, AbortExitsWithTheCodeAndMessage) {
  EXPECT_EXIT(LocalCommunicator().abort(7, "gave up on purpose"), ::testing::ExitedWithCode(7),
              "rank 0: gave up on purpose");
}

TEST(MakeCommunicator, OneProcessIsLocalAndTouchesNoMpi) {
  ProcessPlace single;
  auto c = make_communicator(single, {});
  EXPECT_NE(dynamic_cast<LocalCommunicator*>(c.get()), nullptr);
  CommOptions cuda;
  cuda.device = Device::cuda(0);
  cuda.init = InitMethod::File;  // no file needed either: nothing is exchanged
  EXPECT_NE(dynamic_cast<LocalCommunicator*>(make_communicator(single, cuda).get()), nullptr);
}

TEST(MakeCommunicator, ClearErrors) {
  EXPECT_EQ(parse_init_method("mpi"), InitMethod::Mpi);
  EXPECT_EQ(parse_init_method("file"), InitMethod::File);
  EXPECT_NE(error_of([] { parse_init_method("tcp"); }).find("dist.init"), std::string::npos);
  ProcessPlace two{0, 2, 0, 2, "RANK/WORLD_SIZE"};
  CommOptions file;
  file.init = InitMethod::File;
  EXPECT_NE(error_of([&] { make_communicator(two, file); }).find("dist.init"), std::string::npos);
  // A torchrun-style environment is not an MPI job: refused before MPI is touched.
  std::string msg = error_of([&] { make_communicator(two, {}); });
  EXPECT_NE(msg.find(built_with_mpi() ? "mpirun" : "without"), std::string::npos) << msg;
  CommOptions cuda;
  cuda.device = Device::cuda(0);
  cuda.init = InitMethod::File;
  msg = error_of([&] { make_communicator(two, cuda); });
  EXPECT_NE(msg.find(built_with_nccl() ? "dist.init_file" : "NCCL"), std::string::npos) << msg;
}
