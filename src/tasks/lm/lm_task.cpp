#include "tasks/lm/lm_task.h"

#include <algorithm>
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
      int_key("model.seq_len", "128", "Training sequence length n (also the number of learned positions; eval.lengths evaluates at others).", 2, kMaxLength),
      bool_key("model.tied_head", "true", "Output head shares the token embedding."),
      bool_key("model.scaled_residual_init", "true", "Output projections use init_std / sqrt(2·n_layers) (GPT-2)."),
      int_list_key("eval.lengths", "[]", "Extra evaluation lengths L, e.g. [256, 512] (length generalisation): every evaluation also reports val_loss@L, the loss per token over consecutive windows of L tokens of the same validation text (as many tokens as the eval.batches batches at model.seq_len, at least one window; max(1, train.batch_size·model.seq_len / L) windows per forward), and val_tail_loss@L, over the last quarter of each window's positions. rope, alibi, sinusoidal and none work at any L, learned positions only up to model.seq_len; sigmoid attention keeps its trained b.", 2, kMaxLength),
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

// The windows of length L an evaluation scores: as many tokens as the `batches` training-length
// batches of B rows of n (at least one window, at most what the split holds), max(1, B·n/L) of
// them per forward, so one forward holds about the tokens of a training-length batch.
struct WindowPlan {
  int64_t windows, rows;
};
WindowPlan window_plan(int64_t L, int64_t batches, int64_t B, int64_t n, size_t val_tokens) {
  const int64_t held = (static_cast<int64_t>(val_tokens) - 1) / L;
  return {std::min(held, std::max<int64_t>(1, batches * B * n / L)),
          std::max<int64_t>(1, B * n / L)};
}

// Learned positions stop at n; a length given twice would be reported once.
void check_eval_lengths(const Config& c) {
  const std::vector<int64_t> lengths = c.get_int_list("eval.lengths");
  const int64_t n = c.get_int("model.seq_len");
  for (size_t i = 0; i < lengths.size(); ++i) {
    if (std::find(lengths.begin(), lengths.begin() + static_cast<std::ptrdiff_t>(i), lengths[i]) !=
        lengths.begin() + static_cast<std::ptrdiff_t>(i))
      throw ConfigError(fmt::format("config key 'eval.lengths': {} is given twice", lengths[i]));
    if (lengths[i] > n && c.get_string("model.position") == "learned")
      throw ConfigError(
          fmt::format("config key 'eval.lengths': {} is longer than model.seq_len = {}, and "
                      "model.position = learned has no position beyond it (rope, alibi, "
                      "sinusoidal and none work at any length)",
                      lengths[i], n));
  }
}

// The mean next-token loss of the windows x -> y [rows, L], over all L positions and over the last
// `tail` of them. In f32 whatever the compute dtype, as DecoderLM::loss.
struct WindowLoss {
  double all, tail;
};
WindowLoss window_loss(const models::DecoderLM& m, const Tensor& x, const Tensor& y, int64_t tail) {
  Tensor logits = m.forward(x);
  if (logits.dtype() == DType::BF16) logits = cast(logits, DType::F32);
  const int64_t L = x.size(1), V = logits.size(-1);
  const Tensor tail_logits = slice(logits, 1, L - tail, L), tail_y = slice(y, 1, L - tail, L);
  return {cross_entropy(reshape(logits, {-1, V}), reshape(y, {-1})).item(),
          cross_entropy(reshape(tail_logits, {-1, V}), reshape(tail_y, {-1})).item()};
}

// Rows [begin, end) of x, x itself when that is all of it.
Tensor rows_of(const Tensor& x, int64_t begin, int64_t end) {
  return begin == 0 && end == x.size(0) ? x : slice(x, 0, begin, end);
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
  const std::vector<int64_t> lengths = c.get_int_list("eval.lengths");
  if (lengths.empty()) return;
  const int64_t L = *std::max_element(lengths.begin(), lengths.end());
  if (static_cast<int64_t>(d.val->size()) < L + 1)
    throw ConfigError(fmt::format(
        "config key 'eval.lengths': the validation split of {} has {} {}, fewer than one window "
        "of {} + 1",
        corpus_name(c), d.val->size(), unit, L));
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
  check_eval_lengths(c);
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
  length_evals_.clear();
  for (int64_t L : c.get_int_list("eval.lengths")) {
    const WindowPlan p = window_plan(L, static_cast<int64_t>(val_batches_.size()), batch_,
                                     seq_len_, data_.val->size());
    length_evals_.push_back({L, p.windows, data::window_batches(*data_.val, L, p.windows, p.rows)});
  }
  if (!device.is_cpu()) {
    for (auto& b : val_batches_) b = {b.x.to(device), b.y.to(device)};
    for (LengthEval& e : length_evals_)
      for (auto& b : e.batches) b = {b.x.to(device), b.y.to(device)};
  }
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
// At an extra length L every window has L tokens, so Σ rows·mean / windows is the loss per token
// (the last batch may hold fewer windows; a rank with no row of a batch skips it).
nlohmann::json LmTask::evaluate() {
  const auto [begin, end] = shard_.rows(batch_);
  std::vector<double> total(1 + 2 * length_evals_.size(), 0.0);
  for (const auto& b : val_batches_) {
    if (shard_.world == 1) total[0] += model_->loss(b.x, b.y).item();
    else
      total[0] += model_->loss(slice(b.x, 0, begin, end), slice(b.y, 0, begin, end)).item() *
                  static_cast<double>(end - begin) / static_cast<double>(batch_);
  }
  // The model's statistics (a tap) are those of the training-length batches alone.
  nn::Tap* tap = model_->tap();
  model_->set_tap(nullptr);
  for (size_t i = 0; i < length_evals_.size(); ++i) {
    const LengthEval& e = length_evals_[i];
    const int64_t tail = std::max<int64_t>(1, e.length / 4);
    for (const auto& b : e.batches) {
      const auto [first, last] = shard_.rows(b.x.size(0));
      if (first == last) continue;
      const WindowLoss l =
          window_loss(*model_, rows_of(b.x, first, last), rows_of(b.y, first, last), tail);
      total[1 + 2 * i] += l.all * static_cast<double>(last - first);
      total[2 + 2 * i] += l.tail * static_cast<double>(last - first);
    }
  }
  model_->set_tap(tap);
  shard_.sum(total);
  double v = val_batches_.empty() ? NAN : total[0] / static_cast<double>(val_batches_.size());
  nlohmann::json out = {{"val_loss", v}, {"val_bpc", v / std::log(2.0)}, {"unit", data_.unit}};
  for (size_t i = 0; i < length_evals_.size(); ++i) {
    const LengthEval& e = length_evals_[i];
    out[fmt::format("val_loss@{}", e.length)] = total[1 + 2 * i] / static_cast<double>(e.windows);
    out[fmt::format("val_tail_loss@{}", e.length)] =
        total[2 + 2 * i] / static_cast<double>(e.windows);
  }
  return out;
}

std::string LmTask::describe(const nlohmann::json& m) const {
  std::string out = fmt::format("val_loss {:.4f} ({:.4f} bits/{})", m["val_loss"].get<double>(),
                                m["val_bpc"].get<double>(), data_.unit);
  for (const LengthEval& e : length_evals_)
    out += fmt::format(" | @{} {:.4f} (tail {:.4f})", e.length,
                       m[fmt::format("val_loss@{}", e.length)].get<double>(),
                       m[fmt::format("val_tail_loss@{}", e.length)].get<double>());
  return out;
}

std::vector<Column> LmTask::compare_columns() const {
  return {{"final_val_loss", "final val loss", "{:.4f}"},
          {"best_val_loss", "best val loss", "{:.4f}"},
          {"final_val_bpc", "bits/{unit}", "{:.4f}"},
          {"final_val_loss@*", "val loss @{at}", "{:.4f}"},
          {"final_val_tail_loss@*", "tail loss @{at}", "{:.4f}"},
          {"tokens_per_s", "tokens/s", "{:.0f}"}};
}

std::vector<std::string> LmTask::full_precision_modules() const {
  if (model_ && model_->config.tied_head) return {"head", "tok_emb"};
  return {"head"};
}

}  // namespace attn::tasks
