// Runs the flash-attention kernels of kernels/flash_attention.cuh on the CPU, so that their
// indexing, masking and synchronisation can be checked on machines without a GPU (this one, CI).
//
// One std::thread per CUDA thread, one CTA at a time. The PTX the kernels use is replaced by
// host functions that follow the PTX ISA's definitions, written from the ISA tables (not from
// the kernels' derivations):
//   ldmatrix.x4[.trans]  lanes 8i..8i+7 give the row addresses of matrix i; lane l gets
//                        row l/4, elements 2(l%4), 2(l%4)+1 (.trans: element l/4 of rows
//                        2(l%4), 2(l%4)+1)
//   mma.m16n8k16 bf16    A: a_i at row g (+8 for regs 1, 3), col 2t + (i&1) (+8 for regs 2, 3);
//                        B: row (k) 2t + (i&1) (+8 for reg 1), col g; C: row g (+8 for c2, c3),
//                        col 2t + (i&1); g = lane/4, t = lane%4
//   cp.async             performed at the issuing thread's wait_group 0 (the latest the data may
//                        land), or at issue (FlashEmulation::copy_at_issue: the earliest)
//   shfl.xor, bar.sync, red.add.f32, ex2 (exact), rcp (exact), cvt.rn.bf16x2
// Warp-collective operations meet at a per-warp barrier (double-buffered exchange slots), so a
// warp whose lanes diverge from each other deadlocks instead of passing silently. Every shared
// memory address is checked against the block's allocation (and ldmatrix/cp.async alignment);
// shared memory starts filled with bf16 NaNs, so reading what was never written shows up as NaN.
// A violation prints the reason and aborts.
#pragma once
#define ATTNLAB_FLASH_EMULATION 1

#include <array>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "tensor/dtype.h"

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct EmuDim3 {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local EmuDim3 threadIdx, blockIdx, gridDim;

namespace attn::flash_emu::emu {

[[noreturn]] inline void fail(const char* what, long a = 0, long b = 0) {
  std::fprintf(stderr, "flash emulation: %s (%ld, %ld) in block (%u, %u, %u) thread %u\n", what, a,
               b, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x);
  std::abort();
}

struct Slot {
  uint32_t addr;
  uint32_t a[4];
  uint32_t b[2];
  float c[4];
  float f;
};

struct Warp {
  std::barrier<> bar{32};
  std::array<std::array<Slot, 32>, 2> slots{};
};

struct Block {
  Block(int threads, size_t bytes) : smem_bytes(bytes), bar(threads) {
    storage.assign(bytes + 256, 0xff);  // 0xffff = a bf16 NaN
    auto p = reinterpret_cast<uintptr_t>(storage.data());
    base = storage.data() + ((256 - p % 256) % 256);
    for (int w = 0; w < threads / 32; ++w) warps.push_back(std::make_unique<Warp>());
  }
  std::vector<unsigned char> storage;
  unsigned char* base;
  size_t smem_bytes;
  std::barrier<> bar;
  std::vector<std::unique_ptr<Warp>> warps;
};

struct PendingCopy {
  void* dst;
  const void* src;
  bool full;
};

inline thread_local Block* tl_block = nullptr;
inline thread_local int tl_parity = 0;
inline thread_local std::vector<PendingCopy> tl_pending;
inline std::atomic<bool> copy_at_issue{false};

inline size_t smem_offset(const void* p, size_t len) {
  const auto* c = static_cast<const unsigned char*>(p);
  if (c < tl_block->base || c + len > tl_block->base + tl_block->smem_bytes)
    fail("shared memory access out of bounds", static_cast<long>(c - tl_block->base),
         static_cast<long>(tl_block->smem_bytes));
  return static_cast<size_t>(c - tl_block->base);
}

// Every lane of a warp fills its slot, meets the others, then reads any slot. Double buffering
// makes one barrier per collective enough: a lane can only refill a slot set after every lane
// has passed the next barrier, i.e. finished reading this one.
template <class Fill, class Compute>
void collective(Fill&& fill, Compute&& compute) {
  Warp& w = *tl_block->warps[threadIdx.x / 32];
  auto& set = w.slots[tl_parity];
  fill(set[threadIdx.x % 32]);
  w.bar.arrive_and_wait();
  compute(set, static_cast<int>(threadIdx.x % 32));
  tl_parity ^= 1;
}

inline uint16_t smem_b16(uint32_t saddr) {
  uint16_t v;
  std::memcpy(&v, tl_block->base + saddr, 2);
  return v;
}

inline void ldmatrix(uint32_t (&r)[4], uint32_t saddr, bool trans) {
  if (saddr % 16 != 0) fail("ldmatrix row address not 16-byte aligned", saddr);
  if (saddr + 16 > tl_block->smem_bytes) fail("ldmatrix out of bounds", saddr);
  collective([&](Slot& s) { s.addr = saddr; },
             [&](const std::array<Slot, 32>& set, int lane) {
               for (int i = 0; i < 4; ++i) {
                 uint32_t lo, hi;
                 if (!trans) {
                   const uint32_t row = set[8 * i + lane / 4].addr;
                   lo = smem_b16(row + 2 * (2 * (lane % 4)));
                   hi = smem_b16(row + 2 * (2 * (lane % 4) + 1));
                 } else {
                   lo = smem_b16(set[8 * i + 2 * (lane % 4)].addr + 2 * (lane / 4));
                   hi = smem_b16(set[8 * i + 2 * (lane % 4) + 1].addr + 2 * (lane / 4));
                 }
                 r[i] = lo | (hi << 16);
               }
             });
}

inline float bf16_bits_to_float(uint32_t bits) {
  bf16 b;
  b.bits = static_cast<uint16_t>(bits);
  return bf16_to_float(b);
}

inline void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  float out[4];
  collective(
      [&](Slot& s) {
        for (int i = 0; i < 4; ++i) s.a[i] = a[i], s.c[i] = d[i];
        s.b[0] = b0;
        s.b[1] = b1;
      },
      [&](const std::array<Slot, 32>& set, int lane) {
        // Element (row, k) of A and (k, col) of B, from the lane and register that hold it.
        auto A = [&](int row, int k) {
          const Slot& s = set[(row % 8) * 4 + (k % 8) / 2];
          const uint32_t reg = s.a[(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)];
          return bf16_bits_to_float(k % 2 ? reg >> 16 : reg & 0xffff);
        };
        auto B = [&](int k, int col) {
          const Slot& s = set[col * 4 + (k % 8) / 2];
          const uint32_t reg = s.b[k >= 8 ? 1 : 0];
          return bf16_bits_to_float(k % 2 ? reg >> 16 : reg & 0xffff);
        };
        const int g = lane / 4, t = lane % 4;
        for (int i = 0; i < 4; ++i) {
          const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i % 2);
          double acc = set[lane].c[i];
          for (int k = 0; k < 16; ++k) acc += static_cast<double>(A(row, k)) * B(k, col);
          out[i] = static_cast<float>(acc);
        }
      });
  for (int i = 0; i < 4; ++i) d[i] = out[i];
}

inline float shfl_xor(float v, int mask) {
  float r = 0;
  collective([&](Slot& s) { s.f = v; },
             [&](const std::array<Slot, 32>& set, int lane) { r = set[lane ^ mask].f; });
  return r;
}

inline void do_copy(const PendingCopy& c) {
  if (c.full) std::memcpy(c.dst, c.src, 16);
  else std::memset(c.dst, 0, 16);
}

// Runs body() as a grid of CTAs of `threads` threads with `smem_bytes` of dynamic shared memory.
template <class Body>
void launch(EmuDim3 grid, int threads, size_t smem_bytes, Body&& body) {
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        Block blk(threads, smem_bytes);
        std::vector<std::thread> ts;
        ts.reserve(threads);
        for (int t = 0; t < threads; ++t)
          ts.emplace_back([&, t] {
            threadIdx = {static_cast<unsigned>(t), 0, 0};
            blockIdx = {x, y, z};
            gridDim = grid;
            tl_block = &blk;
            tl_parity = 0;
            tl_pending.clear();
            body();
            if (!tl_pending.empty()) fail("cp.async copies never waited for", tl_pending.size());
          });
        for (auto& t : ts) t.join();
      }
}

}  // namespace attn::flash_emu::emu

namespace attn::flash_emu::ptx {

struct alignas(16) vec16 {
  uint32_t x, y, z, w;
};

inline uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(emu::smem_offset(p, 1)); }
inline unsigned char* dynamic_smem() { return emu::tl_block->base; }
inline void check_smem(const void* p) { emu::smem_offset(p, 1); }
inline void check_frag_addr(uint32_t a, const void* expected) {
  if (a != smem_u32(expected))
    emu::fail("stepped fragment address differs from SmemTile::at", a, smem_u32(expected));
}
inline void block_sync() { emu::tl_block->bar.arrive_and_wait(); }

inline void cp_async_16(void* smem, const void* gmem, bool full) {
  if (emu::smem_offset(smem, 16) % 16 != 0) emu::fail("cp.async destination not 16-byte aligned");
  emu::PendingCopy c{smem, gmem, full};
  if (emu::copy_at_issue) emu::do_copy(c);
  else emu::tl_pending.push_back(c);
}
inline void cp_async_commit() {}
inline void cp_async_wait_all() {
  for (const auto& c : emu::tl_pending) emu::do_copy(c);
  emu::tl_pending.clear();
}

inline void ldmatrix_x4(uint32_t (&r)[4], uint32_t saddr) { emu::ldmatrix(r, saddr, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t saddr) { emu::ldmatrix(r, saddr, true); }
inline void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  emu::mma(d, a, b0, b1);
}

inline float exp2_approx(float x) { return std::exp2(x); }
inline float rcp_approx(float x) { return 1.f / x; }
inline uint32_t pack_bf16x2(float lo, float hi) {
  return float_to_bf16(lo).bits | (static_cast<uint32_t>(float_to_bf16(hi).bits) << 16);
}
inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float shfl_xor(float v, int mask) { return emu::shfl_xor(v, mask); }
inline void atomic_add(float* p, float v) { std::atomic_ref<float>(*p).fetch_add(v); }

}  // namespace attn::flash_emu::ptx

#include "kernels/flash_attention.cuh"
