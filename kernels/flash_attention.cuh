// FlashAttention-2-style kernels for the three attention variants: bf16 in, f32 accumulate,
// tensor cores through mma.sync.m16n8k16 (sm_80 and later, also what runs on sm_90).
//
// ---- The maths ------------------------------------------------------------------------------
// Per (batch b, head h): Q [N, d], K, V [M, d], s = scale, off = M − N.
//   x_ij = s·q_i·k_j − slope_h·|i + off − j|          (the ALiBi term only when slopes are given)
//   key j is visible to query i iff j < len_b (key padding; len_b ≤ M) and, when causal,
//   j ≤ i + off (the last query is aligned with the last key).
// Every exponential runs in base 2 on t = x·log2(e) (e^x = 2^t). Scores stay in the MMA's raw
// units r = q·k − (slope_h/s)·|i + off − j| (so x = s·r) until the exponential, where c = s·log2(e)
// enters through the one FFMA that also subtracts the running max: 2^(c·r − c·m) (FA2's trick;
// needs s > 0, which the launcher checks). Invisible entries get r = −∞.
//
// Forward: one CTA per (128 query rows, h, b) walks the visible K/V tiles from the last to the
// first, keeping per row a running max m (of t), a sum l and acc (an f32 row of O):
//   softmax     new tile (m in raw units): m' = max(m, max_j r_j);  l ← l·2^(c(m−m')) +
//               Σ_j 2^(c·r_j − c·m');  acc ← acc·2^(c(m−m')) + Σ_j 2^(c·r_j − c·m')·v_j.
//               Start m = −∞, l = 0.  O = acc / l;  lse = ln Σ_j e^(x_j) = c·m·ln 2 + ln l.
//               A row that sees nothing keeps l = 0: O = 0 and lse = −∞ (never 0/0).
//   softmax_1   the same with start m = 0, l = 1: the implicit extra key with logit 0 and value
//               0. O = Σ_j e^(x_j)·v_j / (1 + Σ_j e^(x_j)), lse = ln(1 + Σ_j e^(x_j)) ≥ 0; a row
//               that sees nothing gives O = 0, lse = 0.
//   sigmoid     P_j = σ(x_j + b) = 1 / (1 + 2^(−(x_j + b)·log2 e));  O = Σ_j P_j·v_j.
//               No max, sum, rescale or lse. b is folded into the score accumulator's start
//               value b/s, so the MMA yields r + b/s and the one multiply by c gives
//               (x + b)·log2(e). Invisible entries: 2^(+∞) = ∞, 1/∞ = 0 exactly.
//               b is the fixed one, the head's learnable b_h (read once per CTA), or per row
//               b_i = −ln n_i with n_i = min(len_b, i + off + 1) (causal) the keys row i sees,
//               at least 1: a start value per accumulator row instead of one per CTA.
//               (Not 0.5 + 0.5·tanh(x/2) with tanh.approx: its ~2^-11 absolute error is as
//               large as σ itself at the typical x + b ≈ −8, i.e. b = −ln n.)
//
// Backward (FA2): a pre-pass D_i = Σ_c dO_ic·O_ic (softmax family only); then one CTA per
// (128 keys, h, b) keeps dK, dV in f32 registers and walks the 64-row query tiles that can see
// its keys, recomputing P:
//   P  = 2^(c·r − lse·log2 e)         softmax family (lse includes softmax_1's +1), one FFMA
//      = σ(x + b)                     sigmoid
//   dP = dO·Vᵀ
//   dS = P∘(dP − D_i)                 softmax family. For softmax_1 the extra key has value 0,
//                                     so D_i = Σ_j P_ij·dP_ij = dO_i·O_i still holds.
//      = P∘(1 − P)∘dP                 sigmoid: needs neither lse nor D
//   dV += Pᵀ·dO;  dK += s·dSᵀ·Q;  dQ += s·dS·K
//   ∂L/∂b_h = Σ_{b,i,j} dS_ij         sigmoid with a learnable b_h: each thread sums its dS
//                                     entries over the CTA's query tiles, then one warp sum
//                                     and one f32 atomicAdd per warp into dsigmoid_bias[h]
// dQ gets contributions from every key tile: f32 atomicAdd into dq_accum (zeroed first), then a
// convert pass writes dq = bf16(s·dq_accum).
//
// ---- Tiles (see kernels/NOTES.md for the reasoning and the byte/FLOP counts) -----------------
// Forward: 4 warps, 128 query rows per CTA (32 per warp, two m16 MMA tiles), key tiles of 64.
//   Q, K, V tiles in shared memory; one K and one V buffer, loads
//   alternated: V(j) streams in during S = Q·K(j)ᵀ, K(j−1) during the softmax and P·V(j). P never
//   leaves registers: the f32 score accumulator rounded to bf16 is the A operand of P·V.
// Backward: 8 warps, 128 keys per CTA, 64-row query tiles double-buffered (Q, dO), P and dS
//   staged through shared memory (they are needed transposed).
// Shared tiles are row-major with 16-byte chunks XOR-swizzled by row % 8, filled by 16-byte
// cp.async (rows past the end zero-filled), read by ldmatrix.x4 (.trans where the operand is
// needed transposed, e.g. V in P·V).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "tensor/dtype.h"

// ---- The few PTX instructions the kernels use ------------------------------------------------
// In the emulated build (src/backend/cuda_emu/) ptx_emu.h defines the same functions on the CPU
// emulator of a device and sets ATTNLAB_FLASH_EMULATION, so that the kernels below run and are
// checked on machines without a GPU.

#if !defined(ATTNLAB_FLASH_EMULATION)
namespace attn::flash::ptx {

using vec16 = uint4;  // 16 bytes: one cp.async / one vectorised global access

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(128) unsigned char flash_smem[];
  return flash_smem;
}

// The emulation checks bounds, and that a fragment address stepped by FragAddr is the one
// SmemTile::at gives.
__device__ __forceinline__ void check_smem(const void*) {}
__device__ __forceinline__ void check_frag_addr(uint32_t, const void*) {}

__device__ __forceinline__ void block_sync() { __syncthreads(); }

// 16 bytes global -> shared; with full == false nothing is read and the 16 bytes are zeroed.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool full) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem),
               "r"(full ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

// Four 8x8 b16 matrices (saddr: shared-window byte address); lanes 8i..8i+7 give the row
// addresses of matrix i, and register i of lane l holds row l/4, columns 2(l%4), 2(l%4)+1 of
// matrix i (.trans: column l/4, rows 2(l%4), 2(l%4)+1).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t saddr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(saddr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t saddr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(saddr));
}

// d += a·b for a 16x16 (row-major) by 16x8 (column-major) bf16 product, f32 accumulators.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float exp2_approx(float x) {  // 2^x; 2^-inf = 0, 2^inf = inf
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float rcp_approx(float x) {  // 1/x; 1/inf = 0
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Two floats rounded (to nearest even) to bf16 and packed, lo in the low 16 bits.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ float bits_to_float(uint32_t u) { return __uint_as_float(u); }
__device__ __forceinline__ uint32_t float_to_bits(float f) { return __float_as_uint(f); }

__device__ __forceinline__ float shfl_xor(float v, int mask) {
  return __shfl_xor_sync(0xffffffffu, v, mask);
}

__device__ __forceinline__ void atomic_add(float* p, float v) { atomicAdd(p, v); }

}  // namespace attn::flash::ptx
#endif

namespace attn::flash {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---- Variants: one small policy type each -----------------------------------------------------
struct SoftmaxPolicy {  // online max/sum, lse out
  static constexpr bool kSigmoid = false;
  static constexpr bool kZeroLogit = false;
  static constexpr bool kRcpOnFma = false;
};
// softmax with an implicit key of logit 0, value 0: rows start at m = 0, l = 1. With p.sink set
// (the sink variant) the implicit key's logit is sink_h instead: rows start at m = sink_h / s (m is
// in raw q·k units; the sink is in natural-log units, not scaled), l = 1. One instantiation serves
// both.
struct Softmax1Policy {
  static constexpr bool kSigmoid = false;
  static constexpr bool kZeroLogit = true;
  static constexpr bool kRcpOnFma = false;
};
struct SigmoidPolicy {  // P = σ(x + b): no max, no sum, no lse, no D
  static constexpr bool kSigmoid = true;
  static constexpr bool kZeroLogit = false;
  static constexpr bool kRcpOnFma = false;  // σ = rcp(1 + ex2): two MUFU ops per score
};
// The sigmoid forward with its reciprocal on the FMA pipe (one MUFU op per score instead of two):
// for head dims where the special-function unit, not the tensor cores, bounds the loop
// (kernels/NOTES.md, "Static analysis"). Chosen at run time (ATTNLAB_SIGMOID_RCP=fma) so that
// both can be timed on one GPU.
struct SigmoidFmaPolicy : SigmoidPolicy {
  static constexpr bool kRcpOnFma = true;
};

// Everything a launch needs; pointers are device memory, tensors contiguous row-major.
struct Params {
  const bf16* q;     // [B, H, N, D]
  const bf16* k;     // [B, H, M, D]
  const bf16* v;     // [B, H, M, D]
  bf16* o;           // [B, H, N, D]
  float* lse;        // [B, H, N], natural log (softmax family)
  const bf16* dout;  // [B, H, N, D]            (backward from here on)
  bf16* dq;          // [B, H, N, D]
  bf16* dk;          // [B, H, M, D]
  bf16* dv;          // [B, H, M, D]
  float* dq_accum;   // [B, H, N, D] f32, zero before the main backward kernel
  float* dsum;       // [B, H, N] f32, D_i = rowsum(dO∘O) (softmax family)
  int B, H, N, M;
  float scale;             // s
  float sigmoid_bias;      // b
  bool causal;             // key j visible to query i iff j <= i + (M - N)
  const int32_t* key_len;  // [B]: keys >= key_len[b] are masked; null: none
  const float* slopes;     // [H]: ALiBi slope per head; null: no ALiBi
  const float* sink;       // [H]: the sink logit per head (Softmax1Policy only); null: 0
  const float* sigmoid_bias_h;  // [H]: b per head instead of sigmoid_bias (sigmoid); null: none
  bool sigmoid_bias_per_row;    // sigmoid: b_i = −ln n_i (n_i the keys row i sees, at least 1)
  float* dsigmoid_bias;         // [H], backward: += Σ dS per head (zeroed by the launcher); null: none
};

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

// ---- Shared-memory tiles ----------------------------------------------------------------------
// A row-major [rows, kCols] bf16 tile whose 16-byte chunks are permuted within each row: logical
// chunk c of row r is stored at chunk c ^ (r % 8). ldmatrix and the fragment stores touch 8
// consecutive rows at one logical chunk; the XOR spreads them over 8 distinct 16-byte bank
// groups, so neither conflicts (rows are 128 or 256 bytes, a multiple of the 128-byte bank line).
template <int kCols>
struct SmemTile {
  static_assert(kCols % 64 == 0, "rows must span whole 128-byte bank lines");
  bf16* base;
  __device__ __forceinline__ bf16* at(int row, int col) const {
    bf16* p = base + row * kCols + (((col >> 3) ^ (row & 7)) << 3) + (col & 7);
    ptx::check_smem(p);
    return p;
  }
};

// Starts the copy of rows [row0, row0 + kRows) of a row-major [rows, kCols] matrix into `dst`.
// Thread t copies the 16-byte chunk t % (kCols/8) of rows t / (kCols/8) + kStep·it: consecutive
// threads read consecutive chunks (coalesced), and since kStep is a multiple of 8 every step
// keeps the row's swizzle, so all of a thread's addresses are one base plus constants. Rows at or
// past `rows` are zero-filled and not read, so ragged ends need no other care: zero K rows give
// finite scores (masked anyway), zero V / dO rows add nothing.
template <int kRows, int kCols, int kThreads>
__device__ __forceinline__ void load_tile(SmemTile<kCols> dst, const bf16* src, int row0, int rows) {
  constexpr int kChunksPerRow = kCols / 8, kStep = kThreads / kChunksPerRow;
  static_assert(kThreads % kChunksPerRow == 0 && kStep % 8 == 0 && kRows % kStep == 0,
                "whole 8-row steps");
  const int r = static_cast<int>(threadIdx.x) / kChunksPerRow;
  const int col = (static_cast<int>(threadIdx.x) % kChunksPerRow) * 8;
  const int left = rows - row0 - r;  // this thread's rows it·kStep < left exist
  const bf16* g = src + static_cast<int64_t>(row0 + r) * kCols + col;
  bf16* d = dst.at(r, col);
#pragma unroll
  for (int it = 0; it < kRows / kStep; ++it) {
    const bool inside = it * kStep < left;
    ptx::check_smem(d + it * kStep * kCols);
    ptx::cp_async_16(d + it * kStep * kCols, inside ? g + it * kStep * kCols : src, inside);
  }
}

// Writes rows [row0, row0 + kRows) ∩ [0, rows) of a tile to a row-major [rows, kCols] matrix
// with 16-byte stores, the same thread-to-chunk map as load_tile.
template <int kRows, int kCols, int kThreads>
__device__ __forceinline__ void store_tile(bf16* dst, SmemTile<kCols> src, int row0, int rows) {
  constexpr int kChunksPerRow = kCols / 8, kStep = kThreads / kChunksPerRow;
  static_assert(kThreads % kChunksPerRow == 0 && kStep % 8 == 0 && kRows % kStep == 0,
                "whole 8-row steps");
  const int r = static_cast<int>(threadIdx.x) / kChunksPerRow;
  const int col = (static_cast<int>(threadIdx.x) % kChunksPerRow) * 8;
  const int left = rows - row0 - r;
  bf16* g = dst + static_cast<int64_t>(row0 + r) * kCols + col;
  const bf16* s = src.at(r, col);
#pragma unroll
  for (int it = 0; it < kRows / kStep; ++it) {
    ptx::check_smem(s + it * kStep * kCols);
    if (it * kStep < left)
      *reinterpret_cast<ptx::vec16*>(g + it * kStep * kCols) =
          *reinterpret_cast<const ptx::vec16*>(s + it * kStep * kCols);
  }
}

// ---- Warp-level MMA building blocks -----------------------------------------------------------
// Accumulator ("C") layout of one m16n8 tile, lane l: c[0], c[1] at row l/4, columns 2(l%4),
// 2(l%4)+1; c[2], c[3] at row l/4 + 8, same columns. A warp's accumulators acc[MT][NT][4] cover
// MT·16 rows × NT·8 columns.

// A lane's ldmatrix row address in a tile, stepped by compile-time offsets without recomputing
// the swizzle: a step of whole 8-row groups keeps row % 8, so it is an addition; a step of 16
// columns (two chunks) flips chunk bits 1-2, i.e. XORs byte bits 5-6 of the address, and whole
// 64-column groups are additions again. Valid when the tile base is 128-byte aligned and the
// lane's base chunk (within its group of 8) shares no bit with the step's chunk bits: true for
// every use here (base columns are 0 or 8 past a multiple of 16·(number of 16-column steps)), and
// the emulation checks each stepped address against SmemTile::at. One address register per
// operand instead of one per fragment.
template <int kCols>
struct FragAddr {
  SmemTile<kCols> tile;
  int row, col;  // the lane's base position (for the emulation's check)
  uint32_t base;
  __device__ __forceinline__ FragAddr(SmemTile<kCols> t, int r, int c)
      : tile(t), row(r), col(c), base(ptx::smem_u32(t.at(r, c))) {}
  // drow: a multiple of 8; dcol: a multiple of 16.
  __device__ __forceinline__ uint32_t operator()(int drow, int dcol) const {
    const uint32_t a = (base ^ static_cast<uint32_t>((dcol & 63) * 2)) +
                       static_cast<uint32_t>((dcol & ~63) * 2 + drow * kCols * 2);
    ptx::check_frag_addr(a, tile.at(row + drow, col + dcol));
    return a;
  }
};

// A operand of an m16n8k16 MMA (rows r..r+15, k k..k+15) from a tile holding A (kTileHoldsAT =
// false: tile(r, k)) or Aᵀ (true: tile(k, r), e.g. P when computing Pᵀ·dO). The lane's base
// address is for (r0, k = 0); load_a(a, fa, 16·mt, k0) loads rows r0 + 16·mt.., k k0..
// ldmatrix matrices 0..3 = (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15),
// (rows 8-15, k 8-15): exactly the A fragment registers a0..a3.
template <bool kTileHoldsAT, int kCols>
__device__ __forceinline__ FragAddr<kCols> a_frag_addr(SmemTile<kCols> t, int r0) {
  const int lane = threadIdx.x & 31;
  if constexpr (!kTileHoldsAT) return FragAddr<kCols>(t, r0 + (lane & 15), (lane >> 4) * 8);
  else return FragAddr<kCols>(t, (lane & 7) + (lane >> 4) * 8, r0 + ((lane >> 3) & 1) * 8);
}
template <bool kTileHoldsAT, int kCols>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const FragAddr<kCols>& fa, int dr, int k0) {
  if constexpr (!kTileHoldsAT) ptx::ldmatrix_x4(a, fa(dr, k0));
  else ptx::ldmatrix_x4_trans(a, fa(k0, dr));
}

// B operands of two neighbouring n8 tiles (columns n..n+15, k k..k+15): b[0], b[1] for
// columns n..n+7, b[2], b[3] for n+8..n+15. The tile holds Bᵀ (kTileHoldsB = false: tile(n, k),
// e.g. K in Q·Kᵀ) or B (true: tile(k, n), e.g. V in P·V). Base address for (n0, k = 0).
// ldmatrix matrices 0..3 = (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
template <bool kTileHoldsB, int kCols>
__device__ __forceinline__ FragAddr<kCols> b_frag_addr(SmemTile<kCols> t, int n0) {
  const int lane = threadIdx.x & 31;
  if constexpr (!kTileHoldsB)
    return FragAddr<kCols>(t, n0 + (lane & 7) + (lane >> 4) * 8, ((lane >> 3) & 1) * 8);
  else return FragAddr<kCols>(t, (lane & 7) + ((lane >> 3) & 1) * 8, n0 + (lane >> 4) * 8);
}
template <bool kTileHoldsB, int kCols>
__device__ __forceinline__ void load_b(uint32_t (&b)[4], const FragAddr<kCols>& fb, int dn, int k0) {
  if constexpr (!kTileHoldsB) ptx::ldmatrix_x4(b, fb(dn, k0));
  else ptx::ldmatrix_x4_trans(b, fb(k0, dn));
}

// acc += A·B for one warp: A = rows [a_row0, a_row0 + 16·MT) × k [0, kK) of tile `a`,
// B = k [0, kK) × columns [b_col0, b_col0 + 8·NT) of tile `b`. Each A fragment is reused across
// the NT/2 B loads, each B fragment across the MT row tiles.
template <int MT, int NT, int kK, bool kTileHoldsAT, bool kTileHoldsB, int kACols, int kBCols>
__device__ __forceinline__ void warp_gemm(float (&acc)[MT][NT][4], SmemTile<kACols> a, int a_row0,
                                          SmemTile<kBCols> b, int b_col0) {
  static_assert(NT % 2 == 0 && kK % 16 == 0, "whole x4 fragments");
  const FragAddr<kACols> fa = a_frag_addr<kTileHoldsAT>(a, a_row0);
  const FragAddr<kBCols> fb = b_frag_addr<kTileHoldsB>(b, b_col0);
#pragma unroll
  for (int k0 = 0; k0 < kK; k0 += 16) {
    uint32_t af[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) load_a<kTileHoldsAT>(af[mt], fa, mt * 16, k0);
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t bf[4];
      load_b<kTileHoldsB>(bf, fb, np * 16, k0);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        ptx::mma_bf16_16816(acc[mt][2 * np], af[mt], bf[0], bf[1]);
        ptx::mma_bf16_16816(acc[mt][2 * np + 1], af[mt], bf[2], bf[3]);
      }
    }
  }
}

// acc += P·B where P (MT·16 rows × KT·8 keys) is a warp's f32 score accumulator, rounded to bf16
// and used in registers as the A operand: the C layout of two neighbouring n8 tiles is exactly
// the A layout of one k16 slice. B = rows [0, KT·8) × columns [b_col0, +8·NT) of a tile holding B.
template <int MT, int NT, int KT, int kBCols>
__device__ __forceinline__ void warp_gemm_p(float (&acc)[MT][NT][4], const float (&p)[MT][KT][4],
                                            SmemTile<kBCols> b, int b_col0) {
  static_assert(NT % 2 == 0 && KT % 2 == 0, "whole x4 fragments");
  const FragAddr<kBCols> fb = b_frag_addr<true>(b, b_col0);
#pragma unroll
  for (int kk = 0; kk < KT / 2; ++kk) {
    uint32_t af[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      af[mt][0] = ptx::pack_bf16x2(p[mt][2 * kk][0], p[mt][2 * kk][1]);
      af[mt][1] = ptx::pack_bf16x2(p[mt][2 * kk][2], p[mt][2 * kk][3]);
      af[mt][2] = ptx::pack_bf16x2(p[mt][2 * kk + 1][0], p[mt][2 * kk + 1][1]);
      af[mt][3] = ptx::pack_bf16x2(p[mt][2 * kk + 1][2], p[mt][2 * kk + 1][3]);
    }
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t bf[4];
      load_b<true>(bf, fb, np * 16, kk * 16);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        ptx::mma_bf16_16816(acc[mt][2 * np], af[mt], bf[0], bf[1]);
        ptx::mma_bf16_16816(acc[mt][2 * np + 1], af[mt], bf[2], bf[3]);
      }
    }
  }
}

// Stores a warp's accumulators (rows from row0, columns from col0) into a tile as bf16, each row
// multiplied by row_mul[mt][half] (half 0: rows l/4, half 1: rows l/4 + 8).
template <int MT, int NT, int kCols>
__device__ __forceinline__ void store_acc(SmemTile<kCols> dst, const float (&acc)[MT][NT][4],
                                          const float (&row_mul)[MT][2], int row0, int col0) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int r = row0 + mt * 16 + hf * 8 + (lane >> 2), c = col0 + nt * 8 + (lane & 3) * 2;
        *reinterpret_cast<uint32_t*>(dst.at(r, c)) =
            ptx::pack_bf16x2(acc[mt][nt][2 * hf] * row_mul[mt][hf],
                             acc[mt][nt][2 * hf + 1] * row_mul[mt][hf]);
      }
}

// ---- Scores -----------------------------------------------------------------------------------
// scripts/sass_stats.py --fast-path compiles with ATTNLAB_FLASH_FAST_PATH_ONLY: no mask or ALiBi
// code at all, so that the loop it counts is exactly one full-mask tile. Never set otherwise.
#if defined(ATTNLAB_FLASH_FAST_PATH_ONLY)
constexpr bool kFastPathOnly = true;
#else
constexpr bool kFastPathOnly = false;
#endif

// What the raw q·k (+ b/s) needs before the exponential, and which entries are visible.
struct ScoreMods {
  float score_mult;  // c = s·log2(e): raw units to base-2 exponent
  float alibi_mult;  // slope_h / s: ALiBi in raw units (ALiBi only)
  bool alibi;
  bool causal;
  int causal_off;  // M − N
  int kv_len;      // keys at or past this are masked: min(M, key_len[b])
  int q_len;       // query rows at or past this are masked (backward: N; forward: no limit)
};

__device__ __forceinline__ ScoreMods make_score_mods(const Params& p, int b, int h, int q_len) {
  ScoreMods m;
  m.score_mult = p.scale * kLog2e;
  m.alibi = p.slopes != nullptr;
  m.alibi_mult = m.alibi ? p.slopes[h] / p.scale : 0.f;
  m.causal = p.causal;
  m.causal_off = p.M - p.N;
  m.kv_len = p.key_len ? imin(p.M, imax(p.key_len[b], 0)) : p.M;
  m.q_len = q_len;
  return m;
}

// s (raw MMA output for rows row0.., keys col0..): subtracts the ALiBi term (raw units) and sets
// invisible entries to −∞; nothing at all in a tile without either (the common case). The
// passes run only when on (warp-uniform branches around whole loops); check_mask says whether
// this tile may hold an invisible entry at all. Entry (mt, nt, e) of a lane is row
// row0 + lane/4 + ri, key col0 + 2(lane%4) + cj with compile-time ri = 16·mt + 8·(e/2),
// cj = 8·nt + e%2, so each test compares one per-lane value with a constant.
template <int MT, int NT>
__device__ __forceinline__ void apply_score_mods(float (&s)[MT][NT][4], const ScoreMods& mod,
                                                 int row0, int col0, bool check_mask) {
  if (kFastPathOnly || (!mod.alibi && !check_mask)) return;
  const int lane = threadIdx.x & 31;
  const int li = row0 + (lane >> 2), lj = col0 + (lane & 3) * 2;  // entry (0, 0, 0)
  const int diag = li + mod.causal_off - lj;  // i + off − j at entry (0, 0, 0)
  if (mod.alibi) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int dist = diag + mt * 16 + (e >> 1) * 8 - nt * 8 - (e & 1);
          s[mt][nt][e] -= mod.alibi_mult * static_cast<float>(dist < 0 ? -dist : dist);
        }
  }
  if (check_mask) {
    const int rows_left = mod.q_len - li, keys_left = mod.kv_len - lj;
    const int diag_min = mod.causal ? 0 : -0x40000000;  // causal: visible iff i + off − j >= 0
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int ri = mt * 16 + (e >> 1) * 8, cj = nt * 8 + (e & 1);
          const bool visible = cj < keys_left && ri < rows_left && diag + ri - cj >= diag_min;
          if (!visible) s[mt][nt][e] = -INFINITY;
        }
  }
}

// Online softmax over one key tile: turns raw r into 2^(c·r − c·m') in place (one FFMA and one
// ex2 each) and rescales the running row state and the output accumulator; row_max is kept in
// raw units. The 4 lanes of a quad share a row (lanes l^1, l^2).
template <int MT, int NT, int DT>
__device__ __forceinline__ void softmax_update(float (&s)[MT][NT][4], float (&acc_o)[MT][DT][4],
                                               float (&row_max)[MT][2], float (&row_sum)[MT][2],
                                               float c) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float mx = row_max[mt][hf];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * hf], s[mt][nt][2 * hf + 1]));
      mx = fmaxf(mx, ptx::shfl_xor(mx, 1));
      mx = fmaxf(mx, ptx::shfl_xor(mx, 2));
      // Nothing visible yet (softmax only): subtract 0 so that every term is 2^-inf = 0, not NaN.
      const float mc = (mx == -INFINITY ? 0.f : mx) * c;
      const float corr = ptx::exp2_approx(row_max[mt][hf] * c - mc);
      row_max[mt][hf] = mx;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float pv = ptx::exp2_approx(fmaf(s[mt][nt][2 * hf + e], c, -mc));
          s[mt][nt][2 * hf + e] = pv;
          sum += pv;
        }
      row_sum[mt][hf] = row_sum[mt][hf] * corr + sum;  // this lane's part; quad-reduced at the end
#pragma unroll
      for (int dt = 0; dt < DT; ++dt) {
        acc_o[mt][dt][2 * hf] *= corr;
        acc_o[mt][dt][2 * hf + 1] *= corr;
      }
    }
}

// σ(x + b) from the raw score r (+ b/s): 1 / (1 + 2^(−c·r)). Two MUFU ops, relative error ~1e-7.
__device__ __forceinline__ float sigmoid_from_raw(float r, float c) {
  return ptx::rcp_approx(1.f + ptx::exp2_approx(-c * r));
}

// 1/d for d in [1, 2^126 + 1] on the FMA pipe: a first guess from the bits (the exponent negated,
// the mantissa mirrored; relative error ≤ 0.101), then two Newton steps r ← r·(2 − d·r), each
// squaring the error: within [−1.05e-4, +1.2e-7] (measured over the whole range). One integer
// op and four FP32 ops instead of a MUFU rcp.
__device__ __forceinline__ float rcp_fma(float d) {
  float r = ptx::bits_to_float(0x7EF311C3u - ptx::float_to_bits(d));
  r *= fmaf(-d, r, 2.f);
  r *= fmaf(-d, r, 2.f);
  return r;
}

// σ(x + b) with one MUFU op: 2^(−c·r) clamped at 2^126 so that d = 1 + 2^(−c·r) stays in
// rcp_fma's range (σ ≈ 2^−126 below that instead of smaller: nothing an f32 sum can see); a
// masked entry (r = −∞) comes out ≈ 2^−126 too, which the caller sets to exactly 0.
__device__ __forceinline__ float sigmoid_from_raw_fma(float r, float c) {
  return rcp_fma(1.f + ptx::exp2_approx(fminf(-c * r, 126.f)));
}

// The score accumulator's start value for a thread's 4 rows (mt, hf) of a warp's 32 from row0:
// b/s for sigmoid (the fixed b, the head's b_h, or −ln n_i per row; see the top), 0 otherwise.
template <class Policy>
__device__ __forceinline__ void score_init(const Params& p, const ScoreMods& mod, int h, int row0,
                                           float (&s0)[2][2]) {
  const int lane = threadIdx.x & 31;
  const float b = !Policy::kSigmoid ? 0.f : p.sigmoid_bias_h ? p.sigmoid_bias_h[h] : p.sigmoid_bias;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float bi = b;
      if (Policy::kSigmoid && p.sigmoid_bias_per_row) {
        const int i = row0 + mt * 16 + hf * 8 + (lane >> 2);
        const int n = mod.causal ? imin(mod.kv_len, i + mod.causal_off + 1) : mod.kv_len;
        bi = -logf(static_cast<float>(imax(n, 1)));
      }
      s0[mt][hf] = bi / p.scale;
    }
}

// ---- Forward ----------------------------------------------------------------------------------
template <int kD>
struct FwdTiles {
  static constexpr int kBlockM = 128;                  // query rows per CTA, 32 per warp
  // Keys per iteration. 64 for both head dims: at d = 64 a 128-key tile (FA2's choice) needs 255
  // registers and spills in the masked path here, 64 keys need 168 and none (ptxas, sm_80).
  static constexpr int kBlockN = 64;
  static constexpr int kThreads = 128;                 // 4 warps
  static constexpr int kSmemBytes = (kBlockM + 2 * kBlockN) * kD * 2;  // Q, K, V
};

// Grid (ceil(N / 128), H, B).
template <class Policy, int kD>
__global__ void __launch_bounds__(128) flash_fwd_kernel(const Params p) {
  using T = FwdTiles<kD>;
  constexpr int kBlockM = T::kBlockM, kBlockN = T::kBlockN, kThreads = T::kThreads;
  constexpr int kNT = kBlockN / 8, kDT = kD / 8;
  bf16* smem = reinterpret_cast<bf16*>(ptx::dynamic_smem());
  const SmemTile<kD> sQ{smem}, sK{smem + kBlockM * kD}, sV{smem + (kBlockM + kBlockN) * kD};

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int m0 = blockIdx.x * kBlockM, h = blockIdx.y, b = blockIdx.z;
  const int64_t bh = static_cast<int64_t>(b) * p.H + h;
  const bf16* q = p.q + bh * p.N * kD;
  const bf16* k = p.k + bh * p.M * kD;
  const bf16* v = p.v + bh * p.M * kD;
  const ScoreMods mod = make_score_mods(p, b, h, /*q_len=*/0x7fffffff);
  const int warp_row0 = m0 + warp * 32;  // this warp's first query row

  // Keys at or past n_end are invisible to every row of this CTA.
  int n_end = mod.kv_len;
  if (p.causal) n_end = imin(n_end, imin(m0 + kBlockM, p.N) + mod.causal_off);
  const int n_blocks = n_end > 0 ? (n_end + kBlockN - 1) / kBlockN : 0;

  // This thread's 4 rows: (mt, hf) -> warp_row0 + 16·mt + 8·hf + lane/4.
  float acc_o[2][kDT][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_o[mt][dt][e] = 0.f;
  float row_max[2][2], row_sum[2][2];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      row_max[mt][hf] = Policy::kZeroLogit ? (p.sink ? p.sink[h] / p.scale : 0.f) : -INFINITY;
      // softmax_1's l = 1 lives on one lane of the quad (the quad's partial sums add up at the end).
      row_sum[mt][hf] = Policy::kZeroLogit && (lane & 3) == 0 ? 1.f : 0.f;
    }

  if (n_blocks > 0) {
    load_tile<kBlockM, kD, kThreads>(sQ, q, m0, p.N);
    load_tile<kBlockN, kD, kThreads>(sK, k, (n_blocks - 1) * kBlockN, p.M);
    ptx::cp_async_commit();
  }
  float s0[2][2];
  score_init<Policy>(p, mod, h, warp_row0, s0);
  for (int nb = n_blocks - 1; nb >= 0; --nb) {
    const int n0 = nb * kBlockN;
    float s[2][kNT][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] = s0[mt][e >> 1];

    ptx::cp_async_wait_all();
    ptx::block_sync();  // K(nb) (and Q) landed; every warp is done with V(nb + 1)
    load_tile<kBlockN, kD, kThreads>(sV, v, n0, p.M);
    ptx::cp_async_commit();

    warp_gemm<2, kNT, kD, false, false>(s, sQ, warp * 32, sK, 0);
    const bool check_mask =
        !kFastPathOnly &&
        (n0 + kBlockN > mod.kv_len || (p.causal && n0 + kBlockN - 1 > m0 + mod.causal_off));
    apply_score_mods(s, mod, warp_row0, n0, check_mask);

    ptx::cp_async_wait_all();
    ptx::block_sync();  // V(nb) landed; every warp is done with K(nb)
    if (nb > 0) {
      load_tile<kBlockN, kD, kThreads>(sK, k, n0 - kBlockN, p.M);
      ptx::cp_async_commit();
    }

    if constexpr (Policy::kSigmoid && !Policy::kRcpOnFma) {
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mt][nt][e] = sigmoid_from_raw(s[mt][nt][e], mod.score_mult);
    } else if constexpr (Policy::kSigmoid) {
      // Masked entries exactly 0: only tiles that may hold one pay for the test.
      auto sigmoid_tile = [&](auto masked) {
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const float r = s[mt][nt][e];
              s[mt][nt][e] = sigmoid_from_raw_fma(r, mod.score_mult);
              if constexpr (decltype(masked)::value)
                if (r == -INFINITY) s[mt][nt][e] = 0.f;
            }
      };
      if (check_mask)
        sigmoid_tile(std::true_type{});
      else
        sigmoid_tile(std::false_type{});
    } else {
      softmax_update(s, acc_o, row_max, row_sum, mod.score_mult);
    }
    warp_gemm_p(acc_o, s, sV, 0);
  }

  // Epilogue: O = acc / l (softmax family) and lse; O staged through sQ for 16-byte stores.
  float row_mul[2][2];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      row_mul[mt][hf] = 1.f;
      if constexpr (!Policy::kSigmoid) {
        float l = row_sum[mt][hf];
        l += ptx::shfl_xor(l, 1);
        l += ptx::shfl_xor(l, 2);
        row_mul[mt][hf] = l > 0.f ? 1.f / l : 0.f;
        const int i = warp_row0 + mt * 16 + hf * 8 + (lane >> 2);
        if ((lane & 3) == 0 && i < p.N)
          p.lse[bh * p.N + i] =
              l > 0.f ? row_max[mt][hf] * mod.score_mult * kLn2 + logf(l) : -INFINITY;
      }
    }
  ptx::block_sync();  // every warp is done reading sQ
  store_acc(sQ, acc_o, row_mul, warp * 32, 0);
  ptx::block_sync();
  store_tile<kBlockM, kD, kThreads>(p.o + bh * p.N * kD, sQ, m0, p.N);
}

// ---- Backward ---------------------------------------------------------------------------------
// D_i = Σ_c dO_ic·O_ic, one 16-byte chunk per thread, kD/8 consecutive lanes per row.
// Grid ceil(rows·kD/8 / 256), 256 threads.
template <int kD>
__global__ void __launch_bounds__(256) flash_bwd_dsum_kernel(const bf16* dout, const bf16* o,
                                                             float* dsum, int64_t rows) {
  constexpr int kLanesPerRow = kD / 8;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * 256 + threadIdx.x;
  const int64_t row = t / kLanesPerRow;
  const int col = static_cast<int>(t % kLanesPerRow) * 8;
  float acc = 0.f;
  if (row < rows) {
    const ptx::vec16 a = *reinterpret_cast<const ptx::vec16*>(dout + row * kD + col);
    const ptx::vec16 c = *reinterpret_cast<const ptx::vec16*>(o + row * kD + col);
    const uint32_t av[4] = {a.x, a.y, a.z, a.w}, cv[4] = {c.x, c.y, c.z, c.w};
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      acc += ptx::bits_to_float(av[w] << 16) * ptx::bits_to_float(cv[w] << 16);
      acc += ptx::bits_to_float(av[w] & 0xffff0000u) * ptx::bits_to_float(cv[w] & 0xffff0000u);
    }
  }
#pragma unroll
  for (int off = kLanesPerRow / 2; off > 0; off /= 2) acc += ptx::shfl_xor(acc, off);
  if (row < rows && t % kLanesPerRow == 0) dsum[row] = acc;
}

// dq = bf16(scale·dq_accum), 4 values per thread and step (n is a multiple of 4). Grid-stride.
__global__ void __launch_bounds__(256) flash_bwd_convert_dq_kernel(const float* dq_accum, bf16* dq,
                                                                   float scale, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * 256 * 4;
  for (int64_t i = (static_cast<int64_t>(blockIdx.x) * 256 + threadIdx.x) * 4; i < n; i += stride) {
    const float* src = dq_accum + i;
    uint32_t* dst = reinterpret_cast<uint32_t*>(dq + i);
    dst[0] = ptx::pack_bf16x2(src[0] * scale, src[1] * scale);
    dst[1] = ptx::pack_bf16x2(src[2] * scale, src[3] * scale);
  }
}

template <int kD>
struct BwdTiles {
  static constexpr int kBlockM = 64;   // query rows per inner step
  static constexpr int kBlockN = 128;  // keys per CTA
  static constexpr int kThreads = 256;  // 8 warps
  // K, V, two buffers each of Q and dO, P and dS.
  static constexpr int kSmemBytes = (2 * kBlockN * kD + 4 * kBlockM * kD + 2 * kBlockM * kBlockN) * 2;
};

// Grid (ceil(M / 128), H, B). dq_accum must be zero; dsum filled (softmax family).
template <class Policy, int kD>
__global__ void __launch_bounds__(256, 1) flash_bwd_kernel(const Params p) {
  using T = BwdTiles<kD>;
  constexpr int kBlockM = T::kBlockM, kBlockN = T::kBlockN, kThreads = T::kThreads;
  bf16* smem = reinterpret_cast<bf16*>(ptx::dynamic_smem());
  const SmemTile<kD> sK{smem}, sV{smem + kBlockN * kD};
  bf16* const q_bufs = smem + 2 * kBlockN * kD;             // Q buffer 0, 1
  bf16* const do_bufs = q_bufs + 2 * kBlockM * kD;           // dO buffer 0, 1
  const SmemTile<kBlockN> sP{do_bufs + 2 * kBlockM * kD};   // [64 queries, 128 keys]
  const SmemTile<kBlockN> sdS{sP.base + kBlockM * kBlockN};

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // Warp roles, all from (wr, wc) in a 2 × 4 grid of warps:
  //   S, dP  [64 queries × 128 keys]: rows wr·32, keys wc·32       (2 × 4 m16n8 tiles)
  //   dK, dV [128 keys × kD]:         keys wc·32, columns wr·kD/2  (2 × kD/16 tiles)
  //   dQ     [64 queries × kD]:       rows wr·32, columns wc·kD/4  (2 × kD/32 tiles)
  const int wr = warp / 4, wc = warp % 4;
  const int n0 = blockIdx.x * kBlockN, h = blockIdx.y, b = blockIdx.z;
  const int64_t bh = static_cast<int64_t>(b) * p.H + h;
  const bf16* q = p.q + bh * p.N * kD;
  const bf16* k = p.k + bh * p.M * kD;
  const bf16* v = p.v + bh * p.M * kD;
  const bf16* dout = p.dout + bh * p.N * kD;
  float* dq_accum = p.dq_accum + bh * p.N * kD;
  const ScoreMods mod = make_score_mods(p, b, h, /*q_len=*/p.N);

  // The query tiles that can see a key of this CTA: causal rows i >= n0 − off; none when every
  // key of the tile is padding.
  const int m_begin = p.causal ? imax(0, n0 - mod.causal_off) / kBlockM : 0;
  const int m_end = n0 < mod.kv_len ? (p.N + kBlockM - 1) / kBlockM : m_begin;

  float acc_dk[2][kD / 16][4], acc_dv[2][kD / 16][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < kD / 16; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_dk[mt][nt][e] = acc_dv[mt][nt][e] = 0.f;
  const float ones[2][2] = {{1.f, 1.f}, {1.f, 1.f}};
  const bool want_dbias = Policy::kSigmoid && p.dsigmoid_bias != nullptr;
  float dbias = 0.f;  // this thread's Σ dS (learnable sigmoid bias)

  if (m_begin < m_end) {
    load_tile<kBlockN, kD, kThreads>(sK, k, n0, p.M);
    load_tile<kBlockN, kD, kThreads>(sV, v, n0, p.M);
    load_tile<kBlockM, kD, kThreads>(SmemTile<kD>{q_bufs}, q, m_begin * kBlockM, p.N);
    load_tile<kBlockM, kD, kThreads>(SmemTile<kD>{do_bufs}, dout, m_begin * kBlockM, p.N);
    ptx::cp_async_commit();
  }
  for (int mb = m_begin; mb < m_end; ++mb) {
    const int buf = (mb - m_begin) & 1;
    const int m0 = mb * kBlockM;
    const SmemTile<kD> sQ{q_bufs + buf * kBlockM * kD}, sdO{do_bufs + buf * kBlockM * kD};
    ptx::cp_async_wait_all();
    ptx::block_sync();  // Q, dO (mb) landed; every warp is done with the previous step's tiles
    if (mb + 1 < m_end) {
      const SmemTile<kD> nextQ{q_bufs + (buf ^ 1) * kBlockM * kD};
      const SmemTile<kD> nextdO{do_bufs + (buf ^ 1) * kBlockM * kD};
      load_tile<kBlockM, kD, kThreads>(nextQ, q, m0 + kBlockM, p.N);
      load_tile<kBlockM, kD, kThreads>(nextdO, dout, m0 + kBlockM, p.N);
      ptx::cp_async_commit();
    }

    // lse·log2(e) and D for this thread's 4 rows (softmax family).
    float row_lse[2][2], row_d[2][2];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        row_lse[mt][hf] = row_d[mt][hf] = 0.f;
        const int i = m0 + wr * 32 + mt * 16 + hf * 8 + (lane >> 2);
        if (!Policy::kSigmoid && i < p.N) {
          const float l = p.lse[bh * p.N + i];
          // lse = −∞: the row sees no key, every entry is masked; 0 keeps 2^(−∞ − 0) = 0.
          row_lse[mt][hf] = l == -INFINITY ? 0.f : l * kLog2e;
          row_d[mt][hf] = p.dsum[bh * p.N + i];
        }
      }

    float s[2][4][4], dp[2][4][4], s0[2][2];
    score_init<Policy>(p, mod, h, m0 + wr * 32, s0);
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[mt][nt][e] = s0[mt][e >> 1];
          dp[mt][nt][e] = 0.f;
        }
    warp_gemm<2, 4, kD, false, false>(s, sQ, wr * 32, sK, wc * 32);
    warp_gemm<2, 4, kD, false, false>(dp, sdO, wr * 32, sV, wc * 32);
    const bool check_mask =
        !kFastPathOnly && (m0 + kBlockM > p.N || n0 + kBlockN > mod.kv_len ||
                           (p.causal && n0 + kBlockN - 1 > m0 + mod.causal_off));
    apply_score_mods(s, mod, m0 + wr * 32, n0 + wc * 32, check_mask);

    // s -> P, dp -> dS (masked entries: P = 0, dS = 0).
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int hf = e >> 1;
          if constexpr (Policy::kSigmoid) {
            const float pr = sigmoid_from_raw(s[mt][nt][e], mod.score_mult);
            s[mt][nt][e] = pr;
            dp[mt][nt][e] = pr * (1.f - pr) * dp[mt][nt][e];
            if (want_dbias) dbias += dp[mt][nt][e];  // masked entries: P = 0, dS = 0
          } else {
            const float pr = ptx::exp2_approx(fmaf(s[mt][nt][e], mod.score_mult, -row_lse[mt][hf]));
            s[mt][nt][e] = pr;
            dp[mt][nt][e] = pr * (dp[mt][nt][e] - row_d[mt][hf]);
          }
        }
    store_acc(sP, s, ones, wr * 32, wc * 32);
    store_acc(sdS, dp, ones, wr * 32, wc * 32);
    ptx::block_sync();  // P and dS complete

    warp_gemm<2, kD / 16, kBlockM, true, true>(acc_dv, sP, wc * 32, sdO, wr * (kD / 2));
    warp_gemm<2, kD / 16, kBlockM, true, true>(acc_dk, sdS, wc * 32, sQ, wr * (kD / 2));

    float dq[2][kD / 32][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < kD / 32; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) dq[mt][nt][e] = 0.f;
    warp_gemm<2, kD / 32, kBlockN, false, true>(dq, sdS, wr * 32, sK, wc * (kD / 4));
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < kD / 32; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = m0 + wr * 32 + mt * 16 + (e >> 1) * 8 + (lane >> 2);
          const int c = wc * (kD / 4) + nt * 8 + (lane & 3) * 2 + (e & 1);
          if (i < p.N) ptx::atomic_add(dq_accum + static_cast<int64_t>(i) * kD + c, dq[mt][nt][e]);
        }
  }

  if (want_dbias) {  // warp-uniform: every lane takes part in the sum
#pragma unroll
    for (int off = 16; off > 0; off /= 2) dbias += ptx::shfl_xor(dbias, off);
    if (lane == 0) ptx::atomic_add(p.dsigmoid_bias + h, dbias);
  }

  // Epilogue: dK = s·Σ dSᵀQ, dV through the K and V tiles for 16-byte stores. A CTA whose keys
  // no query sees writes zeros.
  ptx::block_sync();  // every warp is done with sK, sV
  const float mul_k[2][2] = {{p.scale, p.scale}, {p.scale, p.scale}};
  store_acc(sK, acc_dk, mul_k, wc * 32, wr * (kD / 2));
  store_acc(sV, acc_dv, ones, wc * 32, wr * (kD / 2));
  ptx::block_sync();
  store_tile<kBlockN, kD, kThreads>(p.dk + bh * p.M * kD, sK, n0, p.M);
  store_tile<kBlockN, kD, kThreads>(p.dv + bh * p.M * kD, sV, n0, p.M);
}

}  // namespace attn::flash
