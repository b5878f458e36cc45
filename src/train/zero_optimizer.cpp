#include "train/zero_optimizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>

#include "optim/clip.h"

namespace attn::train {

ZeroOptimizer::ZeroOptimizer(dist::Communicator& comm, const GradReducer& reducer, AdamWConfig cfg)
    : comm_(comm), reducer_(reducer) {
  if (reducer.mode() != GradReducer::Mode::ReduceScatter)
    throw std::invalid_argument("ZeroOptimizer: the reducer must reduce-scatter");
  const int64_t world = comm.world_size(), rank = comm.rank();
  const ParamList& params = reducer.params();
  ParamList shard;
  for (size_t b = 0; b < reducer.buckets().size(); ++b) {
    const GradReducer::Bucket& bucket = reducer.buckets()[b];
    const int64_t size = bucket.numel / world, begin = rank * size, end = begin + size;
    for (size_t j = 0; j < bucket.params.size(); ++j) {
      const Param& p = params[bucket.params[j]];
      const int64_t off = bucket.offsets[j], lo = std::max(off, begin),
                    hi = std::min(off + p.value.numel(), end);
      if (lo >= hi) continue;
      pieces_.push_back({b, bucket.params[j], lo - off, lo - begin, hi - lo});
      Tensor v = Tensor::empty({hi - lo}, p.value.dtype(), p.value.device());
      v.set_requires_grad(true);
      shard.push_back({fmt::format("{}[{}:{}]", p.name, lo - off, hi - off), v, p.weight_decay});
    }
  }
  shard_opt_ = std::make_unique<AdamW>(std::move(shard), cfg);
  load_params();
}

void ZeroOptimizer::load_params() {
  const ParamList& params = reducer_.params();
  for (size_t k = 0; k < pieces_.size(); ++k) {
    Tensor v = shard_opt_->params()[k].value;
    copy_elements(v, 0, params[pieces_[k].param].value, pieces_[k].param_begin, pieces_[k].len);
  }
}

double ZeroOptimizer::load_grads_and_clip(double max_norm) {
  const ParamList& shard = shard_opt_->params();
  for (size_t k = 0; k < pieces_.size(); ++k) {
    const Piece& pc = pieces_[k];
    Tensor v = shard[k].value;
    Tensor g = Tensor::empty({pc.len}, v.dtype(), v.device());
    copy_elements(g, 0, reducer_.buckets()[pc.bucket].shard, pc.shard_begin, pc.len);
    v.set_grad(g);
  }
  Tensor sum = from_vector({grad_sum_squares(shard)}, {1}, {DType::F64});
  comm_.all_reduce(sum, dist::ReduceOp::Sum);
  const double norm = std::sqrt(sum.item());
  if (max_norm > 0 && std::isfinite(norm) && max_norm / (norm + 1e-6) < 1)
    scale_grads(shard, max_norm / (norm + 1e-6));
  return norm;
}

template <class Of, class Into>
void ZeroOptimizer::all_gather_pieces(Of of, Into into) const {
  const int64_t world = comm_.world_size();
  const ParamList& params = reducer_.params();
  for (size_t b = 0; b < reducer_.buckets().size(); ++b) {
    const GradReducer::Bucket& bucket = reducer_.buckets()[b];
    const Tensor& like = bucket.flat;
    Tensor mine = zeros({bucket.numel / world}, {like.dtype(), like.device()});
    for (size_t k = 0; k < pieces_.size(); ++k)
      if (pieces_[k].bucket == b)
        copy_elements(mine, pieces_[k].shard_begin, of(k), 0, pieces_[k].len);
    Tensor all = Tensor::empty({bucket.numel}, like.dtype(), like.device());
    comm_.all_gather(mine, all);
    for (size_t j = 0; j < bucket.params.size(); ++j) {
      Tensor dst = into(bucket.params[j]);
      copy_elements(dst, 0, all, bucket.offsets[j], params[bucket.params[j]].value.numel());
    }
  }
}

double ZeroOptimizer::step(double lr) {
  shard_opt_->step(lr);
  const auto t0 = std::chrono::steady_clock::now();
  all_gather_pieces([&](size_t k) { return shard_opt_->params()[k].value; },
                    [&](size_t i) { return reducer_.params()[i].value; });
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void ZeroOptimizer::zero_grad() {
  shard_opt_->zero_grad();
  for (const Param& p : reducer_.params()) Tensor(p.value).zero_grad();
}

void ZeroOptimizer::gather_state(AdamW& full) const {
  const ParamList& params = reducer_.params();
  if (full.params().size() != params.size())
    throw std::invalid_argument("ZeroOptimizer::gather_state: another model");
  auto& st = full.state();
  const auto& mine = shard_opt_->state();
  all_gather_pieces([&](size_t k) { return mine[k].m; }, [&](size_t i) { return st[i].m; });
  all_gather_pieces([&](size_t k) { return mine[k].v; }, [&](size_t i) { return st[i].v; });
  // Each param's step count from a rank that holds a piece of it (every rank with one agrees).
  const auto P = static_cast<int64_t>(params.size()),
             world = static_cast<int64_t>(comm_.world_size());
  Tensor steps = zeros({P}, {DType::I64});
  for (size_t k = 0; k < pieces_.size(); ++k)
    steps.data<int64_t>()[pieces_[k].param] = mine[k].step;
  Tensor all = Tensor::empty({world * P}, DType::I64);
  comm_.all_gather(steps, all);
  for (int64_t i = 0; i < P; ++i) {
    int64_t s = 0;
    for (int64_t r = 0; r < world; ++r) s = std::max(s, all.data<int64_t>()[r * P + i]);
    st[i].step = s;
  }
  full.set_steps(shard_opt_->steps());
}

void ZeroOptimizer::scatter_state(const AdamW& full) {
  const auto& st = full.state();
  auto& mine = shard_opt_->state();
  for (size_t k = 0; k < pieces_.size(); ++k) {
    const Piece& pc = pieces_[k];
    copy_elements(mine[k].m, 0, st[pc.param].m, pc.param_begin, pc.len);
    copy_elements(mine[k].v, 0, st[pc.param].v, pc.param_begin, pc.len);
    mine[k].step = st[pc.param].step;
  }
  shard_opt_->set_steps(full.steps());
}

int64_t ZeroOptimizer::state_bytes() const {
  int64_t bytes = 0;
  for (const AdamW::State& s : shard_opt_->state())
    bytes += static_cast<int64_t>(s.m.nbytes() + s.v.nbytes());
  return bytes;
}

}  // namespace attn::train
