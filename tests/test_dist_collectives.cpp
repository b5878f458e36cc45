// Every collective against hand-computed results, on every rank of a job started by mpirun
// (label dist; tests/CMakeLists.txt runs it with -np 2 and -np 3). Built twice: test_dist_mpi
// (CPU tensors, the MPI backend) and emu_test_dist_nccl (CUDA tensors on the emulated device,
// the NCCL backend over the fake NCCL; DIST_TEST_CUDA).
//
// Every rank runs every test in the same order and calls the same collectives: checks are
// EXPECT_*, never an early return between two collectives, so a failure on one rank cannot
// leave the others waiting. Ranks other than 0 print only their failures, prefixed by the rank.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <thread>

#include "dist/launch_env.h"
#include "dist/make_communicator.h"
#if DIST_TEST_CUDA
#include "dist/nccl_communicator.h"
#endif

using namespace attn;
using namespace attn::dist;

namespace {

Communicator* g_comm = nullptr;

#if DIST_TEST_CUDA
const Device kDevice = Device::cuda(0);
#else
const Device kDevice = Device::cpu();
#endif

Communicator& comm() { return *g_comm; }
int R() { return comm().rank(); }
int W() { return comm().world_size(); }

const std::vector<int64_t> kSizes = {1, 7, 1000003};
const std::vector<DType> kTypes = {DType::F32, DType::F64, DType::BF16, DType::I32, DType::I64};

// Integer-valued, in [-100, 100]: exact in every dtype, so sums are exact in f32, f64 and the
// integers whatever order a backend adds in; bf16 holds integers exactly only up to 256.
double value(int rank, int64_t i) { return static_cast<double>((i * 7 + rank * 13) % 201 - 100); }

Tensor filled(int64_t n, DType dt, const std::function<double(int64_t)>& f) {
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = f(i);
  return from_vector(v, {n}, {dt, kDevice});
}

// A value as the dtype holds it (bf16: rounded to nearest even from f32).
double as_dtype(double x, DType dt) {
  switch (dt) {
    case DType::F32:
      return static_cast<float>(x);
    case DType::BF16:
      return bf16_to_float(float_to_bf16(static_cast<float>(x)));
    default:
      return x;
  }
}

// Avg: the exact sum divided in the dtype the sum is taken in (f32 for bf16), then rounded.
double avg_as_dtype(double sum, int world, DType dt) {
  if (dt == DType::F64) return sum / world;
  return as_dtype(static_cast<float>(sum) / static_cast<float>(world), dt);
}

// Counts mismatches (one EXPECT per tensor, with the first bad index, not a million lines).
void expect_values(const Tensor& t, const std::function<double(int64_t)>& want,
                   const std::string& what) {
  std::vector<double> got = t.to_vector();
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < static_cast<int64_t>(got.size()); ++i)
    if (got[i] != want(i)) bad += 1, first = first < 0 ? i : first;
  EXPECT_EQ(bad, 0) << what << ": first mismatch at " << first << ": got "
                    << (first >= 0 ? got[first] : 0) << ", want " << (first >= 0 ? want(first) : 0);
}

std::string label(const char* op, DType dt, int64_t n) {
  return std::string(op) + " " + dtype_name(dt) + " n=" + std::to_string(n);
}

}  // namespace

TEST(Collectives, PlaceMatchesTheLauncher) {
  ProcessPlace env = detect_process_place();
  EXPECT_EQ(R(), env.rank);
  EXPECT_EQ(W(), env.world_size);
  EXPECT_GE(W(), 2) << "run under mpirun -np 2 or more";
}

TEST(Collectives, AllReduceSumEveryDtypeAndSize) {
  for (DType dt : kTypes)
    for (int64_t n : kSizes) {
      Tensor t = filled(n, dt, [](int64_t i) { return value(R(), i); });
      comm().all_reduce(t, ReduceOp::Sum);
      expect_values(
          t,
          [&](int64_t i) {
            double s = 0;
            for (int r = 0; r < W(); ++r) s += value(r, i);
            return as_dtype(s, dt);
          },
          label("all_reduce sum", dt, n));
    }
}

TEST(Collectives, AllReduceAvgFloats) {
  for (DType dt : {DType::F32, DType::F64, DType::BF16})
    for (int64_t n : kSizes) {
      Tensor t = filled(n, dt, [](int64_t i) { return value(R(), i); });
      comm().all_reduce(t, ReduceOp::Avg);
      expect_values(
          t,
          [&](int64_t i) {
            double s = 0;
            for (int r = 0; r < W(); ++r) s += value(r, i);
            return avg_as_dtype(s, W(), dt);
          },
          label("all_reduce avg", dt, n));
    }
}

TEST(Collectives, AvgOfIntegersIsRefusedOnEveryRank) {
  for (DType dt : {DType::I32, DType::I64}) {
    Tensor t = filled(7, dt, [](int64_t i) { return value(R(), i); });
    EXPECT_THROW(comm().all_reduce(t, ReduceOp::Avg), std::invalid_argument);
    Tensor out;
    Tensor in = filled(7 * W(), dt, [](int64_t) { return 1; });
    EXPECT_THROW(comm().reduce_scatter(in, out, ReduceOp::Avg), std::invalid_argument);
  }
}

// bf16 is summed in f32 and rounded once. Rank 0 holds 1, every other rank 2⁻⁸ (element 0) or
// 3·2⁻⁹ (element 1); bf16 has a step of 2⁻⁷ just above 1.
//   2 ranks: 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties to even, 1 (0x3f80);
//            1 + 3·2⁻⁹ is nearer 1 + 2⁻⁷ (0x3f81).
//   3 ranks: 1 + 2·2⁻⁸ = 1 + 2⁻⁷ exactly (0x3f81), where rounding after each addition could give
//            1 (1 + 2⁻⁸ rounds to 1, twice); 1 + 6·2⁻⁹ = 1 + 1.5·2⁻⁷ ties to even, 1 + 2·2⁻⁷
//            (0x3f82).
TEST(Collectives, Bf16IsRoundedOnceToNearestEven) {
  Tensor t = filled(2, DType::BF16, [](int64_t i) {
    if (R() == 0) return 1.0;
    return i == 0 ? std::ldexp(1.0, -8) : 3 * std::ldexp(1.0, -9);
  });
  comm().all_reduce(t);
  std::vector<double> got = t.to_vector();
  if (W() == 2) {
    EXPECT_EQ(got[0], 1.0);
    EXPECT_EQ(got[1], 1.0078125);
  } else if (W() == 3) {
    EXPECT_EQ(got[0], 1.0078125);
    EXPECT_EQ(got[1], 1.015625);
  }
  // Any size: the exact sum, rounded once.
  EXPECT_EQ(got[0], as_dtype(1 + (W() - 1) * std::ldexp(1.0, -8), DType::BF16));
  // The same through reduce_scatter (W elements, each rank keeps one).
  Tensor in =
      filled(W(), DType::BF16, [](int64_t) { return R() == 0 ? 1.0 : std::ldexp(1.0, -8); });
  Tensor out;
  comm().reduce_scatter(in, out);
  EXPECT_EQ(out.to_vector()[0], got[0]);
}

TEST(Collectives, BroadcastFromTheLastRank) {
  const int root = W() - 1;
  for (DType dt : kTypes)
    for (int64_t n : kSizes) {
      Tensor t = filled(n, dt, [](int64_t i) { return value(R(), i); });
      comm().broadcast(t, root);
      expect_values(
          t, [&](int64_t i) { return value(root, i); }, label("broadcast", dt, n));
    }
}

TEST(Collectives, AllGatherEveryDtypeAndSize) {
  for (DType dt : kTypes)
    for (int64_t n : kSizes) {
      Tensor in = filled(n, dt, [](int64_t i) { return value(R(), i); });
      Tensor out;  // allocated by the collective
      comm().all_gather(in, out);
      EXPECT_EQ(out.numel(), n * W());
      expect_values(
          out, [&](int64_t j) { return value(static_cast<int>(j / n), j % n); },
          label("all_gather", dt, n));
      // Into a given tensor of another shape with the same element count.
      Tensor given = Tensor::empty({W(), n}, dt, kDevice);
      comm().all_gather(in, given);
      EXPECT_EQ(given.to_vector(), out.to_vector()) << label("all_gather into", dt, n);
    }
}

TEST(Collectives, ReduceScatterEveryDtypeAndSize) {
  for (DType dt : kTypes)
    for (int64_t n : kSizes) {
      // Each rank keeps n elements of the W·n summed.
      Tensor in = filled(n * W(), dt, [](int64_t j) { return value(R(), j); });
      Tensor out;
      comm().reduce_scatter(in, out);
      expect_values(
          out,
          [&](int64_t i) {
            double s = 0;
            for (int r = 0; r < W(); ++r) s += value(r, R() * n + i);
            return as_dtype(s, dt);
          },
          label("reduce_scatter", dt, n));
    }
}

// reduce_scatter then all_gather is all_reduce (sum and avg).
TEST(Collectives, ReduceScatterThenAllGatherIsAllReduce) {
  for (DType dt : {DType::F32, DType::BF16, DType::I64})
    for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg}) {
      if (op == ReduceOp::Avg && is_integer(dt)) continue;
      const int64_t n =
          100003;  // odd; the large size is covered above (and costs seconds on the emulator)
      Tensor in = filled(n * W(), dt, [](int64_t j) { return value(R(), j * 3); });
      Tensor mine, back;
      comm().reduce_scatter(in, mine, op);
      comm().all_gather(mine, back);
      Tensor whole = in.clone();
      comm().all_reduce(whole, op);
      EXPECT_EQ(back.to_vector(), whole.to_vector()) << dtype_name(dt);
    }
}

TEST(Collectives, BarrierWaitsForTheSlowestRank) {
  using Clock = std::chrono::steady_clock;
  comm().barrier();  // line up
  const auto start = Clock::now();
  if (R() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(400));
  comm().barrier();
  const auto waited = Clock::now() - start;
  if (R() != 0) {
    EXPECT_GE(waited, std::chrono::milliseconds(350));
  }
}

TEST(Collectives, BadArgumentsThrowOnEveryRankBeforeAnyCommunication) {
  if (kDevice.is_cuda()) {
    Tensor on_host = from_vector({1, 2, 3}, {3});
    EXPECT_THROW(comm().all_reduce(on_host), std::invalid_argument);
  }
  Tensor t = filled(7, DType::F32, [](int64_t i) { return i; });
  EXPECT_THROW(comm().broadcast(t, W()), std::invalid_argument);
  EXPECT_THROW(comm().broadcast(t, -1), std::invalid_argument);
  Tensor odd = filled(W() * 3 + 1, DType::F32, [](int64_t i) { return i; }), out;
  EXPECT_THROW(comm().reduce_scatter(odd, out), std::invalid_argument);
  Tensor wrong = Tensor::empty({7 * W()}, DType::F64, kDevice);
  EXPECT_THROW(comm().all_gather(t, wrong), std::invalid_argument);
  // The communicator still works afterwards.
  comm().all_reduce(t);
  expect_values(
      t, [&](int64_t i) { return static_cast<double>(i * W()); }, "after errors");
}

#if DIST_TEST_CUDA
// Without wait_each a collective returns once queued; synchronize() waits for it (the timeout
// helper). A communicator of its own, made directly, bootstrapped over a fresh MPI one.
TEST(Collectives, QueuedCollectivesFinishBySynchronize) {
  ProcessPlace place = detect_process_place();
  NcclOptions o;
  o.device = kDevice.index;
  o.host = make_communicator(place, {});  // CPU: the MPI communicator
  o.wait_each = false;
  o.timeout = std::chrono::seconds(30);
  NcclCommunicator nccl(place, std::move(o));
  Tensor t = filled(1000003, DType::BF16, [](int64_t i) { return value(R(), i); });
  nccl.all_reduce(t);
  nccl.synchronize();
  expect_values(
      t,
      [&](int64_t i) {
        double s = 0;
        for (int r = 0; r < W(); ++r) s += value(r, i);
        return as_dtype(s, DType::BF16);
      },
      "all_reduce then synchronize");
}

// A peer that fails mid-collective (the fake NCCL's injected ncclRemoteError): the collective
// throws on every rank, naming the rank and NCCL's error, and the aborted communicator refuses
// further use. Last: it uses a communicator of its own and leaves it aborted.
TEST(Collectives, ZAsyncErrorAbortsAndNamesTheRank) {
  CommOptions o;
  o.device = kDevice;
  auto broken = make_communicator(detect_process_place(), o);
  Tensor t = filled(7, DType::F32, [](int64_t i) { return i; });
  ::setenv("ATTNLAB_FAKE_NCCL_ASYNC_ERROR", "1", 1);
  std::string msg;
  try {
    broken->all_reduce(t);
  } catch (const std::runtime_error& e) {
    msg = e.what();
  }
  ::unsetenv("ATTNLAB_FAKE_NCCL_ASYNC_ERROR");
  EXPECT_NE(msg.find("ncclAllReduce failed on rank " + std::to_string(R())), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("remote process exited"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ATTNLAB_FAKE_NCCL_ASYNC_ERROR"), std::string::npos) << msg;
  try {
    broken->all_reduce(t);
    ADD_FAILURE() << "an aborted communicator was used";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("used after ncclAllReduce failed"), std::string::npos)
        << e.what();
  }
  // The job's communicator is untouched.
  comm().all_reduce(t);
  expect_values(
      t, [&](int64_t i) { return static_cast<double>(i * W()); }, "the other communicator");
}
#endif

namespace {

// Ranks > 0: only failed assertions, prefixed by the rank.
class RankFailures : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailures(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: %s\n", rank_, r.file_name() ? r.file_name() : "?",
                   r.line_number(), r.summary());
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  CommOptions options;
  options.device = kDevice;
  options.timeout = std::chrono::seconds(60);
  std::unique_ptr<Communicator> c = make_communicator(detect_process_place(), options);
  g_comm = c.get();
  if (c->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailures(c->rank()));
  }
  int rc = RUN_ALL_TESTS();
  // Every rank's verdict decides the job's: a failure on rank 2 fails rank 0's exit code too.
  Tensor verdict = from_vector({static_cast<double>(rc != 0)}, {1}, {DType::I32, kDevice});
  c->all_reduce(verdict);
  rc = verdict.to_vector()[0] != 0 ? 1 : 0;
  if (c->rank() == 0 && rc != 0) std::fprintf(stderr, "a rank failed (see [rank N] lines)\n");
  g_comm = nullptr;
  c.reset();
  return rc;
}
