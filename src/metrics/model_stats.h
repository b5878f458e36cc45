// Statistics of the inside of a model while it runs forward, collected through its tap
// (nn/tap.h), per module and per head:
//   activations  (the attention output projection "blocks.i.attn", the MLP output
//                "blocks.i.mlp", the block output "blocks.i"): per sample ∞-norm max|x| and raw
//                kurtosis μ₄/(σ⁴ + 1e-6) (Gaussian = 3) over its T × d values, averaged over
//                samples (the Qualcomm protocol);
//   attention    (per layer and head, over a sample of query rows): the entropy of the row's
//                weights normalised to sum 1 (nats), the mass on the first key (the sink), the
//                mass on the top key, the row mass ΣP (1 for softmax; below 1 when a softmax_1
//                or sigmoid head attends to nothing), the fraction of visible keys with P
//                exactly 0, and the largest visible logit.
// Everything is computed with tensor ops on the model's device and accumulated there; report()
// brings it to the host in one transfer. The attention rows are recomputed from q and k for
// `attention_rows` evenly spaced queries (attention_rows in ops.h), never the whole N × M.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/tap.h"

namespace attn::metrics {

// The query rows a layer's statistics sample: `count` evenly spaced over [0, n), the last row
// included (all of them when count >= n).
std::vector<int64_t> sampled_rows(int64_t n, int64_t count);

class ModelStats : public nn::Tap {
 public:
  explicit ModelStats(int64_t attention_rows = 16) : attention_rows_(attention_rows) {}

  void activation(const std::string& path, const Tensor& x) override;
  void attention(const std::string& path, const Tensor& q, const Tensor& k, const AttentionSpec& spec) override;

  // {"activations": {path: {"inf_norm", "kurtosis", "samples"}},
  //  "attention": {path: {"entropy": [per head], "sink_mass", "top_mass", "row_mass",
  //                       "zero_fraction", "max_logit", "rows"}},
  //  "summary": {"max_inf_norm", "max_kurtosis": over modules of the per-sample means,
  //              "sink_mass", "row_mass", "entropy": means over layers and heads}}
  nlohmann::json report() const;
  bool empty() const { return acts_.empty() && attns_.empty(); }
  void clear();

 private:
  struct Act {  // device scalars: Σ_samples max|x|, Σ_samples kurtosis
    Tensor sum_inf, sum_kurt;
    int64_t samples = 0;
  };
  struct Attn {  // device [6, H]: Σ_rows of entropy, sink, top, row mass, zero fraction; max logit
    Tensor sums;
    int64_t rows = 0;
  };
  int64_t attention_rows_;
  std::vector<std::string> act_order_, attn_order_;
  std::map<std::string, Act> acts_;
  std::map<std::string, Attn> attns_;
};

}  // namespace attn::metrics
