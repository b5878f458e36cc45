// `attnlab bench attention`: times the flash-attention kernels (forward, forward + backward) per
// variant, head dim and mask on random bf16 inputs, with CUDA events (warm-up, then the median
// of the repeats), and reports TFLOP/s with FLOPs = 4·B·H·N²·D, halved when causal, ×3.5 for
// forward + backward (the convention of FlashAttention's benchmarks).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace attn::bench {

struct AttentionBenchOptions {
  int64_t batch = 2, heads = 16, seq = 4096;  // the reference shape: 2 x 16 x 4096 x {64, 128}
  std::vector<int64_t> head_dims{64, 128};
  std::vector<std::string> variants{"softmax", "sigmoid", "softmax1"};
  std::vector<std::string> masks{"full", "causal"};
  int warmup = 3, repeats = 10;
  bool csv = false;  // one CSV line per configuration instead of a table
};

// Prints the results; 0 on success, 1 when there is no CUDA build or device, 2 on bad options.
int run_attention_bench(const AttentionBenchOptions& o);

}  // namespace attn::bench
