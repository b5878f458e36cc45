#include "train/lm_setup.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "backend/cuda/cuda_api.h"
#include "data/kjv.h"
#include "data/token_shard.h"

namespace attn::train {

void resolve_run_dir(Config& c) {
  if (c.is_auto("run.dir"))
    c.resolve("run.dir", fmt::format("runs/{}-{}-s{}", c.get_string("run.name"), c.get_string("attention.variant"),
                                     c.get_int("run.seed")));
}

void resolve_config(Config& c) {
  if (c.is_auto("attention.sigmoid_bias"))
    c.resolve("attention.sigmoid_bias", fmt::format("{:.17g}", -std::log(static_cast<double>(c.get_int("model.seq_len")))));
  resolve_run_dir(c);
  if (c.get_int("model.d_model") % c.get_int("model.n_heads") != 0)
    throw ConfigError(fmt::format("config key 'model.n_heads': {} does not divide model.d_model = {}",
                                  c.get_int("model.n_heads"), c.get_int("model.d_model")));
  if (c.get_string("model.position") == "rope" && (c.get_int("model.d_model") / c.get_int("model.n_heads")) % 2)
    throw ConfigError("config key 'model.position': rope needs an even head dim (d_model / n_heads)");
  if (c.get_string("run.precision") == "bf16" && c.get_string("run.device") != "cuda")
    throw ConfigError("config key 'run.precision': bf16 needs run.device = cuda (the CPU backend computes in f32)");
  if (c.get_int("train.warmup_steps") > c.get_int("train.steps"))
    throw ConfigError(fmt::format("config key 'train.warmup_steps': {} is more than train.steps = {}",
                                  c.get_int("train.warmup_steps"), c.get_int("train.steps")));
}

namespace {

// The first of the launchers' local-rank variables that is set (mpirun, srun, torchrun style).
int local_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK", "MPI_LOCALRANKID"})
    if (const char* v = std::getenv(name); v && *v) return std::atoi(v);
  return 0;
}

}  // namespace

Device run_device(const Config& c) {
  if (c.get_string("run.device") == "cpu") return Device::cpu();
  if (!cuda::built_with_cuda())
    throw ConfigError("config key 'run.device': cuda, but this attnlab was built without CUDA (configure with "
                      "-DATTNLAB_CUDA=ON where the CUDA toolkit is installed)");
  int n = cuda::device_count();
  if (n == 0)
    throw ConfigError("config key 'run.device': cuda, but no CUDA device is visible (check nvidia-smi and "
                      "CUDA_VISIBLE_DEVICES)");
  return Device::cuda(local_rank() % n);
}

void place_model(nn::Module& model, const Config& c) {
  Device dev = run_device(c);
  if (!dev.is_cpu()) model.to(dev);
  if (c.get_string("run.precision") == "bf16") model.set_compute_dtype(DType::BF16);
}

namespace {

// The corpus text; an empty file, or a binary one (NUL bytes) for the char tokenizer, is refused
// naming the key and the file.
std::string read_text_file(const std::string& path, bool as_chars) {
  if (path.empty()) throw ConfigError("config key 'data.path': corpus 'text' needs a text file (data.path is empty)");
  std::ifstream f(path, std::ios::binary);
  if (!f || std::filesystem::is_directory(path))
    throw ConfigError("config key 'data.path': cannot read text file '" + path + "'");
  std::ostringstream os;
  os << f.rdbuf();
  std::string text = os.str();
  if (text.empty()) throw ConfigError("config key 'data.path': text file '" + path + "' is empty");
  if (size_t nul = text.find('\0'); as_chars && nul != std::string::npos)
    throw ConfigError(fmt::format("config key 'data.path': '{}' has a NUL byte at offset {}: not a text file (the "
                                  "char tokenizer needs text; data.tokenizer=byte reads any bytes)",
                                  path, nul));
  return text;
}

// Where the tokens come from, for messages.
std::string corpus_name(const Config& c) {
  const std::string& corpus = c.get_string("data.corpus");
  if (corpus == "kjv") return "the KJV text";
  if (corpus == "text") return "text file '" + c.get_string("data.path") + "'";
  return "token shards '" + c.get_string("data.path") + "' / '" + c.get_string("data.val_path") + "'";
}

std::shared_ptr<const std::vector<int32_t>> share(std::vector<int32_t> v) {
  return std::make_shared<const std::vector<int32_t>>(std::move(v));
}

}  // namespace

LmData load_lm_data(const Config& c, const std::string& tokenizer_json) {
  LmData d;
  const std::string& corpus = c.get_string("data.corpus");
  if (corpus == "shards") {
    const std::string &tp = c.get_string("data.path"), &vp = c.get_string("data.val_path");
    if (tp.empty() || vp.empty())
      throw ConfigError("config key 'data.path': corpus 'shards' needs data.path and data.val_path");
    for (const std::string& p : {tp, vp})
      if (!std::filesystem::exists(p)) throw ConfigError("config key 'data.path': token shard '" + p + "' not found");
    d.train = share(data::load_token_shard(tp));
    d.val = share(data::load_token_shard(vp));
    int32_t max_id = 0;
    for (const auto* s : {d.train.get(), d.val.get()})
      for (int32_t t : *s) max_id = std::max(max_id, t);
    d.vocab_size = c.get_int("data.vocab_size") > 0 ? c.get_int("data.vocab_size") : max_id + 1;
    if (max_id >= d.vocab_size)
      throw ConfigError(fmt::format("config key 'data.vocab_size': token id {} does not fit a vocabulary of {}", max_id, d.vocab_size));
    d.unit = "token";
    return d;
  }
  const bool as_chars = tokenizer_json.empty() ? c.get_string("data.tokenizer") == "char"
                                               : nlohmann::json::parse(tokenizer_json).value("kind", "") == "char";
  std::string text = corpus == "kjv" ? data::kjv_corpus(c.get_string("data.cache_dir"))
                                     : read_text_file(c.get_string("data.path"), as_chars);
  if (!tokenizer_json.empty()) d.tokenizer = data::Tokenizer::from_json(nlohmann::json::parse(tokenizer_json));
  else if (c.get_string("data.tokenizer") == "char") d.tokenizer = std::make_unique<data::CharTokenizer>(text);
  else d.tokenizer = std::make_unique<data::ByteTokenizer>();
  data::TextSplit split = data::split_train_val(text, c.get_float("data.train_fraction"));
  d.train = share(d.tokenizer->encode(split.train));
  d.val = share(d.tokenizer->encode(split.val));
  d.vocab_size = d.tokenizer->vocab_size();
  d.unit = d.tokenizer->kind() == "char" ? "char" : "byte";
  return d;
}

nn::ModelConfig model_config(const Config& c, int64_t vocab_size) {
  nn::ModelConfig m;
  m.vocab_size = vocab_size;
  m.d_model = c.get_int("model.d_model");
  m.n_layers = c.get_int("model.n_layers");
  m.n_heads = c.get_int("model.n_heads");
  m.max_seq_len = c.get_int("model.seq_len");
  m.mlp = c.get_string("model.mlp") == "gelu" ? nn::MlpKind::Gelu : nn::MlpKind::SwiGlu;
  m.mlp_hidden = c.get_int("model.mlp_hidden");
  m.norm = c.get_string("model.norm") == "layer" ? nn::NormKind::Layer : nn::NormKind::Rms;
  const std::string& pl = c.get_string("model.norm_placement");
  m.placement = pl == "pre" ? nn::NormPlacement::Pre : pl == "post" ? nn::NormPlacement::Post : nn::NormPlacement::Hybrid;
  m.norm_eps = c.get_float("model.norm_eps");
  const std::string& pos = c.get_string("model.position");
  m.attention.position = pos == "none"         ? nn::PositionKind::None
               : pos == "learned"    ? nn::PositionKind::Learned
               : pos == "sinusoidal" ? nn::PositionKind::Sinusoidal
               : pos == "rope"       ? nn::PositionKind::Rope
                                     : nn::PositionKind::Alibi;
  m.attention.rope_base = c.get_float("model.rope_base");
  m.tied_head = c.get_bool("model.tied_head");
  m.init_std = c.get_float("model.init_std");
  m.scaled_residual_init = c.get_bool("model.scaled_residual_init");
  m.dropout = c.get_float("model.dropout");
  m.attention.variant = parse_variant(c.get_string("attention.variant"));
  m.attention.sigmoid_bias = c.get_float("attention.sigmoid_bias");
  m.attention.qk_norm = c.get_bool("attention.qk_norm");
  m.attention.qk_norm_kind = c.get_string("attention.qk_norm_kind") == "layer" ? nn::NormKind::Layer : nn::NormKind::Rms;
  m.attention.layer_scale = c.get_bool("attention.layer_scale");
  m.attention.layer_scale_init = c.get_float("attention.layer_scale_init");
  m.attention.causal = true;
  return m;
}

void check_lm_data_fits(const Config& c, const LmData& d) {
  const int64_t B = c.get_int("train.batch_size"), T = c.get_int("model.seq_len");
  const std::string unit = d.unit + "s";
  const bool split = c.get_string("data.corpus") != "shards";
  if (static_cast<int64_t>(d.train->size()) < T + 1)
    throw ConfigError(fmt::format("config key 'data.path': the training split of {} has {} {}, fewer than one sequence "
                                  "(model.seq_len {} + 1){}",
                                  corpus_name(c), d.train->size(), unit, T,
                                  split ? fmt::format(" (data.train_fraction {})", c.get_string("data.train_fraction")) : ""));
  if (static_cast<int64_t>(d.val->size()) < B * T + 1)
    throw ConfigError(fmt::format("config key 'data.path': the validation split of {} has {} {}, fewer than one "
                                  "batch (train.batch_size {} × model.seq_len {} + 1 = {}): use a longer corpus, a "
                                  "smaller batch or sequence{}",
                                  corpus_name(c), d.val->size(), unit, B, T, B * T + 1,
                                  split ? fmt::format(", or a smaller data.train_fraction (now {})",
                                                      c.get_string("data.train_fraction"))
                                        : ""));
}

}  // namespace attn::train
