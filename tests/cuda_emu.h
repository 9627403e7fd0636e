// cuda_emu.h: runs CUDA kernels written for kernels/cuda/ on the CPU, so their logic (indexing,
// tiling, reductions, masks, dropout draws) is tested in CI where there is no GPU. Include it
// before a kernel header (e.g. kernels/cuda/attention_tiled_kernels.cuh); it defines the
// built-ins those kernels use: threadIdx/blockIdx/blockDim/gridDim, __syncthreads, warp
// shuffles of floats, static and dynamic __shared__ memory, and the qualifiers as nothing.
//
// emu_launch(grid, threads, smem_bytes, body) runs the blocks one after another. A block's
// threads are fibers (ucontext) on the calling thread, switched only at __syncthreads and
// shuffles, so a thread runs until it must wait. __syncthreads waits for every thread of the
// block that has not returned (as on the GPU), a shuffle for every live thread of its warp:
// each deposits its value, then all read. A barrier that some threads can never reach (a
// divergent __syncthreads) is reported and aborts, where a GPU would hang or misbehave.
// Because blocks never overlap, a kernel's `__shared__` variables can be plain statics.
//
// What this cannot show: timing, occupancy, shared-memory limits, bank conflicts, or a kernel
// that relies on warps running in lock step without synchronising (the kernels here never do).
// Test code only (one launch at a time, single-threaded).
#ifndef SBMT_TESTS_CUDA_EMU_H
#define SBMT_TESTS_CUDA_EMU_H

#include <setjmp.h>
#include <ucontext.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

enum { EMU_RUN = 0, EMU_AT_BLOCK = 1, EMU_AT_WARP = 2, EMU_DONE = 3 };

// Switching: a fiber is entered the first time through swapcontext (its own stack, made by
// makecontext) and afterwards by _longjmp, which unlike swapcontext saves no signal mask (a
// system call per switch). Under AddressSanitizer every switch is a swapcontext, which ASan
// follows.
#ifndef EMU_LONGJMP
#if defined(__SANITIZE_ADDRESS__)
#define EMU_LONGJMP 0
#else
#define EMU_LONGJMP 1
#endif
#endif

struct emu_fiber {
    ucontext_t ctx;
    jmp_buf jb;
    std::vector<char> stack;
    int state;
    bool started;
};

struct emu_state {
    std::vector<emu_fiber> f;
    ucontext_t sched;
    jmp_buf sched_jb;
    unsigned cur;
    std::vector<double> warp_slot;  // [warps * 32] shuffle values (up to 8 bytes)
    std::vector<unsigned char> smem;
    std::function<void()> body;
    dim3 thread, block, block_dim, grid_dim;
};

inline emu_state &emu() {
    static emu_state s;
    return s;
}
#define threadIdx (emu().thread)
#define blockIdx (emu().block)
#define blockDim (emu().block_dim)
#define gridDim (emu().grid_dim)

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
#define SBMT_DYN_SMEM(type, name) type *name = (type *)emu().smem.data()

// The running fiber waits in `state` until the scheduler releases it.
inline void emu_wait(int state) {
    emu_state &s = emu();
    emu_fiber &me = s.f[s.cur];
    me.state = state;
#if EMU_LONGJMP
    if (!_setjmp(me.jb)) _longjmp(s.sched_jb, 1);
#else
    swapcontext(&me.ctx, &s.sched);
#endif
}

// Runs fiber t until it waits or ends.
inline void emu_resume(unsigned t) {
    emu_state &s = emu();
    emu_fiber &f = s.f[t];
    s.cur = t;
    s.thread = dim3(t);
#if EMU_LONGJMP
    if (_setjmp(s.sched_jb)) return;
    if (!f.started) {
        f.started = true;
        ucontext_t here;
        swapcontext(&here, &f.ctx);  // never returns here: the fiber comes back by _longjmp
    }
    _longjmp(f.jb, 1);
#else
    swapcontext(&s.sched, &f.ctx);
#endif
}

inline void __syncthreads() { emu_wait(EMU_AT_BLOCK); }

template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    static_assert(sizeof(T) <= sizeof(double), "shuffle of a value wider than 8 bytes");
    (void)mask;
    emu_state &s = emu();
    const unsigned t = s.thread.x, w = t / 32, lane = t % 32;
    std::memcpy(&s.warp_slot[(size_t)w * 32 + lane], &v, sizeof(T));
    emu_wait(EMU_AT_WARP);
    const unsigned src = lane ^ (unsigned)lane_mask;
    if (w * 32 + src >= s.block_dim.x || s.f[w * 32 + src].state == EMU_DONE) {
        std::fprintf(stderr, "cuda_emu: shuffle in warp %u reads lane %u, which has returned (or "
                     "does not exist): undefined on a GPU\n", w, src);
        std::abort();
    }
    T r;
    std::memcpy(&r, &s.warp_slot[(size_t)w * 32 + src], sizeof(T));
    emu_wait(EMU_AT_WARP);  // nobody overwrites a slot before all have read
    return r;
}

// The warp's live threads meet (memory written before is seen by all of them after).
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    (void)mask;
    emu_wait(EMU_AT_WARP);
}

inline int __popc(unsigned x) { return __builtin_popcount(x); }

// Fibers switch only at barriers, so a read-modify-write is atomic among them.
template <class T> inline T atomicAdd(T *p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}

inline void emu_fiber_main() {
    emu_state &s = emu();
    s.body();
    emu_wait(EMU_DONE);  // never resumed
}

// Runs body() as every thread of every block of a launch with 1-D blocks of `threads` threads.
template <class F> void emu_launch(dim3 grid, dim3 block, size_t smem_bytes, F body) {
    const unsigned threads = block.x;
    if (block.y != 1 || block.z != 1 || threads == 0 || threads > 1024) {
        std::fprintf(stderr, "cuda_emu: block (%u,%u,%u): only 1-D blocks of 1..1024 threads\n",
                     block.x, block.y, block.z);
        std::abort();
    }
    emu_state &s = emu();
    s.body = body;
    s.grid_dim = grid;
    s.block_dim = dim3(threads);
    s.f.resize(threads);
    // Kernels keep a few KB of locals; a small stack also keeps ASan's per-switch clearing
    // of the target stack's shadow cheap.
    for (auto &f : s.f) f.stack.resize(64 * 1024);
    const unsigned warps = (threads + 31) / 32;
    s.warp_slot.assign((size_t)warps * 32, 0.0);
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                s.block = dim3(x, y, z);
                s.smem.assign(smem_bytes ? smem_bytes : 1, 0xFF);  // poisoned, as on a GPU
                for (unsigned t = 0; t < threads; t++) {
                    emu_fiber &f = s.f[t];
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = f.stack.data();
                    f.ctx.uc_stack.ss_size = f.stack.size();
                    f.ctx.uc_link = nullptr;
                    makecontext(&f.ctx, emu_fiber_main, 0);
                    f.state = EMU_RUN;
                    f.started = false;
                }
                for (;;) {
                    for (unsigned t = 0; t < threads; t++)
                        if (s.f[t].state == EMU_RUN) emu_resume(t);
                    // Every fiber now waits or is done: release whole groups.
                    unsigned live = 0, at_block = 0, released = 0;
                    for (unsigned t = 0; t < threads; t++) {
                        live += s.f[t].state != EMU_DONE;
                        at_block += s.f[t].state == EMU_AT_BLOCK;
                    }
                    if (live == 0) break;
                    for (unsigned w = 0; w < warps; w++) {
                        unsigned wl = 0, ww = 0;
                        for (unsigned t = w * 32; t < (w + 1) * 32 && t < threads; t++) {
                            wl += s.f[t].state != EMU_DONE;
                            ww += s.f[t].state == EMU_AT_WARP;
                        }
                        if (ww && ww == wl) {  // (a lane that returned stays done)
                            for (unsigned t = w * 32; t < (w + 1) * 32 && t < threads; t++)
                                if (s.f[t].state == EMU_AT_WARP) s.f[t].state = EMU_RUN;
                            released += ww;
                        }
                    }
                    if (!released && at_block == live) {
                        for (unsigned t = 0; t < threads; t++)
                            if (s.f[t].state == EMU_AT_BLOCK) s.f[t].state = EMU_RUN;
                        released = at_block;
                    }
                    if (!released) {
                        std::fprintf(stderr, "cuda_emu: block (%u,%u,%u): %u live threads wait "
                                     "at barriers that cannot all be reached (%u at "
                                     "__syncthreads): a divergent barrier\n",
                                     x, y, z, live, at_block);
                        std::abort();
                    }
                }
            }
}

#endif
