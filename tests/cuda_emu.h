// cuda_emu.h: runs CUDA kernels written for kernels/cuda/ on the CPU, so their logic (indexing,
// tiling, reductions, masks, dropout draws) is tested in CI where there is no GPU. Include it
// before a kernel header (e.g. kernels/cuda/attention_tiled_kernels.cuh); it defines the
// built-ins those kernels use: threadIdx/blockIdx/blockDim/gridDim, __syncthreads, warp
// shuffles of floats, static and dynamic __shared__ memory, and the qualifiers as nothing.
//
// emu_launch(grid, threads, smem_bytes, body) runs the blocks one after another. A block's
// threads are fibers (ucontext) on the calling thread, switched only at barriers (__syncthreads,
// __syncwarp, shuffles and the WMMA calls of tests/emu/mma.h), so a thread runs until it must
// wait. __syncthreads waits for every thread of the block that has not returned (as on the GPU),
// a warp barrier for every live thread of its warp. A shuffle is two warp barriers: each lane
// deposits its value, then all read. A barrier that some threads can never reach (a divergent
// __syncthreads) is reported and aborts, where a GPU would hang or misbehave. Because blocks
// never overlap, a kernel's `__shared__` variables can be plain statics.
//
// Schedule. Between two __syncthreads each warp in turn runs as far as it can (through its warp
// barriers up to the next __syncthreads or its end) before the next warp starts: warps are as
// far apart as a GPU allows, so a missing __syncthreads between one warp's write and another
// warp's read (or between a read and the next overwrite) shows as a wrong or poisoned value,
// even when the warps meet at warp barriers in between. On a GPU nothing orders the warps of a
// block, the lanes of a warp between barriers, or the blocks of a launch; SBMT_EMU_ORDER picks
// the order here: `forward` (the default: by index), `reverse`, or `shuffle[:SEED]` (a fresh
// pseudo-random order of the warps and of the lanes at every step, and of the blocks at every
// launch). A race gives the other value in some order, so running the tests in more than one
// order catches it.
//
// What this cannot show: timing, occupancy, bank conflicts, a race whose orders all give the
// same bits, or a kernel that relies on warps running in lock step without synchronising (the
// kernels here never do). Test code only (one launch at a time, single-threaded).
#ifndef SBMT_TESTS_CUDA_EMU_H
#define SBMT_TESTS_CUDA_EMU_H

#include <setjmp.h>
#include <ucontext.h>

#include <cstddef>
#include <cstdint>
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
    int order;         // EMU_ORDER_*: from SBMT_EMU_ORDER, read at the first launch
    uint64_t shuffle;  // the shuffle order's generator state
    std::vector<unsigned> perm;
};

enum { EMU_ORDER_UNSET = 0, EMU_ORDER_FORWARD, EMU_ORDER_REVERSE, EMU_ORDER_SHUFFLE };

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

inline void emu_order_init(emu_state &s) {
    if (s.order != EMU_ORDER_UNSET) return;
    const char *v = std::getenv("SBMT_EMU_ORDER");
    s.order = EMU_ORDER_FORWARD;
    s.shuffle = 0x9E3779B97F4A7C15ull;
    if (!v || !*v || !std::strcmp(v, "forward")) return;
    if (!std::strcmp(v, "reverse")) {
        s.order = EMU_ORDER_REVERSE;
        return;
    }
    if (!std::strncmp(v, "shuffle", 7) && (v[7] == 0 || v[7] == ':')) {
        s.order = EMU_ORDER_SHUFFLE;
        if (v[7] == ':') s.shuffle ^= std::strtoull(v + 8, nullptr, 10) * 0xBF58476D1CE4E5B9ull;
        return;
    }
    std::fprintf(stderr, "cuda_emu: SBMT_EMU_ORDER = '%s': not one of forward, reverse, "
                 "shuffle[:SEED]\n", v);
    std::exit(2);
}

// s.perm becomes the order of 0..n-1 to visit (threads of a pass, or blocks of a launch).
inline const std::vector<unsigned> &emu_order(emu_state &s, unsigned n) {
    s.perm.resize(n);
    for (unsigned i = 0; i < n; i++) s.perm[i] = s.order == EMU_ORDER_REVERSE ? n - 1 - i : i;
    if (s.order == EMU_ORDER_SHUFFLE)
        for (unsigned i = n; i > 1; i--) {  // Fisher-Yates with a splitmix64 stream
            uint64_t z = (s.shuffle += 0x9E3779B97F4A7C15ull);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
            z ^= z >> 31;
            std::swap(s.perm[i - 1], s.perm[z % i]);
        }
    return s.perm;
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
    emu_order_init(s);
    const size_t nblocks = (size_t)grid.x * grid.y * grid.z;
    if (nblocks > 0xFFFFFFFFu) {
        std::fprintf(stderr, "cuda_emu: grid (%u,%u,%u): more than 2^32 blocks\n", grid.x, grid.y,
                     grid.z);
        std::abort();
    }
    const std::vector<unsigned> blocks = emu_order(s, (unsigned)nblocks);
    std::vector<unsigned> warp_order, lane_order;
    for (unsigned b : blocks) {
        const unsigned x = b % grid.x, y = b / grid.x % grid.y, z = b / grid.x / grid.y;
        s.block = dim3(x, y, z);
        // Poisoned, as on a GPU, and a fresh allocation of exactly the launch's size, so an
        // access past the dynamic shared memory is a heap overflow to AddressSanitizer.
        s.smem = std::vector<unsigned char>(smem_bytes ? smem_bytes : 1, 0xFF);
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
            // Each warp in turn runs as far as it can: through its warp barriers, up to a
            // __syncthreads or its end. Warps are as far apart as a GPU lets them be, so a
            // barrier missing between warps shows, and not only one missing inside a warp.
            warp_order = emu_order(s, warps);
            for (unsigned w : warp_order) {
                const unsigned t0 = w * 32, n = threads - t0 < 32 ? threads - t0 : 32;
                for (;;) {
                    lane_order = emu_order(s, n);
                    for (unsigned l : lane_order)
                        if (s.f[t0 + l].state == EMU_RUN) emu_resume(t0 + l);
                    unsigned wl = 0, ww = 0;
                    for (unsigned t = t0; t < t0 + n; t++) {
                        wl += s.f[t].state != EMU_DONE;
                        ww += s.f[t].state == EMU_AT_WARP;
                    }
                    if (!ww || ww != wl) break;  // (a lane that returned stays done)
                    for (unsigned t = t0; t < t0 + n; t++)
                        if (s.f[t].state == EMU_AT_WARP) s.f[t].state = EMU_RUN;
                }
            }
            unsigned live = 0, at_block = 0;
            for (unsigned t = 0; t < threads; t++) {
                live += s.f[t].state != EMU_DONE;
                at_block += s.f[t].state == EMU_AT_BLOCK;
            }
            if (live == 0) break;
            if (at_block != live) {
                std::fprintf(stderr, "cuda_emu: block (%u,%u,%u): %u live threads wait "
                             "at barriers that cannot all be reached (%u at "
                             "__syncthreads): a divergent barrier\n",
                             x, y, z, live, at_block);
                std::abort();
            }
            for (unsigned t = 0; t < threads; t++)
                if (s.f[t].state == EMU_AT_BLOCK) s.f[t].state = EMU_RUN;
        }
    }
}

#endif
