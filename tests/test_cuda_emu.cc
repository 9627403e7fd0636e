// test_cuda_emu.cc: the CUDA backend's tiled softmax attention kernels
// (kernels/cuda/attention_tiled_kernels.cuh), run on the CPU through tests/cuda_emu.h, against
// the CPU backend on the same inputs: forward output and log-sum-exp, and every gradient, at
// each tiled head size, with and without attention dropout, on a batch with lengths that are
// not multiples of a tile, padded keys inside a sequence, a sequence whose keys are all padded,
// and padded lengths n = 200 (dropout blocks aligned with rows) and 203 (not aligned). This
// checks the kernels' logic where CI has no GPU; test_backend_ops checks the compiled kernels
// on a GPU. The launches mirror kernels/cuda/attention_tiled.cu's launch_fwd / launch_bwd.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "tests/cuda_emu.h"  // (C++ headers before cmocka.h, whose fail() macro breaks them)

#define OMPI_SKIP_MPICXX 1
#include <mpi.h>  // before the C headers that include it, outside extern "C"

extern "C" {
#include <cmocka.h>

#include "kernels/common.h"
#include "kernels/kernels.h"
#include "model/model.h"
}

// The emulator stands in for the CUDA built-ins; the kernel header comes after it.
#include "kernels/cuda/attention_tiled_kernels.cuh"

namespace {

struct batch_case {
    kbatch bt;
};

// B = 4 sequences of padded length n: lengths n, 77, 131, 9; sequence 2 has padded keys every
// 17 positions, sequence 3 only padding (its rows attend to nothing).
void make_batch(kbatch *bt, int n) {
    const int B = 4, lens[4] = {n, 77, 131, 9};
    batch_alloc(bt, B, n);
    std::vector<int32_t> ids((size_t)B * n, 0);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < lens[b]; t++) ids[(size_t)b * n + t] = 1 + (b + t) % 11;
    const uint32_t samples[4] = {5, 8, 13, 21};
    batch_pack(bt, ids.data(), B, n, samples, 0, 0);
    // Padding inside sequences: the packed rows stay, their mask goes to 0 (tb_pad's rule).
    for (int t = 3; t < 131; t += 17) bt->mask[bt->off[2] + t] = 0.0f;
    for (int t = 0; t < bt->len[3]; t++) bt->mask[bt->off[3] + t] = 0.0f;
}

std::vector<float> randn(size_t n, uint64_t seed) {
    std::vector<float> v(n);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        double u1, u2;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        u1 = ((s >> 11) + 0.5) / 9007199254740992.0;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        u2 = ((s >> 11) + 0.5) / 9007199254740992.0;
        v[i] = (float)(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
    }
    return v;
}

dbatch view(const kbatch *bt) {
    dbatch d;
    d.B = bt->B;
    d.n = bt->n;
    d.T = bt->T;
    d.len = bt->len;
    d.off = bt->off;
    d.ids = bt->ids;
    d.mask = bt->mask;
    d.sample = bt->sample;
    return d;
}

template <int DH, int TR>
void run_tiled(const kbatch *bt, int H, const float *qkv, const float *dout, float p, kdrop d,
               float *out, float *lse, float *dqkv) {
    tile_args a;
    a.bt = view(bt);
    a.qkv = qkv;
    a.H = H;
    a.HD = H * DH;
    a.ld = 3 * H * DH;
    a.sc = 1.0f / std::sqrt((float)DH);
    a.p = p;
    a.dscale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    a.thr = dropout_threshold(p);
    a.d = d;
    dim3 grid((unsigned)((bt->n + TR - 1) / TR), (unsigned)bt->B, (unsigned)H);
    emu_launch(grid, NTHREADS, tile_smem<DH, TR>::fwd, [&] { tiled_fwd<DH, TR>(a, out, lse); });
    std::vector<float> Dbuf((size_t)bt->T * H, NAN);
    std::memset(dqkv, 0, sizeof(float) * (size_t)bt->T * a.ld);
    const size_t warps = (size_t)bt->T * H;
    emu_launch(dim3((unsigned)((warps + 3) / 4)), 128, 0,
               [&] { rowdot_kernel(a, DH, Dbuf.data(), dout, out); });
    emu_launch(grid, NTHREADS, tile_smem<DH, TR>::bwd_q,
               [&] { tiled_bwd_q<DH, TR>(a, dqkv, Dbuf.data(), dout, lse); });
    emu_launch(grid, NTHREADS, tile_smem<DH, TR>::bwd_kv,
               [&] { tiled_bwd_kv<DH, TR>(a, dqkv, Dbuf.data(), dout, lse); });
}

// ||a - b|| / ||b|| over entries where not both are the same infinity; *mismatch = 1 when one
// is finite and the other not.
double rel_err(const float *a, const float *b, size_t n, int *mismatch) {
    double num = 0.0, den = 0.0;
    *mismatch = 0;
    for (size_t i = 0; i < n; i++) {
        if (std::isinf(a[i]) && std::isinf(b[i]) && (a[i] > 0) == (b[i] > 0)) continue;
        if (std::isfinite(a[i]) != std::isfinite(b[i])) *mismatch = 1;
        double e = (double)a[i] - b[i];
        num += e * e;
        den += (double)b[i] * b[i];
    }
    return std::sqrt(num) / (den > 0 ? std::sqrt(den) : 1e-30);
}

template <int DH, int TR> int check(kctx *cpu, const kbatch *bt, float p) {
    const int H = 2, HD = H * DH;
    const size_t nq = (size_t)bt->T * 3 * HD, no = (size_t)bt->T * HD, nl = (size_t)bt->T * H;
    std::vector<float> qkv = randn(nq, 3 + DH), dout = randn(no, 7 + DH);
    kdrop d = {77, 5, 1, 2};
    std::vector<float> o1(no, NAN), l1(nl, NAN), g1(nq, NAN), o2(no, NAN), l2(nl, NAN), g2(nq, NAN);
    k_batch_upload(cpu, bt);
    k_attn_softmax_fwd(cpu, o1.data(), l1.data(), qkv.data(), bt, H, DH, p, d);
    k_attn_softmax_bwd(cpu, g1.data(), dout.data(), qkv.data(), o1.data(), l1.data(), bt, H, DH,
                       p, d);
    run_tiled<DH, TR>(bt, H, qkv.data(), dout.data(), p, d, o2.data(), l2.data(), g2.data());
    const char *names[3] = {"out", "lse", "dqkv"};
    const float *ref[3] = {o1.data(), l1.data(), g1.data()}, *got[3] = {o2.data(), l2.data(), g2.data()};
    const size_t sz[3] = {no, nl, nq};
    int bad = 0;
    double worst = 0.0;
    for (int i = 0; i < 3; i++) {
        int mm;
        double e = rel_err(got[i], ref[i], sz[i], &mm);
        if (e > worst) worst = e;
        if (mm || !(e <= 2e-5)) {
            print_error("tiled attention (emulated) n %d dh %d p %.1f: %s relative error %.3e%s\n",
                        bt->n, DH, p, names[i], e, mm ? ", finite/non-finite mismatch" : "");
            bad = 1;
        }
    }
    std::printf("tiled attention (emulated) n %d dh %3d tile %d p %.1f: relative error %.2e%s\n",
                bt->n, DH, TR, p, worst, bad ? "  FAILED" : "");
    return bad;
}

void test_tiled_attention(void **state) {
    (void)state;
    kctx cpu;
    kctx_init(&cpu, KB_CPU, 1);
    int failures = 0;
    for (int n : {200, 203}) {
        kbatch bt;
        make_batch(&bt, n);
        for (float p : {0.0f, 0.2f}) {
            failures += check<16, 64>(&cpu, &bt, p);
            failures += check<32, 64>(&cpu, &bt, p);
            failures += check<64, 64>(&cpu, &bt, p);
            failures += check<128, 32>(&cpu, &bt, p);
        }
        batch_free(&bt);
    }
    kctx_close(&cpu);
    assert_int_equal(failures, 0);
}

// The emulator itself: a shuffle reads the partner lane's value, a barrier orders shared memory.
void test_emulator(void **state) {
    (void)state;
    std::vector<float> out(64);
    emu_launch(dim3(2), 32, sizeof(float) * 32, [&] {
        SBMT_DYN_SMEM(float, sh);
        const int t = (int)threadIdx.x;
        sh[t] = (float)(t + 100 * blockIdx.x);
        __syncthreads();
        float v = sh[31 - t] + __shfl_xor_sync(0xffffffffu, (float)t, 5);
        out[blockIdx.x * 32 + t] = v;
    });
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < 32; t++)
            assert_true(out[b * 32 + t] == (float)(31 - t + 100 * b) + (float)(t ^ 5));
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_emulator),
        cmocka_unit_test(test_tiled_attention),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
