// Data parallelism below the trainer, on a job of threads (thread_communicator.h): the gradient
// reducer (buckets started in index order whatever order a rank's backward completes them,
// accumulation reduced once, unused parameters), ZeRO-1 against AdamW on the mean gradient,
// its state gathered and scattered, and the collective deadline (dist.timeout_s).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <thread>

#include "ops/ops.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "thread_communicator.h"
#include "train/grad_reducer.h"
#include "train/job_communicator.h"
#include "train/zero_optimizer.h"

using namespace attn;
using train::GradReducer;

namespace {

const std::vector<int64_t> kSizes = {7, 1, 300, 33, 2, 129};

// The same initial parameters on every rank (seed 1), in `dtype`.
ParamList make_params(DType dtype) {
  Generator gen(1);
  ParamList ps;
  for (size_t i = 0; i < kSizes.size(); ++i) {
    Tensor t = randn({kSizes[i]}, gen, {dtype});
    t.set_requires_grad(true);
    ps.push_back({"p" + std::to_string(i), t, i % 2 == 0});
  }
  return ps;
}

// The coefficients c_{r,i} of rank r's loss Σ_i Σ c_{r,i}·p_i: its gradient is c_{r,i}.
Tensor coefficients(int rank, size_t param, int round, DType dtype) {
  Generator gen(1000 + 97 * rank + 13 * param + 7 * round);
  return randn({kSizes[param]}, gen, {dtype});
}

// Rank r's loss, using the params in a rank-dependent order (so its backward completes them in
// a different order) and skipping the params in `unused`.
Tensor loss_of(const ParamList& ps, int rank, int round, DType dtype,
               const std::vector<size_t>& unused = {}) {
  Tensor total;
  for (size_t k = 0; k < ps.size(); ++k) {
    const size_t i = (k + static_cast<size_t>(rank)) % ps.size();
    if (std::find(unused.begin(), unused.end(), i) != unused.end()) continue;
    Tensor term = sum(mul(ps[i].value, coefficients(rank, i, round, dtype)));
    total = total.defined() ? add(total, term) : term;
  }
  return total;
}

// Mean over the ranks of c_{r,i} (summed over rounds), computed here in f64.
std::vector<double> mean_coefficient(int world, size_t param, std::vector<int> rounds,
                                     const std::vector<int>& using_ranks = {}) {
  std::vector<double> m(kSizes[param], 0.0);
  for (int r = 0; r < world; ++r) {
    if (!using_ranks.empty() &&
        std::find(using_ranks.begin(), using_ranks.end(), r) == using_ranks.end())
      continue;
    for (int round : rounds) {
      const std::vector<double> c = coefficients(r, param, round, DType::F64).to_vector();
      for (size_t j = 0; j < m.size(); ++j) m[j] += c[j] / world;
    }
  }
  return m;
}

void expect_near(const std::vector<double>& got, const std::vector<double>& want, double tol,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t j = 0; j < got.size(); ++j)
    ASSERT_NEAR(got[j], want[j], tol * (1 + std::abs(want[j]))) << what << "[" << j << "]";
}

}  // namespace

TEST(GradReducer, AveragesEveryGradientBucketByBucket) {
  for (int world : {2, 3}) {
    test::ThreadJob job(world);
    job.run([&](test::ThreadJob::Comm& comm) {
      ParamList ps = make_params(DType::F64);
      GradReducer red(comm, ps, 8 * 40, GradReducer::Mode::AllReduce);  // 40 f64 elements a bucket
      // Reverse order, a bucket closed once it holds at least 40 elements: 129 | 2 33 300 | 1 7.
      ASSERT_EQ(red.buckets().size(), 3u);
      EXPECT_EQ(red.buckets()[0].params, (std::vector<size_t>{5}));
      EXPECT_EQ(red.buckets()[1].params, (std::vector<size_t>{4, 3, 2}));
      EXPECT_EQ(red.buckets()[1].offsets, (std::vector<int64_t>{0, 2, 35}));
      EXPECT_EQ(red.buckets()[2].params, (std::vector<size_t>{1, 0}));
      red.arm();
      loss_of(ps, comm.rank(), 0, DType::F64).backward();
      const train::CommStats st = red.finish();
      EXPECT_EQ(comm.collectives, static_cast<int>(red.buckets().size()));
      EXPECT_GE(st.comm_s, st.hidden_s);
      for (size_t i = 0; i < ps.size(); ++i)
        expect_near(ps[i].value.grad().to_vector(), mean_coefficient(world, i, {0}), 1e-15,
                    ps[i].name);
    });
  }
}

TEST(GradReducer, AccumulatedMicroBatchesAreReducedOnceOnTheArmedBackward) {
  test::ThreadJob job(3);
  job.run([&](test::ThreadJob::Comm& comm) {
    ParamList ps = make_params(DType::F64);
    GradReducer red(comm, ps, 1000, GradReducer::Mode::AllReduce);
    loss_of(ps, comm.rank(), 0, DType::F64).backward();  // not armed: stays local
    EXPECT_EQ(comm.collectives, 0);
    red.arm();
    loss_of(ps, comm.rank(), 1, DType::F64).backward();
    red.finish();
    EXPECT_EQ(comm.collectives, static_cast<int>(red.buckets().size()));
    for (size_t i = 0; i < ps.size(); ++i)
      expect_near(ps[i].value.grad().to_vector(), mean_coefficient(3, i, {0, 1}), 1e-15,
                  ps[i].name);
  });
}

TEST(GradReducer, AParameterARankDidNotUseReducesAsZero) {
  test::ThreadJob job(3);
  job.run([&](test::ThreadJob::Comm& comm) {
    ParamList ps = make_params(DType::F64);
    GradReducer red(comm, ps, 8 * 40, GradReducer::Mode::AllReduce);
    // p2 is used by rank 0 only, p4 by nobody.
    std::vector<size_t> unused = {4};
    if (comm.rank() != 0) unused.push_back(2);
    red.arm();
    loss_of(ps, comm.rank(), 0, DType::F64, unused).backward();
    red.finish();
    expect_near(ps[2].value.grad().to_vector(), mean_coefficient(3, 2, {0}, {0}), 1e-15, "p2");
    expect_near(ps[4].value.grad().to_vector(), std::vector<double>(kSizes[4], 0.0), 0, "p4");
    expect_near(ps[5].value.grad().to_vector(), mean_coefficient(3, 5, {0}), 1e-15, "p5");
  });
}

TEST(GradReducer, RefusesMixedDtypes) {
  test::ThreadJob job(1);
  job.run([&](test::ThreadJob::Comm& comm) {
    ParamList ps = make_params(DType::F32);
    ps[1].value = zeros({3}, {DType::F64});
    EXPECT_THROW(GradReducer(comm, ps, 100, GradReducer::Mode::AllReduce), std::invalid_argument);
  });
}

namespace {

// Rounds of (loss, clip) for the ZeRO comparison.
struct ZeroCase {
  int world;
  double clip;
};

// AdamW on one set of params with the mean gradient: what every rank of a job without ZeRO does.
std::vector<std::vector<double>> reference_adamw(int world, double clip, int steps,
                                                 AdamW* keep = nullptr) {
  ParamList ps = make_params(DType::F32);
  AdamW opt(ps, {1e-2, 0.9, 0.95, 1e-8, 0.1});
  for (int s = 0; s < steps; ++s) {
    for (size_t i = 0; i < ps.size(); ++i)
      ps[i].value.set_grad(from_vector(mean_coefficient(world, i, {s}), {kSizes[i]}));
    clip_grad_norm(ps, clip);
    opt.step(1e-2);
    opt.zero_grad();
  }
  std::vector<std::vector<double>> out;
  for (const Param& p : ps) out.push_back(p.value.to_vector());
  if (keep) *keep = opt;
  return out;
}

}  // namespace

TEST(ZeroOptimizer, MatchesAdamWOnTheMeanGradient) {
  for (ZeroCase zc : {ZeroCase{2, 0.0}, ZeroCase{3, 0.0}, ZeroCase{3, 0.5}}) {
    const auto want = reference_adamw(zc.world, zc.clip, 4);
    test::ThreadJob job(zc.world);
    job.run([&](test::ThreadJob::Comm& comm) {
      ParamList ps = make_params(DType::F32);
      GradReducer red(comm, ps, 4 * 50, GradReducer::Mode::ReduceScatter);
      train::ZeroOptimizer zero(comm, red, {1e-2, 0.9, 0.95, 1e-8, 0.1});
      int64_t total = 0;
      for (const Param& p : ps) total += p.value.numel();
      // m and v for about 1/W of the elements (each bucket padded to a multiple of W).
      EXPECT_LE(zero.state_bytes(),
                2 * 4 * (total / zc.world + static_cast<int64_t>(red.buckets().size())));
      EXPECT_GE(zero.state_bytes(),
                2 * 4 * (total / zc.world - static_cast<int64_t>(red.buckets().size())));
      for (int s = 0; s < 4; ++s) {
        red.arm();
        loss_of(ps, comm.rank(), s, DType::F32).backward();
        red.finish();
        zero.load_grads_and_clip(zc.clip);
        zero.step(1e-2);
        zero.zero_grad();
      }
      // f32 maths on both sides; only the order of the norm's sum and of the mean (f64 here)
      // can differ, and the clip coefficient carries that: 1e-6 relative.
      for (size_t i = 0; i < ps.size(); ++i)
        expect_near(ps[i].value.to_vector(), want[i], 1e-6,
                    "world " + std::to_string(zc.world) + " " + ps[i].name);
    });
  }
}

TEST(ZeroOptimizer, ItsStateGathersToAdamWsAndScattersBack) {
  AdamW ref(make_params(DType::F32), {});
  const auto after2 = reference_adamw(3, 0.0, 2, &ref);
  const auto after4 = reference_adamw(3, 0.0, 4);
  test::ThreadJob job(3);
  job.run([&](test::ThreadJob::Comm& comm) {
    ParamList ps = make_params(DType::F32);
    GradReducer red(comm, ps, 4 * 50, GradReducer::Mode::ReduceScatter);
    train::ZeroOptimizer zero(comm, red, {1e-2, 0.9, 0.95, 1e-8, 0.1});
    auto run_step = [&](train::ZeroOptimizer& z, int s) {
      red.arm();
      loss_of(ps, comm.rank(), s, DType::F32).backward();
      red.finish();
      z.load_grads_and_clip(0);
      z.step(1e-2);
      z.zero_grad();
    };
    run_step(zero, 0);
    run_step(zero, 1);
    AdamW full(ps, {1e-2, 0.9, 0.95, 1e-8, 0.1});
    zero.gather_state(full);
    EXPECT_EQ(full.steps(), 2);
    for (size_t i = 0; i < ps.size(); ++i) {
      EXPECT_EQ(full.state()[i].step, 2) << ps[i].name;
      expect_near(full.state()[i].m.to_vector(), ref.state()[i].m.to_vector(), 1e-6,
                  "m of " + ps[i].name);
      expect_near(full.state()[i].v.to_vector(), ref.state()[i].v.to_vector(), 1e-6,
                  "v of " + ps[i].name);
      expect_near(ps[i].value.to_vector(), after2[i], 1e-6, ps[i].name);
    }
    // A fresh shard (a resume) from the whole state continues the same run.
    train::ZeroOptimizer resumed(comm, red, {1e-2, 0.9, 0.95, 1e-8, 0.1});
    resumed.scatter_state(full);
    EXPECT_EQ(resumed.steps(), 2);
    run_step(resumed, 2);
    run_step(resumed, 3);
    for (size_t i = 0; i < ps.size(); ++i)
      expect_near(ps[i].value.to_vector(), after4[i], 1e-6, ps[i].name);
  });
}

namespace {

// A backend whose barrier never returns (a rank that died) and whose abort exits with 7.
class StuckCommunicator : public dist::Communicator {
 public:
  const dist::ProcessPlace& place() const override { return place_; }
  void all_reduce(Tensor&, dist::ReduceOp) override {}
  void broadcast(Tensor&, int) override {}
  void all_gather(const Tensor&, Tensor&) override {}
  void reduce_scatter(const Tensor&, Tensor&, dist::ReduceOp) override {}
  void barrier() override {
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  [[noreturn]] void abort(int, const std::string& why) override {  // as the backends do
    std::fprintf(stderr, "rank %d: %s\n", place_.rank, why.c_str());
    std::_Exit(7);
  }

 private:
  dist::ProcessPlace place_{1, 3, 1, 3, "test"};
};

}  // namespace

TEST(JobCommunicator, ACollectiveInTimeIsLeftAlone) {
  train::JobCommunicator c(std::make_unique<StuckCommunicator>(), 0.2);
  Tensor t = zeros({3});
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(500)) c.all_reduce(t);
  SUCCEED();  // (an abort would have ended the process with 7)
}

TEST(JobCommunicatorDeathTest, AStuckCollectiveAbortsTheJobNamingTheRank) {
  EXPECT_EXIT(
      {
        train::JobCommunicator c(std::make_unique<StuckCommunicator>(), 0.3);
        c.barrier();
      },
      ::testing::ExitedWithCode(7),
      "rank 1: collective barrier did not finish within dist.timeout_s = 0.3 s: another rank of "
      "the 3 has died "
      "or stalled");
}
