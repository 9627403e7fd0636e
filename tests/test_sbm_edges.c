// test_sbm_edges.c: the per-edge CPU kernels of SBM attention against plain double-precision
// references, over shapes that take every code path: head sizes with and without the AVX2 form
// (multiples of 8 up to 64, and others), rows of 0..a few hundred edges (full and partial
// groups of eight), and straight-through products with k below, at and above multiples of the
// 32-wide chunk, non-square graphs, empty rows, strided operands and accumulation into
// non-zero outputs. And the dense sampler against the exact rule A_ij = [u_ij < min(1, P_ij +
// eps)] evaluated in double precision with the same random words.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/common.h"
#include "kernels/philox.h"
#include "kernels/sbm.h"
#include "kernels/cpu/sbm_bernoulli.h"
#include "kernels/cpu/sbm_edges.h"
#include "kernels/cpu/spmm.h"
#include "model/model.h"

static uint32_t rng_state;
static long n_clipped, n_unclipped;  // straight-through gradients seen on each side of the clip

static float frand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / 16777216.0f - 0.5f;
}

static float *rand_buf(size_t n) {
    float *x = xmalloc(sizeof(float) * (n > 0 ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = frand();
    return x;
}

// Sorted distinct columns of one row: each of ncols kept with probability dens.
static int rand_row(int *col, int ncols, double dens) {
    int c = 0;
    for (int j = 0; j < ncols; j++)
        if (frand() + 0.5f < dens) col[c++] = j;
    return c;
}

static void check(double got, double want, double scale, double tol, const char *what, int a,
                  int b) {
    if (fabs(got - want) > tol * scale) {
        print_error("%s (%d, %d): got %.9g, want %.9g (scale %.3g)\n", what, a, b, got, want,
                    scale);
        fail();
    }
}

// ---------------------------------------------------------------- edge kernels

static void run_edges_case(int dh, int L, double dens, float p_drop, int simd) {
    float *Kp = rand_buf((size_t)L * dh), *Vp = rand_buf((size_t)L * dh);
    float *q = rand_buf(dh), *dy = rand_buf(dh);
    int *col = xmalloc(sizeof(int) * L);
    int cnt = rand_row(col, L, dens);
    float *a = xmalloc(sizeof(float) * (cnt + 1)), *gv = xmalloc(sizeof(float) * (cnt + 1));
    uint8_t *keep = xmalloc((size_t)cnt + 1);
    const float sc = 1.0f / sqrtf((float)dh), dscale = 1.0f / (1.0f - p_drop), reg = 0.03f;
    // Scores.
    edges_scores(a, col, cnt, q, Kp, dh, sc, simd);
    for (int e = 0; e < cnt; e++) {
        double s = 0.0, mag = 0.0;
        for (int c = 0; c < dh; c++) {
            s += (double)q[c] * Kp[(size_t)col[e] * dh + c];
            mag += fabs((double)q[c] * Kp[(size_t)col[e] * dh + c]);
        }
        check(a[e], s * sc, mag * sc + 1e-30, 1e-5, "edges_scores", dh, e);
    }
    // Weights in (0, 1) with dropout flags, then aggregation.
    for (int e = 0; e < cnt; e++) {
        a[e] = frand() + 0.5f;
        keep[e] = frand() + 0.5f >= p_drop;
    }
    float *y = rand_buf(dh);  // overwritten
    edges_aggregate(y, col, a, keep, cnt, Vp, dh, dscale, simd);
    for (int c = 0; c < dh; c++) {
        double s = 0.0, mag = 0.0;
        for (int e = 0; e < cnt; e++) {
            double t = keep[e] ? (double)a[e] * dscale * Vp[(size_t)col[e] * dh + c] : 0.0;
            s += t;
            mag += fabs(t);
        }
        check(y[c], s, mag + 1e-6, 1e-5, "edges_aggregate", dh, c);
    }
    // Backward of the row, accumulating into non-zero dK, dV.
    float *dKp = rand_buf((size_t)L * dh), *dVp = rand_buf((size_t)L * dh);
    float *dK0 = xmalloc(sizeof(float) * (size_t)L * dh),
          *dV0 = xmalloc(sizeof(float) * (size_t)L * dh);
    memcpy(dK0, dKp, sizeof(float) * (size_t)L * dh);
    memcpy(dV0, dVp, sizeof(float) * (size_t)L * dh);
    float *dq = rand_buf(dh);
    float Di = 0.3f * frand();
    // Large output gradients so that the clip of the straight-through gradient is active.
    for (int c = 0; c < dh; c++) dy[c] *= 8.0f;
    edges_bwd_row(dq, dKp, dVp, gv, col, a, keep, cnt, q, dy, Di, Kp, Vp, dh, sc, dscale, reg,
                  simd);
    double *rdq = calloc((size_t)dh, sizeof(double));
    int clipped = 0;
    for (int e = 0; e < cnt; e++) {
        const int j = col[e];
        double kf = keep[e] ? dscale : 0.0, dad = 0.0, mag = 0.0;
        for (int c = 0; c < dh; c++) {
            dad += (double)dy[c] * Vp[(size_t)j * dh + c];
            mag += fabs((double)dy[c] * Vp[(size_t)j * dh + c]);
        }
        double ds = a[e] * (dad * kf - Di), g = ds + reg;
        g = g > 1.0 ? 1.0 : (g < -1.0 ? -1.0 : g);
        clipped += fabs(ds + reg) > 1.0;
        check(gv[e], g, a[e] * mag * kf + fabs(Di) + 1.0, 1e-5, "edges_bwd_row gv", dh, e);
        for (int c = 0; c < dh; c++) rdq[c] += sc * ds * Kp[(size_t)j * dh + c];
    }
    for (int c = 0; c < dh; c++) check(dq[c], rdq[c], 1.0 + fabs(rdq[c]), 1e-4, "dq", dh, c);
    // dK, dV per key: the row's single edge into key j (if any).
    for (int j = 0, e = 0; j < L; j++) {
        int has = e < cnt && col[e] == j;
        for (int c = 0; c < dh; c++) {
            double wantk = dK0[(size_t)j * dh + c], wantv = dV0[(size_t)j * dh + c];
            if (has) {
                double kf = keep[e] ? dscale : 0.0, dad = 0.0;
                for (int cc = 0; cc < dh; cc++) dad += (double)dy[cc] * Vp[(size_t)j * dh + cc];
                double ds = a[e] * (dad * kf - Di);
                wantk += sc * ds * q[c];
                wantv += a[e] * kf * dy[c];
            }
            check(dKp[(size_t)j * dh + c], wantk, 1.0 + fabs(wantk), 1e-5, "dK", j, c);
            check(dVp[(size_t)j * dh + c], wantv, 1.0 + fabs(wantv), 1e-5, "dV", j, c);
        }
        e += has;
    }
    n_clipped += clipped;
    n_unclipped += cnt - clipped;
    free(Kp), free(Vp), free(q), free(dy), free(col), free(a), free(gv), free(keep), free(y);
    free(dKp), free(dVp), free(dK0), free(dV0), free(dq), free(rdq);
}

static void test_edge_kernels(void **state) {
    (void)state;
    rng_state = 7;
    const int dhs[] = {4, 8, 12, 16, 24, 32, 40, 64, 72};
    const int Ls[] = {1, 7, 9, 64, 300};
    const double dens[] = {0.0, 0.3, 1.0};
    for (size_t a = 0; a < sizeof(dhs) / sizeof(*dhs); a++)
        for (size_t b = 0; b < sizeof(Ls) / sizeof(*Ls); b++)
            for (size_t c = 0; c < sizeof(dens) / sizeof(*dens); c++)
                for (int simd = 0; simd < 2; simd++)
                    run_edges_case(dhs[a], Ls[b], dens[c], c == 1 ? 0.2f : 0.0f, simd);
    print_message("straight-through gradients: %ld clipped, %ld not\n", n_clipped, n_unclipped);
    assert_true(n_clipped > 100 && n_unclipped > 100);
    // Which head sizes are vectorised is a property of the build; both kinds ran above.
    print_message("edges_fast(32) = %d, edges_fast(12) = %d\n", edges_fast(32), edges_fast(12));
    assert_false(edges_fast(12));
}

// ---------------------------------------------------------------- straight-through products

static void run_spmm_case(int rows, int ncols, int kc, double dens, int simd) {
    const int ldy = kc + 3, ldo = kc + 5;
    int *ptr = xmalloc(sizeof(int) * (rows + 1)),
        *idx = xmalloc(sizeof(int) * ((size_t)rows * ncols + 1));
    int nnz = 0;
    for (int i = 0; i < rows; i++) {
        ptr[i] = nnz;
        // Every fifth row empty; the others at the given density.
        nnz += i % 5 == 3 ? 0 : rand_row(idx + nnz, ncols, dens);
    }
    ptr[rows] = nnz;
    float *w = rand_buf(nnz), *A = rand_buf((size_t)rows * ldy), *B = rand_buf((size_t)ncols * ldy);
    float *GA = rand_buf((size_t)rows * ldo), *GB = rand_buf((size_t)ncols * ldo);
    double *rA = xmalloc(sizeof(double) * (size_t)rows * ldo),
           *rB = xmalloc(sizeof(double) * (size_t)ncols * ldo);
    double *mA = calloc((size_t)rows * ldo, sizeof(double)),
           *mB = calloc((size_t)ncols * ldo, sizeof(double));
    for (size_t i = 0; i < (size_t)rows * ldo; i++) rA[i] = GA[i];
    for (size_t i = 0; i < (size_t)ncols * ldo; i++) rB[i] = GB[i];
    for (int i = 0; i < rows; i++)
        for (int e = ptr[i]; e < ptr[i + 1]; e++)
            for (int c = 0; c < kc; c++) {
                double ta = (double)w[e] * B[(size_t)idx[e] * ldy + c];
                double tb = (double)w[e] * A[(size_t)i * ldy + c];
                rA[(size_t)i * ldo + c] += ta;
                mA[(size_t)i * ldo + c] += fabs(ta);
                rB[(size_t)idx[e] * ldo + c] += tb;
                mB[(size_t)idx[e] * ldo + c] += fabs(tb);
            }
    float *scratch = xmalloc(sizeof(float) * spmm_scratch_floats(ncols, kc));
    spmm_pair(GA, GB, ldo, ptr, idx, w, rows, ncols, A, B, ldy, kc, scratch, simd);
    for (int i = 0; i < rows; i++)
        for (int c = 0; c < ldo; c++) {
            size_t o = (size_t)i * ldo + c;  // columns >= kc must be untouched
            check(GA[o], rA[o], 1.0 + mA[o], 1e-6, "spmm G B", i, c);
        }
    for (int j = 0; j < ncols; j++)
        for (int c = 0; c < ldo; c++) {
            size_t o = (size_t)j * ldo + c;
            check(GB[o], rB[o], 1.0 + mB[o], 1e-6, "spmm G^T A", j, c);
        }
    free(ptr), free(idx), free(w), free(A), free(B), free(GA), free(GB), free(rA), free(rB);
    free(mA), free(mB), free(scratch);
}

static void test_spmm_pair(void **state) {
    (void)state;
    rng_state = 11;
    const int kcs[] = {1, 3, 8, 31, 32, 33, 40, 64, 128, 130};
    for (size_t a = 0; a < sizeof(kcs) / sizeof(*kcs); a++)
        for (int simd = 0; simd < 2; simd++) {
            run_spmm_case(1, 1, kcs[a], 1.0, simd);
            run_spmm_case(70, 70, kcs[a], 0.3, simd);     // one full row block + a partial one
            run_spmm_case(150, 300, kcs[a], 0.25, simd);  // non-square, several column tiles
            run_spmm_case(200, 90, kcs[a], 1.0, simd);    // complete rows
            run_spmm_case(40, 50, kcs[a], 0.0, simd);     // no edges at all
            run_spmm_case(64, 2000, kcs[a], 0.05, simd);  // sparse: wider column tiles
            run_spmm_case(30, 1000, kcs[a], 0.01, simd);  // sparser: one tile for all columns
        }
}

// ---------------------------------------------------------------- dense sampler

static void run_sampler_case(int n, int kc, const int *lens, int B, float eps, double scale,
                             int simd) {
    enum { H = 2 };
    kctx k;
    kctx_init(&k, KB_CPU, 2);
    k.simd = simd;  // 1: the fused sampler kernel (AVX2 builds); 0: the BLAS one of other builds
    kbatch bt;
    batch_alloc(&bt, B, n);
    int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)B * n);
    uint32_t sample[8];
    for (int b = 0; b < B; b++) {
        sample[b] = 40 + 3 * (uint32_t)b;
        for (int i = 0; i < n; i++) ids[b * n + i] = i < lens[b] && i % 13 != 4 ? 1 + i % 9 : 0;
    }
    batch_pack(&bt, ids, B, n, sample, 0, 0);
    const int T = bt.T, Hk = H * kc;
    float *Y = xmalloc(sizeof(float) * 2 * (size_t)T * Hk),
          *S = xmalloc(sizeof(float) * H * kc * kc);
    for (int r = 0; r < 2 * T; r++)
        for (int c = 0; c < Hk; c++) Y[(size_t)r * Hk + c] = bt.mask[r % T] ? 0.5f + frand() : 0.0f;
    for (int h = 0; h < H; h++) {
        double sum = 0.0;
        for (int i = 0; i < kc * kc; i++) sum += S[h * kc * kc + i] = 0.5f + frand();
        // Mean P is about scale / 4; at scale 4 many pairs have P + eps > 1 (always sampled).
        for (int i = 0; i < kc * kc; i++)
            S[h * kc * kc + i] = (float)(S[h * kc * kc + i] / sum * scale);
    }
    sbm_graphs gs = {0};
    int64_t edges[H];
    const uint64_t seed = 77;
    const uint32_t step = 3, layer = 1, head0 = 2;
    k_sbm_sample(&k, &gs, Y, S, &bt, H, kc, eps, SBM_SAMPLER_DENSE, seed, step, layer, head0,
                 edges);
    long pairs = 0, ties = 0, sampled = 0, sure = 0;
    for (int u = 0; u < gs.units; u++) {
        const int b = u / H, h = u % H, L = bt.len[b], base = bt.off[b];
        const sbm_graph *g = &gs.g[u];
        assert_int_equal(g->rows, L);
        const float *yq = Y + (size_t)base * Hk + h * kc,
                    *yk = Y + ((size_t)T + base) * Hk + h * kc;
        const float *Sh = S + (size_t)h * kc * kc, *mask = bt.mask + base;
        rng_stream st = rng_make(seed, RNG_GRAPH, step, layer, head0 + (uint32_t)h, sample[b]);
        for (int i = 0; i < L; i++) {
            int e = g->rowptr[i];
            for (int j = 0; j < L; j++) {
                const int has = e < g->rowptr[i + 1] && g->col[e] == j;
                e += has;
                if (mask[i] == 0.0f || mask[j] == 0.0f) {
                    assert_false(has);
                    continue;
                }
                double P = 0.0;
                for (int a = 0; a < kc; a++) {
                    double row = 0.0;
                    for (int c = 0; c < kc; c++)
                        row += (double)Sh[a * kc + c] * yk[(size_t)j * Hk + c];
                    P += yq[(size_t)i * Hk + a] * row;
                }
                double pr = P + eps < 1.0 ? P + eps : 1.0;
                sure += pr == 1.0;
                uint32_t el = (uint32_t)i * (uint32_t)n + (uint32_t)j;
                uint32_t word = rng_block(st, el >> 2).v[el & 3u];
                double u24 = (double)(word >> 8), thr = pr * 16777216.0;
                pairs++;
                // Float rounding of P moves the threshold by a few units of 2^-24 at most.
                if (fabs(u24 - thr) < 8.0) {
                    ties++;
                    continue;
                }
                if (has != (u24 < thr)) {
                    print_error("unit %d pair (%d, %d): edge %d, u %.0f, threshold %.1f\n", u, i, j,
                                has, u24, thr);
                    fail();
                }
                sampled += has;
            }
            assert_int_equal(e, g->rowptr[i + 1]);  // no edge outside 0..L-1, none repeated
        }
    }
    print_message(
        "simd %d n %d k %d: %ld pairs checked, %ld sampled, %ld with P + eps >= 1, %ld within "
        "rounding of the threshold\n",
        simd, n, kc, pairs, sampled, sure, ties);
    assert_true(ties * 1000 < pairs);
    assert_true(sampled > pairs / 10 && sampled < pairs);
    sbm_graphs_free(&gs);
    free(ids), free(Y), free(S);
    batch_free(&bt);
}

// The fused tile kernel against its portable loop on the same inputs: identical edge lists
// except at pairs whose uniform sits within float rounding of the threshold (none expected).
static void test_bernoulli_tile(void **state) {
    (void)state;
    rng_state = 21;
    const int Ls[] = {1, 15, 16, 17, 100}, kcs[] = {1, 5, 16, 128};
    for (size_t a = 0; a < sizeof(Ls) / sizeof(*Ls); a++)
        for (size_t b = 0; b < sizeof(kcs) / sizeof(*kcs); b++)
            for (int R = 1; R <= BERN_ROWS; R++) {
                const int L = Ls[a], kc = kcs[b], np = (L + 15) / 16;
                float *T1 = xmalloc(sizeof(float) * (size_t)R * kc);
                float *Yk = xmalloc(sizeof(float) * (size_t)L * kc),
                      *mask = xmalloc(sizeof(float) * L);
                for (int i = 0; i < R * kc; i++) T1[i] = (frand() + 0.5f) * 2.0f / kc;
                for (int i = 0; i < L * kc; i++) Yk[i] = frand() + 0.5f;
                for (int j = 0; j < L; j++) mask[j] = j % 7 == 3 ? 0.0f : 1.0f;
                float *Ykp = xmalloc(sizeof(float) * bern_keys_floats(L, kc));
                uint16_t *valid = xmalloc(sizeof(uint16_t) * np);
                bern_pack_keys(Ykp, valid, Yk, kc, mask, L, kc);
                uint32_t *wbuf = xmalloc(sizeof(uint32_t) * R * np * 16);
                const uint32_t *w[BERN_ROWS];
                for (int r = 0; r < R; r++) {
                    for (int j = 0; j < np * 16; j++)
                        wbuf[r * np * 16 + j] = rng_state = rng_state * 1664525u + 1013904223u;
                    w[r] = wbuf + r * np * 16;
                }
                int *cbuf = xmalloc(sizeof(int) * 2 * BERN_ROWS * L), *cols[2][BERN_ROWS],
                    cnt[2][BERN_ROWS];
                for (int s = 0; s < 2; s++) {
                    for (int r = 0; r < BERN_ROWS; r++) cols[s][r] = cbuf + (s * BERN_ROWS + r) * L;
                    bern_rows(cols[s], cnt[s], T1, kc, R, Ykp, valid, L, kc, 0.02f, w, s);
                }
                for (int r = 0; r < R; r++) {
                    assert_int_equal(cnt[0][r], cnt[1][r]);
                    for (int e = 0; e < cnt[0][r]; e++) {
                        assert_int_equal(cols[0][r][e], cols[1][r][e]);
                        assert_true(mask[cols[0][r][e]] != 0.0f);
                    }
                }
                free(T1), free(Yk), free(mask), free(Ykp), free(valid), free(wbuf), free(cbuf);
            }
}

static void test_dense_sampler_exact(void **state) {
    (void)state;
    const int lens1[] = {101, 37, 1}, lens2[] = {64, 17}, lens3[] = {130};
    for (int simd = 0; simd < 2; simd++) {
        rng_state = 5;
        run_sampler_case(101, 40, lens1, 3, 0.01f, 1.4, simd);  // n % 4 != 0: words straddle blocks
        run_sampler_case(64, 7, lens2, 2, 0.05f, 4.0, simd);
        run_sampler_case(130, 128, lens3, 1, 0.01f, 1.0, simd);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_edge_kernels),
        cmocka_unit_test(test_spmm_pair),
        cmocka_unit_test(test_bernoulli_tile),
        cmocka_unit_test(test_dense_sampler_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
