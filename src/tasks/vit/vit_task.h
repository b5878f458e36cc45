// The Vision Transformer on an IDX image set (task: vit): Fashion-MNIST from Debian's
// dataset-fashion-mnist by default (MNIST or any IDX set the user points at works too); a
// validation split carved from train for the curve, the official test set for the final number;
// cross-entropy (optional label smoothing) and top-1 accuracy.
#pragma once
#include <memory>
#include <vector>

#include "config/config.h"
#include "data/image_data.h"
#include "models/vit/vit.h"
#include "tasks/task.h"

namespace attn::tasks {

std::vector<config::KeySpec> vit_keys();
models::VitConfig vit_model_config(const config::Config& c);

class VitTask : public Task {
 public:
  void resolve(config::Config& c) const override;
  void prepare(const config::Config& c, const std::string& saved_run_dir, Device device) override;
  nn::Module& model() override { return *model_; }
  Generator& dropout_generator() override { return model_->dropout_gen; }
  std::vector<std::pair<std::string, std::string>> artifacts() const override { return {}; }

  Tensor next_train_loss() override;
  uint64_t position() const override { return batcher_->position(); }
  void set_position(uint64_t p) override { batcher_->set_position(p); }
  std::pair<int64_t, std::string> items_per_micro_batch() const override { return {batch_, "images"}; }
  // Rows [r·B/W, (r+1)·B/W) of every training batch (B divisible by W) and of every evaluation
  // batch (the last one may be smaller: near-equal parts).
  void set_shard(Shard shard) override;

  nlohmann::json evaluate() override;  // on the validation split
  std::string describe(const nlohmann::json& metrics) const override;
  int64_t validation_batches() const override { return val_batches_; }
  nlohmann::json final_metrics() override;  // test_loss, test_acc on the official test set
  std::vector<Column> compare_columns() const override;

 private:
  // Mean cross-entropy (no smoothing) and top-1 accuracy over the first `max_batches` batches
  // (0: all), each batch weighted by its size; this rank's rows of each, summed over the ranks.
  std::pair<double, double> loss_and_accuracy(const data::ImageEvalBatcher& b, int64_t max_batches);

  std::unique_ptr<models::VisionTransformer> model_;
  std::unique_ptr<data::ImageBatcher> batcher_;
  std::unique_ptr<data::ImageEvalBatcher> val_, test_;
  Device device_ = Device::cpu();
  int64_t batch_ = 0, val_batches_ = 0, test_batches_ = 0;
  Shard shard_;
};

}  // namespace attn::tasks
