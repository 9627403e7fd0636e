// test_sbm_modes.c: the two ways of computing attention on a sampled graph (edge by edge, and
// in dense row blocks with GEMMs for densely sampled units) give the same outputs and the same
// gradients, straight-through products included, on the same graphs. Run with a head size and
// cluster count that take the portable loops and with ones that take the vectorised kernels.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/common.h"
#include "kernels/kernels.h"
#include "kernels/sbm.h"
#include "model/model.h"

enum { B = 3, N = 150, H = 2 };

static float frand(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / 16777216.0f;
}

static void run_mode(int dense, sbm_graphs *gs, float *out, float *dqkv, float *dY, float *dS,
                     const float *qkv, const float *Y, const float *S, const float *dout,
                     const kbatch *bt, kctx *k, int DH, int KC) {
    for (int u = 0; u < gs->units; u++) gs->g[u].path = dense ? SBM_PATH_BLOCKS : SBM_PATH_EDGES;
    kdrop d = {9, 4, 1, 0};
    k_sbm_attn_fwd(k, out, gs, qkv, bt, H, DH, 0.15f, d);
    k_sbm_attn_bwd(k, dqkv, dY, dS, dout, qkv, out, gs, Y, S, bt, H, DH, KC, 0.15f, d, 0.02f);
}

static void assert_close(const float *a, const float *b, size_t n, double tol, const char *what) {
    double worst = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(a[i]));
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(a[i] - b[i]));
    print_message("%s: max |diff| %.3g (max |value| %.3g)\n", what, worst, scale);
    assert_true(scale > 0.0);
    assert_true(worst <= tol * scale);
}

static void run_case(int DH, int KC, int simd) {
    kctx k;
    kctx_init(&k, KB_CPU, 2);
    k.simd = simd;
    kbatch bt;
    batch_alloc(&bt, B, N);
    int32_t ids[B * N];
    print_message("head size %d, clusters %d, simd %d\n", DH, KC, simd);
    uint32_t st = 1, sample[B] = {3, 8, 1};
    const int lens[B] = {150, 97, 70};  // 70 < one block of 64 rows + a partial one
    for (int b = 0; b < B; b++)
        for (int i = 0; i < N; i++) ids[b * N + i] = i < lens[b] && (i % 11 != 5) ? 1 + i % 7 : 0;
    batch_pack(&bt, ids, B, N, sample, 0, 0);
    const int T = bt.T, HD = H * DH, Hk = H * KC;
    float *qkv = xmalloc(sizeof(float) * T * 3 * HD), *dout = xmalloc(sizeof(float) * T * HD);
    float *Y = xmalloc(sizeof(float) * 2 * T * Hk), *S = xmalloc(sizeof(float) * H * KC * KC);
    for (int i = 0; i < T * 3 * HD; i++) qkv[i] = frand(&st) - 0.5f;
    for (int i = 0; i < T * HD; i++) dout[i] = 4.0f * (frand(&st) - 0.5f);  // clip is active
    for (int r = 0; r < 2 * T; r++)
        for (int c = 0; c < Hk; c++) Y[r * Hk + c] = bt.mask[r % T] ? 0.05f + 0.9f * frand(&st) : 0;
    for (int h = 0; h < H; h++) {
        double sum = 0;
        for (int i = 0; i < KC * KC; i++) sum += S[h * KC * KC + i] = frand(&st);
        for (int i = 0; i < KC * KC; i++) S[h * KC * KC + i] /= (float)sum;
    }
    sbm_graphs gs = {0};
    int64_t edges[H];
    k_sbm_sample(&k, &gs, Y, S, &bt, H, KC, 0.02f, SBM_SAMPLER_FASTRG, 5, 2, 1, 0, edges);
    assert_true(edges[0] > 0 && edges[1] > 0);
    float *o[2], *dq[2], *dy[2], *ds[2];
    for (int m = 0; m < 2; m++) {
        o[m] = xmalloc(sizeof(float) * T * HD);
        dq[m] = xmalloc(sizeof(float) * T * 3 * HD);
        dy[m] = xmalloc(sizeof(float) * 2 * T * Hk);
        ds[m] = xmalloc(sizeof(float) * H * KC * KC);
        run_mode(m, &gs, o[m], dq[m], dy[m], ds[m], qkv, Y, S, dout, &bt, &k, DH, KC);
    }
    // Float sums in different orders: a few ulps relative to the largest value.
    assert_close(o[0], o[1], (size_t)T * HD, 1e-5, "output");
    assert_close(dq[0], dq[1], (size_t)T * 3 * HD, 1e-5, "dqkv");
    assert_close(dy[0], dy[1], (size_t)2 * T * Hk, 1e-5, "dY (straight-through)");
    assert_close(ds[0], ds[1], (size_t)H * KC * KC, 1e-5, "dS (straight-through)");
    for (int m = 0; m < 2; m++) free(o[m]), free(dq[m]), free(dy[m]), free(ds[m]);
    sbm_graphs_free(&gs);
    free(qkv), free(dout), free(Y), free(S);
    batch_free(&bt);
}

static void test_sparse_equals_dense_blocks(void **state) {
    (void)state;
    run_case(6, 5, 1);    // portable edge loops, k below one 32-wide chunk
    run_case(32, 40, 1);  // vectorised edge kernels, one chunk of k plus a remainder
    run_case(32, 40, 0);  // the same shapes on the portable loops
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_sparse_equals_dense_blocks)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
