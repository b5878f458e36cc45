#include "tasks/vit/vit_task.h"

#include <cmath>
#include <fmt/format.h>

#include "autograd/node.h"
#include "data/idx.h"
#include "tasks/device.h"
#include "tasks/transformer_keys.h"

namespace attn::tasks {

using config::Config;
using config::ConfigError;

std::vector<config::KeySpec> vit_keys() {
  using namespace config;
  return {
      string_key("data.image_dir", data::kFashionMnistDir,
                 "Directory of the four IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                 "t10k-…): Fashion-MNIST from Debian's dataset-fashion-mnist; MNIST works the same."),
      int_key("data.image_size", "28", "Side of the square images (checked against the files).", 1, 4096),
      int_key("data.val_size", "5000", "Training images held out for validation (a fixed choice, the same for every seed).",
              0, 1e9),
      bool_key("data.flip", "false", "Augmentation: random horizontal flip (p = 1/2)."),
      int_key("data.max_shift", "0", "Augmentation: random shift of up to this many pixels, zero fill.", 0, 64),
      int_key("model.patch_size", "4", "Patch side p (must divide data.image_size): (size/p)² patch tokens.", 1, 4096),
      choice_key("model.pooling", "cls", "cls: a class token feeds the head; mean: the mean of the patch tokens.",
                 {"cls", "mean"}),
      float_key("model.drop_path", "0", "Stochastic depth: the last block's drop rate (linear in depth from 0).", 0,
                0.99),
      float_key("train.label_smoothing", "0", "Label smoothing ε of the training loss.", 0, 0.99),
      int_key("eval.test_batches", "0", "Batches of the official test set for the final number (0: all of it).", 0, 1e9),
  };
}

models::VitConfig vit_model_config(const Config& c) {
  models::VitConfig m;
  static_cast<nn::BlockConfig&>(m) = block_config(c);
  m.image_height = m.image_width = c.get_int("data.image_size");
  m.channels = 1;
  m.patch_size = c.get_int("model.patch_size");
  m.n_layers = c.get_int("model.n_layers");
  m.n_classes = data::kFashionMnistClasses;
  m.pooling = models::parse_pooling(c.get_string("model.pooling"));
  m.drop_path = c.get_float("model.drop_path");
  m.label_smoothing = c.get_float("train.label_smoothing");
  return m;
}

// b = -ln n with n the tokens every query attends to (bidirectional): the patches and the class
// token.
void VitTask::resolve(Config& c) const {
  const int64_t size = c.get_int("data.image_size"), p = c.get_int("model.patch_size");
  if (size % p != 0)
    throw ConfigError(fmt::format("config key 'model.patch_size': {} does not divide data.image_size = {}", p, size));
  const int64_t n = (size / p) * (size / p) + (c.get_string("model.pooling") == "cls" ? 1 : 0);
  if (c.is_auto("attention.sigmoid_bias"))
    c.resolve("attention.sigmoid_bias", fmt::format("{:.17g}", -std::log(static_cast<double>(n))));
  check_transformer_keys(c);
}

void VitTask::prepare(const Config& c, const std::string&, Device device) {
  const std::string dir = c.get_string("data.image_dir");
  data::ImageSplits splits;
  try {
    splits = data::load_image_splits(dir, c.get_int("data.val_size"));
  } catch (const data::DataFileError& e) {
    throw ConfigError(std::string("config key 'data.image_dir': ") + e.what());
  } catch (const std::invalid_argument& e) {
    throw ConfigError(std::string("config key 'data.val_size': ") + e.what());
  }
  if (splits.train.rows != c.get_int("data.image_size") || splits.train.cols != c.get_int("data.image_size"))
    throw ConfigError(fmt::format("config key 'data.image_size': {} but the images in '{}' are {}×{}",
                                  c.get_int("data.image_size"), dir, splits.train.rows, splits.train.cols));
  batch_ = c.get_int("train.batch_size");
  data::ImageTransform train_tf;
  train_tf.flip = c.get_bool("data.flip");
  train_tf.max_shift = static_cast<int>(c.get_int("data.max_shift"));
  batcher_ = std::make_unique<data::ImageBatcher>(std::make_shared<const data::ImageDataset>(std::move(splits.train)),
                                                  batch_, c.get_int("run.seed"), train_tf);
  val_ = std::make_unique<data::ImageEvalBatcher>(std::make_shared<const data::ImageDataset>(std::move(splits.val)), batch_);
  test_ = std::make_unique<data::ImageEvalBatcher>(std::make_shared<const data::ImageDataset>(std::move(splits.test)), batch_);
  const int64_t all = val_->num_batches();
  val_batches_ = c.get_int("eval.batches") > 0 ? std::min(all, c.get_int("eval.batches")) : all;
  test_batches_ = c.get_int("eval.test_batches");
  if (val_batches_ == 0) throw ConfigError("config key 'data.val_size': 0 leaves no validation images");
  model_ = std::make_unique<models::VisionTransformer>(vit_model_config(c), c.get_int("run.seed"));
  place_model(*model_, c);
  device_ = device;
}

// (The trainer refuses a batch the ranks cannot share equally.)
void VitTask::set_shard(Shard shard) { shard_ = std::move(shard); }

// Equal rows per rank: the mean over the ranks of their means is the batch's mean.
Tensor VitTask::next_train_loss() {
  const auto [begin, end] = shard_.rows(batch_);
  data::ImageBatch b = batcher_->batch_at(batcher_->position(), begin, end);
  batcher_->set_position(batcher_->position() + 1);
  return model_->loss(b.x.to(device_), b.y.to(device_));
}

std::pair<double, double> VitTask::loss_and_accuracy(const data::ImageEvalBatcher& batches, int64_t max_batches) {
  const int64_t n = max_batches > 0 ? std::min(max_batches, batches.num_batches()) : batches.num_batches();
  double loss_sum = 0, correct = 0, count = 0;
  for (int64_t i = 0; i < n; ++i) {
    data::ImageBatch b = batches.batch_at(i);
    if (shard_.world > 1) {
      const auto [begin, end] = shard_.rows(b.y.size(0));
      if (begin == end) continue;
      b = {slice(b.x, 0, begin, end), slice(b.y, 0, begin, end)};
    }
    Tensor logits = model_->forward(b.x.to(device_));
    if (logits.dtype() == DType::BF16) logits = cast(logits, DType::F32);
    const int64_t B = logits.size(0), K = logits.size(1);
    loss_sum += cross_entropy(logits, b.y.to(device_)).item() * static_cast<double>(B);
    std::vector<double> l = logits.to_vector(), y = b.y.to_vector();
    for (int64_t r = 0; r < B; ++r) {
      int64_t best = 0;
      for (int64_t k = 1; k < K; ++k)
        if (l[r * K + k] > l[r * K + best]) best = k;
      correct += best == static_cast<int64_t>(y[r]);
    }
    count += static_cast<double>(B);
  }
  std::vector<double> sums{loss_sum, correct, count};
  shard_.sum(sums);
  return {sums[0] / sums[2], sums[1] / sums[2]};
}

nlohmann::json VitTask::evaluate() {
  auto [loss, acc] = loss_and_accuracy(*val_, val_batches_);
  return {{"val_loss", loss}, {"val_acc", acc}};
}

std::string VitTask::describe(const nlohmann::json& m) const {
  return fmt::format("val_loss {:.4f}, val_acc {:.2f}%", m["val_loss"].get<double>(), 100 * m["val_acc"].get<double>());
}

nlohmann::json VitTask::final_metrics() {
  NoGradGuard no_grad;
  const bool was_training = model_->training();
  model_->set_training(false);
  auto [loss, acc] = loss_and_accuracy(*test_, test_batches_);
  model_->set_training(was_training);
  return {{"test_loss", loss}, {"test_acc", acc}};
}

std::vector<Column> VitTask::compare_columns() const {
  return {{"final_val_loss", "final val loss", "{:.4f}"},
          {"best_val_loss", "best val loss", "{:.4f}"},
          {"final_val_acc", "val acc", "{:.4f}"},
          {"test_acc", "test acc", "{:.4f}"},
          {"images_per_s", "images/s", "{:.0f}"}};
}

}  // namespace attn::tasks
