// The emulator's cuBLASLt: descriptors that check what the library checks (attribute sizes,
// leading dimensions, matching shapes and types, pointer alignment against the preference the
// algorithm was chosen for, every operand inside a device allocation), and a matmul on the CPU:
//   D = α·op(A)·op(B) + β·C (+ bias[row] with the BIAS epilogue), column-major, batched by
//   strides; computed in f64 (Eigen) and rounded once to D's type (C is not read when β = 0).
//   GELU_AUX_BIAS: aux = that sum (+ bias) in D's type and layout with the aux leading
//   dimension, D = gelu(aux) (the tanh GELU, on the unrounded sum). This emulation offers no
//   algorithm for an aux leading dimension that is not a multiple of 8 (the heuristic finds none),
//   so that the callers' fallback runs here too; the real library decides for itself.
#include <cublasLt.h>

#include <Eigen/Core>
#include <cmath>
#include <string>
#include <vector>

#include "backend/cuda_emu/state.h"
#include "tensor/dtype.h"

struct EmuLtContext {};
struct EmuLtMatmulDesc {
  cublasOperation_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  int32_t bias_type = -1;  // unset: D's type
  void* aux = nullptr;
  int64_t aux_ld = 0;
};
struct EmuLtLayout {
  cudaDataType type;
  uint64_t rows, cols;
  int64_t ld;
  int32_t batch = 1;
  int64_t stride = 0;
};
struct EmuLtPreference {
  uint64_t workspace = 0;
  uint32_t align[4] = {256, 256, 256, 256};  // A, B, C, D; the library assumes 256 unless told
};

namespace {

using attn::emu::fail;

template <class T>
cublasStatus_t read_attr(const void* buf, size_t size, T& out) {
  if (!buf || size != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(&out, buf, sizeof(T));
  return CUBLAS_STATUS_SUCCESS;
}

size_t type_bytes(cudaDataType t) { return t == CUDA_R_32F ? 4 : t == CUDA_R_64F ? 8 : 2; }

double load(cudaDataType t, const void* base, int64_t i) {
  if (t == CUDA_R_32F) return static_cast<const float*>(base)[i];
  return attn::bf16_to_float(static_cast<const attn::bf16*>(base)[i]);
}

void store(cudaDataType t, void* base, int64_t i, double v) {
  if (t == CUDA_R_32F)
    static_cast<float*>(base)[i] = static_cast<float>(v);
  else
    static_cast<attn::bf16*>(base)[i] = attn::float_to_bf16(static_cast<float>(v));
}

// The shapes and types of one matmul, as the heuristic and the matmul both check them.
cublasStatus_t check_problem(const EmuLtMatmulDesc& op, const EmuLtLayout& a, const EmuLtLayout& b,
                             const EmuLtLayout& c, const EmuLtLayout& d) {
  for (const EmuLtLayout* l : {&a, &b, &c, &d}) {
    if (l->type != CUDA_R_32F && l->type != CUDA_R_16BF) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (l->ld < static_cast<int64_t>(l->rows) || l->ld < 1) return CUBLAS_STATUS_INVALID_VALUE;
    if (l->batch < 1) return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (a.type != b.type || c.type != d.type) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (a.type == CUDA_R_32F && d.type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  const uint64_t m = d.rows, n = d.cols;
  const uint64_t am = op.transa == CUBLAS_OP_N ? a.rows : a.cols;
  const uint64_t k = op.transa == CUBLAS_OP_N ? a.cols : a.rows;
  const uint64_t bk = op.transb == CUBLAS_OP_N ? b.rows : b.cols;
  const uint64_t bn = op.transb == CUBLAS_OP_N ? b.cols : b.rows;
  if (am != m || bn != n || bk != k || c.rows != m || c.cols != n)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (a.batch != d.batch || b.batch != d.batch || c.batch != d.batch)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (op.epilogue != CUBLASLT_EPILOGUE_DEFAULT && op.bias_type != -1 &&
      op.bias_type != static_cast<int32_t>(d.type))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (op.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS &&
      (op.aux_ld < static_cast<int64_t>(m) || d.batch != 1))
    return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

// Every element the layout addresses must lie in one device allocation.
void require_extent(const void* p, const EmuLtLayout& l, const char* what) {
  const int64_t last = static_cast<int64_t>(l.rows - 1) + static_cast<int64_t>(l.cols - 1) * l.ld +
                       static_cast<int64_t>(l.batch - 1) * l.stride;
  const size_t bytes = static_cast<size_t>(last + 1) * type_bytes(l.type);
  if (!attn::emu::in_device_allocation(p, bytes))
    fail(std::string("cublasLtMatmul: matrix ") + what + " (" + std::to_string(l.rows) + " x " +
         std::to_string(l.cols) + ", ld " + std::to_string(l.ld) + ", batch " +
         std::to_string(l.batch) + ", stride " + std::to_string(l.stride) +
         ") is not inside one device allocation");
}

bool aligned(const void* p, uint64_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

}  // namespace

const char* cublasLtGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "unknown cuBLAS status";
}

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  *handle = new EmuLtContext;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  *desc = new EmuLtMatmulDesc;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr, const void* buf,
                                              size_t size) {
  int32_t i32 = 0;
  uint32_t u32 = 0;
  cublasStatus_t st = CUBLAS_STATUS_INVALID_VALUE;
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB:
      if ((st = read_attr(buf, size, i32)) != CUBLAS_STATUS_SUCCESS) return st;
      if (i32 != CUBLAS_OP_N && i32 != CUBLAS_OP_T) return CUBLAS_STATUS_NOT_SUPPORTED;
      (attr == CUBLASLT_MATMUL_DESC_TRANSA ? desc->transa : desc->transb) =
          static_cast<cublasOperation_t>(i32);
      return st;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
      if ((st = read_attr(buf, size, u32)) != CUBLAS_STATUS_SUCCESS) return st;
      if (u32 != CUBLASLT_EPILOGUE_DEFAULT && u32 != CUBLASLT_EPILOGUE_BIAS &&
          u32 != CUBLASLT_EPILOGUE_GELU_AUX_BIAS)
        return CUBLAS_STATUS_NOT_SUPPORTED;
      desc->epilogue = static_cast<cublasLtEpilogue_t>(u32);
      return st;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      return read_attr(buf, size, desc->bias);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER:
      return read_attr(buf, size, desc->aux);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD:
      return read_attr(buf, size, desc->aux_ld);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
      return read_attr(buf, size, desc->bias_type);
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  *layout = new EmuLtLayout{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t size) {
  switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT:
      return read_attr(buf, size, layout->batch);
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET:
      return read_attr(buf, size, layout->stride);
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  *pref = new EmuLtPreference;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t size) {
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      return read_attr(buf, size, pref->workspace);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      return read_attr(buf, size, pref->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES]);
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}

// One "algorithm": it remembers the alignments it was chosen for (a matmul with less aligned
// pointers fails, as it may on a GPU).
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t* results,
                                              int* found) {
  if (!handle || !desc || !a || !b || !c || !d || !pref || requested < 1 || !results || !found)
    return CUBLAS_STATUS_INVALID_VALUE;
  *found = 0;
  if (cublasStatus_t st = check_problem(*desc, *a, *b, *c, *d); st != CUBLAS_STATUS_SUCCESS)
    return st;
  if (desc->epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS && desc->aux_ld % 8 != 0)
    return CUBLAS_STATUS_SUCCESS;  // no algorithm: *found stays 0
  results[0] = {};
  for (int i = 0; i < 4; ++i) {
    const uint32_t al = pref->align[i];
    if (al == 0 || (al & (al - 1)) != 0) return CUBLAS_STATUS_INVALID_VALUE;
    results[0].algo.data[i] = al;
  }
  results[0].algo.data[4] = 0x6d6c6174;  // marks an algorithm this heuristic made
  results[0].workspaceSize = 0;
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.f;
  *found = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                              const void* alpha_p, const void* A, cublasLtMatrixLayout_t a,
                              const void* B, cublasLtMatrixLayout_t b, const void* beta_p,
                              const void* C, cublasLtMatrixLayout_t c, void* D,
                              cublasLtMatrixLayout_t d, const cublasLtMatmulAlgo_t* algo, void*,
                              size_t, cudaStream_t) {
  if (!handle || !desc || !a || !b || !c || !d || !alpha_p || !beta_p || !algo)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (cublasStatus_t st = check_problem(*desc, *a, *b, *c, *d); st != CUBLAS_STATUS_SUCCESS)
    return st;
  if (algo->data[4] != 0x6d6c6174) return CUBLAS_STATUS_INVALID_VALUE;
  if (!aligned(A, algo->data[0]) || !aligned(B, algo->data[1]) || !aligned(C, algo->data[2]) ||
      !aligned(D, algo->data[3]))
    fail(
        "cublasLtMatmul: a matrix pointer is less aligned than the preference the algorithm "
        "was chosen with promised");
  const bool gelu = desc->epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  const bool bias = desc->epilogue == CUBLASLT_EPILOGUE_BIAS || gelu;
  if (bias && !desc->bias) return CUBLAS_STATUS_INVALID_VALUE;
  if (gelu && !desc->aux) return CUBLAS_STATUS_INVALID_VALUE;
  const float alpha = *static_cast<const float*>(alpha_p),
              beta = *static_cast<const float*>(beta_p);
  const int64_t m = static_cast<int64_t>(d->rows), n = static_cast<int64_t>(d->cols);
  const int64_t k = static_cast<int64_t>(desc->transa == CUBLAS_OP_N ? a->cols : a->rows);
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  if (k > 0) {
    require_extent(A, *a, "A");
    require_extent(B, *b, "B");
  }
  if (beta != 0.f) require_extent(C, *c, "C");
  require_extent(D, *d, "D");
  if (bias && !attn::emu::in_device_allocation(desc->bias, m * type_bytes(d->type)))
    fail("cublasLtMatmul: the bias vector is not inside one device allocation");
  if (gelu) require_extent(desc->aux, EmuLtLayout{d->type, d->rows, d->cols, desc->aux_ld}, "aux");
  const bool ta = desc->transa == CUBLAS_OP_T, tb = desc->transb == CUBLAS_OP_T;
  // op(X) of one batch entry as a dense f64 matrix.
  auto gather = [](const EmuLtLayout& l, const void* base, int64_t off, bool trans) {
    const int64_t r = static_cast<int64_t>(l.rows), c = static_cast<int64_t>(l.cols);
    Eigen::MatrixXd x(trans ? c : r, trans ? r : c);
    for (int64_t j = 0; j < c; ++j)
      for (int64_t i = 0; i < r; ++i) {
        const double v = load(l.type, base, off + i + j * l.ld);
        if (trans)
          x(j, i) = v;
        else
          x(i, j) = v;
      }
    return x;
  };
  for (int32_t bt = 0; bt < d->batch; ++bt) {
    Eigen::MatrixXd out = Eigen::MatrixXd::Zero(m, n);
    if (k > 0)
      out = alpha * (gather(*a, A, bt * a->stride, ta) * gather(*b, B, bt * b->stride, tb));
    if (beta != 0.f) out += beta * gather(*c, C, bt * c->stride, false);
    for (int64_t col = 0; col < n; ++col)
      for (int64_t row = 0; row < m; ++row) {
        double v = out(row, col);
        if (bias) v += load(d->type, desc->bias, row);
        if (gelu) {  // batch 1 (checked)
          store(d->type, desc->aux, row + col * desc->aux_ld, v);
          v = 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
        }
        store(d->type, D, bt * d->stride + row + col * d->ld, v);
      }
  }
  attn::emu::check_guards("cublasLtMatmul");
  return CUBLAS_STATUS_SUCCESS;
}
