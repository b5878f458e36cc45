// The PTX that kernels/flash_attention.cuh uses, on the CPU emulator (included by the emulated
// build of src/backend/cuda/flash_attention.cu before the kernel header). Written from the PTX
// ISA's tables, not from the kernels' derivations:
//   ldmatrix.x4[.trans]  lanes 8i..8i+7 give the row addresses of matrix i; lane l gets
//                        row l/4, elements 2(l%4), 2(l%4)+1 (.trans: element l/4 of rows
//                        2(l%4), 2(l%4)+1)
//   mma.m16n8k16 bf16    A: a_i at row g (+8 for regs 1, 3), col 2t + (i&1) (+8 for regs 2, 3);
//                        B: row (k) 2t + (i&1) (+8 for reg 1), col g; C: row g (+8 for c2, c3),
//                        col 2t + (i&1); g = lane/4, t = lane%4. Products summed in f64.
//   cp.async             performed at the issuing thread's wait_group 0 (the latest the data may
//                        land), or at issue when copies_at_issue is set (the earliest)
//   shfl.xor, bar.sync, red.add.f32, ex2 (exact), rcp (exact), cvt.rn.bf16x2
// Every shared address is checked against the block's dynamic shared memory (and ldmatrix /
// cp.async alignment); that memory starts filled with bf16 NaNs, so reading what was never
// written shows up as NaN.
#pragma once
#define ATTNLAB_FLASH_EMULATION 1

#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "backend/cuda_emu/emu.h"
#include "tensor/dtype.h"

namespace attn::emu::ptx_state {

struct PendingCopy {
  void* dst;
  const void* src;
  bool full;
};

// cp.async issued and not yet waited for, per thread of the running block.
inline std::vector<std::vector<PendingCopy>> pending(1024);
inline std::atomic<bool> copies_at_issue{false};

inline void do_copy(const PendingCopy& c) {
  if (c.full)
    std::memcpy(c.dst, c.src, 16);
  else
    std::memset(c.dst, 0, 16);
}

inline void check_no_pending() {
  auto& mine = pending[static_cast<size_t>(linear_thread())];
  if (!mine.empty()) {
    const size_t n = mine.size();
    mine.clear();
    fail("a thread ended with " + std::to_string(n) + " cp.async copies never waited for");
  }
}
inline const bool registered = (add_thread_exit_check(check_no_pending), true);

inline size_t smem_offset(const void* p, size_t len) {
  const auto* c = static_cast<const unsigned char*>(p);
  const unsigned char* base = dynamic_smem();
  if (c < base || c + len > base + dynamic_smem_bytes())
    fail("shared memory access out of bounds: offset " + std::to_string(c - base) + ", " +
         std::to_string(len) + " bytes, of " + std::to_string(dynamic_smem_bytes()));
  return static_cast<size_t>(c - base);
}

inline uint16_t smem_b16(uint32_t saddr) {
  uint16_t v;
  std::memcpy(&v, dynamic_smem() + saddr, 2);
  return v;
}

inline float bf16_bits_to_float(uint32_t bits) {
  return bf16_to_float(bf16{static_cast<uint16_t>(bits)});
}

// The 32 lanes' values of one collective, copied out of the exchange slots.
template <class S>
std::array<S, 32> exchange(const S& mine) {
  const unsigned char* set = warp_exchange(&mine, sizeof(S));
  std::array<S, 32> all;
  for (int l = 0; l < 32; ++l) std::memcpy(&all[l], set + l * kSlotBytes, sizeof(S));
  return all;
}

inline void ldmatrix(uint32_t (&r)[4], uint32_t saddr, bool trans) {
  if (saddr % 16 != 0) fail("ldmatrix row address not 16-byte aligned: " + std::to_string(saddr));
  if (saddr + 16 > dynamic_smem_bytes()) fail("ldmatrix out of bounds: " + std::to_string(saddr));
  const std::array<uint32_t, 32> addr = exchange(saddr);
  const int lane = linear_thread() % 32;
  for (int i = 0; i < 4; ++i) {
    uint32_t lo, hi;
    if (!trans) {
      const uint32_t row = addr[8 * i + lane / 4];
      lo = smem_b16(row + 2 * (2 * (lane % 4)));
      hi = smem_b16(row + 2 * (2 * (lane % 4) + 1));
    } else {
      lo = smem_b16(addr[8 * i + 2 * (lane % 4)] + 2 * (lane / 4));
      hi = smem_b16(addr[8 * i + 2 * (lane % 4) + 1] + 2 * (lane / 4));
    }
    r[i] = lo | (hi << 16);
  }
}

struct MmaOperands {
  uint32_t a[4];
  uint32_t b[2];
};

inline void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const MmaOperands mine{{a[0], a[1], a[2], a[3]}, {b0, b1}};
  const std::array<MmaOperands, 32> set = exchange(mine);
  // Element (row, k) of A and (k, col) of B, from the lane and register that hold it.
  auto A = [&](int row, int k) {
    const uint32_t reg = set[(row % 8) * 4 + (k % 8) / 2].a[(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)];
    return bf16_bits_to_float(k % 2 ? reg >> 16 : reg & 0xffff);
  };
  auto B = [&](int k, int col) {
    const uint32_t reg = set[col * 4 + (k % 8) / 2].b[k >= 8 ? 1 : 0];
    return bf16_bits_to_float(k % 2 ? reg >> 16 : reg & 0xffff);
  };
  const int lane = linear_thread() % 32, g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i % 2);
    double acc = d[i];
    for (int k = 0; k < 16; ++k) acc += static_cast<double>(A(row, k)) * B(k, col);
    d[i] = static_cast<float>(acc);
  }
}

}  // namespace attn::emu::ptx_state

namespace attn::flash::ptx {

namespace st = attn::emu::ptx_state;
using vec16 = uint4;

inline uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(st::smem_offset(p, 1)); }
inline unsigned char* dynamic_smem() { return attn::emu::dynamic_smem(); }
inline void check_smem(const void* p) { st::smem_offset(p, 1); }
inline void check_frag_addr(uint32_t a, const void* expected) {
  if (a != smem_u32(expected))
    attn::emu::fail("stepped fragment address " + std::to_string(a) +
                    " differs from SmemTile::at's " + std::to_string(smem_u32(expected)));
}
inline void block_sync() { attn::emu::sync_block(); }

inline void cp_async_16(void* smem, const void* gmem, bool full) {
  if (st::smem_offset(smem, 16) % 16 != 0)
    attn::emu::fail("cp.async destination not 16-byte aligned");
  const st::PendingCopy c{smem, gmem, full};
  if (st::copies_at_issue)
    st::do_copy(c);
  else
    st::pending[static_cast<size_t>(attn::emu::linear_thread())].push_back(c);
}
inline void cp_async_commit() {}
inline void cp_async_wait_all() {
  auto& mine = st::pending[static_cast<size_t>(attn::emu::linear_thread())];
  for (const auto& c : mine) st::do_copy(c);
  mine.clear();
}

inline void ldmatrix_x4(uint32_t (&r)[4], uint32_t saddr) { st::ldmatrix(r, saddr, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t saddr) { st::ldmatrix(r, saddr, true); }
inline void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  st::mma(d, a, b0, b1);
}

inline float exp2_approx(float x) { return std::exp2(x); }
inline float rcp_approx(float x) { return 1.f / x; }
inline uint32_t pack_bf16x2(float lo, float hi) {
  return float_to_bf16(lo).bits | (static_cast<uint32_t>(float_to_bf16(hi).bits) << 16);
}
inline float bits_to_float(uint32_t u) { return __uint_as_float(u); }
inline uint32_t float_to_bits(float f) { return __float_as_uint(f); }
inline float shfl_xor(float v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }
inline void atomic_add(float* p, float v) { atomicAdd(p, v); }

}  // namespace attn::flash::ptx
