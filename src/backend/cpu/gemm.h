// Row-major GEMM on the CPU through Eigen: C = alpha · op(A) · op(B) + beta · C.
#pragma once
#include <cstdint>

namespace attn::cpu {

// op(A) is M x K, op(B) is K x N, C is M x N; lda/ldb/ldc are row strides of the stored
// (untransposed) matrices. Eigen threads large products itself.
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

}  // namespace attn::cpu
