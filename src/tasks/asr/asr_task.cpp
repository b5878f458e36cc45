#include "tasks/asr/asr_task.h"

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <thread>

#include "autograd/node.h"
#include "data/audio.h"
#include "data/feature_cache.h"
#include "data/log_mel.h"
#include "data/speech_corpus.h"
#include "metrics/ctc_decode.h"
#include "metrics/error_rate.h"
#include "tasks/device.h"
#include "tasks/transformer_keys.h"
#include "util/log.h"

namespace attn::tasks {

using config::Config;
using config::ConfigError;
namespace fs = std::filesystem;

std::vector<config::KeySpec> asr_keys() {
  using namespace config;
  return {
      string_key("data.corpus_dir", "data/asr-small",
                 "Folder of a corpus made by `attnlab data asr --out DIR` (its train/val/test/test_long.jsonl); the "
                 "splits' auto."),
      string_key("data.train", "auto", "Training utterances: a JSONL manifest or a LibriSpeech-format folder "
                                       "(SPEAKER/CHAPTER/*.trans.txt + *.flac); auto: <data.corpus_dir>/train.jsonl."),
      string_key("data.val", "auto", "Validation utterances (as data.train); auto: <data.corpus_dir>/val.jsonl."),
      string_key("data.test", "auto", "Test utterances for the final numbers; auto: <data.corpus_dir>/test.jsonl."),
      string_key("data.test_long", "auto",
                 "Length-generalisation test (utterances longer than any in training), reported apart; auto: "
                 "<data.corpus_dir>/test_long.jsonl if it exists; none: skip."),
      int_key("data.sample_rate", "16000", "Audio is read at this rate (resampled when a file differs).", 1000, 192000),
      int_key("data.n_mels", "80", "Log-mel bins (25 ms Hann window, 10 ms hop by default).", 7, 1024),
      float_key("data.window_ms", "25", "Log-mel analysis window.", 1, 1000),
      float_key("data.hop_ms", "10", "Log-mel hop: one frame per hop.", 1, 1000),
      int_key("data.freq_masks", "2", "SpecAugment: frequency masks per training utterance.", 0, 100),
      int_key("data.freq_width", "15", "SpecAugment: widest frequency mask (bins).", 0, 1024),
      int_key("data.time_masks", "2", "SpecAugment: time masks per training utterance.", 0, 100),
      int_key("data.time_width", "20", "SpecAugment: widest time mask (frames).", 0, 100000),
      int_key("model.conv_channels", "144", "Channels of the two 3×3 stride-2 subsampling convolutions.", 1, 65536),
      int_key("eval.test_batches", "0", "Batches of each test set for the final numbers (0: all of it).", 0, 1e9),
  };
}

// ---- the vocabulary -----------------------------------------------------------------------

SpeechVocab::SpeechVocab() : chars_(" 'ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  std::fill(std::begin(id_of_), std::end(id_of_), -1);
  for (size_t i = 0; i < chars_.size(); ++i) id_of_[static_cast<unsigned char>(chars_[i])] = static_cast<int32_t>(i + 1);
  for (char ch = 'a'; ch <= 'z'; ++ch) id_of_[static_cast<unsigned char>(ch)] = id_of_[static_cast<unsigned char>(ch - 'a' + 'A')];
}

std::vector<int32_t> SpeechVocab::encode(const std::string& t) const {
  std::vector<int32_t> ids;
  for (char ch : t) {
    const int32_t id = id_of_[static_cast<unsigned char>(ch)];
    if (id < 0)
      throw std::invalid_argument(fmt::format("character '{}' (byte {}) is not in the speech vocabulary (space, "
                                              "apostrophe, A-Z)", ch, static_cast<int>(static_cast<unsigned char>(ch))));
    ids.push_back(id);
  }
  return ids;
}

std::string SpeechVocab::decode(const std::vector<int32_t>& ids) const {
  std::string s;
  for (int32_t id : ids)
    if (id >= 1 && id <= static_cast<int32_t>(chars_.size())) s += chars_[id - 1];
  return s;
}

namespace {

// ---- splits -------------------------------------------------------------------------------

// The path a split is read from, or "" for none (test_long only).
std::string split_source(const Config& c, const std::string& split) {
  const std::string key = "data." + split, v = c.get_string(key);
  if (v == "none") {
    if (split != "test_long") throw ConfigError("config key '" + key + "': 'none' is only allowed for data.test_long");
    return "";
  }
  const std::string p = v == "auto" ? c.get_string("data.corpus_dir") + "/" + split + ".jsonl" : v;
  if (fs::exists(p)) return p;
  if (v == "auto" && split == "test_long") return "";
  if (v == "auto")
    throw ConfigError(fmt::format("config key 'data.corpus_dir': '{}' not found; synthesise the corpus first with "
                                  "`attnlab data asr --out {}` (or point data.{} at a manifest or a LibriSpeech folder)",
                                  p, c.get_string("data.corpus_dir"), split));
  throw ConfigError(fmt::format("config key '{}': '{}' not found", key, p));
}

// 64-bit FNV-1a, for the corpus fingerprint (what the features were computed from).
uint64_t fnv1a(const std::string& s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

// The utterances' ids, transcripts, audio paths and file sizes: a changed corpus changes it.
std::string corpus_fingerprint(const std::vector<data::Utterance>& utts) {
  uint64_t h = fnv1a("speech-corpus-v1");
  for (const data::Utterance& u : utts) {
    std::error_code ec;
    const auto size = fs::file_size(u.audio_path, ec);
    h = fnv1a(u.id + '\0' + u.transcript + '\0' + u.audio_path + '\0' + std::to_string(ec ? 0 : size) + '\n', h);
  }
  return fmt::format("{:016x}", h);
}

data::MelOptions mel_options(const Config& c) {
  data::MelOptions m;
  m.sample_rate = static_cast<int>(c.get_int("data.sample_rate"));
  m.window_ms = c.get_float("data.window_ms");
  m.hop_ms = c.get_float("data.hop_ms");
  m.n_mels = static_cast<int>(c.get_int("data.n_mels"));
  return m;
}

// Log-mel features of every utterance, normalised per utterance, on `threads` threads with a
// progress line on stderr.
std::vector<data::UtteranceFeatures> compute_features(const std::vector<data::Utterance>& utts,
                                                      const data::MelOptions& mel, const std::string& label,
                                                      int threads) {
  const data::LogMel logmel(mel);
  std::vector<data::UtteranceFeatures> out(utts.size());
  std::atomic<size_t> next{0}, done{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    for (size_t i; (i = next++) < utts.size();) {
      try {
        const data::Audio a = data::read_audio(utts[i].audio_path, mel.sample_rate);
        data::UtteranceFeatures& f = out[i];
        f.id = utts[i].id;
        f.data = logmel.compute(a.samples.data(), static_cast<int64_t>(a.samples.size()));
        f.frames = static_cast<int64_t>(f.data.size()) / mel.n_mels;
        data::normalize_per_utterance(f.data.data(), f.frames, mel.n_mels);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        next = utts.size();
      }
      ++done;
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < std::max(1, threads); ++t) pool.emplace_back(work);
  const auto start = std::chrono::steady_clock::now();
  while (done < utts.size() && !error) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (s > 2) logging::info("\r[asr] log-mel features of {}: {}/{} utterances", label, done.load(), utts.size());
  }
  for (auto& t : pool) t.join();
  if (std::chrono::steady_clock::now() - start > std::chrono::seconds(2)) logging::info("\n");
  if (error) std::rethrow_exception(error);
  return out;
}

struct LoadedSplit {
  std::shared_ptr<const data::SpeechDataset> data;
  nlohmann::json info;
};

LoadedSplit load_split(const Config& c, const std::string& split, const std::string& source,
                       const SpeechVocab& vocab) {
  std::vector<data::Utterance> utts;
  try {
    utts = data::read_speech_corpus(source);
  } catch (const std::exception& e) {
    throw ConfigError(fmt::format("config key 'data.{}': {}", split, e.what()));
  }
  if (utts.empty()) throw ConfigError(fmt::format("config key 'data.{}': '{}' holds no utterances", split, source));
  const data::MelOptions mel = mel_options(c);
  const std::string fingerprint = corpus_fingerprint(utts);
  const std::string key = data::feature_cache_key(fingerprint, mel);
  const std::string cache = fmt::format("{}/asr-features/{}-{:016x}.bin", c.get_string("data.cache_dir"), split, fnv1a(key));
  std::optional<std::vector<data::UtteranceFeatures>> feats = data::load_feature_cache(cache, key, mel.n_mels);
  if (!feats) {
    const int threads = c.get_int("run.threads") > 0 ? static_cast<int>(c.get_int("run.threads"))
                                                     : static_cast<int>(std::thread::hardware_concurrency());
    try {
      feats = compute_features(utts, mel, split, threads);
    } catch (const std::exception& e) {
      throw ConfigError(fmt::format("config key 'data.{}': {}", split, e.what()));
    }
    fs::create_directories(fs::path(cache).parent_path());
    data::save_feature_cache(cache, key, *feats, mel.n_mels);
  }
  auto d = std::make_shared<data::SpeechDataset>();
  d->n_mels = mel.n_mels;
  double seconds = 0;
  for (size_t i = 0; i < utts.size(); ++i) {
    data::UtteranceFeatures& f = (*feats)[i];
    if (f.id != utts[i].id)
      throw std::runtime_error(fmt::format("feature cache '{}': entry {} is '{}', expected '{}'", cache, i, f.id, utts[i].id));
    if (models::subsampled_length(f.frames) <= 0)
      throw ConfigError(fmt::format("config key 'data.{}': utterance '{}' ({}) gives {} frames, fewer than the 7 "
                                    "the subsampling needs", split, utts[i].id, utts[i].audio_path, f.frames));
    try {
      d->labels.push_back(vocab.encode(utts[i].transcript));
    } catch (const std::invalid_argument& e) {
      throw ConfigError(fmt::format("config key 'data.{}': utterance '{}': {}", split, utts[i].id, e.what()));
    }
    d->transcripts.push_back(vocab.decode(d->labels.back()));
    d->ids.push_back(f.id);
    d->frames.push_back(f.frames);
    d->features.push_back(std::move(f.data));
    seconds += static_cast<double>(f.frames) * mel.hop_ms / 1000.0;
  }
  LoadedSplit s{d, {{"source", source}, {"utterances", d->size()}, {"hours", seconds / 3600.0},
                    {"max_frames", d->max_frames()}, {"fingerprint", fingerprint}}};
  return s;
}

}  // namespace

// b = −ln n with n = 128 keys: the reference recipe's choice (a 5 s utterance after the ×4
// subsampling); utterance lengths vary, so there is no single n.
void AsrTask::resolve(Config& c) const {
  if (c.is_auto("attention.sigmoid_bias")) c.resolve("attention.sigmoid_bias", fmt::format("{:.17g}", -std::log(128.0)));
  if (c.get_string("model.position") == "learned")
    throw ConfigError("config key 'model.position': 'learned' is not available for task asr (test utterances may be "
                      "longer than any training one): use sinusoidal, rope, alibi or none");
  check_transformer_keys(c);
}

void AsrTask::prepare(const Config& c, const std::string& saved_run_dir, Device device) {
  std::map<std::string, LoadedSplit> splits;
  for (const std::string split : {"train", "val", "test", "test_long"}) {
    const std::string source = split_source(c, split);
    if (!source.empty()) splits[split] = load_split(c, split, source, vocab_);
    corpus_info_[split] = source.empty() ? nlohmann::json(nullptr) : splits[split].info;
  }
  if (!saved_run_dir.empty() && fs::exists(saved_run_dir + "/corpus.json")) {
    std::ifstream f(saved_run_dir + "/corpus.json");
    const nlohmann::json saved = nlohmann::json::parse(f, nullptr, false);
    for (const std::string split : {"train", "val", "test", "test_long"}) {
      const auto fp = [&](const nlohmann::json& j) {
        return j.contains(split) && j[split].is_object() ? j[split].value("fingerprint", "") : std::string();
      };
      if (saved.is_discarded() || fp(saved) != fp(corpus_info_))
        throw ConfigError(fmt::format("config key 'data.{}': the corpus differs from the one this run was trained on "
                                      "({}/corpus.json)", split, saved_run_dir));
    }
  }
  const int64_t batch = c.get_int("train.batch_size");
  data::SpecAugmentOptions aug;
  aug.freq_masks = static_cast<int>(c.get_int("data.freq_masks"));
  aug.freq_width = static_cast<int>(c.get_int("data.freq_width"));
  aug.time_masks = static_cast<int>(c.get_int("data.time_masks"));
  aug.time_width = static_cast<int>(c.get_int("data.time_width"));
  const bool use_aug = aug.freq_masks > 0 || aug.time_masks > 0;
  batcher_ = std::make_unique<data::SpeechBatcher>(splits["train"].data, batch, c.get_int("run.seed"), aug, use_aug);
  frames_per_batch_ = std::max<int64_t>(1, splits["train"].data->total_frames() / batcher_->batches_per_epoch());
  val_ = std::make_unique<data::SpeechEvalBatcher>(splits["val"].data, batch);
  test_ = std::make_unique<data::SpeechEvalBatcher>(splits["test"].data, batch);
  if (splits.count("test_long")) test_long_ = std::make_unique<data::SpeechEvalBatcher>(splits["test_long"].data, batch);
  val_batches_ = c.get_int("eval.batches") > 0 ? std::min(val_->num_batches(), c.get_int("eval.batches")) : val_->num_batches();
  test_batches_ = c.get_int("eval.test_batches");

  models::AsrConfig m;
  static_cast<nn::BlockConfig&>(m) = block_config(c);
  m.n_mels = c.get_int("data.n_mels");
  m.conv_channels = c.get_int("model.conv_channels");
  m.n_layers = c.get_int("model.n_layers");
  m.vocab_size = vocab_.size();
  model_ = std::make_unique<models::SpeechRecognizer>(m, c.get_int("run.seed"));
  place_model(*model_, c);
  device_ = device;
}

std::vector<std::pair<std::string, std::string>> AsrTask::artifacts() const {
  return {{"corpus.json", corpus_info_.dump(2) + "\n"}};
}

// Rank r computes the loss of its utterances [first, last) of the bucket (all of it alone),
// weighted by (last − first)·W / n so that the mean over the ranks is the bucket's mean.
Tensor AsrTask::next_train_loss() {
  const uint64_t pos = batcher_->position();
  batcher_->set_position(pos + 1);
  const int64_t n = batcher_->bucket_size(pos);
  const auto [first, last] = shard_.rows(n);
  // A rank without utterances in this bucket still runs a backward (its gradient, all zeros,
  // joins the all-reduce like any other): the loss of the bucket's first utterance times 0.
  const bool empty = first == last;
  data::SpeechBatch b = batcher_->batch_at(pos, empty ? 0 : first, empty ? 1 : last);
  const Tensor loss = model_->loss(b.features.to(device_), b.frames, b.targets, b.target_lengths);
  if (shard_.world == 1) return loss;
  return mul(loss, empty ? 0.0 : static_cast<double>((last - first) * shard_.world) / static_cast<double>(n));
}

AsrTask::Scores AsrTask::score(const data::SpeechEvalBatcher& batches, int64_t max_batches) {
  const int64_t n = max_batches > 0 ? std::min(max_batches, batches.num_batches()) : batches.num_batches();
  double loss_sum = 0, count = 0;
  metrics::ErrorCounts chars, words;
  for (int64_t i = 0; i < n; ++i) {
    const auto [first, last] = shard_.rows(batches.bucket_size(i));  // alone: the whole batch
    if (first == last) continue;
    const data::SpeechBatch b = batches.batch_at(i, first, last);
    models::AsrOutput o = model_->forward(b.features.to(device_), b.frames);
    const double B = static_cast<double>(b.frames.size());
    loss_sum += ctc_loss(o.log_probs, b.targets, b.target_lengths, o.lengths, 0, CtcReduction::Mean, true).item() * B;
    count += B;
    const std::vector<std::vector<int32_t>> hyps = metrics::ctc_greedy_decode(o.log_probs, o.lengths, 0);
    for (size_t r = 0; r < hyps.size(); ++r) {
      const std::string hyp = vocab_.decode(hyps[r]), &ref = batches.data().transcripts[b.utterances[r]];
      chars += metrics::char_errors(hyp, ref);
      words += metrics::word_errors(hyp, ref);
    }
  }
  std::vector<double> sums{loss_sum, count, static_cast<double>(chars.edits), static_cast<double>(chars.reference_length),
                           static_cast<double>(words.edits), static_cast<double>(words.reference_length)};
  shard_.sum(sums);
  const auto counts = [&](size_t i) {
    return metrics::ErrorCounts{static_cast<int64_t>(sums[i]), static_cast<int64_t>(sums[i + 1])};
  };
  return {sums[0] / sums[1], counts(2).rate(), counts(4).rate()};
}

nlohmann::json AsrTask::evaluate() {
  const Scores s = score(*val_, val_batches_);
  return {{"val_loss", s.loss}, {"val_cer", s.cer}, {"val_wer", s.wer}};
}

std::string AsrTask::describe(const nlohmann::json& m) const {
  return fmt::format("val_loss {:.4f}, CER {:.2f}%, WER {:.2f}%", m["val_loss"].get<double>(),
                     100 * m["val_cer"].get<double>(), 100 * m["val_wer"].get<double>());
}

nlohmann::json AsrTask::final_metrics() {
  NoGradGuard no_grad;
  const bool was_training = model_->training();
  model_->set_training(false);
  const Scores t = score(*test_, test_batches_);
  nlohmann::json m = {{"test_loss", t.loss}, {"test_cer", t.cer}, {"test_wer", t.wer}};
  if (test_long_) {
    const Scores l = score(*test_long_, test_batches_);
    m.update({{"test_long_loss", l.loss}, {"test_long_cer", l.cer}, {"test_long_wer", l.wer}});
  }
  model_->set_training(was_training);
  return m;
}

std::vector<Column> AsrTask::compare_columns() const {
  return {{"final_val_loss", "final val loss", "{:.4f}"},
          {"final_val_cer", "val CER", "{:.4f}"},
          {"test_cer", "test CER", "{:.4f}"},
          {"test_wer", "test WER", "{:.4f}"},
          {"test_long_cer", "long CER", "{:.4f}"},
          {"frames_per_s", "frames/s", "{:.0f}"}};
}

}  // namespace attn::tasks
