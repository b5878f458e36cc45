// CTC loss over the extended label l' = (∅, l_1, ∅, l_2, …, l_L, ∅), S = 2L + 1 states, in
// log space; lp_t(c) = log_probs[b, t, c], T = input_length_b, p = p(l | x).
//   α_0(0) = lp_0(∅), α_0(1) = lp_0(l_1), α_0(s > 1) = −∞
//   α_t(s) = lp_t(l'_s) + lse(α_{t−1}(s), α_{t−1}(s−1), [α_{t−1}(s−2)])
//   β_{T−1}(S−1) = lp_{T−1}(∅), β_{T−1}(S−2) = lp_{T−1}(l_L), other states −∞
//   β_t(s) = lp_t(l'_s) + lse(β_{t+1}(s), β_{t+1}(s+1), [β_{t+1}(s+2)])
//   [ ]: the skip s−2 → s exists only into a label unlike the one before it
//        (l'_s ≠ ∅, l'_s ≠ l'_{s−2}): a repeated label needs a blank between
//   log p = lse(α_{T−1}(S−1), α_{T−1}(S−2)),  nll = −log p
// Both α_t(s) and β_t(s) include lp_t(l'_s), so α_t(s) + β_t(s) − lp_t(l'_s) is the log of the
// total probability of the alignments in state s at frame t. An alignment π has probability
// exp(Σ_t lp_t(π_t)), so ∂p/∂lp_t(c) is the probability of those with π_t = c, summed over the
// states of c:
//   ∂nll/∂lp_t(c) = −Σ_{s: l'_s = c} exp(α_t(s) + β_t(s) − lp_t(c) − log p)
// (minus the posterior occupancy γ_t(c), which sums to 1 over c). This is the true gradient with
// respect to log_probs; frames t ≥ T get 0. PyTorch's backward returns exp(lp) − γ, the gradient
// with respect to a log_softmax's input instead: the two agree once composed with log_softmax,
// whose backward maps g to g − softmax·Σ_c g (and Σ_c γ = 1).
#include <cmath>
#include <limits>
#include <memory>

#include "backend/cpu/parallel.h"
#include "ops/op_cuda.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace attn {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// The batch's labels, checked, with what the kernels need besides: where each sample's labels
// start, and each label's next occurrence in its sample (the gradient sums a label's states).
struct CtcBatch {
  int64_t B = 0, T = 0, C = 0, S = 1, blank = 0;  // S = 2·max L + 1
  std::vector<int64_t> input_len, target_len, offset, targets, next_same, first_same;
};

std::string at_sample(int64_t b) { return " (sample " + std::to_string(b) + ")"; }

CtcBatch ctc_batch(const Tensor& lp, const std::vector<int32_t>& targets,
                   const std::vector<int64_t>& target_lengths,
                   const std::vector<int64_t>& input_lengths, int64_t blank) {
  if (lp.dim() != 3 || lp.size(0) == 0 || lp.size(2) == 0)
    throw std::invalid_argument("ctc_loss: need log_probs [B, T, C] with B, C > 0, got " +
                                shape_str(lp.shape()));
  CtcBatch c;
  c.B = lp.size(0), c.T = lp.size(1), c.C = lp.size(2), c.blank = blank;
  if (blank < 0 || blank >= c.C)
    throw std::out_of_range("ctc_loss: blank " + std::to_string(blank) + " outside [0, " +
                            std::to_string(c.C) + ")");
  if (static_cast<int64_t>(target_lengths.size()) != c.B ||
      static_cast<int64_t>(input_lengths.size()) != c.B)
    throw std::invalid_argument("ctc_loss: log_probs " + shape_str(lp.shape()) + " needs " +
                                std::to_string(c.B) + " target and input lengths, got " +
                                std::to_string(target_lengths.size()) + " and " +
                                std::to_string(input_lengths.size()));
  c.input_len = input_lengths, c.target_len = target_lengths;
  int64_t total = 0, max_len = 0;
  for (int64_t b = 0; b < c.B; ++b) {
    if (input_lengths[b] < 0 || input_lengths[b] > c.T)
      throw std::out_of_range("ctc_loss: input length " + std::to_string(input_lengths[b]) +
                              " outside [0, T = " + std::to_string(c.T) + "]" + at_sample(b));
    if (target_lengths[b] < 0)
      throw std::out_of_range("ctc_loss: negative target length " +
                              std::to_string(target_lengths[b]) + at_sample(b));
    c.offset.push_back(total);
    total += target_lengths[b];
    max_len = std::max(max_len, target_lengths[b]);
  }
  if (total != static_cast<int64_t>(targets.size()))
    throw std::invalid_argument("ctc_loss: target lengths sum to " + std::to_string(total) +
                                " but " + std::to_string(targets.size()) + " targets were given");
  c.S = 2 * max_len + 1;
  c.targets.assign(targets.begin(), targets.end());
  c.next_same.assign(total, -1);
  c.first_same.assign(total, 1);
  std::vector<int64_t> last(c.C, -1);  // position of each label's latest occurrence in sample b
  for (int64_t b = 0; b < c.B; ++b) {
    for (int64_t j = 0; j < target_lengths[b]; ++j) {
      const int64_t k = c.offset[b] + j, y = c.targets[k];
      if (y < 0 || y >= c.C || y == blank)
        throw std::out_of_range("ctc_loss: label " + std::to_string(y) + " at position " +
                                std::to_string(j) + at_sample(b) + " outside [0, " +
                                std::to_string(c.C) + ") or equal to the blank " +
                                std::to_string(blank));
      if (last[y] >= 0) {
        c.next_same[c.offset[b] + last[y]] = j;
        c.first_same[k] = 0;
      }
      last[y] = j;
    }
    for (int64_t j = 0; j < target_lengths[b]; ++j) last[c.targets[c.offset[b] + j]] = -1;
  }
  return c;
}

// ---- CPU: one sample at a time, f64 -------------------------------------------------------

double log_add(double a, double b) {
  if (a == -kInf) return b;
  if (b == -kInf) return a;
  return std::max(a, b) + std::log1p(std::exp(-std::abs(a - b)));
}

// One sample's view: lp [T_b, C] rows, labels l [L].
template <class T>
struct Sample {
  const T* lp;
  const int64_t* l;
  int64_t Tb, L, C, blank;
  int64_t S() const { return 2 * L + 1; }
  int64_t label(int64_t s) const { return (s & 1) ? l[s >> 1] : blank; }
  double at(int64_t t, int64_t s) const { return static_cast<double>(lp[t * C + label(s)]); }
  // The skip s−2 → s: into a label that differs from the one before it.
  bool skip_into(int64_t s) const { return (s & 1) && s >= 3 && l[s >> 1] != l[(s >> 1) - 1]; }
};

// α [T_b, S] into a; returns log p (−∞ when no alignment exists, 0 for T_b = L = 0).
template <class T>
double ctc_alpha(const Sample<T>& x, std::vector<double>& a) {
  const int64_t S = x.S();
  if (x.Tb == 0) return x.L == 0 ? 0.0 : -kInf;
  a.assign(x.Tb * S, -kInf);
  a[0] = x.at(0, 0);
  if (S > 1) a[1] = x.at(0, 1);
  for (int64_t t = 1; t < x.Tb; ++t) {
    const double* prev = &a[(t - 1) * S];
    for (int64_t s = 0; s < S; ++s) {
      double v = prev[s];
      if (s >= 1) v = log_add(v, prev[s - 1]);
      if (x.skip_into(s)) v = log_add(v, prev[s - 2]);
      a[t * S + s] = v == -kInf ? -kInf : v + x.at(t, s);
    }
  }
  const double* last = &a[(x.Tb - 1) * S];
  return S > 1 ? log_add(last[S - 1], last[S - 2]) : last[0];
}

// β [T_b, S] into bt (T_b ≥ 1).
template <class T>
void ctc_beta(const Sample<T>& x, std::vector<double>& bt) {
  const int64_t S = x.S(), Tl = x.Tb - 1;
  bt.assign(x.Tb * S, -kInf);
  bt[Tl * S + S - 1] = x.at(Tl, S - 1);
  if (S > 1) bt[Tl * S + S - 2] = x.at(Tl, S - 2);
  for (int64_t t = Tl - 1; t >= 0; --t) {
    const double* next = &bt[(t + 1) * S];
    for (int64_t s = 0; s < S; ++s) {
      double v = next[s];
      if (s + 1 < S) v = log_add(v, next[s + 1]);
      if (s + 2 < S && x.skip_into(s + 2)) v = log_add(v, next[s + 2]);
      bt[t * S + s] = v == -kInf ? -kInf : v + x.at(t, s);
    }
  }
}

// grad [T, C] of the sample = w·∂nll/∂lp (the formula at the top); frames ≥ T_b stay 0.
template <class T>
void ctc_sample_grad(const Sample<T>& x, double log_p, double w, T* grad) {
  std::vector<double> a, bt, row(x.C);
  ctc_alpha(x, a);
  ctc_beta(x, bt);
  const int64_t S = x.S();
  for (int64_t t = 0; t < x.Tb; ++t) {
    std::fill(row.begin(), row.end(), 0.0);
    for (int64_t s = 0; s < S; ++s) {
      const double ab = a[t * S + s] + bt[t * S + s];
      if (ab != -kInf) row[x.label(s)] += std::exp(ab - x.at(t, s) - log_p);
    }
    for (int64_t c = 0; c < x.C; ++c) grad[t * x.C + c] = static_cast<T>(-w * row[c]);
  }
}

double reduce_nll(const std::vector<double>& nll, const CtcBatch& c, CtcReduction r) {
  double total = 0;
  for (int64_t b = 0; b < c.B; ++b)
    total += r == CtcReduction::Mean ? nll[b] / std::max<int64_t>(c.target_len[b], 1) : nll[b];
  return r == CtcReduction::Mean ? total / static_cast<double>(c.B) : total;
}

template <class T>
Sample<T> sample_of(const Tensor& lp, const CtcBatch& c, int64_t b) {
  return {lp.data<T>() + b * c.T * c.C,
          c.targets.data() + c.offset[b],
          c.input_len[b],
          c.target_len[b],
          c.C,
          c.blank};
}

Tensor ctc_loss_cpu(const Tensor& log_probs, std::shared_ptr<const CtcBatch> batch,
                    CtcReduction reduction, bool zero_infinity) {
  check_cpu(log_probs, "ctc_loss");
  const CtcBatch& c = *batch;
  std::vector<double> nll(c.B);
  Tensor out =
      Tensor::empty(reduction == CtcReduction::None ? Shape{c.B} : Shape{}, log_probs.dtype());
  dispatch_float(log_probs.dtype(), "ctc_loss", [&](auto tag) {
    using T = decltype(tag);
    cpu::parallel_for(c.B, 4 * c.T * c.S, [&](int64_t b) {
      std::vector<double> a;
      nll[b] = -ctc_alpha(sample_of<T>(log_probs, c, b), a);
    });
    std::vector<double> counted = nll;
    if (zero_infinity)
      for (double& v : counted) v = v == kInf ? 0.0 : v;
    T* po = out.data<T>();
    if (reduction == CtcReduction::None)
      for (int64_t b = 0; b < c.B; ++b) po[b] = static_cast<T>(counted[b]);
    else
      po[0] = static_cast<T>(reduce_nll(counted, c, reduction));
  });
  return autograd::record(
      OpId::CtcLoss, out, {log_probs},
      [xd = log_probs.detach(), batch, nll, reduction, zero_infinity](const Tensor& g) {
        const CtcBatch& c = *batch;
        std::vector<double> gv = g.to_vector();  // one element, or [B] for None
        Tensor dx = zeros(xd.shape(), {xd.dtype()});
        dispatch_float(xd.dtype(), "ctc_loss backward", [&](auto tag) {
          using T = decltype(tag);
          T* pd = dx.data<T>();
          cpu::parallel_for(c.B, 8 * c.T * c.S, [&](int64_t b) {
            Sample<T> x = sample_of<T>(xd, c, b);
            if (x.Tb == 0) return;
            double w = reduction == CtcReduction::None ? gv[b] : gv[0];
            if (reduction == CtcReduction::Mean)
              w /= static_cast<double>(c.B * std::max<int64_t>(c.target_len[b], 1));
            T* gb = pd + b * c.T * c.C;
            if (nll[b] == kInf) {  // no alignment: 0 under zero_infinity, else NaN (as PyTorch)
              if (!zero_infinity)
                std::fill(gb, gb + x.Tb * c.C, std::numeric_limits<T>::quiet_NaN());
              return;
            }
            ctc_sample_grad(x, -nll[b], w, gb);
          });
        });
        return std::vector<Tensor>{dx};
      });
}

// ---- CUDA: kernels/ctc.cuh through the launchers of backend/cuda/ops_cuda.h ----------------

cuda::CtcReduce cuda_reduction(CtcReduction r) {
  switch (r) {
    case CtcReduction::Mean:
      return cuda::CtcReduce::Mean;
    case CtcReduction::Sum:
      return cuda::CtcReduce::Sum;
    case CtcReduction::None:
      return cuda::CtcReduce::None;
  }
  return cuda::CtcReduce::Mean;
}

// The labels in one i64 device buffer (one copy per call), and the kernels' view of it.
struct CtcDeviceLabels {
  Tensor buffer;
  cuda::CtcLabels view;
};

CtcDeviceLabels device_labels(const CtcBatch& c, Device dev) {
  const int64_t N = static_cast<int64_t>(c.targets.size());
  Tensor host = Tensor::empty({3 * c.B + 3 * N}, DType::I64);
  int64_t* p = host.data<int64_t>();
  for (const std::vector<int64_t>* v :
       {&c.input_len, &c.target_len, &c.offset, &c.targets, &c.next_same, &c.first_same})
    p = std::copy(v->begin(), v->end(), p);
  CtcDeviceLabels d{host.to(dev), {}};
  const int64_t* q = static_cast<const int64_t*>(d.buffer.raw_data());
  d.view = {q,   q + c.B, q + 2 * c.B, q + 3 * c.B, q + 3 * c.B + N, q + 3 * c.B + 2 * N,
            c.B, c.T,     c.C,         c.S,         c.blank};
  return d;
}

Tensor ctc_loss_cuda(const Tensor& log_probs, const CtcBatch& c, CtcReduction reduction,
                     bool zero_infinity) {
  check_cuda_float(log_probs, "ctc_loss");
  const Device dev = log_probs.device();
  CtcDeviceLabels labels = device_labels(c, dev);
  Tensor alpha = Tensor::empty({c.B, c.T, c.S}, DType::F32, dev);
  Tensor log_scale = Tensor::empty({c.B, c.T}, DType::F64, dev);
  Tensor nll = Tensor::empty({c.B}, DType::F64, dev);
  Tensor out =
      Tensor::empty(reduction == CtcReduction::None ? Shape{c.B} : Shape{}, log_probs.dtype(), dev);
  const cuda::CtcReduce r = cuda_reduction(reduction);
  cuda::ctc_loss_forward(log_probs.dtype(), log_probs.raw_data(), labels.view, r, zero_infinity,
                         static_cast<float*>(alpha.raw_data()),
                         static_cast<double*>(log_scale.raw_data()),
                         static_cast<double*>(nll.raw_data()), out.raw_data(), dev.index);
  return autograd::record(
      OpId::CtcLoss, out, {log_probs},
      [xd = log_probs.detach(), labels, alpha, log_scale, nll, r, zero_infinity](const Tensor& g) {
        check_grad_like(g, xd, "ctc_loss");
        Tensor dx = Tensor::empty(xd.shape(), xd.dtype(), xd.device());
        cuda::ctc_loss_backward(xd.dtype(), xd.raw_data(), labels.view, r, zero_infinity,
                                static_cast<const float*>(alpha.raw_data()),
                                static_cast<const double*>(log_scale.raw_data()),
                                static_cast<const double*>(nll.raw_data()), g.raw_data(),
                                dx.raw_data(), xd.device().index);
        return std::vector<Tensor>{dx};
      });
}

}  // namespace

Tensor ctc_loss(const Tensor& log_probs, const std::vector<int32_t>& targets,
                const std::vector<int64_t>& target_lengths,
                const std::vector<int64_t>& input_lengths, int64_t blank, CtcReduction reduction,
                bool zero_infinity) {
  auto batch = std::make_shared<const CtcBatch>(
      ctc_batch(log_probs, targets, target_lengths, input_lengths, blank));
  if (log_probs.device().is_cuda())
    return ctc_loss_cuda(log_probs, *batch, reduction, zero_infinity);
  return ctc_loss_cpu(log_probs, std::move(batch), reduction, zero_infinity);
}

}  // namespace attn
