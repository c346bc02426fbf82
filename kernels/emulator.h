// A CPU emulator for our CUDA kernels, so that every kernel runs and is checked against its CPU
// twin on machines without a GPU (CI). The kernel sources are compiled unchanged as C++20 by g++
// with this header included first; `src/device/cuda/emulator.rs` generates the one translation
// unit (every kernels/*.cu plus a name -> launcher table) and loads the shared library.
//
// Execution model: blocks run one after another; the threads of a block run as fibers
// (a small x86-64 stack switch, no system calls) on one OS thread, switching only at __syncthreads and warp shuffles. So barriers,
// shared memory and warp reductions behave as on the GPU, and every run is deterministic. A
// barrier that not all threads of a block (or warp) reach is reported as an error, not a hang.
// Kernels without barriers (most of them) run each thread as a plain call instead: a kernel is
// tried that way first, and the first barrier it reaches throws, marking it as a fiber kernel
// and restarting the launch with fibers (a barrier comes before any global write in our
// kernels, so the restart is safe).
// Launches are serialised by a global lock: `__shared__` variables are plain statics.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

using std::max;
using std::min;

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

namespace emu {
inline dim3 thread_idx, block_idx, block_dim, grid_dim;
}
#define threadIdx (::emu::thread_idx)
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)
static constexpr int warpSize = 32;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __shared__ static

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
inline void __threadfence() {}

// Atomics: launches are serialised and fibers switch only at barriers, so plain updates are atomic.
inline float atomicAdd(float* p, float v) {
  float old = *p;
  *p = old + v;
  return old;
}
inline int atomicAdd(int* p, int v) {
  int old = *p;
  *p = old + v;
  return old;
}
inline unsigned atomicAdd(unsigned* p, unsigned v) {
  unsigned old = *p;
  *p = old + v;
  return old;
}

// Saves the callee-saved registers and the stack pointer in *from, switches to the stack `to`
// and restores what was saved there (System V x86-64: rbx, rbp, r12-r15 are callee-saved).
extern "C" void emu_switch(void** from, void* to);
asm(R"(
  .text
  .globl emu_switch
  .type emu_switch, @function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch, .-emu_switch
)");

namespace emu {

enum class State { Ready, AtBlock, AtWarp, Done };

struct Fiber {
  void* sp = nullptr;
  std::vector<char> stack;
  State state = State::Ready;
  dim3 tid;
};

struct Block {
  std::vector<Fiber> fibers;
  void* sched = nullptr;
  int current = -1;
  std::function<void()> body;
  std::vector<float> shuffle;  // one slot per thread, for warp shuffles
  std::vector<char> dynamic_shared;
  std::string error;
};

inline Block& block() {
  static Block b;
  return b;
}

// Where a new fiber starts: runs the thread, then hands control back for good.
[[noreturn]] inline void fiber_entry() {
  Block& b = block();
  b.body();
  Fiber& f = b.fibers[b.current];
  f.state = State::Done;
  emu_switch(&f.sp, b.sched);
  __builtin_unreachable();
}

// A fresh stack whose first switch "returns" into fiber_entry with the ABI's alignment
// (rsp ≡ 8 mod 16 at function entry).
inline void* fresh_stack(std::vector<char>& stack) {
  uintptr_t top = ((uintptr_t)stack.data() + stack.size()) & ~(uintptr_t)15;
  void** sp = (void**)top;
  *--sp = nullptr;                    // fiber_entry's return address (never used)
  *--sp = (void*)&fiber_entry;        // where emu_switch's ret goes
  for (int i = 0; i < 6; ++i) *--sp = nullptr;  // rbp rbx r12-r15
  return sp;
}

struct NeedFibers {};
inline bool direct_mode = false;

inline void wait(State s) {
  if (direct_mode) throw NeedFibers{};
  Block& b = block();
  Fiber& f = b.fibers[b.current];
  f.state = s;
  emu_switch(&f.sp, b.sched);
}

inline int linear_tid() {
  return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

// Releases the barriers that every live thread of their group has reached. Returns false when
// no thread can move: some wait at a barrier that others will never reach.
inline bool release(Block& b) {
  size_t n = b.fibers.size();
  bool live = false, all_at_block = true;
  for (auto& f : b.fibers) {
    if (f.state == State::Done) continue;
    live = true;
    if (f.state != State::AtBlock) all_at_block = false;
  }
  if (!live) return true;
  if (all_at_block) {
    for (auto& f : b.fibers)
      if (f.state == State::AtBlock) f.state = State::Ready;
    return true;
  }
  bool moved = false;
  for (size_t w = 0; w < n; w += 32) {
    size_t end = std::min(n, w + 32);
    bool any = false, all = true;
    for (size_t i = w; i < end; ++i) {
      State s = b.fibers[i].state;
      if (s == State::Done) continue;
      any = true;
      if (s != State::AtWarp) all = false;
    }
    if (any && all) {
      for (size_t i = w; i < end; ++i)
        if (b.fibers[i].state == State::AtWarp) b.fibers[i].state = State::Ready;
      moved = true;
    }
  }
  return moved;
}

inline bool run_block(Block& b) {
  for (;;) {
    bool ran = false;
    for (size_t i = 0; i < b.fibers.size(); ++i) {
      Fiber& f = b.fibers[i];
      if (f.state != State::Ready) continue;
      b.current = (int)i;
      thread_idx = f.tid;
      emu_switch(&b.sched, f.sp);
      ran = true;
    }
    bool done = true;
    for (auto& f : b.fibers) done = done && f.state == State::Done;
    if (done) return true;
    if (!release(b) && !ran) {
      b.error = "barrier divergence: some threads wait at a __syncthreads or warp shuffle "
                "that others in their block or warp never reach";
      return false;
    }
  }
}

constexpr size_t kStack = 64 * 1024;

// Runs every thread of the grid as a plain call; false when the kernel reached a barrier.
inline bool run_direct(dim3 grid, dim3 blk) {
  Block& b = block();
  direct_mode = true;
  try {
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          block_idx = dim3{bx, by, bz};
          for (unsigned tz = 0; tz < blk.z; ++tz)
            for (unsigned ty = 0; ty < blk.y; ++ty)
              for (unsigned tx = 0; tx < blk.x; ++tx) {
                thread_idx = dim3{tx, ty, tz};
                b.body();
              }
        }
  } catch (NeedFibers&) {
    direct_mode = false;
    return false;
  }
  direct_mode = false;
  return true;
}

// Runs `body` once per thread of the grid. Returns an empty string or the error.
inline std::string run_grid(const char* name, dim3 grid, dim3 blk, unsigned shmem,
                            std::function<void()> body) {
  static std::mutex lock;
  static std::map<std::string, bool> uses_barriers;
  std::lock_guard<std::mutex> guard(lock);
  Block& b = block();
  size_t n = (size_t)blk.x * blk.y * blk.z;
  if (n == 0 || n > 1024) return "block of " + std::to_string(n) + " threads (1..1024 allowed)";
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return "empty grid";
  if (grid.y > 65535 || grid.z > 65535) return "grid y/z above 65535";
  b.body = std::move(body);
  b.dynamic_shared.assign(shmem + 16, 0);
  block_dim = blk;
  grid_dim = grid;
  bool& fibers = uses_barriers[name];
  if (!fibers) {
    if (run_direct(grid, blk)) return "";
    fibers = true;
    b.dynamic_shared.assign(shmem + 16, 0);
  }
  b.fibers.resize(n);
  for (auto& f : b.fibers)
    if (f.stack.size() != kStack) f.stack.assign(kStack, 0);
  b.shuffle.assign(n, 0.f);
  b.error.clear();
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        block_idx = dim3{bx, by, bz};
        size_t i = 0;
        for (unsigned tz = 0; tz < blk.z; ++tz)
          for (unsigned ty = 0; ty < blk.y; ++ty)
            for (unsigned tx = 0; tx < blk.x; ++tx, ++i) {
              Fiber& f = b.fibers[i];
              f.tid = dim3{tx, ty, tz};
              f.state = State::Ready;
              f.sp = fresh_stack(f.stack);
            }
        if (!run_block(b)) return b.error;
      }
  return "";
}

}  // namespace emu

inline void __syncthreads() { emu::wait(emu::State::AtBlock); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::wait(emu::State::AtWarp); }

// Shuffles exchange through per-thread slots with a warp barrier on each side, like the
// hardware's lockstep exchange.
inline float emu_shuffle(float v, int src_lane) {
  if (emu::direct_mode) throw emu::NeedFibers{};  // before touching the exchange slots
  emu::Block& b = emu::block();
  int t = emu::linear_tid();
  b.shuffle[t] = v;
  __syncwarp();
  int base = t - t % 32;
  int src = base + src_lane;
  float r = (src_lane >= 0 && src_lane < 32 && src < (int)b.fibers.size()) ? b.shuffle[src] : v;
  __syncwarp();
  return r;
}
inline float __shfl_down_sync(unsigned, float v, int d, int = 32) {
  int lane = emu::linear_tid() % 32;
  return emu_shuffle(v, lane + d < 32 ? lane + d : lane);
}
inline float __shfl_xor_sync(unsigned, float v, int m, int = 32) {
  return emu_shuffle(v, (emu::linear_tid() % 32) ^ m);
}
inline float __shfl_sync(unsigned, float v, int src, int = 32) { return emu_shuffle(v, src); }

#define DARTS_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::emu::block().dynamic_shared.data())

namespace emu {

template <typename... A, size_t... I>
void call(void (*k)(A...), void** args, std::index_sequence<I...>) {
  k(*static_cast<std::remove_reference_t<A>*>(args[I])...);
}

// Checks the argument count and sizes that the Rust launcher passed, then runs the grid.
template <typename... A>
std::string launch(const char* name, void (*k)(A...), dim3 g, dim3 b, unsigned shmem,
                   void** args, const unsigned* sizes, int nargs) {
  constexpr size_t want[] = {sizeof(A)..., 0};
  if (nargs != (int)sizeof...(A))
    return "kernel takes " + std::to_string(sizeof...(A)) + " arguments, launcher passed " +
           std::to_string(nargs);
  for (int i = 0; i < nargs; ++i)
    if (want[i] != sizes[i])
      return "argument " + std::to_string(i) + " is " + std::to_string(want[i]) +
             " bytes in the kernel, " + std::to_string(sizes[i]) + " in the launcher";
  return run_grid(name, g, b, shmem, [=] { call(k, args, std::index_sequence_for<A...>{}); });
}

using Launcher = std::string (*)(dim3, dim3, unsigned, void**, const unsigned*, int);
struct Entry {
  const char* name;
  Launcher launch;
};

}  // namespace emu

#define DARTS_EMU_ENTRY(k)                                                               \
  emu::Entry {                                                                           \
#k, [](dim3 g, dim3 b, unsigned s, void** a, const unsigned* z, int n) {             \
      return emu::launch(#k, k, g, b, s, a, z, n);                                      \
    }                                                                                    \
  }

// The generated unit defines `emu_table` and `emu_table_len`, then includes this.
#define DARTS_EMU_EXPORT                                                                   \
  extern "C" int darts_emu_launch(const char* name, const unsigned* grid,                  \
                                  const unsigned* blk, unsigned shmem, void** args,        \
                                  const unsigned* sizes, int nargs, char* err, int errlen) { \
    for (size_t i = 0; i < emu_table_len; ++i) {                                           \
      if (std::strcmp(emu_table[i].name, name) != 0) continue;                             \
      std::string e = emu_table[i].launch(dim3{grid[0], grid[1], grid[2]},                \
                                          dim3{blk[0], blk[1], blk[2]}, shmem, args,       \
                                          sizes, nargs);                                   \
      std::snprintf(err, errlen, "%s", e.c_str());                                         \
      return e.empty() ? 0 : 1;                                                            \
    }                                                                                      \
    std::snprintf(err, errlen, "no kernel named %s", name);                                \
    return 2;                                                                              \
  }
