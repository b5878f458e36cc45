// Forward (per query row i, over key tiles):
//   x_ij = s·q_i·k_j - slope·|i + off - j|  (masked entries: -inf / P = 0)
//   softmax family: m' = max(m, max_j x_ij); l = l·e^{m-m'} + Σ e^{x_ij - m'};
//                   acc = acc·e^{m-m'} + Σ e^{x_ij - m'} v_j;  O = acc / l, lse = m + log l
//                   softmax starts m = -inf, l = 0; softmax_1 starts m = 0, l = 1 (the +1);
//                   sink starts m = sink_h, l = 1 (e^{sink_h - m}): the extra key enters l and
//                   lse, not acc (its value is 0). softmax_1 is the sink fixed at 0.
//   sigmoid:        acc += Σ σ(x_ij + b_i) v_j;  O = acc.  b_i = b (fixed), b_h (learnable per
//                   head) or −ln n_i (per row: n_i the keys row i sees, at least 1).
// Backward (P recomputed per tile):
//   softmax family: P = e^{x - lse}, D_i = dO_i·O_i, dS = P∘(dO·Vᵀ - D)  (the sink's own
//                   gradient, -Σ_i e^{sink - lse_i}·D_i, is the op's: ops/attention.cpp)
//   sigmoid:        P = σ(x + b),    dS = P∘(1 - P)∘(dO·Vᵀ);  ∂L/∂b_h = Σ_{i,j} dS_ij per (b, h)
//   dV += Pᵀ·dO;  dQ += s·dS·K;  dK += s·dSᵀ·Q.
#include "backend/cpu/attention_cpu.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>

namespace attn::cpu {

namespace {

constexpr int64_t kBlockQ = 64, kBlockK = 64;

template <class T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstRows = Eigen::Map<const Mat<T>>;
template <class T>
using Rows = Eigen::Map<Mat<T>>;

// The query rows [i0, i0 + bq) of one (b, h) and what they may see.
struct Tile {
  const AttnShape& p;
  int64_t b, h, i0, bq;
  int64_t visible_end() const {  // keys at or past this are masked for every row of the tile
    int64_t end = p.key_len ? std::min(p.M, p.key_len[b]) : p.M;
    if (p.causal) end = std::min(end, i0 + bq - 1 + (p.M - p.N) + 1);
    return std::max<int64_t>(end, 0);
  }
  bool visible(int64_t i, int64_t j) const {
    if (p.key_len && j >= p.key_len[b]) return false;
    return !p.causal || j <= i + (p.M - p.N);
  }
};

// S[r, c] = s·q·k + ALiBi for keys [j0, j0 + bk); masked entries become -inf.
// Qt holds the tile's bq query rows.
template <class T, class QTile>
void score_tile(const Tile& t, const QTile& Qt, const ConstRows<T>& K, int64_t j0, int64_t bk,
                Mat<T>& S) {
  S.resize(t.bq, bk);
  S.noalias() = Qt * K.middleRows(j0, bk).transpose();
  S *= static_cast<T>(t.p.scale);
  const T neg_inf = -std::numeric_limits<T>::infinity();
  double slope = t.p.slopes ? t.p.slopes[t.h] : 0.0;
  bool all_visible = t.visible(t.i0, j0 + bk - 1) && t.visible(t.i0 + t.bq - 1, j0 + bk - 1);
  if (slope == 0.0 && all_visible) return;  // interior tile: nothing to add or mask
  for (int64_t r = 0; r < t.bq; ++r) {
    int64_t i = t.i0 + r;
    for (int64_t c = 0; c < bk; ++c) {
      int64_t j = j0 + c;
      if (!t.visible(i, j)) S(r, c) = neg_inf;
      else if (slope != 0.0) S(r, c) -= static_cast<T>(slope * std::abs(double(i + t.p.M - t.p.N - j)));
    }
  }
}

template <class T>
using Col = Eigen::Array<T, Eigen::Dynamic, 1>;

// b_i for each query row of the tile: the fixed b, the head's b_h, or −ln n_i.
template <class T>
Col<T> sigmoid_bias_rows(const Tile& t) {
  const AttnShape& p = t.p;
  if (!p.sigmoid_bias_per_row)
    return Col<T>::Constant(t.bq, static_cast<T>(p.sigmoid_bias_h ? p.sigmoid_bias_h[t.h] : p.sigmoid_bias));
  const int64_t len = p.key_len ? std::clamp<int64_t>(p.key_len[t.b], 0, p.M) : p.M;
  Col<T> b(t.bq);
  for (int64_t r = 0; r < t.bq; ++r) {
    const int64_t n = p.causal ? std::min(len, t.i0 + r + p.M - p.N + 1) : len;
    b[r] = static_cast<T>(-std::log(static_cast<double>(std::max<int64_t>(n, 1))));
  }
  return b;
}

// P = σ(S + b_r) with masked (-inf) entries exactly 0. Vectorised through Eigen's exp.
template <class T>
void sigmoid_tile(const Mat<T>& S, const Col<T>& bias, Mat<T>& P) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  P = (S.array() == neg_inf).select(T(0), T(1) / (T(1) + (-(S.array().colwise() + bias)).exp()));
}

// P = exp(S - shift_r) per row, masked entries exactly 0 (Eigen's exp clamps, so -inf is not
// guaranteed to give 0 by itself).
template <class T>
void exp_tile(const Mat<T>& S, const Col<T>& shift, Mat<T>& P) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  P = (S.array() == neg_inf).select(T(0), (S.array().colwise() - shift).exp());
}

template <class T>
void forward_tile(const Tile& t, const ConstRows<T>& Qt, const ConstRows<T>& K, const ConstRows<T>& V,
                  Rows<T>& O, T* lse) {
  const AttnShape& p = t.p;
  const T neg_inf = -std::numeric_limits<T>::infinity();
  bool sigm = p.kind == AttnKind::Sigmoid;
  Mat<T> acc = Mat<T>::Zero(t.bq, p.D), S, P;
  const Col<T> bias = sigm ? sigmoid_bias_rows<T>(t) : Col<T>();
  // The first "key" of the online form: none (softmax), logit 0 (softmax_1) or sink_h (sink).
  const bool extra = p.kind == AttnKind::Softmax1 || p.kind == AttnKind::Sink;
  const T start = p.kind == AttnKind::Sink ? static_cast<T>(p.sink[t.h]) : T(0);
  Col<T> m = Col<T>::Constant(t.bq, extra ? start : neg_inf);
  Col<T> l = Col<T>::Constant(t.bq, extra ? T(1) : T(0));
  int64_t end = t.visible_end();
  for (int64_t j0 = 0; j0 < end; j0 += kBlockK) {
    int64_t bk = std::min(kBlockK, end - j0);
    score_tile<T>(t, Qt, K, j0, bk, S);
    if (sigm) {
      sigmoid_tile<T>(S, bias, P);
    } else {
      Col<T> m_new = m.max(S.rowwise().maxCoeff().array());
      // A row with nothing visible yet keeps m = -inf; shift by 0 there so no -inf - -inf.
      Col<T> shift = (m_new == neg_inf).select(T(0), m_new);
      exp_tile<T>(S, shift, P);
      Col<T> corr = (m - shift).exp();
      l = l * corr + P.rowwise().sum().array();
      acc.array().colwise() *= corr;
      m = m_new;
    }
    acc.noalias() += P * V.middleRows(j0, bk);
  }
  for (int64_t r = 0; r < t.bq; ++r) {
    if (sigm) {
      O.row(t.i0 + r) = acc.row(r);
    } else if (l[r] == T(0)) {  // fully masked softmax row
      O.row(t.i0 + r).setZero();
      lse[t.i0 + r] = neg_inf;
    } else {
      O.row(t.i0 + r) = acc.row(r) / l[r];
      lse[t.i0 + r] = m[r] + std::log(l[r]);
    }
  }
}

template <class T>
void backward_tile(const Tile& t, const ConstRows<T>& Q, const ConstRows<T>& K, const ConstRows<T>& V,
                   const ConstRows<T>& O, const T* lse, const ConstRows<T>& dO, Rows<T>& dQ,
                   Rows<T>& dK, Rows<T>& dV, T& dbias) {
  const AttnShape& p = t.p;
  const T neg_inf = -std::numeric_limits<T>::infinity();
  bool sigm = p.kind == AttnKind::Sigmoid;
  auto Qb = Q.middleRows(t.i0, t.bq);
  auto dOb = dO.middleRows(t.i0, t.bq);
  Eigen::Matrix<T, Eigen::Dynamic, 1> Drow;
  Col<T> row_lse;
  const Col<T> bias = sigm ? sigmoid_bias_rows<T>(t) : Col<T>();
  if (!sigm) {
    Drow = (dOb.array() * O.middleRows(t.i0, t.bq).array()).rowwise().sum();
    // A fully masked row has lse = -inf and every P = 0 (its S entries are all -inf).
    row_lse = Eigen::Map<const Col<T>>(lse + t.i0, t.bq);
    row_lse = (row_lse == neg_inf).select(T(0), row_lse);
  }
  Mat<T> S, P, dP, dS;
  int64_t end = t.visible_end();
  for (int64_t j0 = 0; j0 < end; j0 += kBlockK) {
    int64_t bk = std::min(kBlockK, end - j0);
    score_tile<T>(t, Qb, K, j0, bk, S);
    if (sigm) sigmoid_tile<T>(S, bias, P);
    else exp_tile<T>(S, row_lse, P);
    dP.noalias() = dOb * V.middleRows(j0, bk).transpose();
    if (sigm) {
      dS = P.array() * (T(1) - P.array()) * dP.array();
      dbias += dS.sum();  // masked entries: P = 0, so dS = 0
    } else {
      dS = P.array() * (dP.colwise() - Drow).array();
    }
    dV.middleRows(j0, bk).noalias() += P.transpose() * dOb;
    dQ.middleRows(t.i0, t.bq).noalias() += static_cast<T>(p.scale) * dS * K.middleRows(j0, bk);
    dK.middleRows(j0, bk).noalias() += static_cast<T>(p.scale) * dS.transpose() * Qb;
  }
}

// Calls f(b, h, offset of the (b, h) slice in q/o rows, in k/v rows) for each pair, in parallel.
template <class F>
void for_each_head(const AttnShape& p, F&& f) {
  int64_t pairs = p.B * p.H;
  // Below ~32k multiply-adds in all, a parallel region costs more than it saves.
  bool parallel = pairs > 1 && pairs * p.N * p.M * p.D >= (int64_t{1} << 15);
#pragma omp parallel for schedule(dynamic) if (parallel)
  for (int64_t bh = 0; bh < pairs; ++bh) f(bh / p.H, bh % p.H, bh * p.N, bh * p.M);
}

}  // namespace

template <class T>
void attention_forward(const AttnShape& p, const T* q, const T* k, const T* v, T* o, T* lse) {
  for_each_head(p, [&](int64_t b, int64_t h, int64_t qo, int64_t ko) {
    ConstRows<T> Q(q + qo * p.D, p.N, p.D), K(k + ko * p.D, p.M, p.D), V(v + ko * p.D, p.M, p.D);
    Rows<T> O(o + qo * p.D, p.N, p.D);
    for (int64_t i0 = 0; i0 < p.N; i0 += kBlockQ) {
      Tile t{p, b, h, i0, std::min(kBlockQ, p.N - i0)};
      ConstRows<T> Qb(q + (qo + i0) * p.D, t.bq, p.D);
      forward_tile<T>(t, Qb, K, V, O, lse ? lse + qo : nullptr);
    }
  });
}

template <class T>
void attention_backward(const AttnShape& p, const T* q, const T* k, const T* v, const T* o,
                        const T* lse, const T* dout, T* dq, T* dk, T* dv, T* dbias) {
  for_each_head(p, [&](int64_t b, int64_t h, int64_t qo, int64_t ko) {
    ConstRows<T> Q(q + qo * p.D, p.N, p.D), K(k + ko * p.D, p.M, p.D), V(v + ko * p.D, p.M, p.D);
    ConstRows<T> O(o + qo * p.D, p.N, p.D), dO(dout + qo * p.D, p.N, p.D);
    Rows<T> dQ(dq + qo * p.D, p.N, p.D), dK(dk + ko * p.D, p.M, p.D), dV(dv + ko * p.D, p.M, p.D);
    dQ.setZero();
    dK.setZero();
    dV.setZero();
    T db = 0;
    for (int64_t i0 = 0; i0 < p.N; i0 += kBlockQ) {
      Tile t{p, b, h, i0, std::min(kBlockQ, p.N - i0)};
      backward_tile<T>(t, Q, K, V, O, lse ? lse + qo : nullptr, dO, dQ, dK, dV, db);
    }
    if (dbias) dbias[b * p.H + h] = db;
  });
}

template void attention_forward<float>(const AttnShape&, const float*, const float*, const float*,
                                       float*, float*);
template void attention_forward<double>(const AttnShape&, const double*, const double*,
                                        const double*, double*, double*);
template void attention_backward<float>(const AttnShape&, const float*, const float*, const float*,
                                        const float*, const float*, const float*, float*, float*,
                                        float*, float*);
template void attention_backward<double>(const AttnShape&, const double*, const double*,
                                         const double*, const double*, const double*,
                                         const double*, double*, double*, double*, double*);

}  // namespace attn::cpu
