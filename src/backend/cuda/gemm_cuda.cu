// Row-major (batched, strided) GEMM through cuBLASLt, the way llm.c drives it:
// one handle and one 32 MiB workspace per device, f32 compute (CUBLAS_COMPUTE_32F: true f32, no
// TF32) with f32 or bf16 matrices, the heuristic's first algorithm cached per shape.
//
// Row-major to column-major: a row-major [r, c] matrix with row length ld is, in cuBLAS's
// column-major terms, its transpose [c, r] with the same ld. So C = op(A)·op(B) (row-major) is
// Cᵀ = op(B)ᵀ·op(A)ᵀ (column-major): cuBLASLt's first operand is our B, its second our A, with
// m = N, n = M, k = K, and each transpose flag stays with its matrix.
//
// Epilogues: BIAS for the linear op's forward (the bias is added as C is written, saving a read
// and a write of C). Column-major C is [N, M], and cuBLASLt adds a bias of length m = N to every
// column: our bias over the output features, broadcast over the rows. GELU_AUX_BIAS for bf16
// linear_gelu: C = gelu(pre) with pre = A·op(B) + bias written to a second buffer of C's layout
// (the "aux", kept for the backward), which saves the GELU kernel's read of pre. Where cuBLASLt
// has no algorithm for it, gemm_bias_gelu says so and the op runs the two passes (llm.c keeps
// this fusion on for Hopper and off before it; bench train with ATTNLAB_GELU_EPILOGUE=0 measures
// the difference). The bias gradient is a column sum (the reduce kernel), not BGRADB.
#include <cublasLt.h>

#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "backend/cuda/ops_cuda_util.h"

#define ATTNLAB_CUBLAS_CHECK(expr)                                                          \
  do {                                                                                      \
    cublasStatus_t st_ = (expr);                                                            \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                       \
      throw std::runtime_error(std::string("cuBLASLt error at ") + __FILE__ + ":" +        \
                               std::to_string(__LINE__) + ": " + #expr + ": " +             \
                               cublasLtGetStatusString(st_));                               \
  } while (0)

namespace attn::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

struct DeviceContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

enum class Epilogue : int64_t { None, Bias, BiasGeluAux };

// The descriptors and the chosen algorithm for one shape and epilogue. Created once, never
// changed (so they are read without the lock; the bias and aux pointer attributes are the
// exception, set and used under the lock) and kept for the life of the process. `found` is
// false where cuBLASLt offered no algorithm (only tolerated for GELU_AUX_BIAS, which has a
// fallback).
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;  // cuBLASLt's A (our B), B, C
  cublasLtMatmulAlgo_t algo{};
  bool found = false;
};

// device, dtype, transposes, sizes, leading dims, batch, strides, pointer alignments, epilogue
using Key = std::array<int64_t, 18>;

std::mutex g_mutex;
std::map<int, DeviceContext> g_devices;
std::map<Key, std::unique_ptr<Plan>> g_plans;

// Called with g_mutex held.
DeviceContext& context(int device) {
  DeviceContext& ctx = g_devices[device];
  if (!ctx.handle) {
    ATTNLAB_CUBLAS_CHECK(cublasLtCreate(&ctx.handle));
    ATTNLAB_CUDA_CHECK(cudaMalloc(&ctx.workspace, kWorkspaceBytes));
  }
  return ctx;
}

// The largest power of two (≤ 256) dividing the address of every matrix of the batch.
uint32_t alignment(const void* p, int64_t stride_bytes, int64_t batch) {
  uint64_t v = reinterpret_cast<uintptr_t>(p);
  if (batch > 1) v |= static_cast<uint64_t>(stride_bytes);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a >>= 1;
  return a;
}

void set_batch(cublasLtMatrixLayout_t layout, int64_t batch, int64_t stride) {
  const int32_t count = static_cast<int32_t>(batch);
  ATTNLAB_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                        &count, sizeof count));
  ATTNLAB_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
      layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
}

std::unique_ptr<Plan> make_plan(cublasLtHandle_t handle, DType dt, bool ta, bool tb, int64_t M,
                                int64_t N, int64_t K, int64_t lda, int64_t stride_a, int64_t ldb,
                                int64_t stride_b, int64_t ldc, int64_t stride_c, int64_t batch,
                                uint32_t align_a, uint32_t align_b, uint32_t align_c, Epilogue ep) {
  auto plan = std::make_unique<Plan>();
  const cudaDataType type = dt == DType::F32 ? CUDA_R_32F : CUDA_R_16BF;
  ATTNLAB_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  if (ep != Epilogue::None) {  // the pointers themselves are set per call (run() below)
    const cublasLtEpilogue_t epilogue =
        ep == Epilogue::Bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    const int32_t bias_type = type;  // the bias has C's dtype
    ATTNLAB_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                        &epilogue, sizeof epilogue));
    ATTNLAB_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
        plan->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type));
  }
  if (ep == Epilogue::BiasGeluAux) {  // the aux (pre-GELU) buffer has C's layout: ld = ldc
    const int64_t aux_ld = ldc;
    ATTNLAB_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
        plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof aux_ld));
  }
  const int32_t op_first = tb ? CUBLAS_OP_T : CUBLAS_OP_N;   // cuBLASLt's A = our B
  const int32_t op_second = ta ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's B = our A
  ATTNLAB_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA,
                                                      &op_first, sizeof op_first));
  ATTNLAB_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB,
                                                      &op_second, sizeof op_second));
  // Stored (pre-transpose) column-major shapes: our B [K, N] row-major is [N, K] column-major,
  // our B [N, K] (tb) is [K, N]; likewise for A; C [M, N] row-major is [N, M].
  ATTNLAB_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, type, tb ? K : N, tb ? N : K, ldb));
  ATTNLAB_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, type, ta ? M : K, ta ? K : M, lda));
  ATTNLAB_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->c, type, N, M, ldc));
  if (batch > 1) {
    set_batch(plan->a, batch, stride_b);
    set_batch(plan->b, batch, stride_a);
    set_batch(plan->c, batch, stride_c);
  }
  cublasLtMatmulPreference_t pref = nullptr;
  ATTNLAB_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = kWorkspaceBytes;
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  // The first operand is our B, the second our A.
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                              &align_b, sizeof align_b);
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                              &align_a, sizeof align_a);
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                              &align_c, sizeof align_c);
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                              &align_c, sizeof align_c);
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(handle, plan->op, plan->a, plan->b, plan->c, plan->c, pref,
                                        1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (ep == Epilogue::BiasGeluAux && (st != CUBLAS_STATUS_SUCCESS || found == 0))
    return plan;  // not found: the caller falls back to BIAS and the GELU kernel
  ATTNLAB_CUBLAS_CHECK(st);
  if (found == 0)
    throw std::runtime_error("matmul: cuBLASLt has no algorithm for " + std::string(dtype_name(dt)) +
                             " M " + std::to_string(M) + ", N " + std::to_string(N) + ", K " +
                             std::to_string(K) + ", batch " + std::to_string(batch) +
                             (ta ? ", A transposed" : "") + (tb ? ", B transposed" : ""));
  plan->algo = result.algo;
  plan->found = true;
  return plan;
}

}  // namespace

namespace {

// C = op(A)·op(B) with the epilogue (bias: N values; aux: the pre-GELU output, C's layout).
// Returns false, having launched nothing, where the plan found no algorithm (GELU_AUX_BIAS only).
bool run(DType dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda,
         int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b, void* C, int64_t ldc,
         int64_t stride_c, int64_t batch, int device, Epilogue ep, const void* bias, void* aux) {
  if (dt != DType::F32 && dt != DType::BF16)
    throw std::invalid_argument(std::string("matmul: CUDA GEMM takes f32 or bf16, got ") +
                                dtype_name(dt));
  if (M == 0 || N == 0 || batch == 0) return true;
  if (batch > INT32_MAX) throw std::invalid_argument("matmul: batch count over 2^31 on CUDA");
  if (ep != Epilogue::None && batch != 1)
    throw std::invalid_argument("matmul: a bias epilogue needs batch 1");
  detail::set_device(device);
  const int64_t es = static_cast<int64_t>(dtype_size(dt));
  if (K == 0) {  // an empty sum: C = 0 (+ bias)
    if (ep != Epilogue::None)
      throw std::invalid_argument("matmul: a bias epilogue with K = 0 is not supported on CUDA");
    for (int64_t b = 0; b < batch; ++b)
      ATTNLAB_CUDA_CHECK(cudaMemset2DAsync(static_cast<char*>(C) + b * stride_c * es, ldc * es, 0,
                                           N * es, M, detail::stream()));
    return true;
  }
  const uint32_t align_a = alignment(A, stride_a * es, batch);
  const uint32_t align_b = alignment(B, stride_b * es, batch);
  // The aux buffer has C's layout: the plan must suit both pointers' alignment.
  const uint32_t align_c = std::min(alignment(C, stride_c * es, batch),
                                    aux ? alignment(aux, stride_c * es, batch) : 256u);
  const Key key{device,
                static_cast<int64_t>(dt),
                ta,
                tb,
                M,
                N,
                K,
                lda,
                ldb,
                ldc,
                batch,
                batch > 1 ? stride_a : 0,
                batch > 1 ? stride_b : 0,
                batch > 1 ? stride_c : 0,
                align_a,
                align_b,
                align_c,
                static_cast<int64_t>(ep)};
  const float alpha = 1.f, beta = 0.f;
  // One lock around the plan lookup and the call: a plan's pointer attributes are per call.
  std::unique_lock<std::mutex> lock(g_mutex);
  DeviceContext& ctx = context(device);
  auto it = g_plans.find(key);
  if (it == g_plans.end())
    it = g_plans
             .emplace(key, make_plan(ctx.handle, dt, ta, tb, M, N, K, lda, stride_a, ldb, stride_b,
                                     ldc, stride_c, batch, align_a, align_b, align_c, ep))
             .first;
  const Plan* plan = it->second.get();
  if (!plan->found) return false;
  if (bias)
    ATTNLAB_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                        &bias, sizeof bias));
  if (aux)
    ATTNLAB_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
        plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux));
  ATTNLAB_CUBLAS_CHECK(cublasLtMatmul(ctx.handle, plan->op, &alpha, B, plan->a, A, plan->b, &beta,
                                      C, plan->c, C, plan->c, &plan->algo, ctx.workspace,
                                      kWorkspaceBytes, detail::stream()));
  return true;
}

}  // namespace

void gemm(DType dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda,
          int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b, void* C, int64_t ldc,
          int64_t stride_c, int64_t batch, int device, const void* bias) {
  run(dt, ta, tb, M, N, K, A, lda, stride_a, B, ldb, stride_b, C, ldc, stride_c, batch, device,
      bias ? Epilogue::Bias : Epilogue::None, bias, nullptr);
}

bool gemm_bias_gelu(DType dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void* A,
                    int64_t lda, const void* B, int64_t ldb, void* C, void* pre, int64_t ldc,
                    const void* bias, int device) {
  if (!bias || !pre)
    throw std::invalid_argument("matmul: the GELU epilogue needs a bias and an aux buffer");
  return run(dt, ta, tb, M, N, K, A, lda, 0, B, ldb, 0, C, ldc, 0, 1, device, Epilogue::BiasGeluAux,
             bias, pre);
}

}  // namespace attn::cuda
