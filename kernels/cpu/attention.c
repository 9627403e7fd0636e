// attention.c: CPU backend of full softmax attention with key padding mask and
// attention-probability dropout (the baseline). Scores are formed in blocks of query rows
// (never a whole n x n matrix), the log-sum-exp of each row is kept, and backward recomputes
// the probabilities from it, so memory is O(T * H) beyond the inputs.
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/cpu/cpu.h"
#include "kernels/dropout.h"
#include "kernels/cpu/fastmath.h"
#include "kernels/kernels.h"

#define ATT_ROWS 64  // query rows per block: 64 x n scores stay in L2 for n <= 4096

// Dropout factors of query row i (keys 0..L-1) of a head: ks[j] = keep ? 1/(1-p) : 0.
static void drop_row(float *ks, int L, int i, int n, rng_stream s, uint32_t thr, float scale,
                     uint32_t *scratch) {
    dropout_factors(ks, (uint32_t)i * (uint32_t)n, L, s, thr, scale, scratch);
}

void cpu_attn_softmax_fwd(kctx *k, float *out, float *lse, const float *qkv, const kbatch *bt, int H,
                        int dh, float p, kdrop d) {
    const int HD = H * dh, ld = 3 * HD;
    const float sc = 1.0f / sqrtf((float)dh);
    const uint32_t thr = dropout_threshold(p);
    const float dscale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    // Work units: (sequence, head, block of query rows).
    int nunits = 0;
    int *ub = xmalloc(sizeof(int) * 3 * (size_t)bt->B * H * ((bt->n + ATT_ROWS - 1) / ATT_ROWS));
    int maxL = 0;
    for (int b = 0; b < bt->B; b++) {
        if (bt->len[b] > maxL) maxL = bt->len[b];
        for (int h = 0; h < H; h++)
            for (int i0 = 0; i0 < bt->len[b]; i0 += ATT_ROWS) {
                ub[3 * nunits] = b;
                ub[3 * nunits + 1] = h;
                ub[3 * nunits + 2] = i0;
                nunits++;
            }
    }
#pragma omp parallel num_threads(k->nthreads)
    {
        float *S = xmalloc(sizeof(float) * ATT_ROWS * (size_t)maxL);
        float *ks = xmalloc(sizeof(float) * (size_t)maxL);
        uint32_t *scr = xmalloc(sizeof(uint32_t) * 4 * ((size_t)maxL / 8 + 2));
#pragma omp for schedule(dynamic, 1)
        for (int u = 0; u < nunits; u++) {
            int b = ub[3 * u], h = ub[3 * u + 1], i0 = ub[3 * u + 2];
            int L = bt->len[b], base = bt->off[b];
            int R = L - i0 < ATT_ROWS ? L - i0 : ATT_ROWS;
            const float *Q = qkv + (size_t)(base + i0) * ld + h * dh;
            const float *K = qkv + (size_t)base * ld + HD + h * dh;
            const float *V = K + HD;
            const float *mask = bt->mask + base;
            rng_stream s = rng_make(d.seed, RNG_DROPOUT, d.step, d.layer, d.slot + (uint32_t)h,
                                    bt->sample[b]);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, L, dh, sc, Q, ld, K, ld, 0.0f,
                        S, L);
            for (int r = 0; r < R; r++) {
                float *srow = S + (size_t)r * L;
                float mx = -INFINITY;
                int valid = 0;
                for (int j = 0; j < L; j++) {
                    if (mask[j] == 0.0f) srow[j] = -INFINITY;
                    else valid++;
                    if (srow[j] > mx) mx = srow[j];
                }
                float l;
                if (mx == -INFINITY && valid) {
                    // Valid keys but no finite maximum: the scores are NaN; so is the row.
                    l = NAN;
                    for (int j = 0; j < L; j++) srow[j] = NAN;
                } else if (mx == -INFINITY) {
                    // No key to attend to: +inf makes every recomputed probability exp(-inf) = 0.
                    l = INFINITY;
                    memset(srow, 0, sizeof(float) * L);
                } else {
                    float sum = 0.0f;
                    for (int j = 0; j < L; j++) {
                        float e = fast_expf(srow[j] - mx);
                        srow[j] = e;
                        sum += e;
                    }
                    float inv = 1.0f / sum;
                    for (int j = 0; j < L; j++) srow[j] *= inv;
                    l = mx + logf(sum);
                    if (p > 0.0f) {
                        drop_row(ks, L, i0 + r, bt->n, s, thr, dscale, scr);
                        for (int j = 0; j < L; j++) srow[j] *= ks[j];
                    }
                }
                lse[(size_t)(base + i0 + r) * H + h] = l;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, dh, L, 1.0f, S, L, V, ld,
                        0.0f, out + (size_t)(base + i0) * HD + h * dh, HD);
        }
        free(S);
        free(ks);
        free(scr);
    }
    free(ub);
}

void cpu_attn_softmax_bwd(kctx *k, float *dqkv, const float *dout, const float *qkv,
                        const float *out, const float *lse, const kbatch *bt, int H, int dh,
                        float p, kdrop d) {
    const int HD = H * dh, ld = 3 * HD;
    const float sc = 1.0f / sqrtf((float)dh);
    const uint32_t thr = dropout_threshold(p);
    const float dscale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    memset(dqkv, 0, sizeof(float) * (size_t)bt->T * ld);
    int maxL = 0;
    for (int b = 0; b < bt->B; b++)
        if (bt->len[b] > maxL) maxL = bt->len[b];
    // dK and dV of a head sum over all query blocks, so a unit is a whole (sequence, head).
#pragma omp parallel num_threads(k->nthreads)
    {
        float *P = xmalloc(sizeof(float) * ATT_ROWS * (size_t)maxL);
        float *G = xmalloc(sizeof(float) * ATT_ROWS * (size_t)maxL);
        float *ks = xmalloc(sizeof(float) * (size_t)maxL);
        uint32_t *scr = xmalloc(sizeof(uint32_t) * 4 * ((size_t)maxL / 8 + 2));
#pragma omp for schedule(dynamic, 1)
        for (int u = 0; u < bt->B * H; u++) {
            int b = u / H, h = u % H;
            int L = bt->len[b], base = bt->off[b];
            const float *K = qkv + (size_t)base * ld + HD + h * dh;
            const float *V = K + HD;
            float *dK = dqkv + (size_t)base * ld + HD + h * dh;
            float *dV = dK + HD;
            const float *mask = bt->mask + base;
            rng_stream s = rng_make(d.seed, RNG_DROPOUT, d.step, d.layer, d.slot + (uint32_t)h,
                                    bt->sample[b]);
            for (int i0 = 0; i0 < L; i0 += ATT_ROWS) {
                int R = L - i0 < ATT_ROWS ? L - i0 : ATT_ROWS;
                const float *Q = qkv + (size_t)(base + i0) * ld + h * dh;
                const float *dY = dout + (size_t)(base + i0) * HD + h * dh;
                const float *Y = out + (size_t)(base + i0) * HD + h * dh;
                float *dQ = dqkv + (size_t)(base + i0) * ld + h * dh;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, L, dh, sc, Q, ld, K, ld,
                            0.0f, P, L);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, L, dh, 1.0f, dY, HD, V, ld,
                            0.0f, G, L);
                for (int r = 0; r < R; r++) {
                    float *prow = P + (size_t)r * L, *grow = G + (size_t)r * L;
                    float l = lse[(size_t)(base + i0 + r) * H + h];
                    // D_i = sum_j a~_ij dA~_ij = dy_i . y_i (a~: probabilities after dropout).
                    float Di = 0.0f;
                    for (int c = 0; c < dh; c++) Di += dY[(size_t)r * HD + c] * Y[(size_t)r * HD + c];
                    for (int j = 0; j < L; j++)
                        prow[j] = mask[j] == 0.0f ? 0.0f : fast_expf(prow[j] - l);
                    if (p > 0.0f) {
                        // da = dA~ * keep/(1-p); prow becomes a~ (for dV), grow becomes ds.
                        drop_row(ks, L, i0 + r, bt->n, s, thr, dscale, scr);
                        for (int j = 0; j < L; j++) {
                            float a = prow[j];
                            grow[j] = a * (grow[j] * ks[j] - Di);
                            prow[j] = a * ks[j];
                        }
                    } else {
                        for (int j = 0; j < L; j++) grow[j] = prow[j] * (grow[j] - Di);
                    }
                }
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, dh, R, 1.0f, P, L, dY, HD,
                            1.0f, dV, ld);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, dh, L, sc, G, L, K, ld,
                            0.0f, dQ, ld);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, dh, R, sc, G, L, Q, ld,
                            1.0f, dK, ld);
            }
        }
        free(P);
        free(G);
        free(ks);
        free(scr);
    }
}
