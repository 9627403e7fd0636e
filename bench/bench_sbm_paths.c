// bench_sbm_paths.c: SBM attention (sampling + forward + backward, the whole of a layer's SBM
// kernels) on either backend, by path: model.sampler = dense (the CPU's dense sampler and dense
// row blocks; CUDA's sampled tiles) against fastrg (the CPU's fastRG and edge kernels; CUDA's
// fastRG, CSR and edge kernels). Two tables:
//   density: time against expected density 0.1%..30% at one n for both paths, the crossover
//            (the density where the two cost the same, interpolated in log density) marked, and
//            fastRG's raw edges per second of sampling;
//   tiles:   the dense path at n = 1k..16k: time and TFLOP/s counting every FLOP the CUDA tiles
//            do (the P tiles in sampling, forward and both backward kernels, the attention, the
//            straight-through products), to set beside bench/torch_sdpa.py's SDPA figures
//            (which count 4 B H n^2 dh forward, 3.5x that forward + backward).
// Memberships are c (0.5 + u), u uniform, with a random S summing to 1, so P ~ c^2; the floor
// eps is 0 so the density is P's.
// usage: build/bench_sbm_paths [density|tiles] [--backend cpu|cuda] [--n N] [--batch B]
//                              [--heads H] [--dh D] [--clusters K] [--max-n N]
//                              [--precision fp32|tf32|bf16]  (cuda: the tiles on tensor cores)
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/kernels.h"
#include "kernels/sbm.h"
#include "model/model.h"
#include "bench/bench_util.h"

typedef struct {
    kctx *k;
    int B, n, H, dh, kc;
} shape;

static float *dev_fill(kctx *k, const float *h, size_t n) {
    float *d = k_alloc(k, sizeof(float) * n);
    k_upload(k, d, h, sizeof(float) * n);
    return d;
}

typedef struct {
    double sample, fwd, bwd;  // seconds per call
    double edges;             // sampled edges per call
    double raw;               // fastRG raw draws per call (expected)
} timing;

// One (sequence length, density, sampler) point: mean over reps after a warm-up.
static timing run_point(const shape *sh, double rho, sbm_sampler sampler, int reps) {
    kctx *k = sh->k;
    const int B = sh->B, n = sh->n, H = sh->H, dh = sh->dh, kc = sh->kc;
    kbatch bt;
    bench_full_batch(&bt, B, n);
    const size_t T = (size_t)bt.T, HD = (size_t)H * dh, Hk = (size_t)H * kc;
    uint32_t seed = 7;
    const double c = sqrt(rho);
    float *Yh = xmalloc(sizeof(float) * 2 * T * Hk), *Sh = xmalloc(sizeof(float) * H * kc * kc);
    for (size_t i = 0; i < 2 * T * Hk; i++)
        Yh[i] = (float)(c * (0.5 + bench_lcg(&seed) / 16777216.0));
    for (int h = 0; h < H; h++) {
        double sum = 0.0;
        float *s = Sh + (size_t)h * kc * kc;
        for (int i = 0; i < kc * kc; i++) sum += s[i] = 0.5f + bench_lcg(&seed) / 16777216.0f;
        for (int i = 0; i < kc * kc; i++) s[i] = (float)(s[i] / sum);
    }
    float *Y = dev_fill(k, Yh, 2 * T * Hk), *S = dev_fill(k, Sh, (size_t)H * kc * kc);
    float *qkv = bench_dev_random(k, T * 3 * HD, 1), *dout = bench_dev_random(k, T * HD, 2);
    float *out = k_alloc(k, sizeof(float) * T * HD), *dqkv = k_alloc(k, sizeof(float) * T * 3 * HD);
    float *dY = k_alloc(k, sizeof(float) * 2 * T * Hk);
    float *dS = k_alloc(k, sizeof(float) * H * kc * kc);
    k_batch_upload(k, &bt);
    sbm_graphs gs;
    memset(&gs, 0, sizeof(gs));
    int64_t *edges = xmalloc(sizeof(int64_t) * H);
    double *ex = xmalloc(sizeof(double) * H);
    kdrop d = {1, 1, 0, 0};
    timing t = {0, 0, 0, 0, 0};
    for (int r = -1; r < reps; r++) {  // r = -1: warm-up (allocations, first launches)
        double t0 = sbmt_now();
        k_sbm_sample(k, &gs, Y, S, &bt, H, kc, 0.0f, sampler, 3, (uint32_t)(r + 1), 0, 0, edges);
        bench_sync(k, Y);
        double t1 = sbmt_now();
        k_sbm_attn_fwd(k, out, &gs, qkv, &bt, H, dh, 0.0f, d);
        bench_sync(k, out);
        double t2 = sbmt_now();
        k_sbm_attn_bwd(k, dqkv, dY, dS, dout, qkv, out, &gs, Y, S, &bt, H, dh, kc, 0.0f, d, 0.0f);
        bench_sync(k, dqkv);
        double t3 = sbmt_now();
        if (r < 0) continue;
        t.sample += (t1 - t0) / reps;
        t.fwd += (t2 - t1) / reps;
        t.bwd += (t3 - t2) / reps;
        double e = 0.0, lam = 0.0;
        k_sbm_graph_stats(k, &gs, H, NULL, ex);
        for (int h = 0; h < H; h++) {
            e += (double)edges[h];
            lam += ex[h];
        }
        t.edges += e / reps;
        t.raw += lam / reps;
    }
    sbm_graphs_free(&gs);
    float *bufs[] = {Y, S, qkv, dout, out, dqkv, dY, dS};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) k_free(k, bufs[i]);
    free(Yh);
    free(Sh);
    free(edges);
    free(ex);
    batch_free(&bt);
    return t;
}

static void table_density(const shape *sh, const char *backend) {
    static const double rhos[] = {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3};
    const int nr = (int)(sizeof(rhos) / sizeof(rhos[0]));
    printf("# SBM attention by path (%s): sample + fwd + bwd, B %d, n %d, H %d, dh %d, k %d, "
           "eps 0\n", backend, sh->B, sh->n, sh->H, sh->dh, sh->kc);
    printf("%8s %9s | %9s %9s %9s %9s | %9s %9s %9s %9s %12s | %7s\n", "density", "measured",
           "dense_ms", "sample", "fwd", "bwd", "fastrg_ms", "sample", "fwd", "bwd", "draws/s",
           "ratio");
    double prev_ratio = 0.0, prev_rho = 0.0, cross = -1.0;
    for (int i = 0; i < nr; i++) {
        const double rho = rhos[i];
        const int reps = sh->k->backend == KB_CUDA ? 5 : 2;
        timing a = run_point(sh, rho, SBM_SAMPLER_DENSE, reps);
        timing b = run_point(sh, rho, SBM_SAMPLER_FASTRG, reps);
        const double ta = a.sample + a.fwd + a.bwd, tb = b.sample + b.fwd + b.bwd;
        const double pairs = (double)sh->B * sh->H * sh->n * sh->n;
        const double ratio = tb / ta;  // < 1: the edge path is faster
        printf("%8.3f %9.4f | %9.3f %9.3f %9.3f %9.3f | %9.3f %9.3f %9.3f %9.3f %12.3g | %7.3f\n",
               rho, b.edges / pairs, 1e3 * ta, 1e3 * a.sample, 1e3 * a.fwd, 1e3 * a.bwd,
               1e3 * tb, 1e3 * b.sample, 1e3 * b.fwd, 1e3 * b.bwd, b.raw / b.sample, ratio);
        fflush(stdout);
        if (i > 0 && cross < 0 && prev_ratio < 1.0 && ratio >= 1.0) {
            // Log-linear interpolation of the density where the ratio crosses 1.
            const double x0 = log(prev_rho), x1 = log(rho), y0 = log(prev_ratio), y1 = log(ratio);
            cross = exp(x0 + (x1 - x0) * (0.0 - y0) / (y1 - y0));
        }
        prev_ratio = ratio;
        prev_rho = rho;
    }
    if (cross > 0)
        printf("# crossover (%s): the edge path is faster below a density of about %.4f "
               "(model.sampler = auto switches at SBM_AUTO_DENSE_FRACTION = %.3f)\n", backend,
               cross, SBM_AUTO_DENSE_FRACTION);
    else
        printf("# crossover (%s): none in 0.1%%..30%% (the %s path is faster throughout)\n",
               backend, prev_ratio < 1.0 ? "edge" : "dense");
}

static void table_tiles(shape sh, int max_n, const char *backend) {
    const int tokens = sh.B * sh.n;
    printf("# SBM dense path (%s), density 0.25, H %d, dh %d, k %d, %d tokens per batch\n",
           backend, sh.H, sh.dh, sh.kc, tokens);
    printf("%8s %4s %10s %10s %10s %10s %8s %12s %12s\n", "n", "B", "sample_ms", "fwd_ms",
           "bwd_ms", "total_ms", "sample%", "TFLOPs_all", "TFLOPs_sdpa");
    for (int n = 1024; n <= max_n; n *= 2) {
        sh.n = n;
        sh.B = tokens / n > 0 ? tokens / n : 1;
        timing t = run_point(&sh, 0.25, SBM_SAMPLER_DENSE, sh.k->backend == KB_CUDA ? 5 : 1);
        const double pairs = (double)sh.B * sh.H * n * n, dh = sh.dh, kc = sh.kc;
        // Per pair: sampling 2k (P tile); forward 2k + 4 dh; backward 2 x 2k (P in both
        // kernels) + 2 x 2 dh (scores recomputed in both) + 8 dh (dV, dP, dQ, dK) + 2 x 2k (G Yk,
        // G^T Yq).
        const double all =
            pairs * (2 * kc + (2 * kc + 4 * dh) + (4 * kc + 4 * dh + 8 * dh + 4 * kc));
        const double sdpa = pairs * 4 * dh * 3.5;  // what SDPA's figure counts
        const double tt = t.sample + t.fwd + t.bwd;
        printf("%8d %4d %10.3f %10.3f %10.3f %10.3f %8.1f %12.2f %12.2f\n", n, sh.B,
               1e3 * t.sample, 1e3 * t.fwd, 1e3 * t.bwd, 1e3 * tt, 100.0 * t.sample / tt,
               1e-12 * all / tt, 1e-12 * sdpa / tt);
        fflush(stdout);
    }
}

typedef struct {
    const char *mode;
    int cuda;
    const char *prec;
} paths_args;

static int paths_word(const char *arg, const char *next, void *ctx) {
    paths_args *pa = ctx;
    if (!strcmp(arg, "density") || !strcmp(arg, "tiles")) {
        pa->mode = arg;
        return 1;
    }
    if (!strcmp(arg, "--backend") && next && (!strcmp(next, "cpu") || !strcmp(next, "cuda"))) {
        pa->cuda = !strcmp(next, "cuda");
        return 2;
    }
    return bench_precision_word(arg, next, &pa->prec);
}

int main(int argc, char **argv) {
    const char *mode = "density";
    int cuda = 0, n = -1, B = -1, H = 2, dh = 32, kc = 32, max_n = 16384;
    paths_args pa = {"density", 0, "fp32"};
    const bench_int_opt opts[] = {{"--n", &n},   {"--batch", &B},        {"--heads", &H},
                                  {"--dh", &dh}, {"--clusters", &kc},    {"--max-n", &max_n}};
    if (bench_parse(argc, argv, "bench_sbm_paths", opts, 6, paths_word, &pa)) return 2;
    mode = pa.mode;
    cuda = pa.cuda;
    kctx k;
    char err[SBMT_ERR_LEN];
    if (cuda) {
        if (kctx_open(&k, KB_CUDA, 0, 0, err)) {
            fprintf(stderr, "bench_sbm_paths: %s\n", err);
            return 77;
        }
        bench_set_precision(&k, pa.prec);
    } else {
        kctx_init(&k, KB_CPU, 1);
    }
    if (!cuda && strcmp(pa.prec, "fp32")) {
        fprintf(stderr, "bench_sbm_paths: --precision %s needs --backend cuda\n", pa.prec);
        return 2;
    }
    char backend[64];
    snprintf(backend, sizeof(backend), "%s", cuda ? "cuda" : "cpu, 1 thread");
    if (cuda) snprintf(backend, sizeof(backend), "cuda, %s", pa.prec);
    shape sh = {&k, B > 0 ? B : (cuda ? 8 : 1), n > 0 ? n : (cuda ? 4096 : 1024), H, dh, kc};
    if (!strcmp(mode, "density")) table_density(&sh, backend);
    else table_tiles(sh, max_n, backend);
    kctx_close(&k);
    return 0;
}
