// The emulator's kernel executor: blocks one after another, each block's threads as fibers
// (Boost.Context) on the launching OS thread, switched only at barriers and warp collectives.
#include <sys/mman.h>

#include <boost/context/fiber.hpp>
#include <boost/context/stack_context.hpp>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

#include "backend/cuda_emu/emu.h"
#include "backend/cuda_emu/state.h"

namespace attn::emu {

namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr int kMaxThreads = 1024;

enum class Wait { None, Block, Warp, Done };

namespace bctx = boost::context;

struct Fiber {
  bctx::fiber self;       // where this thread continues (empty while it runs or once it ended)
  bctx::fiber scheduler;  // while it runs: where the scheduler continues
  uint3 tid;
  int linear = 0;
  Wait wait = Wait::None;
  int parity = 0;  // which of the warp's two slot sets this lane's next exchange uses
};

struct WarpState {
  int arrived = 0;
  alignas(16) unsigned char slots[2][32][kSlotBytes];
};

struct BlockRun {
  std::vector<Fiber> fibers;
  std::vector<WarpState> warps;
  int block_arrived = 0;
  std::vector<unsigned char> smem;  // dynamic shared memory, 0xff-filled
  Fiber* current = nullptr;
  const std::function<void()>* body = nullptr;
};

struct Executor {
  std::mutex mutex;  // one launch at a time (shared statics are per kernel, not per launch)
  unsigned char* stacks = nullptr;
  std::map<const void*, int> max_dynamic_smem;
  std::vector<void (*)()> exit_checks;
  const LaunchSite* site = nullptr;
  BlockRun* run = nullptr;
};

Executor& executor() {
  static Executor e;
  return e;
}

unsigned char* stack_of(int linear) {
  Executor& ex = executor();
  if (!ex.stacks) {
    void* p = mmap(nullptr, kStackBytes * kMaxThreads, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      std::fprintf(stderr, "cuda emulation: cannot map fiber stacks\n");
      std::abort();
    }
    ex.stacks = static_cast<unsigned char*>(p);
    // A guard page at the low end of each stack: an overflow faults instead of silently writing
    // into the next thread's stack.
    for (int t = 0; t < kMaxThreads; ++t)
      mprotect(ex.stacks + static_cast<size_t>(t) * kStackBytes, 4096, PROT_NONE);
  }
  return ex.stacks + static_cast<size_t>(linear) * kStackBytes;
}

// Boost.Context's StackAllocator over the stack of one thread slot (mapped once, reused by every
// block: a block's fibers have all ended before the next block starts).
struct SlotStack {
  int linear;
  bctx::stack_context allocate() {
    bctx::stack_context sc;
    sc.size = kStackBytes;
    sc.sp = stack_of(linear) + kStackBytes;  // stacks grow down
    return sc;
  }
  void deallocate(bctx::stack_context&) noexcept {}
};

BlockRun& run() {
  BlockRun* r = executor().run;
  if (!r) {
    std::fprintf(stderr, "cuda emulation: a device function was called outside a kernel\n");
    std::abort();
  }
  return *r;
}

// Makes fiber f the current CUDA thread and runs it until it waits or ends.
void resume(BlockRun& r, Fiber& f) {
  r.current = &f;
  threadIdx = f.tid;
  f.self = std::move(f.self).resume();
  r.current = nullptr;
}

void yield_to_scheduler() {
  BlockRun& r = run();
  Fiber* f = r.current;
  f->scheduler = std::move(f->scheduler).resume();
  threadIdx = f->tid;  // restore after other fibers ran
}

bctx::fiber fiber_body(bctx::fiber&& scheduler) {
  BlockRun& r = run();
  Fiber* f = r.current;
  f->scheduler = std::move(scheduler);
  (*r.body)();
  for (auto check : executor().exit_checks) check();
  f->wait = Wait::Done;
  return std::move(f->scheduler);
}

std::string dim_str(dim3 d) {
  std::string s = "(";
  s += std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
  return s;
}

std::string where() {
  const Executor& ex = executor();
  if (!ex.site) return "outside any kernel";
  std::string s = "kernel launched at " + std::string(ex.site->file) + ":" +
                  std::to_string(ex.site->line) + " with grid " + dim_str(ex.site->grid) +
                  ", block " + dim_str(ex.site->block) + ", " + std::to_string(ex.site->smem) +
                  " bytes of dynamic shared memory";
  if (ex.run) {
    s += "; block " + dim_str(blockIdx);
    if (ex.run->current) s += ", thread " + dim_str(threadIdx);
  }
  return s;
}

// Every fiber waits and no barrier can open: report who waits where.
[[noreturn]] void deadlock(const BlockRun& r) {
  int at_block = 0, at_warp = 0, done = 0;
  std::string warps;
  for (const Fiber& f : r.fibers) {
    at_block += f.wait == Wait::Block;
    at_warp += f.wait == Wait::Warp;
    done += f.wait == Wait::Done;
  }
  for (size_t w = 0; w < r.warps.size(); ++w)
    if (r.warps[w].arrived > 0)
      warps += " warp " + std::to_string(w) + ": " + std::to_string(r.warps[w].arrived) + " lanes;";
  fail("threads cannot all meet: " + std::to_string(at_block) + " wait at __syncthreads, " +
       std::to_string(at_warp) + " at a warp collective," + warps + " " + std::to_string(done) +
       " have exited (a barrier or shuffle not reached by every thread that needs it)");
}

std::string config_error(const LaunchSite& s, const void* kernel) {
  const Executor& ex = executor();
  const uint64_t threads = uint64_t{s.block.x} * s.block.y * s.block.z;
  if (threads == 0 || threads > kMaxThreads || s.block.x > 1024 || s.block.y > 1024 ||
      s.block.z > 64)
    return "block " + dim_str(s.block) + " (at most 1024 threads; x, y <= 1024, z <= 64)";
  if (s.grid.x == 0 || s.grid.y == 0 || s.grid.z == 0 || s.grid.y > 65535 || s.grid.z > 65535 ||
      s.grid.x > 0x7fffffffu)
    return "grid " + dim_str(s.grid) + " (each dimension >= 1; y, z <= 65535)";
  auto it = ex.max_dynamic_smem.find(kernel);
  const size_t allowed = it == ex.max_dynamic_smem.end() ? kDefaultSmemBytes : it->second;
  if (s.smem > allowed)
    return std::to_string(s.smem) + " bytes of dynamic shared memory, over the kernel's limit of " +
           std::to_string(allowed) + " (cudaFuncSetAttribute raises it up to " +
           std::to_string(kOptinSmemBytes) + ")";
  return "";
}

void init_fiber(Fiber& f, int t, dim3 block) {
  const unsigned u = static_cast<unsigned>(t);
  f.linear = t;
  f.tid = {u % block.x, (u / block.x) % block.y, u / (block.x * block.y)};
  f.wait = Wait::None;
  f.parity = 0;
  f.self = bctx::fiber(std::allocator_arg, SlotStack{t}, fiber_body);
}

void run_block(BlockRun& r, const LaunchSite& s, int threads) {
  r.block_arrived = 0;
  for (WarpState& w : r.warps) w.arrived = 0;
  std::memset(r.smem.data(), 0xff, r.smem.size());
  for (int t = 0; t < threads; ++t) init_fiber(r.fibers[t], t, s.block);
  int done = 0;
  while (done < threads) {
    bool progress = false;
    for (Fiber& f : r.fibers) {
      if (f.wait != Wait::None) continue;
      resume(r, f);
      progress = true;
      if (f.wait == Wait::Done) ++done;
    }
    if (!progress) deadlock(r);
  }
}

}  // namespace

void fail(const std::string& what) {
  std::fprintf(stderr, "cuda emulation: %s\n  (%s)\n", what.c_str(), where().c_str());
  std::fflush(stderr);
  std::abort();
}

void launch_kernel(const void* kernel, const LaunchSite& site, const std::function<void()>& body) {
  Executor& ex = executor();
  std::lock_guard<std::mutex> lock(ex.mutex);
  if (std::string err = config_error(site, kernel); !err.empty()) {
    std::fprintf(stderr, "cuda emulation: launch at %s:%d refused: %s\n", site.file, site.line,
                 err.c_str());
    set_last_error(cudaErrorInvalidConfiguration);
    return;
  }
  const int threads = static_cast<int>(site.block.x * site.block.y * site.block.z);
  BlockRun r;
  r.fibers.resize(threads);
  r.warps.resize((threads + 31) / 32);
  r.smem.assign(site.smem, 0xff);
  r.body = &body;
  ex.site = &site;
  ex.run = &r;
  blockDim = site.block;
  gridDim = site.grid;
  for (unsigned z = 0; z < site.grid.z; ++z)
    for (unsigned y = 0; y < site.grid.y; ++y)
      for (unsigned x = 0; x < site.grid.x; ++x) {
        blockIdx = {x, y, z};
        run_block(r, site, threads);
      }
  ex.run = nullptr;
  check_guards("the kernel launched at " + std::string(site.file) + ":" +
               std::to_string(site.line));
  ex.site = nullptr;
}

void sync_block() {
  BlockRun& r = run();
  Fiber* f = r.current;
  if (++r.block_arrived == static_cast<int>(r.fibers.size())) {  // the last one opens it
    r.block_arrived = 0;
    for (Fiber& o : r.fibers)
      if (o.wait == Wait::Block) o.wait = Wait::None;
    return;
  }
  f->wait = Wait::Block;
  yield_to_scheduler();
}

const unsigned char* warp_exchange(const void* mine, size_t bytes) {
  BlockRun& r = run();
  Fiber* f = r.current;
  const int warp = f->linear / 32, lane = f->linear % 32;
  if (bytes > kSlotBytes) fail("warp exchange of more than 64 bytes");
  if ((warp + 1) * 32 > static_cast<int>(r.fibers.size()))
    fail("warp collective in a partial warp (the block size is not a multiple of 32)");
  WarpState& w = r.warps[warp];
  unsigned char* set = &w.slots[f->parity][0][0];
  std::memcpy(set + static_cast<size_t>(lane) * kSlotBytes, mine, bytes);
  f->parity ^= 1;
  if (++w.arrived == 32) {
    w.arrived = 0;
    for (int l = 0; l < 32; ++l) {
      Fiber& o = r.fibers[warp * 32 + l];
      if (o.wait == Wait::Warp) o.wait = Wait::None;
    }
  } else {
    f->wait = Wait::Warp;
    yield_to_scheduler();
  }
  return set;
}

int linear_thread() { return run().current->linear; }
unsigned char* dynamic_smem() { return run().smem.data(); }
size_t dynamic_smem_bytes() { return run().smem.size(); }
void add_thread_exit_check(void (*check)()) { executor().exit_checks.push_back(check); }

bool set_max_dynamic_smem(const void* kernel, int bytes) {
  if (static_cast<size_t>(bytes) > kOptinSmemBytes) return false;
  executor().max_dynamic_smem[kernel] = bytes;
  return true;
}

}  // namespace attn::emu
