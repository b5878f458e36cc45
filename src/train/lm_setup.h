// From a resolved Config to the pieces of an LM run: model hyper-parameters, the token streams
// and the tokenizer.
#pragma once
#include <memory>
#include <vector>

#include "data/tokenizer.h"
#include "nn/config.h"
#include "nn/module.h"
#include "train/config.h"

namespace attn::train {

struct LmData {
  std::shared_ptr<const std::vector<int32_t>> train, val;
  std::unique_ptr<data::Tokenizer> tokenizer;  // null for token shards
  int64_t vocab_size = 0;
  std::string unit = "char";  // what one token is, for bits-per-unit
};

// Resolves the config's "auto" values that depend only on the config (sigmoid bias, run dir) and
// checks the rules between keys.
void resolve_config(Config& c);
// run.dir auto -> runs/<name>-<variant>-s<seed>; nothing else.
void resolve_run_dir(Config& c);

// ConfigError naming the corpus and the keys when a split is too short for the batch shape.
void check_lm_data_fits(const Config& c, const LmData& d);

// Loads the corpus the config names. `tokenizer_json`, when not empty, restores the run's saved
// vocabulary (eval and resume) instead of building it from the corpus.
LmData load_lm_data(const Config& c, const std::string& tokenizer_json = "");

nn::ModelConfig model_config(const Config& c, int64_t vocab_size);

// run.device as a Device: the CPU, or the CUDA device of this process's local rank. Throws
// ConfigError when CUDA is asked for and this build has none or no device is visible.
Device run_device(const Config& c);

// Puts a freshly built model where run.device and run.precision say (parameters moved, bf16
// compute dtype set). Build the optimizer afterwards.
void place_model(nn::Module& model, const Config& c);

}  // namespace attn::train
