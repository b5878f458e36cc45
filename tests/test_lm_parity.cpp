// Parity with PyTorch for the whole DecoderLM (src/models/lm): a 2-layer LM in f64 for every
// combination of attention variant {softmax, sigmoid, softmax1} x position {rope, alibi, learned}
// x norm placement {pre, post, hybrid} x QK-norm {off, on} x LayerScale {off, on} (108 models)
// and a few of the other variants and forms (sink, clipped_softmax, gated; sigmoid with a
// learnable per-head bias and with the per-row bias −ln n_i),
// against an independent torch implementation of the same model (tests/lm_parity_reference.py,
// Debian's python3-torch) built from our parameters by their dotted names.
//
// Per model it compares the logits, the mean cross-entropy, the gradient of every parameter (by
// name; torch also checks that the set of names, their shapes and weight-decay flags are the
// ones the model should have), and the loss before each of 5 AdamW steps (attn::AdamW here,
// torch.optim.AdamW there: lr 1e-2, betas (0.9, 0.95), weight decay 0.1 on flagged params only).
//
// Sizes: vocab 11, d_model 16, 2 heads, seq_len 7, batch 2, GELU MLP, LayerNorm, tied head.
// So that the other paths are covered too, a deterministic spread of the combos (see
// `make_combos`) switches to RMSNorm (22 models), SwiGLU (15), an untied head (12) and RMS
// QK-norm (12 of the 54 with QK-norm on); each of these appears with every variant, position
// and placement and both LayerScale settings.
//
// All 108 models go to ONE python invocation (one JSON in, one out; torch starts once), made
// lazily by the first test that needs it and shared by the others; each combo is its own test.
// The machinery (seeded weights, the reference run, the comparisons) is tests/parity_util.h's.
//
// Env (set by ctest): ATTNLAB_TORCH_PYTHON (default /usr/bin/python3), ATTNLAB_TEST_DIR (the
// directory holding the script; default: this file's directory).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "parity_util.h"
#include "test_util.h"
#include "torch_ref.h"
#include "autograd/node.h"
#include "models/lm/lm.h"
#include "optim/adamw.h"
#include "tensor/tensor.h"

namespace parity = attn::testing::parity;
using json = nlohmann::json;
using namespace attn;
using nn::MlpKind;
using nn::NormKind;
using nn::NormPlacement;
using nn::PositionKind;

namespace {

struct Sizes {
  int64_t V, D, H, layers, T, B;
};
constexpr Sizes kCpuSizes{11, 16, 2, 2, 7, 2};
constexpr int kSteps = 5;
constexpr AdamWConfig kAdamW{
    .lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
// LayerScale's default init (1e-4) would scale every attention and MLP branch, and with it any
// error inside the branches and their parameters' gradients, down by 1e-4: a wrong branch could
// then hide under the tolerance. At 0.5 the branches weigh as much as the residual stream.
constexpr double kLayerScaleInit = 0.5;

// Tolerance: both sides compute in f64, so the only differences are rounding and summation order
// (blocked GEMM vs. BLAS, the fused online-softmax attention vs. the explicit one, fused vs. torch
// cross-entropy, libm vs. torch's exp/tanh/pow). Those are a few ulps per op, amplified by the
// modest conditioning of this 2-layer net: ~1e-15..1e-14 relative in practice (see the summary
// lines). The 5 AdamW steps keep that: Adam's update m̂/(√v̂ + ε) has the relative error of the
// gradients, and a parameter whose gradient is ~0 (rounding noise, e.g. the key bias under
// softmax without RoPE or QK-norm, to which the loss is invariant) barely moves the loss. A mixed
// bound |ours − torch| ≤ atol + rtol·|torch| with rtol = 1e-9, atol = 1e-10 (kTol) leaves ≥ 4
// orders of magnitude of headroom, while any real difference (a wrong mask or slope, a missing +1
// in softmax_1, a missing norm, a wrong GELU constant, LayerScale on the wrong side of a norm,
// weight decay on the wrong params) is ≥ 1e-6.
constexpr parity::Tolerance kTol{.rtol = 1e-9, .atol = 1e-10};

const TensorOptions kF64{DType::F64, Device::cpu()};

// ---- the combos ---------------------------------------------------------------------------

struct Combo {
  int index = 0;
  AttentionVariant variant = AttentionVariant::Softmax;
  PositionKind position = PositionKind::Rope;
  NormPlacement placement = NormPlacement::Pre;
  bool qk_norm = false, layer_scale = false;
  // The less common paths, switched on for a spread of the combos.
  bool rms_norm = false, swiglu = false, untied = false, qk_rms = false;
  bool gated = false;  // gated attention over `variant`
  nn::SigmoidBiasMode bias_mode = nn::SigmoidBiasMode::Fixed;  // sigmoid's b
};

// The 54 combos of the three seed variants come first (index = (((v·3 + p)·3 + pl)·2 + qk)·2 + ls);
// the variants of the outlier papers follow, each in two settings.
constexpr int kSeedCombos = 54;

const char* position_name(PositionKind p) {
  switch (p) {
    case PositionKind::Rope: return "rope";
    case PositionKind::Alibi: return "alibi";
    case PositionKind::Learned: return "learned";
    default: return "?";
  }
}

const char* placement_name(NormPlacement p) {
  switch (p) {
    case NormPlacement::Pre: return "pre";
    case NormPlacement::Post: return "post";
    case NormPlacement::Hybrid: return "hybrid";
  }
  return "?";
}

std::string combo_name(const Combo& c) {
  std::string n = std::string(variant_name(c.variant)) + "_" + position_name(c.position) + "_" +
                  placement_name(c.placement) + (c.qk_norm ? "_qknorm" : "_noqk") +
                  (c.layer_scale ? "_ls" : "_nols");
  if (c.rms_norm) n += "_rmsnorm";
  if (c.swiglu) n += "_swiglu";
  if (c.untied) n += "_untied";
  if (c.qk_rms) n += "_qkrms";
  if (c.gated) n += "_gated";
  if (c.bias_mode == nn::SigmoidBiasMode::Learnable) n += "_learnable_bias";
  if (c.bias_mode == nn::SigmoidBiasMode::PerRow) n += "_per_row_bias";
  return n;
}

void PrintTo(const Combo& c, std::ostream* os) { *os << combo_name(c); }

std::vector<Combo> make_combos() {
  std::vector<Combo> out;
  for (AttentionVariant v :
       {AttentionVariant::Softmax, AttentionVariant::Sigmoid, AttentionVariant::Softmax1})
    for (PositionKind p : {PositionKind::Rope, PositionKind::Alibi, PositionKind::Learned})
      for (NormPlacement pl : {NormPlacement::Pre, NormPlacement::Post, NormPlacement::Hybrid})
        for (bool qk : {false, true})
          for (bool ls : {false, true}) {
            Combo c;
            c.index = static_cast<int>(out.size());
            c.variant = v;
            c.position = p;
            c.placement = pl;
            c.qk_norm = qk;
            c.layer_scale = ls;
            // Residues chosen so that each extra meets every variant, position and placement
            // and both LayerScale settings (index = (((v·3 + p)·3 + pl)·2 + qk)·2 + ls).
            c.rms_norm = c.index % 5 == 1;
            c.swiglu = c.index % 7 == 3;
            c.untied = c.index % 9 == 4;
            c.qk_rms = qk && c.index % 5 == 2;
            out.push_back(c);
          }
  // sink, clipped_softmax, and the gate over softmax and over sigmoid: plain (RoPE, pre-norm),
  // and with ALiBi, hybrid norm, QK-norm and LayerScale.
  const std::pair<AttentionVariant, bool> extra[] = {{AttentionVariant::Sink, false},
                                                     {AttentionVariant::ClippedSoftmax, false},
                                                     {AttentionVariant::Softmax, true},
                                                     {AttentionVariant::Sigmoid, true}};
  for (auto [v, gated] : extra)
    for (bool rich : {false, true}) {
      Combo c;
      c.index = static_cast<int>(out.size());
      c.variant = v;
      c.gated = gated;
      c.position = rich ? PositionKind::Alibi : PositionKind::Rope;
      c.placement = rich ? NormPlacement::Hybrid : NormPlacement::Pre;
      c.qk_norm = c.layer_scale = rich;
      out.push_back(c);
    }
  // sigmoid's learnable and per-row biases, in the same two settings.
  for (nn::SigmoidBiasMode mode : {nn::SigmoidBiasMode::Learnable, nn::SigmoidBiasMode::PerRow})
    for (bool rich : {false, true}) {
      Combo c;
      c.index = static_cast<int>(out.size());
      c.variant = AttentionVariant::Sigmoid;
      c.bias_mode = mode;
      c.position = rich ? PositionKind::Alibi : PositionKind::Rope;
      c.placement = rich ? NormPlacement::Hybrid : NormPlacement::Pre;
      c.qk_norm = c.layer_scale = rich;
      out.push_back(c);
    }
  return out;
}

nn::ModelConfig make_config(const Combo& c, const Sizes& z) {
  nn::ModelConfig m;
  m.vocab_size = z.V;
  m.d_model = z.D;
  m.n_layers = z.layers;
  m.n_heads = z.H;
  m.max_seq_len = z.T;
  m.mlp = c.swiglu ? MlpKind::SwiGlu : MlpKind::Gelu;
  m.norm = c.rms_norm ? NormKind::Rms : NormKind::Layer;
  m.placement = c.placement;
  m.attention.position = c.position;
  m.attention.variant = c.variant;
  m.attention.causal = true;
  m.attention.sigmoid_bias = -std::log(static_cast<double>(z.T));
  m.attention.sigmoid_bias_mode = c.bias_mode;
  m.attention.qk_norm = c.qk_norm;
  m.attention.qk_norm_kind = c.qk_rms ? NormKind::Rms : NormKind::Layer;
  m.attention.layer_scale = c.layer_scale;
  m.attention.layer_scale_init = kLayerScaleInit;
  m.attention.gated = c.gated;
  // clipped_softmax: a γ and ζ that clip at both ends on these short rows (T = 9 keys at most).
  m.attention.clip_gamma = -0.05;
  m.attention.clip_zeta = 1.02;
  m.tied_head = !c.untied;
  m.dropout = 0.0;
  return m;
}

json config_json(const Combo& c, const nn::ModelConfig& m) {
  return json{{"vocab_size", m.vocab_size},
              {"d_model", m.d_model},
              {"n_layers", m.n_layers},
              {"n_heads", m.n_heads},
              {"seq_len", m.max_seq_len},
              {"variant", variant_name(c.variant)},
              {"position", position_name(c.position)},
              {"placement", placement_name(c.placement)},
              {"norm", c.rms_norm ? "rms" : "layer"},
              {"qk_norm", c.qk_norm},
              {"qk_norm_kind", c.qk_rms ? "rms" : "layer"},
              {"layer_scale", c.layer_scale},
              {"mlp", c.swiglu ? "swiglu" : "gelu"},
              {"tied_head", !c.untied},
              {"norm_eps", m.norm_eps},
              {"rope_base", m.attention.rope_base},
              {"gated", c.gated},
              {"clip_gamma", m.attention.clip_gamma},
              {"clip_zeta", m.attention.clip_zeta},
              {"sigmoid_bias_mode", c.bias_mode == nn::SigmoidBiasMode::Learnable ? "learnable"
                                    : c.bias_mode == nn::SigmoidBiasMode::PerRow  ? "per_row"
                                                                                 : "fixed"}};
}

// ---- one model, deterministically -----------------------------------------------------------

struct Built {
  std::unique_ptr<models::DecoderLM> model;
  Tensor ids, targets;  // [B, T] each
};

// The same model, weights and tokens every time it is called for a combo.
Built build(const Combo& c, const Sizes& z) {
  Built b;
  uint64_t seed = 1000 + static_cast<uint64_t>(c.index);
  b.model = std::make_unique<models::DecoderLM>(make_config(c, z), seed, DType::F64);
  Generator gen(seed * 7919);
  // Seeded weights of a useful scale (see parity::randomise): token embeddings N(0, 1), learned
  // positions N(0, 0.5), LayerScale N(0.5, 0.1) around kLayerScaleInit.
  parity::randomise(b.model->parameters(), gen, kLayerScaleInit,
                    {{"tok_emb.weight", 1.0}, {"pos_emb.weight", 0.5}});
  // A random token stream [B, T+1]: inputs are its first T tokens, targets the next ones.
  const int64_t B = z.B, T = z.T;
  std::vector<double> u = uniform({B * (T + 1)}, gen, kF64, 0.0, static_cast<double>(z.V)).to_vector();
  std::vector<double> ids, tgt;
  for (int64_t bi = 0; bi < B; ++bi)
    for (int64_t t = 0; t < T; ++t) {
      auto tok = [&](int64_t k) { return std::min(std::floor(u[bi * (T + 1) + k]), static_cast<double>(z.V - 1)); };
      ids.push_back(tok(t));
      tgt.push_back(tok(t + 1));
    }
  b.ids = from_vector(ids, {B, T}, {DType::I64, Device::cpu()});
  b.targets = from_vector(tgt, {B, T}, {DType::I64, Device::cpu()});
  return b;
}

// ---- the shared torch reference ---------------------------------------------------------------

// Runs the torch script once over `combos` built at sizes z, torch computing in f64 on `device`
// (cpu, or cuda with the GPU machine's PyTorch).
parity::Reference compute_reference(const std::vector<Combo>& combos, const Sizes& z,
                                    const std::string& device) {
  return parity::run_reference("lm_parity_reference.py", "attnlab_lm_parity", [&] {
    json in{{"adamw", parity::adamw_json(kAdamW, kSteps)},
            {"device", device},
            {"models", json::array()}};
    for (const Combo& c : combos) {
      Built b = build(c, z);
      json m = parity::model_json(combo_name(c), config_json(c, b.model->config),
                                  b.model->parameters());
      m["ids"] = parity::to_json(b.ids);
      m["targets"] = parity::to_json(b.targets);
      in["models"].push_back(std::move(m));
    }
    return in;
  });
}

const parity::Reference& reference() {
  // Once, by the first test to ask.
  static const parity::Reference ref = compute_reference(make_combos(), kCpuSizes, "cpu");
  return ref;
}

using parity::from_json;
using parity::RefTensor;

parity::Worst g_worst;  // over every test of the suite, printed at its end

// ---- the parameterised test ---------------------------------------------------------------

class LmParity : public ::testing::TestWithParam<Combo> {
 public:
  static void TearDownTestSuite() { g_worst.print("all models", kSteps); }
};

TEST_P(LmParity, LogitsLossGradsAndAdamWStepsMatchTorch) {
  const Combo& c = GetParam();
  const std::string name = combo_name(c);
  const parity::Reference& ref = reference();
  ATTNLAB_ASSERT_PARITY_RESULT(ref, name);
  Built b = build(c, kCpuSizes);
  models::DecoderLM& model = *b.model;
  parity::check_adamw_steps(
      name, ref, ref.models.at(name), model.parameters(), kAdamW, kSteps, kTol, g_worst,
      [&] { return model.loss(b.ids, b.targets); }, [&] { return model.forward(b.ids); });
}

INSTANTIATE_TEST_SUITE_P(AllCombos, LmParity, ::testing::ValuesIn(make_combos()),
                         [](const ::testing::TestParamInfo<Combo>& info) { return combo_name(info.param); });

// ---- f32 and bf16 models: on the CPU in f32, on CUDA in f32 and bf16 ---------------------------
//
// The same models at a size the flash kernels take (d 128 with 2 heads: head dim 64; T 70, not a
// multiple of the 64-wide tiles; vocab 37), one combo per variant x position (placement, QK-norm
// and LayerScale rotating; the extras as make_combos spreads them), with the f64 weights rounded
// into an f32 model, against torch in f64:
//   Cpu/*   the CPU in f32 (the main job's path; the 108 models above are f64) vs Debian's torch;
//   Cuda/*  CUDA in f32 and in bf16 mixed precision (f32 master weights on the device, bf16
//           compute dtype) vs torch on the GPU machine's own PyTorch, on its GPU
//           (ATTNLAB_TORCH_PYTHON; scripts/gpu-check.sh sets python3). ctest runs them as
//           test_gpu_lm_parity (label gpu, --gtest_filter=Cuda/*); they skip without a device.
//
// Tolerances are normwise per tensor, with a floor at the RMS of all tensors of its kind:
//     ‖ours − torch‖₂ ≤ rtol·(‖torch‖₂ + √n·rms_all)
// A gradient that is ~0 in truth (the key bias under softmax, to which the loss is invariant) is
// rounding noise on both sides and would fail any purely relative bound; the floor admits noise
// at rtol of the typical gradient, no more.
//   f32   rtol 1e-4. f32 arithmetic lands near 1e-6 here (Eigen, or cuBLASLt computing in f32 with
//         no TF32; on CUDA the f32 attention is the composed op); 1e-4 leaves ~100x of headroom.
//   bf16  rtol 8e-2. Every stored activation is rounded to 8 bits (2^-9 ≈ 2e-3 relative), the
//         flash kernels round P to bf16 for P·V and dS for dS·K, and a gradient passes through
//         some 30 such roundings. Measured for scale: torch itself, with these models' weights
//         cast to bf16 and every op in bf16 (CPU, torch 1.13, 2026-11-22), is off its f64 self by
//         0.7–1.0% in the logits and up to 3.0% in a gradient (norm weights, wk), 7e-4 at most
//         in the loss. A wrong mask, slope or variant is an O(1) error, far above the bound.
// The loss before each AdamW step (lr 1e-2 on weights whose loss starts near 100: steep): f32,
// all 5 steps, relative 1e-4 (measured on the CPU: 2e-7 to 1.8e-5). bf16, the first two only,
// relative 2e-2: torch's own bf16 run drifts from f64 by up to 7e-3 after one step but 15% after
// four (Adam's normalised steps carry the rounding forward on a chaotic trajectory), so later
// steps cannot tell a bug from bf16.
constexpr Sizes kWideSizes{37, 128, 2, 2, 70, 2};

std::vector<Combo> wide_combos() {
  std::vector<Combo> out;
  for (const Combo& c : make_combos()) {
    if (c.index >= kSeedCombos) continue;  // the wide models are the seed variants'
    // index = (((v·3 + p)·3 + placement)·2 + qk)·2 + ls
    const int v = c.index / 36, p = c.index / 12 % 3, pl = c.index / 4 % 3, qk = c.index / 2 % 2, ls = c.index % 2;
    if (pl == (v + p) % 3 && qk == (v + p) % 2 && ls == (v + p + 1) % 2) out.push_back(c);
  }
  return out;
}

// torch's results at kWideSizes, computed on `device` (once per process and device).
const parity::Reference& wide_reference(Device device) {
  if (device.is_cpu()) {
    static const parity::Reference cpu = compute_reference(wide_combos(), kWideSizes, "cpu");
    return cpu;
  }
#if defined(ATTNLAB_CUDA_EMULATION)
  // The emulated device (emu_test_gpu_lm_parity) has no CUDA torch beside it; torch's f64 is the
  // same reference on its CPU.
  static const parity::Reference cuda = compute_reference(wide_combos(), kWideSizes, "cpu");
#else
  static const parity::Reference cuda = compute_reference(wide_combos(), kWideSizes, "cuda");
#endif
  return cuda;
}

struct WideCase {
  Combo combo;
  Device device;
  DType compute;  // f32, or bf16 (mixed precision, CUDA only)
};

std::string wide_case_name(const WideCase& c) { return combo_name(c.combo) + "_" + dtype_name(c.compute); }
void PrintTo(const WideCase& c, std::ostream* os) { *os << c.device.str() << " " << wide_case_name(c); }

std::vector<WideCase> wide_cases(Device device) {
  std::vector<WideCase> out;
  for (const Combo& c : wide_combos()) {
    out.push_back({c, device, DType::F32});
    if (device.is_cuda()) out.push_back({c, device, DType::BF16});
  }
  return out;
}

// An f32 copy of the f64 model on `device` (weights rounded once), computing in `compute`.
std::unique_ptr<models::DecoderLM> f32_copy(const models::DecoderLM& m64, Device device, DType compute) {
  auto m = std::make_unique<models::DecoderLM>(m64.config, 1, DType::F32);
  ParamList src = m64.parameters(), dst = m->parameters();
  for (size_t i = 0; i < src.size(); ++i) {
    Tensor v = src[i].value.to(DType::F32);
    copy_bytes(dst[i].value.raw_data(), Device::cpu(), v.raw_data(), Device::cpu(), v.nbytes());
  }
  if (device.is_cuda()) m->to(device);
  if (compute != DType::F32) m->set_compute_dtype(compute);
  return m;
}

// ‖ours − ref‖ / (‖ref‖ + √n·floor_rms), reported; fails above rtol.
double normwise(const std::string& what, const Tensor& ours, const RefTensor& ref, double rtol, double floor_rms) {
  if (!ours.defined()) {
    ADD_FAILURE() << what << ": our tensor is undefined (no gradient?)";
    return INFINITY;
  }
  if (ours.shape() != ref.shape) {
    ADD_FAILURE() << what << ": shape " << shape_str(ours.shape()) << " vs torch " << shape_str(ref.shape);
    return INFINITY;
  }
  std::vector<double> a = ours.to_vector();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (a[i] - ref.data[i]) * (a[i] - ref.data[i]);
    norm += ref.data[i] * ref.data[i];
  }
  const double scale = std::sqrt(norm) + std::sqrt(static_cast<double>(a.size())) * floor_rms;
  const double rel = std::isfinite(diff) ? std::sqrt(diff) / scale : INFINITY;
  if (!(rel <= rtol)) ADD_FAILURE() << what << ": normwise error " << rel << " > " << rtol;
  return rel;
}

double rms_of(const std::vector<RefTensor>& ts) {
  double ss = 0, n = 0;
  for (const RefTensor& t : ts)
    for (double v : t.data) {
      ss += v * v;
      n += 1;
    }
  return n > 0 ? std::sqrt(ss / n) : 0.0;
}

class WideLmParity : public ::testing::TestWithParam<WideCase> {};

TEST_P(WideLmParity, LogitsLossGradsAndAdamWStepsMatchTorch) {
  const Device dev = GetParam().device;
  if (dev.is_cuda() && !cuda_available_for_tests()) GTEST_SKIP() << "no CUDA device visible: GPU test skipped";
  const Combo& c = GetParam().combo;
  const DType compute = GetParam().compute;
  const bool f32 = compute == DType::F32;
  const double rtol = f32 ? 1e-4 : 8e-2, loss_rtol = f32 ? 1e-4 : 2e-2;
  const size_t compared_losses = f32 ? kSteps : 2;
  const std::string name = combo_name(c);
  const parity::Reference& ref = wide_reference(dev);
  ATTNLAB_ASSERT_PARITY_RESULT(ref, name);
  const json& r = ref.models.at(name);

  Built b = build(c, kWideSizes);
  std::unique_ptr<models::DecoderLM> model = f32_copy(*b.model, dev, compute);
  Tensor ids = b.ids.to(dev), targets = b.targets.to(dev);
  ParamList params = model->parameters();
  AdamW opt(params, kAdamW);

  std::vector<RefTensor> ref_grads;
  for (const Param& p : params) {
    ASSERT_TRUE(r.at("grads").contains(p.name)) << "torch has no gradient for " << p.name;
    ref_grads.push_back(from_json(r.at("grads").at(p.name)));
  }
  const double grad_rms = rms_of(ref_grads);

  std::ostringstream summary;
  summary << std::setprecision(2) << "[ parity   ] " << dev.str() << " " << name << " " << dtype_name(compute)
          << " vs torch " << ref.torch_version << " (f64): normwise";
  std::vector<double> losses;
  for (int step = 0; step < kSteps; ++step) {
    opt.zero_grad();
    Tensor loss = model->loss(ids, targets);
    ASSERT_EQ(loss.dtype(), DType::F32) << "the loss is computed in f32 at any compute dtype";
    losses.push_back(loss.item());
    loss.backward();
    if (step == 0) {
      Tensor logits;
      {
        NoGradGuard no_grad;
        logits = model->forward(ids);
      }
      EXPECT_EQ(logits.dtype(), compute);
      double el = normwise("logits", logits, from_json(r.at("logits")), rtol, 0.0);
      double worst = 0;
      std::string worst_at;
      for (size_t i = 0; i < params.size(); ++i) {
        const Param& p = params[i];
        EXPECT_EQ(p.value.grad().dtype(), DType::F32) << p.name << ": the master's gradient is f32";
        double e = normwise("grad " + p.name, p.value.grad(), ref_grads[i], rtol, grad_rms);
        if (e >= worst) {
          worst = e;
          worst_at = p.name;
        }
      }
      summary << " logits " << el << ", worst grad " << worst << " (" << worst_at << ")";
    }
    opt.step(kAdamW.lr);
  }
  std::vector<double> ref_losses = r.at("losses").get<std::vector<double>>();
  ASSERT_EQ(ref_losses.size(), losses.size());
  double worst_loss = 0;
  for (size_t i = 0; i < losses.size(); ++i) {
    EXPECT_TRUE(std::isfinite(losses[i])) << "loss before AdamW step " << i + 1;
    if (i >= compared_losses) continue;
    const double rel = std::abs(losses[i] - ref_losses[i]) / std::abs(ref_losses[i]);
    worst_loss = std::max(worst_loss, rel);
    EXPECT_LE(rel, loss_rtol) << "loss before AdamW step " << i + 1 << ": ours " << losses[i] << ", torch "
                              << ref_losses[i];
  }
  summary << ", losses before " << compared_losses << " AdamW steps " << worst_loss << " relative (torch "
          << std::setprecision(6) << ref_losses.front() << " -> " << ref_losses.back() << ")";
  std::cout << summary.str() << "\n";
}

INSTANTIATE_TEST_SUITE_P(Cpu, WideLmParity, ::testing::ValuesIn(wide_cases(Device::cpu())),
                         [](const auto& info) { return wide_case_name(info.param); });
INSTANTIATE_TEST_SUITE_P(Cuda, WideLmParity, ::testing::ValuesIn(wide_cases(Device::cuda(0))),
                         [](const auto& info) { return wide_case_name(info.param); });

}  // namespace

