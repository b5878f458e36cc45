// run.device and run.precision: where a task's model and batches live.
#pragma once
#include "config/config.h"
#include "nn/module.h"

namespace attn::tasks {

// run.device as a Device: the CPU, or the CUDA device of this process's local rank. Throws
// ConfigError when CUDA is asked for and this build has none or no device is visible.
Device run_device(const config::Config& c);

// Puts a freshly built model where run.device and run.precision say (parameters moved, bf16
// compute dtype set). Build the optimizer afterwards.
void place_model(nn::Module& model, const config::Config& c);

}  // namespace attn::tasks
