// test_cuda_emu.cc: the SIMT emulator of tests/cuda_emu.h itself, which test_backend_ops_emu
// runs the whole CUDA backend on: __syncthreads orders shared memory and waits only for threads
// that have not returned, shuffles read the partner lane (floats and doubles, per warp),
// atomicAdd accumulates, static __shared__ variables are one per block, every block and thread
// index runs exactly once, a divergent barrier is reported instead of hanging, and the schedule
// (warps apart, in the order SBMT_EMU_ORDER names) makes a missing barrier show. Then CUDA
// device code not yet behind an op, run directly: the GPU dense sampler of
// kernels/cuda/sbm_tile.cuh draws the CPU dense sampler's graphs, and the sampled-tile SBM
// attention of kernels/cuda/sbm_attn_tiled.cuh gives the CPU's edge attention on them.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/cuda_emu.h"  // (C++ headers before cmocka.h, whose fail() macro breaks them)

#define OMPI_SKIP_MPICXX 1
#include <mpi.h>  // before the C headers that include it, outside extern "C"
#include <cblas.h>

extern "C" {
#include "kernels/common.h"
#include "kernels/kernels.h"
#include "kernels/sbm.h"
#include "model/model.h"
}

// The emulator stands in for the CUDA built-ins; kernel headers come after it (and after the C
// headers, whose functions keep C linkage).
#include "kernels/cuda/sbm_attn_tiled.cuh"

extern "C" {
#include <cmocka.h>
}

namespace {

void test_shuffle_and_barrier(void **state) {
    (void)state;
    std::vector<float> out(2 * 64);
    std::vector<double> outd(2 * 64);
    emu_launch(dim3(2), 64, sizeof(float) * 64, [&] {
        SBMT_DYN_SMEM(float, sh);
        const int t = (int)threadIdx.x;
        sh[t] = (float)(t + 100 * blockIdx.x);
        __syncthreads();
        float v = sh[63 - t] + __shfl_xor_sync(0xffffffffu, (float)t, 5);
        double d = __shfl_xor_sync(0xffffffffu, 0.5 + t, 17);
        out[blockIdx.x * 64 + t] = v;
        outd[blockIdx.x * 64 + t] = d;
    });
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < 64; t++) {
            // Lane masks stay inside the warp: lane ^ 5 and lane ^ 17 of the same 32.
            assert_true(out[b * 64 + t] == (float)(63 - t + 100 * b) + (float)(t ^ 5));
            assert_true(outd[b * 64 + t] == 0.5 + (t ^ 17));
        }
}

// The schedule makes races visible (tests/cuda_emu.h): a warp runs through its warp barriers
// before the next warp starts, so a read of another warp's slot without __syncthreads gets the
// poison even with a __syncwarp between; lanes between barriers, warps and blocks run in the
// order SBMT_EMU_ORDER names; with the barrier, every order gives the same result.
void test_schedule_shows_races(void **state) {
    (void)state;
    const int saved = emu().order;
    const int orders[3] = {EMU_ORDER_FORWARD, EMU_ORDER_REVERSE, EMU_ORDER_SHUFFLE};
    for (int o : orders) {
        emu().order = o;
        std::vector<unsigned> warps(64), lanes(64), fixed(64), blocks;
        emu_launch(dim3(4), 64, sizeof(unsigned) * 64, [&] {
            SBMT_DYN_SMEM(unsigned, sh);
            const unsigned t = threadIdx.x;
            if (t == 0) blocks.push_back(blockIdx.x);
            sh[t] = t;
            if (blockIdx.x == 1) lanes[t] = sh[t ^ 1];  // the partner lane, no barrier between
            __syncwarp();  // orders the warp, not the block
            if (blockIdx.x == 0) warps[t] = sh[(t + 32) % 64];
            __syncthreads();
            if (blockIdx.x == 2) fixed[t] = sh[(t + 32) % 64];
        });
        // warps: the warp that runs first reads the other's poison, the second the values.
        int poisoned_warps = 0, poisoned_lanes = 0;
        for (int w = 0; w < 2; w++) {
            bool all = true, none = true;
            for (int l = 0; l < 32; l++) {
                const unsigned t = 32 * w + l, v = warps[t];
                all = all && v == 0xFFFFFFFFu;
                none = none && v == (t + 32) % 64;
            }
            assert_true(all || none);
            poisoned_warps += all;
        }
        assert_int_equal(poisoned_warps, 1);
        for (int t = 0; t < 64; t++) {
            assert_true(lanes[t] == 0xFFFFFFFFu || lanes[t] == (unsigned)(t ^ 1));
            poisoned_lanes += lanes[t] == 0xFFFFFFFFu;
            assert_int_equal(fixed[t], (t + 32) % 64);
        }
        // In each pair of lanes the one that ran first read its partner's poison.
        assert_int_equal(poisoned_lanes, 32);
        if (o == EMU_ORDER_FORWARD) {
            assert_true(warps[0] == 0xFFFFFFFFu && warps[32] == 0);
            assert_true(lanes[0] == 0xFFFFFFFFu && lanes[1] == 0);
            assert_true(blocks == std::vector<unsigned>({0, 1, 2, 3}));
        } else if (o == EMU_ORDER_REVERSE) {
            assert_true(warps[0] == 32 && warps[32] == 0xFFFFFFFFu);
            assert_true(lanes[0] == 1 && lanes[1] == 0xFFFFFFFFu);
            assert_true(blocks == std::vector<unsigned>({3, 2, 1, 0}));
        } else {
            std::vector<unsigned> sorted = blocks;
            std::sort(sorted.begin(), sorted.end());
            assert_true(sorted == std::vector<unsigned>({0, 1, 2, 3}));
        }
    }
    emu().order = saved;
}

void test_exited_threads_and_atomics(void **state) {
    (void)state;
    double total = 0.0;
    std::vector<int> seen(3 * 2 * 96, 0);
    emu_launch(dim3(3, 2), 96, 0, [&] {
        __shared__ int count;  // one per block: blocks never overlap
        const unsigned t = threadIdx.x;
        seen[(blockIdx.y * gridDim.x + blockIdx.x) * blockDim.x + t]++;
        if (t == 0) count = 0;
        __syncthreads();
        if (t >= 40) return;  // exited threads no longer hold up __syncthreads
        atomicAdd(&count, 1);
        __syncthreads();
        if (t == 0) atomicAdd(&total, (double)count);
    });
    for (int v : seen) assert_int_equal(v, 1);
    assert_true(total == 6 * 40.0);
}

void test_divergent_barrier_reported(void **state) {
    (void)state;
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        emu_launch(dim3(1), 32, 0, [&] {
            if (threadIdx.x < 16) __syncthreads();         // half the block at a barrier,
            else (void)__shfl_xor_sync(0xffffffffu, 1.0f, 1);  // half at a shuffle: never met
        });
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
}

bool aborts(const std::function<void()> &body);

// Lanes that return stay returned: the rest of their warp meets at __syncwarp and goes on (the
// emulator once resumed returned lanes there, which ended the process with status 0), and a
// shuffle that reads a returned lane is reported.
void test_returned_lanes(void **state) {
    (void)state;
    // In a child whose exit status says the launch returned with every count right: a process
    // ended from inside the launch (status 0) fails too.
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int past = 0;
        emu_launch(dim3(2), 48, 0, [&] {
            if (threadIdx.x % 32 >= 16) return;
            __syncwarp();
            past++;
        });
        _exit(past == 2 * 32 ? 42 : 1);  // lanes 0-15 of both warps, in both blocks
    }
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 42);
    assert_true(aborts([&] {
        emu_launch(dim3(1), 32, 0, [&] {
            if (threadIdx.x >= 16) return;
            (void)__shfl_xor_sync(0xffffffffu, 1.0f, 16);
        });
    }));
}

// Runs body in a child process and expects it to abort (the emulator's report of a usage a GPU
// would not accept).
bool aborts(const std::function<void()> &body) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        body();
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

// The tensor-core products of kernels/cuda/tile_mma.cuh (emulated WMMA, tests/emu/mma.h): tf32
// rounding to nearest with ties away, A B^T and A B against a double product of the rounded
// operands at the tiles' strides, and the GPU's rules reported: 32-byte aligned tiles, ldm a
// multiple of 4, every lane of the warp in every call.
void test_mma_tile(void **state) {
    (void)state;
    using nvcuda::wmma::__float_to_tf32;
    assert_true(__float_to_tf32(1.0f + 0x1p-12f) == 1.0f);
    assert_true(__float_to_tf32(1.0f + 0x1p-11f) == 1.0f + 0x1p-10f);  // a tie: away from zero
    assert_true(__float_to_tf32(-(1.0f + 0x1p-11f)) == -(1.0f + 0x1p-10f));
    assert_true(__float_to_tf32(1.0f + 0x1.8p-11f) == 1.0f + 0x1p-10f);
    assert_true(std::isinf(__float_to_tf32(INFINITY)));
    enum { M = 32, N = 48, K = 24, LA = K + 4, LB = K + 4, LBN = N + 4, LC = N + 4 };
    std::vector<float> A(M * LA), B(N * LB), Bn(K * LBN), C(M * LC);
    uint64_t r = 7;
    auto next = [&] {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        return (float)((double)(r >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    };
    for (float &v : A) v = next();
    for (float &v : B) v = next();
    for (float &v : Bn) v = next();
    const size_t fa = A.size(), fb = B.size(), fbn = Bn.size(), fc = C.size();
    const size_t bytes = sizeof(float) * (fa + fb + fbn + fc);
    for (int trans = 0; trans < 2; trans++) {
        emu_launch(dim3(1), NTHREADS, bytes, [&] {
            SBMT_DYN_SMEM(float, sm);
            float *As = sm, *Bs = As + fa, *Bns = Bs + fb, *Cs = Bns + fbn;
            for (size_t i = threadIdx.x; i < fa; i += NTHREADS) As[i] = A[i];
            for (size_t i = threadIdx.x; i < fb; i += NTHREADS) Bs[i] = B[i];
            for (size_t i = threadIdx.x; i < fbn; i += NTHREADS) Bns[i] = Bn[i];
            __syncthreads();
            if (trans) mma_tile<M, N, K, true>(Cs, LC, As, LA, Bs, LB);
            else mma_tile<M, N, K, false>(Cs, LC, As, LA, Bns, LBN);
            __syncthreads();
            for (size_t i = threadIdx.x; i < fc; i += NTHREADS) C[i] = Cs[i];
        });
        double worst = 0.0, rounding = 0.0;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double t = 0.0, full = 0.0;
                for (int k = 0; k < K; k++) {
                    const float b = trans ? B[j * LB + k] : Bn[k * LBN + j];
                    t += (double)__float_to_tf32(A[i * LA + k]) * __float_to_tf32(b);
                    full += (double)A[i * LA + k] * b;
                }
                worst = std::max(worst, std::fabs(C[i * LC + j] - t));
                rounding = std::max(rounding, std::fabs(C[i * LC + j] - full));
            }
        print_message("mma_tile %s: max |error| %.2e against tf32 operands, %.2e against fp32\n",
                      trans ? "A B^T" : "A B", worst, rounding);
        assert_true(worst < 1e-5);
        assert_true(rounding > 1e-5);  // the operands were rounded
    }
    // Misaligned tile (4 bytes off), an ldm of 30 floats, half a warp in the call.
    assert_true(aborts([&] {
        emu_launch(dim3(1), NTHREADS, bytes, [&] {
            SBMT_DYN_SMEM(float, sm);
            mma_tile<M, N, K, true>(sm + fa + fb + fbn, LC, sm + 1, LA, sm + fa, LB);
        });
    }));
    assert_true(aborts([&] {
        emu_launch(dim3(1), NTHREADS, bytes, [&] {
            SBMT_DYN_SMEM(float, sm);
            mma_tile<M, N, K, true>(sm + fa + fb + fbn, LC, sm, 30, sm + fa, LB);
        });
    }));
    assert_true(aborts([&] {
        emu_launch(dim3(1), 32, bytes, [&] {
            SBMT_DYN_SMEM(float, sm);
            if (threadIdx.x < 16) mma_tile<16, 16, 8, true>(sm + fa + fb + fbn, LC, sm, LA, sm + fa, LB);
        });
    }));
}

// Memberships of a layer as k_sbm_members_fwd leaves them: rows of padded positions are zero.
std::vector<float> members(const kbatch *bt, int H, int kc, float lo, float hi, uint64_t seed) {
    std::vector<float> Y((size_t)2 * bt->T * H * kc);
    uint64_t s = seed;
    for (size_t i = 0; i < Y.size(); i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        const size_t r = i / ((size_t)H * kc);
        const float u = (float)((s >> 40) / 16777216.0);
        Y[i] = bt->mask[r % (size_t)bt->T] == 0.0f ? 0.0f : lo + (hi - lo) * u;
    }
    return Y;
}

std::vector<float> randn(size_t n, uint64_t seed) {
    std::vector<float> v(n);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        const double u1 = ((s >> 11) + 0.5) / 9007199254740992.0;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        const double u2 = ((s >> 11) + 0.5) / 9007199254740992.0;
        v[i] = (float)(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
    }
    return v;
}

// One layer's SBM inputs on a batch of 3 sequences (lengths n, n/2 + 3, 37; padded keys inside
// the second), H = 2 heads, the CPU's dense-sampled graphs, and the GPU kernels' view of them.
struct sbm_fixture {
    static const int H = 2;
    int n, kc;
    kbatch bt;
    kctx cpu;
    sbm_graphs gs;
    std::vector<float> Y, S, T1;
    sbm_tile_args a;

    sbm_fixture(int n_, int kc_, float lo, float hi, float eps) : n(n_), kc(kc_) {
        const int B = 3, lens[3] = {n, n / 2 + 3, 37}, Hk = H * kc;
        batch_alloc(&bt, B, n);
        std::vector<int32_t> ids((size_t)B * n, 0);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < lens[b]; t++) ids[(size_t)b * n + t] = 1 + (b + t) % 11;
        const uint32_t samples[3] = {3, 11, 40};
        batch_pack(&bt, ids.data(), B, n, samples, 0, 0);
        for (int t = 2; t < lens[1]; t += 9) bt.mask[bt.off[1] + t] = 0.0f;  // padded inside
        Y = members(&bt, H, kc, lo, hi, 99 + kc);
        S.resize((size_t)H * kc * kc);
        for (size_t i = 0; i < S.size(); i++) S[i] = (float)(0.5 + (double)((i * 7919) % 1000) / 1000.0);
        for (int h = 0; h < H; h++) {  // entries sum to 1, as softmax's
            double sum = 0.0;
            for (int i = 0; i < kc * kc; i++) sum += S[(size_t)h * kc * kc + i];
            for (int i = 0; i < kc * kc; i++) S[(size_t)h * kc * kc + i] /= (float)sum;
        }
        const uint64_t seed = 1234;
        const uint32_t step = 7, layer = 1, head0 = 2;
        kctx_init(&cpu, KB_CPU, 1);
        std::memset(&gs, 0, sizeof(gs));
        int64_t edges[H];
        k_sbm_sample(&cpu, &gs, Y.data(), S.data(), &bt, H, kc, eps, SBM_SAMPLER_DENSE, seed,
                     step, layer, head0, edges);
        // T1 = Yq S per head (cuBLAS in the backend; CBLAS here).
        const int T = bt.T;
        T1.resize((size_t)T * Hk);
        for (int h = 0; h < H; h++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, kc, kc, 1.0f,
                        Y.data() + h * kc, Hk, S.data() + (size_t)h * kc * kc, kc, 0.0f,
                        T1.data() + h * kc, Hk);
        a.bt = view();
        a.T1 = T1.data();
        a.Yk = Y.data() + (size_t)T * Hk;
        a.H = H;
        a.kc = kc;
        a.eps = eps;
        a.seed = seed;
        a.step = step;
        a.layer = layer;
        a.head0 = head0;
        a.skip = nullptr;
    }
    ~sbm_fixture() {
        sbm_graphs_free(&gs);
        kctx_close(&cpu);
        batch_free(&bt);
    }
    dbatch view() const {
        dbatch d;
        d.B = bt.B;
        d.n = bt.n;
        d.T = bt.T;
        d.len = bt.len;
        d.off = bt.off;
        d.ids = bt.ids;
        d.mask = bt.mask;
        d.sample = bt.sample;
        return d;
    }
};

// The tile sampler's flags against the CPU dense sampler's CSR: returns the pairs that differ
// (float rounding of P at the threshold).
long sample_case(int n, int kc, float lo, float hi, float eps, long *pairs, long *edges) {
    sbm_fixture f(n, kc, lo, hi, eps);
    const int H = f.H, B = f.bt.B;
    std::vector<unsigned long long> count((size_t)B * H, 0);
    std::vector<uint8_t> flags((size_t)B * H * n * n, 0);
    emu_launch(dim3((unsigned)((n + 63) / 64), (unsigned)B, (unsigned)H), SBM_NTHREADS,
               sbm_tile_smem<64>::bytes(kc),
               [&] { sbm_count_kernel<64>(f.a, count.data(), flags.data()); });
    long diff = 0;
    *pairs = *edges = 0;
    for (int u = 0; u < B * H; u++) {
        const int b = u / H, h = u % H, L = f.bt.len[b];
        const sbm_graph *g = &f.gs.g[u];
        std::vector<uint8_t> ref((size_t)L * L, 0);
        for (int i = 0; i < L; i++)
            for (int e = g->rowptr[i]; e < g->rowptr[i + 1]; e++) ref[(size_t)i * L + g->col[e]] = 1;
        long mine = 0;
        for (int i = 0; i < L; i++)
            for (int j = 0; j < L; j++) {
                const uint8_t fl = flags[(((size_t)b * H + h) * n + i) * n + j];
                mine += fl;
                diff += fl != ref[(size_t)i * L + j];
            }
        assert_int_equal((long)count[u], mine);  // the counter agrees with the flags
        *pairs += (long)L * L;
        *edges += g->nnz;
    }
    return diff;
}

void test_tile_sampler_matches_cpu(void **state) {
    (void)state;
    struct {
        int n, kc;
        float lo, hi, eps;
    } cases[] = {{203, 16, 0.2f, 0.9f, 0.01f}, {160, 32, 0.02f, 0.3f, 0.01f}, {128, 8, 0.5f, 1.0f, 0.05f}};
    for (auto &c : cases) {
        long pairs, edges;
        const long diff = sample_case(c.n, c.kc, c.lo, c.hi, c.eps, &pairs, &edges);
        std::printf("tile sampler (emulated) n %d k %d: %ld edges of %ld pairs (density %.3f), %ld "
                    "flags differ from the CPU dense sampler\n",
                    c.n, c.kc, edges, pairs, (double)edges / (double)pairs, diff);
        assert_true(edges > pairs / 100);  // the case samples something
        // Only a pair whose uniform sits within float rounding of its threshold may differ.
        assert_true(diff <= 2 + pairs / 100000);
    }
}

// ||a - b|| / ||b||; *mismatch = 1 when one is finite and the other not.
double rel_err(const float *a, const float *b, size_t n, int *mismatch) {
    double num = 0.0, den = 0.0;
    *mismatch = 0;
    for (size_t i = 0; i < n; i++) {
        if (std::isfinite(a[i]) != std::isfinite(b[i])) *mismatch = 1;
        const double e = (double)a[i] - b[i];
        num += e * e;
        den += (double)b[i] * b[i];
    }
    return std::sqrt(num) / (den > 0 ? std::sqrt(den) : 1e-30);
}

template <int DH, int TM = TM_SIMT>
double sbm_fwd_case(int n, int kc, float lo, float hi, float p, int *mismatch) {
    sbm_fixture f(n, kc, lo, hi, 0.01f);
    const int H = f.H, HD = H * DH, T = f.bt.T;
    std::vector<float> qkv = randn((size_t)T * 3 * HD, 5 + DH + kc);
    const kdrop d = {77, 5, 1, 2};
    std::vector<float> ref((size_t)T * HD, NAN), got((size_t)T * HD, NAN), lse((size_t)T * H, NAN);
    k_batch_upload(&f.cpu, &f.bt);
    k_sbm_attn_fwd(&f.cpu, ref.data(), &f.gs, qkv.data(), &f.bt, H, DH, p, d);
    tile_args a;
    a.bt = f.view();
    a.qkv = qkv.data();
    a.H = H;
    a.dh = DH;
    a.HD = HD;
    a.ld = 3 * HD;
    a.sc = 1.0f / std::sqrt((float)DH);
    a.p = p;
    a.dscale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    a.thr = dropout_threshold(p);
    a.d = d;
    emu_launch(dim3((unsigned)((n + 63) / 64), (unsigned)f.bt.B, (unsigned)H), NTHREADS,
               sbm_attn_smem<DH, 64, TM>::fwd(kc),
               [&] { sbm_attn_fwd_kernel<DH, 64, TM>(a, f.a, got.data(), lse.data()); });
    return rel_err(got.data(), ref.data(), got.size(), mismatch);
}

// Forward and backward (dqkv, dY = [dYq; dYk], dS) of the tile kernels against the CPU's edge
// attention and straight-through products on the CPU dense sampler's graph. TM: how the
// kernels' products run (TM_TF32, TM_BF16: on emulated tensor cores).
template <int DH, int TM = TM_SIMT>
double sbm_bwd_case(int n, int kc, float lo, float hi, float p, int *mismatch) {
    sbm_fixture f(n, kc, lo, hi, 0.01f);
    const int H = f.H, HD = H * DH, T = f.bt.T, Hk = H * kc;
    const float reg = 1e-3f;
    std::vector<float> qkv = randn((size_t)T * 3 * HD, 5 + DH + kc);
    std::vector<float> dout = randn((size_t)T * HD, 9 + DH + kc);
    const kdrop d = {77, 5, 1, 2};
    // CPU
    std::vector<float> out((size_t)T * HD), dq1((size_t)T * 3 * HD, NAN), dY1((size_t)2 * T * Hk, NAN);
    std::vector<float> dS1((size_t)H * kc * kc, NAN);
    k_batch_upload(&f.cpu, &f.bt);
    k_sbm_attn_fwd(&f.cpu, out.data(), &f.gs, qkv.data(), &f.bt, H, DH, p, d);
    k_sbm_attn_bwd(&f.cpu, dq1.data(), dY1.data(), dS1.data(), dout.data(), qkv.data(), out.data(),
                   &f.gs, f.Y.data(), f.S.data(), &f.bt, H, DH, kc, p, d, reg);
    // GPU kernels (emulated)
    tile_args a;
    a.bt = f.view();
    a.qkv = qkv.data();
    a.H = H;
    a.dh = DH;
    a.HD = HD;
    a.ld = 3 * HD;
    a.sc = 1.0f / std::sqrt((float)DH);
    a.p = p;
    a.dscale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    a.thr = dropout_threshold(p);
    a.d = d;
    std::vector<float> out2((size_t)T * HD, NAN), lse((size_t)T * H, NAN), Dbuf((size_t)T * H, NAN);
    std::vector<float> dq2((size_t)T * 3 * HD, 0.0f), GYk((size_t)T * Hk, NAN), GTYq((size_t)T * Hk, NAN);
    const unsigned B = (unsigned)f.bt.B;
    emu_launch(dim3((unsigned)((n + 63) / 64), B, (unsigned)H), NTHREADS,
               sbm_attn_smem<DH, 64, TM>::fwd(kc),
               [&] { sbm_attn_fwd_kernel<DH, 64, TM>(a, f.a, out2.data(), lse.data()); });
    emu_launch(dim3((unsigned)(((size_t)T * H + 3) / 4)), 128, 0,
               [&] { rowdot_kernel(a, DH, Dbuf.data(), dout.data(), out2.data()); });
    const dim3 grid((unsigned)((n + SBM_BTR - 1) / SBM_BTR), B, (unsigned)H);
    emu_launch(grid, NTHREADS, sbm_bwd_smem<DH, TM>::q(kc), [&] {
        sbm_attn_bwd_q_kernel<DH, TM>(a, f.a, dq2.data(), GYk.data(), Dbuf.data(), dout.data(),
                                  lse.data(), reg);
    });
    emu_launch(grid, NTHREADS, sbm_bwd_smem<DH, TM>::kv(kc), [&] {
        sbm_attn_bwd_kv_kernel<DH, TM>(a, f.a, f.Y.data(), dq2.data(), GTYq.data(), Dbuf.data(),
                                   dout.data(), lse.data(), reg);
    });
    // dYq = GYk S^T, dYk = GTYq S, dS = Yq^T GYk (cuBLAS in the backend; CBLAS here).
    std::vector<float> dY2((size_t)2 * T * Hk, NAN), dS2((size_t)H * kc * kc, NAN);
    for (int h = 0; h < H; h++) {
        const float *Sh = f.S.data() + (size_t)h * kc * kc;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, kc, kc, 1.0f, GYk.data() + h * kc,
                    Hk, Sh, kc, 0.0f, dY2.data() + h * kc, Hk);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, kc, kc, 1.0f,
                    GTYq.data() + h * kc, Hk, Sh, kc, 0.0f, dY2.data() + (size_t)T * Hk + h * kc,
                    Hk);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kc, kc, T, 1.0f, f.Y.data() + h * kc,
                    Hk, GYk.data() + h * kc, Hk, 0.0f, dS2.data() + (size_t)h * kc * kc, kc);
    }
    int m1, m2, m3, m4;
    double e = rel_err(out2.data(), out.data(), out.size(), &m1);
    e = std::max(e, rel_err(dq2.data(), dq1.data(), dq1.size(), &m2));
    e = std::max(e, rel_err(dY2.data(), dY1.data(), dY1.size(), &m3));
    e = std::max(e, rel_err(dS2.data(), dS1.data(), dS1.size(), &m4));
    *mismatch = m1 || m2 || m3 || m4;
    return e;
}

void test_sbm_attention_backward_matches_cpu(void **state) {
    (void)state;
    int failures = 0;
    for (float p : {0.0f, 0.2f}) {
        int mm;
        double e1 = sbm_bwd_case<32>(203, 16, 0.2f, 0.9f, p, &mm);
        std::printf("sbm tile attention fwd+bwd (emulated) n 203 dh 32 k 16 p %.1f: out, dqkv, dY, "
                    "dS relative error %.2e%s\n", p, e1, mm ? ", non-finite mismatch" : "");
        failures += mm || !(e1 <= 2e-5);
        double e2 = sbm_bwd_case<16>(160, 32, 0.02f, 0.3f, p, &mm);
        std::printf("sbm tile attention fwd+bwd (emulated) n 160 dh 16 k 32 p %.1f: out, dqkv, dY, "
                    "dS relative error %.2e%s\n", p, e2, mm ? ", non-finite mismatch" : "");
        failures += mm || !(e2 <= 2e-5);
    }
    // Tensor cores (tf32 operands; bf16 attention operands), at 24 clusters: the
    // straight-through products' columns round up to 32, zero-filled. Within the operands'
    // rounding, and the rounding must show.
    int mm;
    double e3 = sbm_bwd_case<32, TM_TF32>(203, 24, 0.2f, 0.9f, 0.2f, &mm);
    std::printf("sbm tile attention fwd+bwd, tensor cores (emulated) n 203 dh 32 k 24 p 0.2: "
                "out, dqkv, dY, dS relative error %.2e%s\n", e3, mm ? ", non-finite mismatch" : "");
    failures += mm || !(e3 <= 5e-3 && e3 > 1e-6);
    double e4 = sbm_bwd_case<32, TM_BF16>(203, 24, 0.2f, 0.9f, 0.2f, &mm);
    std::printf("sbm tile attention fwd+bwd, tensor cores bf16 (emulated) n 203 dh 32 k 24 p 0.2: "
                "out, dqkv, dY, dS relative error %.2e%s\n", e4, mm ? ", non-finite mismatch" : "");
    failures += mm || !(e4 <= 2e-2 && e4 > 1e-4);
    assert_int_equal(failures, 0);
}

void test_sbm_attention_forward_matches_cpu(void **state) {
    (void)state;
    int failures = 0;
    for (float p : {0.0f, 0.2f}) {
        int mm;
        double e1 = sbm_fwd_case<32>(203, 16, 0.2f, 0.9f, p, &mm);
        std::printf("sbm tile attention fwd (emulated) n 203 dh 32 k 16 density ~0.3 p %.1f: "
                    "relative error %.2e%s\n", p, e1, mm ? ", non-finite mismatch" : "");
        failures += mm || !(e1 <= 2e-5);
        double e2 = sbm_fwd_case<64>(160, 32, 0.02f, 0.3f, p, &mm);
        std::printf("sbm tile attention fwd (emulated) n 160 dh 64 k 32 density ~0.03 p %.1f: "
                    "relative error %.2e%s\n", p, e2, mm ? ", non-finite mismatch" : "");
        failures += mm || !(e2 <= 2e-5);
    }
    assert_int_equal(failures, 0);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shuffle_and_barrier),
        cmocka_unit_test(test_exited_threads_and_atomics),
        cmocka_unit_test(test_divergent_barrier_reported),
        cmocka_unit_test(test_returned_lanes),
        cmocka_unit_test(test_schedule_shows_races),
        cmocka_unit_test(test_mma_tile),
        cmocka_unit_test(test_tile_sampler_matches_cpu),
        cmocka_unit_test(test_sbm_attention_forward_matches_cpu),
        cmocka_unit_test(test_sbm_attention_backward_matches_cpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
