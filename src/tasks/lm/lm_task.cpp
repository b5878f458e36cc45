#include "tasks/lm/lm_task.h"

#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/kjv.h"
#include "data/token_shard.h"
#include "ops/ops.h"
#include "tasks/device.h"
#include "tasks/transformer_keys.h"

namespace attn::tasks {

using config::Config;
using config::ConfigError;

std::vector<config::KeySpec> lm_keys() {
  using namespace config;  // the key constructors and kMaxLength
  return {
      choice_key("data.corpus", "kjv", "kjv: the King James Bible from Debian's bible-kjv; text: a UTF-8/ASCII file (data.path); shards: llm.c token shards (data.path, data.val_path).", {"kjv", "text", "shards"}),
      string_key("data.path", "", "Text file (corpus text) or training token shard (corpus shards)."),
      string_key("data.val_path", "", "Validation token shard (corpus shards)."),
      choice_key("data.tokenizer", "char", "char: the corpus's distinct characters (saved with the run); byte: 256 byte values. Ignored for shards.", {"char", "byte"}),
      float_key("data.train_fraction", "0.9", "Leading fraction of the text (by character) used for training; the rest validates.", 0, 1, true),
      int_key("data.vocab_size", "0", "Vocabulary size for token shards (0: max token id + 1).", 0, 2147483647),
      int_key("model.seq_len", "128", "Training sequence length n (also the maximum for learned/sinusoidal positions).", 2, kMaxLength),
      bool_key("model.tied_head", "true", "Output head shares the token embedding."),
      bool_key("model.scaled_residual_init", "true", "Output projections use init_std / sqrt(2·n_layers) (GPT-2)."),
  };
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


nn::ModelConfig lm_model_config(const Config& c, int64_t vocab_size) {
  nn::ModelConfig m;
  static_cast<nn::BlockConfig&>(m) = block_config(c);
  m.attention.causal = true;
  m.vocab_size = vocab_size;
  m.n_layers = c.get_int("model.n_layers");
  m.max_seq_len = c.get_int("model.seq_len");
  m.tied_head = c.get_bool("model.tied_head");
  m.scaled_residual_init = c.get_bool("model.scaled_residual_init");
  return m;
}

// b = -ln n with n = model.seq_len: the keys a query sees in training (causal: up to n).
void LmTask::resolve(Config& c) const {
  if (c.is_auto("attention.sigmoid_bias"))
    c.resolve("attention.sigmoid_bias", fmt::format("{:.17g}", -std::log(static_cast<double>(c.get_int("model.seq_len")))));
  check_transformer_keys(c);
}

void LmTask::prepare(const Config& c, const std::string& saved_run_dir, Device device) {
  const std::string tok_file = saved_run_dir + "/tokenizer.json";
  std::string tokenizer_json;
  if (!saved_run_dir.empty() && std::filesystem::exists(tok_file)) {
    std::ifstream f(tok_file, std::ios::binary);
    std::ostringstream os;
    os << f.rdbuf();
    tokenizer_json = os.str();
  }
  data_ = load_lm_data(c, tokenizer_json);
  check_lm_data_fits(c, data_);
  batch_ = c.get_int("train.batch_size");
  seq_len_ = c.get_int("model.seq_len");
  // Built (and initialised) on the CPU, then moved: the same initial weights on every device.
  model_ = std::make_unique<models::DecoderLM>(lm_model_config(c, data_.vocab_size), c.get_int("run.seed"));
  place_model(*model_, c);
  device_ = device;
  batcher_ = std::make_unique<data::TokenBatcher>(data_.train, batch_, seq_len_, c.get_int("run.seed"));
  val_batches_ = data::eval_batches(*data_.val, batch_, seq_len_, c.get_int("eval.batches"));
  if (!device.is_cpu())
    for (auto& b : val_batches_) b = {b.x.to(device), b.y.to(device)};
}

std::vector<std::pair<std::string, std::string>> LmTask::artifacts() const {
  if (!data_.tokenizer) return {};
  return {{"tokenizer.json", data_.tokenizer->to_json().dump() + "\n"}};
}

// (The trainer refuses a batch the ranks cannot share equally.)
void LmTask::set_shard(Shard shard) { shard_ = std::move(shard); }

// Every row has seq_len tokens, so the mean over a rank's rows, averaged over the ranks, is the
// global batch's mean.
Tensor LmTask::next_train_loss() {
  const auto [begin, end] = shard_.rows(batch_);
  data::TokenBatch b = batcher_->next_rows(begin, end);
  if (!device_.is_cpu()) b = {b.x.to(device_), b.y.to(device_)};
  return model_->loss(b.x, b.y);
}

std::pair<int64_t, std::string> LmTask::items_per_micro_batch() const { return {batch_ * seq_len_, "tokens"}; }

// The mean over the batches of each batch's mean: with shards, Σ_ranks rows·mean / B per batch.
nlohmann::json LmTask::evaluate() {
  const auto [begin, end] = shard_.rows(batch_);
  std::vector<double> total{0};
  for (const auto& b : val_batches_) {
    if (shard_.world == 1) total[0] += model_->loss(b.x, b.y).item();
    else
      total[0] += model_->loss(slice(b.x, 0, begin, end), slice(b.y, 0, begin, end)).item() *
                  static_cast<double>(end - begin) / static_cast<double>(batch_);
  }
  shard_.sum(total);
  double v = val_batches_.empty() ? NAN : total[0] / static_cast<double>(val_batches_.size());
  return {{"val_loss", v}, {"val_bpc", v / std::log(2.0)}, {"unit", data_.unit}};
}

std::string LmTask::describe(const nlohmann::json& m) const {
  return fmt::format("val_loss {:.4f} ({:.4f} bits/{})", m["val_loss"].get<double>(), m["val_bpc"].get<double>(),
                     data_.unit);
}

std::vector<Column> LmTask::compare_columns() const {
  return {{"final_val_loss", "final val loss", "{:.4f}"},
          {"best_val_loss", "best val loss", "{:.4f}"},
          {"final_val_bpc", "bits/{unit}", "{:.4f}"},
          {"tokens_per_s", "tokens/s", "{:.0f}"}};
}

std::vector<std::string> LmTask::full_precision_modules() const {
  if (model_ && model_->config.tied_head) return {"head", "tok_emb"};
  return {"head"};
}

}  // namespace attn::tasks
