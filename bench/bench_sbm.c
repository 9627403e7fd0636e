// bench_sbm.c: SBM attention cost on the CPU backend (one thread unless OMP_NUM_THREADS says
// otherwise). Three tables:
//   sampler: fastRG vs dense sampler time against expected density (the `auto` crossover);
//   edges:   sparse attention forward+backward time against edge count at fixed n, and against
//            n at fixed expected degree, with a least-squares line and residuals;
//   layer:   one encoder layer forward+backward at n = 1024..8192, sbm (densities at
//            initialisation) vs our softmax attention.
//   sgemm:   the single-thread SGEMM rate, the peak model FLOP rates are compared to.
//   paths:   edge-by-edge vs dense-row-block attention against density (SBM_BLOCKS_FRACTION).
// usage: build/bench_sbm [sampler|edges|paths|layer|sgemm|all]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "kernels/common.h"
#include "kernels/kernels.h"
#include "kernels/philox.h"
#include "kernels/sbm.h"
#include "model/model.h"

static float frand(uint32_t *state) {
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / 16777216.0f;
}

// One sequence of n valid tokens.
static void make_batch(kbatch *bt, int n) {
    batch_alloc(bt, 1, n);
    int32_t *ids = xmalloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++) ids[i] = 1 + i % 15;
    uint32_t sample = 0;
    batch_pack(bt, ids, 1, n, &sample, 0, 0);
    free(ids);
}

// Memberships whose expected density is about `target`: Yq = Yk = sqrt(target) * (1 +- 0.3)
// with a uniform S, so P_ij ~ target.
static void make_members(float *Y, float *S, int n, int H, int kc, float target, uint32_t seed) {
    uint32_t st = seed;
    float base = sqrtf(target);
    for (size_t i = 0; i < (size_t)2 * n * H * kc; i++) {
        float y = base * (0.7f + 0.6f * frand(&st));
        Y[i] = y > 0.999f ? 0.999f : y;
    }
    for (size_t i = 0; i < (size_t)H * kc * kc; i++) S[i] = 1.0f / ((float)kc * kc);
}

static double time_sampler(kctx *k, sbm_graphs *gs, const float *Y, const float *S, kbatch *bt,
                           int kc, sbm_sampler smp, int reps, int64_t *edges) {
    double t0 = sbmt_now();
    for (int r = 0; r < reps; r++)
        k_sbm_sample(k, gs, Y, S, bt, 1, kc, 0.01f, smp, 1, (uint32_t)r, 0, 0, edges);
    return (sbmt_now() - t0) / reps;
}

static void bench_sampler(kctx *k) {
    const int kc = 128;
    printf("\n== sampler: seconds per (sequence, head), k = %d, eps = 0.01\n", kc);
    printf("%6s %9s %12s %12s %12s %8s\n", "n", "density", "edges", "fastrg_ms", "dense_ms",
           "faster");
    const int ns[] = {1024, 2048};
    const float dens[] = {0.01f, 0.03f, 0.1f, 0.2f, 0.3f, 0.45f, 0.6f};
    for (int a = 0; a < 2; a++) {
        int n = ns[a];
        kbatch bt;
        make_batch(&bt, n);
        float *Y = xmalloc(sizeof(float) * 2 * n * kc), *S = xmalloc(sizeof(float) * kc * kc);
        sbm_graphs gs = {0};
        for (size_t b = 0; b < sizeof(dens) / sizeof(dens[0]); b++) {
            make_members(Y, S, n, 1, kc, dens[b], 7);
            int64_t e1, e2;
            int reps = n >= 2048 ? 2 : 4;
            time_sampler(k, &gs, Y, S, &bt, kc, SBM_SAMPLER_FASTRG, 1, &e1);  // warm
            double tf = time_sampler(k, &gs, Y, S, &bt, kc, SBM_SAMPLER_FASTRG, reps, &e1);
            double td = time_sampler(k, &gs, Y, S, &bt, kc, SBM_SAMPLER_DENSE, reps, &e2);
            printf("%6d %9.3f %12lld %12.2f %12.2f %8s\n", n, (double)e1 / ((double)n * n),
                   (long long)e1, 1e3 * tf, 1e3 * td, tf < td ? "fastrg" : "dense");
        }
        sbm_graphs_free(&gs);
        free(Y);
        free(S);
        batch_free(&bt);
    }
    printf("auto switches to dense above expected density %.2f (SBM_AUTO_DENSE_FRACTION)\n",
           SBM_AUTO_DENSE_FRACTION);
}

// Sparse attention forward + backward (STE included) on one (sequence, head) graph.
static double time_attention_path(kctx *k, int n, float density, int H, int dh, int kc,
                                  sbm_path path, int64_t *edges) {
    kbatch bt;
    make_batch(&bt, n);
    size_t T = (size_t)n;
    float *Y = xmalloc(sizeof(float) * 2 * T * H * kc), *S = xmalloc(sizeof(float) * H * kc * kc);
    make_members(Y, S, n, H, kc, density, 3);
    float *qkv = xmalloc(sizeof(float) * T * 3 * H * dh), *out = xmalloc(sizeof(float) * T * H * dh);
    float *dout = xmalloc(sizeof(float) * T * H * dh), *dqkv = xmalloc(sizeof(float) * T * 3 * H * dh);
    float *dY = xmalloc(sizeof(float) * 2 * T * H * kc), *dS = xmalloc(sizeof(float) * H * kc * kc);
    uint32_t st = 5;
    for (size_t i = 0; i < T * 3 * H * dh; i++) qkv[i] = frand(&st) - 0.5f;
    for (size_t i = 0; i < T * H * dh; i++) dout[i] = frand(&st) - 0.5f;
    sbm_graphs gs = {0};
    int64_t e[64];
    k_sbm_sample(k, &gs, Y, S, &bt, H, kc, 0.0f,
                 path == SBM_PATH_AUTO ? SBM_SAMPLER_FASTRG : SBM_SAMPLER_DENSE, 1, 0, 0, 0, e);
    for (int u = 0; u < gs.units; u++) gs.g[u].path = path;
    *edges = 0;
    for (int h = 0; h < H; h++) *edges += e[h];
    kdrop d = {1, 0, 0, 0};
    int reps = 3;
    double t0 = sbmt_now();
    for (int r = 0; r < reps; r++) {
        k_sbm_attn_fwd(k, out, &gs, qkv, &bt, H, dh, 0.1f, d);
        k_sbm_attn_bwd(k, dqkv, dY, dS, dout, qkv, out, &gs, Y, S, &bt, H, dh, kc, 0.1f, d, 0.0f);
    }
    double t = (sbmt_now() - t0) / reps;
    sbm_graphs_free(&gs);
    free(Y), free(S), free(qkv), free(out), free(dout), free(dqkv), free(dY), free(dS);
    batch_free(&bt);
    return t;
}

static double time_attention(kctx *k, int n, float density, int H, int dh, int kc, int64_t *edges) {
    return time_attention_path(k, n, density, H, dh, kc, SBM_PATH_AUTO, edges);
}

static void fit_report(const double *x, const double *y, int n, const char *xname) {
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int i = 0; i < n; i++) sx += x[i], sy += y[i], sxx += x[i] * x[i], sxy += x[i] * y[i];
    double b = (n * sxy - sx * sy) / (n * sxx - sx * sx), a = (sy - b * sx) / n;
    double ss_res = 0, ss_tot = 0, my = sy / n;
    printf("fit: time = %.3g s + %.3g ns * %s\n", a, b * 1e9, xname);
    for (int i = 0; i < n; i++) {
        double r = y[i] - (a + b * x[i]);
        ss_res += r * r;
        ss_tot += (y[i] - my) * (y[i] - my);
        printf("  %s %10.0f  time %8.2f ms  fit %8.2f ms  residual %+6.1f%%\n", xname, x[i],
               1e3 * y[i], 1e3 * (a + b * x[i]), 100.0 * r / y[i]);
    }
    printf("  R^2 = %.5f\n", 1.0 - ss_res / ss_tot);
}

static void bench_edges(kctx *k) {
    const int H = 1, dh = 32, kc = 128;
    printf("\n== sparse attention forward+backward (with STE, k = %d, d = %d) vs edges, n = 2048\n",
           kc, dh);
    const float dens[] = {0.005f, 0.01f, 0.02f, 0.05f, 0.1f, 0.2f, 0.3f};
    double x[16], y[16];
    int c = 0;
    for (size_t i = 0; i < sizeof(dens) / sizeof(dens[0]); i++) {
        int64_t e;
        y[c] = time_attention(k, 2048, dens[i], H, dh, kc, &e);
        x[c++] = (double)e;
    }
    fit_report(x, y, c, "edges");
    printf("\n== the same vs n at expected degree 64 (density 64/n)\n");
    const int ns[] = {1024, 2048, 4096, 8192, 16384};
    c = 0;
    for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
        int64_t e;
        y[c] = time_attention(k, ns[i], 64.0f / ns[i], H, dh, kc, &e);
        x[c++] = (double)e;
        printf("  n %6d edges %9lld\n", ns[i], (long long)e);
    }
    fit_report(x, y, c, "edges");
}

// Edge-by-edge attention vs dense row blocks (GEMMs) on the same dense-sampled graphs: where
// SBM_BLOCKS_FRACTION comes from.
static void bench_paths(kctx *k) {
    const int H = 1, dh = 32, kc = 128, n = 2048;
    printf("\n== attention forward+backward (with STE, k = %d, d = %d), n = %d: edges vs blocks\n",
           kc, dh, n);
    const float dens[] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.7f, 0.9f};
    for (size_t i = 0; i < sizeof(dens) / sizeof(dens[0]); i++) {
        int64_t e;
        double te = time_attention_path(k, n, dens[i], H, dh, kc, SBM_PATH_EDGES, &e);
        double tb = time_attention_path(k, n, dens[i], H, dh, kc, SBM_PATH_BLOCKS, &e);
        printf("  density %.3f  edges %8.2f ms  blocks %8.2f ms  blocks/edges %.2f\n",
               (double)e / ((double)n * n), 1e3 * te, 1e3 * tb, tb / te);
    }
}

// One layer forward+backward of the reference shape (D 64, H 2, d 32, Dh 128, k 128), batch 1.
static double time_layer(kctx *k, int n, int sbm, double *density) {
    model_dims d = {.vocab = 16, .seq_len = n, .d_model = 64, .d_ff = 128, .heads = 2,
                    .head_dim = 32, .layers = 1, .classes = 10, .cls = 0, .dropout = 0.1f,
                    .attn_dropout = 0.1f, .sbm = sbm, .clusters = 128, .edge_floor = 0.01f,
                    .sparsity_weight = 1e-4f, .sampler = SBM_SAMPLER_AUTO};
    model m;
    model_init(&m, k, &d, 1, 1);
    kbatch bt;
    make_batch(&bt, n);
    int32_t label = 3;
    int reps = n >= 4096 ? 1 : 2;
    model_forward(&m, k, &bt, &label, 1, 1, 0, NULL);  // warm
    double t0 = sbmt_now();
    for (int r = 0; r < reps; r++) {
        model_forward(&m, k, &bt, &label, 1, 1, (uint32_t)r, NULL);
        model_backward(&m, k, &bt, &label, 1, 1, (uint32_t)r, 1.0f);
    }
    double t = (sbmt_now() - t0) / reps;
    *density = sbm ? (m.density[0] + m.density[1]) / 2 : 1.0;
    model_free(&m);
    batch_free(&bt);
    return t;
}

static void bench_layer(kctx *k) {
    printf("\n== one layer (plus embedding and head) forward+backward, batch 1, all tokens valid\n");
    printf("%6s %10s %12s %12s %8s\n", "n", "density", "sbm_ms", "softmax_ms", "ratio");
    const int ns[] = {1024, 2048, 4096, 8192};
    for (int i = 0; i < 4; i++) {
        double dens, ds;
        double ts = time_layer(k, ns[i], 1, &dens);
        double tf = time_layer(k, ns[i], 0, &ds);
        printf("%6d %10.4f %12.1f %12.1f %8.2f\n", ns[i], dens, 1e3 * ts, 1e3 * tf, tf / ts);
    }
    printf("ratio = softmax time / sbm time (> 1: sbm faster)\n");
}

// Single-thread SGEMM rate of the BLAS at a large square size: the peak the model is compared to.
static void bench_sgemm(void) {
    const int n = 1024;
    float *a = xmalloc(sizeof(float) * n * n), *b = xmalloc(sizeof(float) * n * n);
    float *c = xmalloc(sizeof(float) * n * n);
    uint32_t st = 1;
    for (int i = 0; i < n * n; i++) a[i] = frand(&st), b[i] = frand(&st);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    int reps = 5;
    double t0 = sbmt_now();
    for (int r = 0; r < reps; r++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c,
                    n);
    double t = (sbmt_now() - t0) / reps;
    printf("\n== sgemm %d^3, one thread: %.1f GFLOP/s\n", n, 2.0 * n * n * n / t * 1e-9);
    free(a), free(b), free(c);
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "all";
    kctx k;
    kctx_init(&k, KB_CPU, 0);
    printf("bench_sbm: %d thread(s)\n", k.nthreads);
    int all = !strcmp(what, "all");
    if (all || !strcmp(what, "sampler")) bench_sampler(&k);
    if (all || !strcmp(what, "edges")) bench_edges(&k);
    if (all || !strcmp(what, "paths")) bench_paths(&k);
    if (all || !strcmp(what, "layer")) bench_layer(&k);
    if (all || !strcmp(what, "sgemm")) bench_sgemm();
    return 0;
}
