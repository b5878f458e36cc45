// ZeRO stage 1 (Rajbhandari et al., 2020; dist.zero = 1): AdamW's state sharded over the ranks.
//
// The reducer (grad_reducer.h, ReduceScatter mode) leaves every rank its slice of each bucket's
// mean gradient. This rank runs AdamW on that slice alone: each piece of a parameter the slice
// covers is an AdamW parameter of its own, with the parameter's weight-decay flag and step
// count, so the update is the unsharded AdamW's element by element. The global gradient norm is
// Σ g² over the slices, all-reduced; the updated slices are all-gathered back into every rank's
// parameters. m and v exist for 1/W of the elements on each rank.
//
// Checkpoints stay world-size independent: gather_state() assembles the full, unsharded AdamW
// state (what a job without ZeRO saves), scatter_state() takes this rank's slice of one, so a
// run saved with N ranks (ZeRO or not) resumes with M.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "dist/communicator.h"
#include "optim/adamw.h"
#include "train/grad_reducer.h"

namespace attn::train {

class ZeroOptimizer {
 public:
  // reducer: in ReduceScatter mode, over the params to optimise.
  ZeroOptimizer(dist::Communicator& comm, const GradReducer& reducer, AdamWConfig cfg);

  // After reducer.finish(): this rank's gradient slices become its shard's gradients, and the
  // global norm before clipping is returned; max_norm > 0 clips them as clip_grad_norm does.
  double load_grads_and_clip(double max_norm);
  // AdamW on the shard, then the all-gather of the parameters (its seconds are returned).
  double step(double lr);
  void zero_grad();

  // Copies the parameters' values into the shard (after they were broadcast or loaded).
  void load_params();
  // Collective. `full` is an AdamW over the reducer's params: it receives the whole state.
  void gather_state(AdamW& full) const;
  // This rank's part of a full state (a loaded checkpoint's).
  void scatter_state(const AdamW& full);

  // m and v of this rank's shard.
  int64_t state_bytes() const;
  int64_t steps() const { return shard_opt_->steps(); }

 private:
  struct Piece {
    size_t bucket, param;  // indices into reducer.buckets(), reducer.params()
    int64_t param_begin, shard_begin, len;
  };
  // For each bucket, this rank's slice of `of(piece)`'s elements laid out as the bucket's flat
  // buffer, all-gathered, then copied into `into(param index)` per param.
  template <class Of, class Into>
  void all_gather_pieces(Of of, Into into) const;

  dist::Communicator& comm_;
  const GradReducer& reducer_;
  std::vector<Piece> pieces_;
  std::unique_ptr<AdamW> shard_opt_;  // one param per piece
};

}  // namespace attn::train
