// The config keys of the transformer stack (model.* widths and norms, attention.*) that every
// task shares, and their reading into nn::BlockConfig.
#pragma once
#include <vector>

#include "config/config.h"
#include "nn/config.h"

namespace attn::tasks {

std::vector<config::KeySpec> transformer_keys();

// model.* and attention.* as a BlockConfig (attention.sigmoid_bias must be resolved). The task
// sets what is its own: causal, the position grid.
nn::BlockConfig block_config(const config::Config& c);

// The rules between these keys: n_heads divides d_model, RoPE needs an even head dim.
void check_transformer_keys(const config::Config& c);

}  // namespace attn::tasks
