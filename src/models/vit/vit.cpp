#include "models/vit/vit.h"

#include <cmath>

#include "nn/positional.h"

namespace attn::models {

using namespace attn::nn;

const char* pooling_name(VitConfig::Pooling p) { return p == VitConfig::Pooling::Cls ? "cls" : "mean"; }

VitConfig::Pooling parse_pooling(const std::string& name) {
  if (name == "cls") return VitConfig::Pooling::Cls;
  if (name == "mean") return VitConfig::Pooling::Mean;
  throw std::invalid_argument("unknown pooling '" + name + "' (expected cls or mean)");
}

Tensor patchify(const Tensor& images, int64_t p) {
  if (images.dim() != 4 || p <= 0 || images.size(2) % p != 0 || images.size(3) % p != 0)
    throw std::invalid_argument("patchify: need images [B, C, H, W] with H and W divisible by the patch size " +
                                std::to_string(p) + ", got " + shape_str(images.shape()));
  const int64_t B = images.size(0), C = images.size(1), R = images.size(2) / p, Cc = images.size(3) / p;
  // [B, C, R, p, Cc, p] -> [B, R, Cc, C, p, p]: pixel (c, r·p + i, q·p + j) goes to patch (r, q),
  // entry (c, i, j).
  Tensor t = permute(reshape(images, {B, C, R, p, Cc, p}), {0, 2, 4, 1, 3, 5});
  return reshape(t, {B, R * Cc, C * p * p});
}

namespace {

void check_config(const VitConfig& c) {
  auto positive = [](int64_t v, const char* key) {
    if (v <= 0) throw std::invalid_argument(std::string(key) + " must be positive, got " + std::to_string(v));
  };
  positive(c.image_height, "model.image_height");
  positive(c.image_width, "model.image_width");
  positive(c.channels, "model.channels");
  positive(c.patch_size, "model.patch_size");
  positive(c.n_layers, "model.n_layers");
  positive(c.n_classes, "model.n_classes");
  if (c.image_height % c.patch_size != 0 || c.image_width % c.patch_size != 0)
    throw std::invalid_argument("model.image size " + std::to_string(c.image_height) + "x" +
                                std::to_string(c.image_width) + " is not divisible by model.patch_size " +
                                std::to_string(c.patch_size));
  if (!(c.drop_path >= 0 && c.drop_path < 1))
    throw std::invalid_argument("model.drop_path must be in [0, 1), got " + std::to_string(c.drop_path));
  if (!(c.label_smoothing >= 0 && c.label_smoothing <= 1))
    throw std::invalid_argument("model.label_smoothing must be in [0, 1], got " + std::to_string(c.label_smoothing));
}

// The config the blocks see: bidirectional, on the patch grid (after the class token, if any).
VitConfig resolved(VitConfig c) {
  check_config(c);
  c.attention.causal = false;
  c.attention.grid = {c.image_height / c.patch_size, c.image_width / c.patch_size,
                      c.pooling == VitConfig::Pooling::Cls ? 1 : 0};
  return c;
}

}  // namespace

VisionTransformer::VisionTransformer(const VitConfig& cfg, uint64_t seed, DType dt)
    : config(resolved(cfg)), dropout_gen(seed ^ 0xd809u) {
  const VitConfig& c = config;
  const int64_t D = c.d_model, T = tokens(), L = c.n_layers;
  Generator gen(seed);
  patch_embed = &register_module(
      "patch_embed", std::make_unique<Linear>(c.channels * c.patch_size * c.patch_size, D, true, c.linear_init(c.init_std), gen, dt));
  auto normal_param = [&](const std::string& name, Shape shape) {
    Tensor t = Tensor::empty(shape, dt);
    init_normal(t, c.init_std, gen);
    return register_param(name, t, false);
  };
  if (prefix() > 0) cls_token = normal_param("cls_token", {D});
  if (c.attention.position == PositionKind::Learned) pos_emb = normal_param("pos_emb", {T, D});
  if (c.attention.position == PositionKind::Sinusoidal) sinusoidal = sinusoidal_table_2d(c.attention.grid, D, dt);
  const double out_std = c.scaled_residual_init ? c.init_std / std::sqrt(2.0 * L) : c.init_std;
  for (int64_t i = 0; i < L; ++i) {
    auto* b = &register_module("blocks." + std::to_string(i), std::make_unique<TransformerBlock>(c, out_std, gen, dt));
    b->dropout_gen = &dropout_gen;
    b->drop_path_rate = L > 1 ? c.drop_path * static_cast<double>(i) / static_cast<double>(L - 1) : 0.0;
    blocks.push_back(b);
  }
  if (c.placement != NormPlacement::Post)
    final_norm = &register_module("final_norm", std::make_unique<Norm>(c.norm, D, c.norm_eps, dt));
  head = &register_module("head", std::make_unique<Linear>(D, c.n_classes, true, c.linear_init(c.init_std), gen, dt));
}

Tensor VisionTransformer::embed(const Tensor& images) const {
  const VitConfig& c = config;
  if (images.dim() != 4 || images.size(1) != c.channels || images.size(2) != c.image_height ||
      images.size(3) != c.image_width)
    throw std::invalid_argument("VisionTransformer: need images [B, " + std::to_string(c.channels) + ", " +
                                std::to_string(c.image_height) + ", " + std::to_string(c.image_width) + "], got " +
                                shape_str(images.shape()));
  const DType param_dt = patch_embed->weight.dtype();
  Tensor x = working(images.dtype() == param_dt ? images : cast(images, param_dt));
  x = patch_embed->forward(patchify(x, c.patch_size));  // [B, R·C, D]
  if (cls_token.defined()) {
    // The class token, broadcast over the batch by adding it to zeros [B, 1, D].
    Tensor cls = add(zeros({x.size(0), 1, c.d_model}, {x.dtype(), x.device()}), working(cls_token));
    x = concat({cls, x}, 1);
  }
  if (pos_emb.defined()) x = add(x, working(pos_emb));
  if (sinusoidal.defined()) x = add(x, working(sinusoidal));
  return x;
}

Tensor VisionTransformer::forward(const Tensor& images) const {
  Tensor x = embed(images);
  for (const TransformerBlock* b : blocks) x = b->forward(x);
  if (final_norm) x = final_norm->forward(x);
  // Pool after the norm, for both poolings (timm norms after mean pooling instead, fc_norm).
  x = cls_token.defined() ? reshape(slice(x, 1, 0, 1), {x.size(0), config.d_model})
                          : mean(x, 1);
  return head->forward(x);
}

Tensor VisionTransformer::loss(const Tensor& images, const Tensor& labels) const {
  Tensor logits = forward(images);
  if (logits.dtype() == DType::BF16) logits = cast(logits, DType::F32);
  Tensor ce = cross_entropy(logits, reshape(labels, {-1}));
  const double eps = config.label_smoothing;
  if (eps == 0) return ce;
  // Smoothing targets (1 − ε)·onehot + ε/K: the loss is (1 − ε)·CE + ε·mean over the batch and
  // the K classes of −log softmax.
  return add(mul(ce, 1.0 - eps), mul(mean(log_softmax(logits)), -eps));
}

void VisionTransformer::to(Device device) {
  Module::to(device);  // the blocks' SelfAttention::to moves their 2-D ALiBi biases
  if (sinusoidal.defined() && !(sinusoidal.device() == device)) sinusoidal = sinusoidal.to(device);
}

}  // namespace attn::models
