// Forward (per query row i, over key tiles):
//   x_ij = s·q_i·k_j - slope·|i + off - j|  (masked entries: -inf / P = 0)
//   softmax family: m' = max(m, max_j x_ij); l = l·e^{m-m'} + Σ e^{x_ij - m'};
//                   acc = acc·e^{m-m'} + Σ e^{x_ij - m'} v_j;  O = acc / l, lse = m + log l
//                   softmax starts m = -inf, l = 0; softmax_1 starts m = 0, l = 1 (the +1).
//   sigmoid:        acc += Σ σ(x_ij + b) v_j;  O = acc.
// Backward (P recomputed per tile):
//   softmax family: P = e^{x - lse}, D_i = dO_i·O_i, dS = P∘(dO·Vᵀ - D)
//   sigmoid:        P = σ(x + b),    dS = P∘(1 - P)∘(dO·Vᵀ)
//   dV += Pᵀ·dO;  dQ += s·dS·K;  dK += s·dSᵀ·Q.
#include "backend/cpu/attention_cpu.h"

#include <Eigen/Core>
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
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

template <class T>
void forward_tile(const Tile& t, const ConstRows<T>& Qt, const ConstRows<T>& K, const ConstRows<T>& V,
                  Rows<T>& O, T* lse) {
  const AttnShape& p = t.p;
  const T neg_inf = -std::numeric_limits<T>::infinity();
  bool sigm = p.kind == AttnKind::Sigmoid;
  Mat<T> acc = Mat<T>::Zero(t.bq, p.D), S, P;
  std::vector<T> m(t.bq, p.kind == AttnKind::Softmax1 ? T(0) : neg_inf);
  std::vector<T> l(t.bq, p.kind == AttnKind::Softmax1 ? T(1) : T(0));
  int64_t end = t.visible_end();
  for (int64_t j0 = 0; j0 < end; j0 += kBlockK) {
    int64_t bk = std::min(kBlockK, end - j0);
    score_tile<T>(t, Qt, K, j0, bk, S);
    P.resize(t.bq, bk);
    for (int64_t r = 0; r < t.bq; ++r) {
      if (sigm) {
        for (int64_t c = 0; c < bk; ++c)
          P(r, c) = S(r, c) == neg_inf ? T(0) : sigmoid<T>(S(r, c) + static_cast<T>(p.sigmoid_bias));
        continue;
      }
      T m_new = std::max(m[r], S.row(r).maxCoeff());
      if (m_new == neg_inf) {  // nothing visible yet in this row
        P.row(r).setZero();
        continue;
      }
      T corr = std::exp(m[r] - m_new);
      for (int64_t c = 0; c < bk; ++c) P(r, c) = std::exp(S(r, c) - m_new);
      l[r] = l[r] * corr + P.row(r).sum();
      acc.row(r) *= corr;
      m[r] = m_new;
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
                   Rows<T>& dK, Rows<T>& dV) {
  const AttnShape& p = t.p;
  const T neg_inf = -std::numeric_limits<T>::infinity();
  bool sigm = p.kind == AttnKind::Sigmoid;
  auto Qb = Q.middleRows(t.i0, t.bq);
  auto dOb = dO.middleRows(t.i0, t.bq);
  Eigen::Matrix<T, Eigen::Dynamic, 1> Drow;
  if (!sigm) Drow = (dOb.array() * O.middleRows(t.i0, t.bq).array()).rowwise().sum();
  Mat<T> S, P, dP, dS;
  int64_t end = t.visible_end();
  for (int64_t j0 = 0; j0 < end; j0 += kBlockK) {
    int64_t bk = std::min(kBlockK, end - j0);
    score_tile<T>(t, Qb, K, j0, bk, S);
    P.resize(t.bq, bk);
    for (int64_t r = 0; r < t.bq; ++r) {
      T row_lse = sigm ? T(0) : lse[t.i0 + r];
      for (int64_t c = 0; c < bk; ++c) {
        T x = S(r, c);
        if (x == neg_inf || (!sigm && row_lse == neg_inf)) P(r, c) = T(0);
        else P(r, c) = sigm ? sigmoid<T>(x + static_cast<T>(p.sigmoid_bias)) : std::exp(x - row_lse);
      }
    }
    dP.noalias() = dOb * V.middleRows(j0, bk).transpose();
    if (sigm) dS = P.array() * (T(1) - P.array()) * dP.array();
    else dS = P.array() * (dP.colwise() - Drow).array();
    dV.middleRows(j0, bk).noalias() += P.transpose() * dOb;
    dQ.middleRows(t.i0, t.bq).noalias() += static_cast<T>(p.scale) * dS * K.middleRows(j0, bk);
    dK.middleRows(j0, bk).noalias() += static_cast<T>(p.scale) * dS.transpose() * Qb;
  }
}

// Calls f(b, h, offset of the (b, h) slice in q/o rows, in k/v rows) for each pair, in parallel.
template <class F>
void for_each_head(const AttnShape& p, F&& f) {
  int64_t pairs = p.B * p.H;
#pragma omp parallel for schedule(dynamic) if (pairs > 1)
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
                        const T* lse, const T* dout, T* dq, T* dk, T* dv) {
  for_each_head(p, [&](int64_t b, int64_t h, int64_t qo, int64_t ko) {
    ConstRows<T> Q(q + qo * p.D, p.N, p.D), K(k + ko * p.D, p.M, p.D), V(v + ko * p.D, p.M, p.D);
    ConstRows<T> O(o + qo * p.D, p.N, p.D), dO(dout + qo * p.D, p.N, p.D);
    Rows<T> dQ(dq + qo * p.D, p.N, p.D), dK(dk + ko * p.D, p.M, p.D), dV(dv + ko * p.D, p.M, p.D);
    dQ.setZero();
    dK.setZero();
    dV.setZero();
    for (int64_t i0 = 0; i0 < p.N; i0 += kBlockQ) {
      Tile t{p, b, h, i0, std::min(kBlockQ, p.N - i0)};
      backward_tile<T>(t, Q, K, V, O, lse ? lse + qo : nullptr, dO, dQ, dK, dV);
    }
  });
}

template void attention_forward<float>(const AttnShape&, const float*, const float*, const float*,
                                       float*, float*);
template void attention_forward<double>(const AttnShape&, const double*, const double*,
                                        const double*, double*, double*);
template void attention_backward<float>(const AttnShape&, const float*, const float*, const float*,
                                        const float*, const float*, const float*, float*, float*,
                                        float*);
template void attention_backward<double>(const AttnShape&, const double*, const double*,
                                         const double*, const double*, const double*,
                                         const double*, double*, double*, double*);

}  // namespace attn::cpu
