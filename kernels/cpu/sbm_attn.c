// sbm_attn.c: CPU backend of attention on the sampled edges (SPEC.md section 2.5) and its
// backward with the straight-through gradient into the memberships and block matrices
// (G Yk, G^T Yq and Yq^T G Yk at O(m k)). A (sequence, head) is one OpenMP work unit; BLAS
// inside it runs single-threaded. Cost O(m d + m k + L k^2) per unit; no buffer is L x L.
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/fastmath.h"
#include "kernels/cpu/sbm_edges.h"
#include "kernels/cpu/spmm.h"
#include "kernels/dropout.h"
#include "kernels/sbm.h"

// ---------------------------------------------------------------- sparse attention
//
// Attention runs edge by edge (sbm_edges.h), or, for a dense-sampled unit whose density reaches
// SBM_BLOCKS_FRACTION, a block of query rows at a time with GEMMs: scores are gathered from
// Q K^T on the edges and the edge weights scattered into a block before multiplying by V. The
// straight-through products G Yk and G^T Yq always go edge by edge (spmm.h): per edge they cost
// 2k multiply-adds each, where a GEMM on the block would pay for every pair. Both paths give
// the same result; the choice only follows which is cheaper.

// Query rows per block of a dense unit (256 measured best of 64..1024 at L ~ 1000-2000 on one
// core: larger blocks leave the cache, smaller ones repack the key-side operands more often).
static int att_rows(int L) {
    (void)L;
    return 256;
}

typedef struct {
    uint32_t *blocks, *words;
    int cap;
    float *B1, *B2;       // att_rows(L) x L blocks (dense units)
    float *row;           // [L] gathered edge values of one row
    uint32_t *words_row;  // Philox words for one row's dropout factors
    float *gv;            // [nnz] straight-through gradient per edge
    float *spmm;          // spmm_scratch_floats(L, kc)
    float *Kp, *Vp;       // [L, dh] the unit's keys and values, packed (sparse units)
    float *dKp, *dVp;     // [L, dh] their gradients
    size_t bcap, spmm_cap, kvcap;
    int rowcap, ecap;
} attn_scratch;

static void attn_scratch_free(attn_scratch *s) {
    free(s->blocks);
    free(s->words);
    free(s->B1);
    free(s->B2);
    free(s->row);
    free(s->words_row);
    free(s->gv);
    free(s->spmm);
    free(s->Kp);
    free(s->Vp);
    free(s->dKp);
    free(s->dVp);
}

static void attn_scratch_kv(attn_scratch *s, int L, int dh) {
    size_t need = (size_t)L * dh;
    if (s->kvcap < need || s->Kp == NULL) {
        free(s->Kp);
        free(s->Vp);
        free(s->dKp);
        free(s->dVp);
        s->kvcap = need > 0 ? need : 1;
        s->Kp = xmalloc(sizeof(float) * s->kvcap);
        s->Vp = xmalloc(sizeof(float) * s->kvcap);
        s->dKp = xmalloc(sizeof(float) * s->kvcap);
        s->dVp = xmalloc(sizeof(float) * s->kvcap);
    }
}

// dst [L, dh] <- rows of src (row stride ld).
static void pack_rows(float *dst, const float *src, int ld, int L, int dh) {
    for (int i = 0; i < L; i++)
        memcpy(dst + (size_t)i * dh, src + (size_t)i * ld, sizeof(float) * (size_t)dh);
}

static void attn_scratch_rows(attn_scratch *s, int L) {
    if (s->rowcap < L || s->row == NULL) {
        free(s->row);
        free(s->words_row);
        s->rowcap = L;
        s->row = xmalloc(sizeof(float) * ((size_t)L + 1));
        s->words_row = xmalloc(sizeof(uint32_t) * 4 * ((size_t)L / 8 + 2));
    }
}

static void attn_scratch_blocks(attn_scratch *s, int L) {
    size_t need = (size_t)att_rows(L) * L;
    if (s->bcap < need) {
        free(s->B1);
        free(s->B2);
        s->bcap = need;
        s->B1 = xmalloc(sizeof(float) * need);
        s->B2 = xmalloc(sizeof(float) * need);
    }
    attn_scratch_rows(s, L);
}

// Room for the straight-through gradients of a unit with L rows and nnz edges.
static void attn_scratch_edges(attn_scratch *s, int L, int nnz, int kc) {
    if (s->ecap < nnz || s->ecap == 0) {
        free(s->gv);
        s->ecap = nnz > 0 ? nnz + nnz / 4 : 1;
        s->gv = xmalloc(sizeof(float) * (size_t)s->ecap);
    }
    size_t need = spmm_scratch_floats(L, kc);
    if (s->spmm_cap < need) {
        free(s->spmm);
        s->spmm_cap = need;
        s->spmm = xmalloc(sizeof(float) * need);
    }
    attn_scratch_rows(s, L);
}

// Dropout flags of the r edges of query row i (element i*n + j of the head's n x n grid, as in
// softmax attention).
static void edge_keep(uint8_t *keep, const int *col, int r, int i, int n, rng_stream s,
                      uint32_t thr, attn_scratch *sc) {
    if (r > sc->cap) {
        free(sc->blocks);
        free(sc->words);
        sc->cap = r + r / 2;
        sc->blocks = xmalloc(sizeof(uint32_t) * (size_t)sc->cap);
        sc->words = xmalloc(sizeof(uint32_t) * 4 * (size_t)sc->cap);
    }
    uint32_t rowe = (uint32_t)i * (uint32_t)n;
    for (int e = 0; e < r; e++) sc->blocks[e] = (rowe + (uint32_t)col[e]) >> 3;
    philox_lanes(s, 0, sc->blocks, r, sc->words);
    for (int e = 0; e < r; e++) {
        uint32_t el = rowe + (uint32_t)col[e];
        const uint32_t *w = sc->words + 4 * e;
        philox4x32 blk = {{w[0], w[1], w[2], w[3]}};
        keep[e] = dropout_u16(blk, el) >= thr;
    }
}

// Softmax over a row's edge scores a[0..r) in place.
static void edge_softmax(float *a, int r) {
    float mx = -INFINITY;
    for (int e = 0; e < r; e++) mx = a[e] > mx ? a[e] : mx;
    float sum = 0.0f;
    for (int e = 0; e < r; e++) {
        a[e] = fast_expf(a[e] - mx);
        sum += a[e];
    }
    float inv = 1.0f / sum;
    for (int e = 0; e < r; e++) a[e] *= inv;
}

typedef struct {
    const float *Q, *K, *V;  // row 0 of the unit's Q, K, V (row stride ld)
    float *Yo;               // row 0 of the unit's output (row stride HD)
    int ld, HD, dh, n;
    int simd;                // kctx simd: vectorised kernels where compiled in
    float sc, p, dscale;
    uint32_t thr;
    rng_stream s;
} unit_io;

static void unit_fwd_dense(sbm_graph *g, const unit_io *io, attn_scratch *sc) {
    const int L = g->rows, dh = io->dh, ld = io->ld;
    if (L == 0) return;
    attn_scratch_blocks(sc, L);
    const int RB = att_rows(L);
    for (int i0 = 0; i0 < L; i0 += RB) {
        int R = L - i0 < RB ? L - i0 : RB;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, L, dh, io->sc,
                    io->Q + (size_t)i0 * ld, ld, io->K, ld, 0.0f, sc->B1, L);
        for (int r = 0; r < R; r++) {
            int i = i0 + r, e0 = g->rowptr[i], cnt = g->rowptr[i + 1] - e0;
            float *a = g->a + e0, *prow = sc->B1 + (size_t)r * L;
            const int *col = g->col + e0;
            uint8_t *keep = g->keep + e0;
            for (int e = 0; e < cnt; e++) a[e] = prow[col[e]];
            memset(prow, 0, sizeof(float) * L);
            if (cnt <= 0) continue;
            edge_softmax(a, cnt);
            if (io->p > 0.0f) {
                // The row's factors in one contiguous pass (one Philox block per 8 keys).
                float *f = sc->row;
                dropout_factors(f, (uint32_t)i * (uint32_t)io->n, L, io->s, io->thr, 1.0f,
                                sc->words_row);
                for (int e = 0; e < cnt; e++) keep[e] = f[col[e]] != 0.0f;
            } else {
                memset(keep, 1, (size_t)cnt);
            }
            for (int e = 0; e < cnt; e++) prow[col[e]] = keep[e] ? a[e] * io->dscale : 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, dh, L, 1.0f, sc->B1, L, io->V,
                    ld, 0.0f, io->Yo + (size_t)i0 * io->HD, io->HD);
    }
}

// Dropout flags of a row's edges: the row's factors in one pass (one Philox block per 8 keys)
// when it has more than L / 8 edges, one block per edge otherwise. Both give the same flags.
static void row_keep(uint8_t *keep, const int *col, int cnt, int i, int L, const unit_io *io,
                     attn_scratch *sc) {
    if (io->p <= 0.0f) {
        memset(keep, 1, (size_t)cnt);
    } else if ((int64_t)cnt * 8 > L) {
        float *f = sc->row;
        dropout_factors(f, (uint32_t)i * (uint32_t)io->n, L, io->s, io->thr, 1.0f, sc->words_row);
        for (int e = 0; e < cnt; e++) keep[e] = f[col[e]] != 0.0f;
    } else {
        edge_keep(keep, col, cnt, i, io->n, io->s, io->thr, sc);
    }
}

// Sparse units go row by row over each row's edges, with the keys and values packed so that
// the rows a query touches come from cache (sbm_edges.h).
static void unit_fwd_sparse(sbm_graph *g, const unit_io *io, attn_scratch *sc) {
    const int L = g->rows, dh = io->dh, ld = io->ld;
    if (L == 0) return;
    attn_scratch_kv(sc, L, dh);
    attn_scratch_rows(sc, L);
    pack_rows(sc->Kp, io->K, ld, L, dh);
    pack_rows(sc->Vp, io->V, ld, L, dh);
    for (int i = 0; i < L; i++) {
        const int e0 = g->rowptr[i], cnt = g->rowptr[i + 1] - e0;
        float *y = io->Yo + (size_t)i * io->HD, *a = g->a + e0;
        const int *col = g->col + e0;
        if (cnt == 0) {
            memset(y, 0, sizeof(float) * (size_t)dh);
            continue;
        }
        edges_scores(a, col, cnt, io->Q + (size_t)i * ld, sc->Kp, dh, io->sc, io->simd);
        edge_softmax(a, cnt);
        row_keep(g->keep + e0, col, cnt, i, L, io, sc);
        edges_aggregate(y, col, a, g->keep + e0, cnt, sc->Vp, dh, io->dscale, io->simd);
    }
}

static void unit_fwd(sbm_graph *g, const unit_io *io, attn_scratch *sc) {
    if (g->path == SBM_PATH_AUTO) {
        // Density over the unit's L x L grid.
        double frac = io->simd && edges_fast(io->dh) ? SBM_BLOCKS_FRACTION
                                                     : SBM_BLOCKS_FRACTION_PORTABLE;
        g->blocks = g->dense && g->nnz >= frac * (double)g->rows * (double)g->rows;
    } else {
        g->blocks = g->path == SBM_PATH_BLOCKS;
    }
    if (g->blocks)
        unit_fwd_dense(g, io, sc);
    else
        unit_fwd_sparse(g, io, sc);
}

void cpu_sbm_attn_fwd(kctx *k, float *out, sbm_graphs *gs, const float *qkv, const kbatch *bt,
                    int H, int dh, float p, kdrop d) {
    const int HD = H * dh, ld = 3 * HD;
#pragma omp parallel num_threads(k->nthreads)
    {
        attn_scratch sc;
        memset(&sc, 0, sizeof(sc));
#pragma omp for schedule(dynamic, 1)
        for (int u = 0; u < gs->units; u++) {
            int b = u / H, h = u % H, base = bt->off[b];
            unit_io io = {.Q = qkv + (size_t)base * ld + h * dh,
                          .K = qkv + (size_t)base * ld + HD + h * dh,
                          .V = qkv + (size_t)base * ld + 2 * HD + h * dh,
                          .Yo = out + (size_t)base * HD + h * dh,
                          .ld = ld, .HD = HD, .dh = dh, .n = bt->n, .simd = k->simd,
                          .sc = 1.0f / sqrtf((float)dh), .p = p,
                          .dscale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f,
                          .thr = dropout_threshold(p),
                          .s = rng_make(d.seed, RNG_DROPOUT, d.step, d.layer,
                                        d.slot + (uint32_t)h, bt->sample[b])};
            unit_fwd(&gs->g[u], &io, &sc);
        }
        attn_scratch_free(&sc);
    }
}

typedef struct {
    const float *dout;  // row 0 of the unit's output gradient (stride HD)
    float *dQ, *dK, *dV;  // row 0 of the unit's gradients in dqkv (stride ld)
    const float *yq, *yk;  // row 0 of the unit's memberships (stride Hk)
    float *GYk, *GTYq;     // [L, k] accumulators
    int Hk, kc;
    float reg;
} unit_grad;

static inline float ste_clip(float x) { return x > 1.0f ? 1.0f : (x < -1.0f ? -1.0f : x); }

static void unit_bwd_dense(const sbm_graph *g, const unit_io *io, const unit_grad *gr,
                           attn_scratch *sc) {
    const int L = g->rows, dh = io->dh, ld = io->ld, HD = io->HD;
    if (L == 0) return;
    attn_scratch_blocks(sc, L);
    const int RB = att_rows(L);
    for (int i0 = 0; i0 < L; i0 += RB) {
        int R = L - i0 < RB ? L - i0 : RB;
        // B1 = dY V^T: the gradient of every attention weight of the block.
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, L, dh, 1.0f,
                    gr->dout + (size_t)i0 * HD, HD, io->V, ld, 0.0f, sc->B1, L);
        for (int r = 0; r < R; r++) {
            int i = i0 + r, e0 = g->rowptr[i], cnt = g->rowptr[i + 1] - e0;
            float *b1 = sc->B1 + (size_t)r * L, *b2 = sc->B2 + (size_t)r * L;
            float *gv = sc->gv + e0;
            const float *dy = gr->dout + (size_t)i * HD, *yo = io->Yo + (size_t)i * HD;
            const int *col = g->col + e0;
            const float *a = g->a + e0;
            const uint8_t *keep = g->keep + e0;
            float Di = 0.0f;
            for (int c = 0; c < dh; c++) Di += dy[c] * yo[c];
            // b1: dA~ gathered, then a~ (for dV); b2: ds * scale (dQ, dK); gv: G (STE).
            float *dadv = sc->row;
            for (int e = 0; e < cnt; e++) dadv[e] = b1[col[e]];
            memset(b1, 0, sizeof(float) * L);
            memset(b2, 0, sizeof(float) * L);
            for (int e = 0; e < cnt; e++) {
                float kf = keep[e] ? io->dscale : 0.0f;
                float ds = a[e] * (dadv[e] * kf - Di);
                b1[col[e]] = a[e] * kf;
                b2[col[e]] = io->sc * ds;
                gv[e] = ste_clip(ds + gr->reg);
            }
        }
        const float *dYb = gr->dout + (size_t)i0 * HD, *Qb = io->Q + (size_t)i0 * ld;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, dh, R, 1.0f, sc->B1, L, dYb, HD,
                    1.0f, gr->dV, ld);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, dh, L, 1.0f, sc->B2, L, io->K,
                    ld, 0.0f, gr->dQ + (size_t)i0 * ld, ld);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, dh, R, 1.0f, sc->B2, L, Qb, ld,
                    1.0f, gr->dK, ld);
    }
}

static void unit_bwd_sparse(const sbm_graph *g, const unit_io *io, const unit_grad *gr,
                            attn_scratch *sc) {
    const int L = g->rows, dh = io->dh, ld = io->ld, HD = io->HD;
    if (L == 0) return;
    attn_scratch_kv(sc, L, dh);
    pack_rows(sc->Kp, io->K, ld, L, dh);
    pack_rows(sc->Vp, io->V, ld, L, dh);
    memset(sc->dKp, 0, sizeof(float) * (size_t)L * dh);
    memset(sc->dVp, 0, sizeof(float) * (size_t)L * dh);
    for (int i = 0; i < L; i++) {
        const int e0 = g->rowptr[i], cnt = g->rowptr[i + 1] - e0;
        const float *dy = gr->dout + (size_t)i * HD, *yo = io->Yo + (size_t)i * HD;
        float *dq = gr->dQ + (size_t)i * ld;
        if (cnt == 0) {
            memset(dq, 0, sizeof(float) * (size_t)dh);
            continue;
        }
        float Di = 0.0f;
        for (int c = 0; c < dh; c++) Di += dy[c] * yo[c];
        edges_bwd_row(dq, sc->dKp, sc->dVp, sc->gv + e0, g->col + e0, g->a + e0, g->keep + e0,
                      cnt, io->Q + (size_t)i * ld, dy, Di, sc->Kp, sc->Vp, dh, io->sc,
                      io->dscale, gr->reg, io->simd);
    }
    for (int j = 0; j < L; j++)
        for (int c = 0; c < dh; c++) {
            gr->dK[(size_t)j * ld + c] += sc->dKp[(size_t)j * dh + c];
            gr->dV[(size_t)j * ld + c] += sc->dVp[(size_t)j * dh + c];
        }
}

// Attention gradients, then the straight-through products G Yk and G^T Yq edge by edge,
// whichever path computed G.
static void unit_bwd(const sbm_graph *g, const unit_io *io, const unit_grad *gr,
                     attn_scratch *sc) {
    const int L = g->rows;
    attn_scratch_edges(sc, L, g->nnz, gr->kc);
    if (g->blocks)
        unit_bwd_dense(g, io, gr, sc);
    else
        unit_bwd_sparse(g, io, gr, sc);
    spmm_pair(gr->GYk, gr->GTYq, gr->kc, g->rowptr, g->col, sc->gv, L, L, gr->yq, gr->yk, gr->Hk,
              gr->kc, sc->spmm, io->simd);
}

void cpu_sbm_attn_bwd(kctx *k, float *dqkv, float *dY, float *dS, const float *dout,
                    const float *qkv, const float *out, const sbm_graphs *gs, const float *Y,
                    const float *S, const kbatch *bt, int H, int dh, int kc, float p, kdrop d,
                    float reg) {
    const int HD = H * dh, ld = 3 * HD, Hk = H * kc, T = bt->T;
    const size_t kk = (size_t)kc * kc;
    memset(dqkv, 0, sizeof(float) * (size_t)T * ld);
    float *dS_part = xcalloc((size_t)gs->units * kk, sizeof(float));
    int maxL = 0;
    for (int b = 0; b < bt->B; b++) maxL = bt->len[b] > maxL ? bt->len[b] : maxL;
    const float *Yq = Y, *Yk = Y + (size_t)T * Hk;
    float *dYq = dY, *dYk = dY + (size_t)T * Hk;
#pragma omp parallel num_threads(k->nthreads)
    {
        attn_scratch sc;
        memset(&sc, 0, sizeof(sc));
        float *GYk = xmalloc(sizeof(float) * (size_t)maxL * kc);
        float *GTYq = xmalloc(sizeof(float) * (size_t)maxL * kc);
#pragma omp for schedule(dynamic, 1)
        for (int u = 0; u < gs->units; u++) {
            int b = u / H, h = u % H, base = bt->off[b];
            const sbm_graph *g = &gs->g[u];
            int L = g->rows;
            unit_io io = {.Q = qkv + (size_t)base * ld + h * dh,
                          .K = qkv + (size_t)base * ld + HD + h * dh,
                          .V = qkv + (size_t)base * ld + 2 * HD + h * dh,
                          .Yo = (float *)out + (size_t)base * HD + h * dh,
                          .ld = ld, .HD = HD, .dh = dh, .n = bt->n, .simd = k->simd,
                          .sc = 1.0f / sqrtf((float)dh), .p = p,
                          .dscale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f,
                          .thr = dropout_threshold(p), .s = rng_make(0, 0, 0, 0, 0, 0)};
            unit_grad gr = {.dout = dout + (size_t)base * HD + h * dh,
                            .dQ = dqkv + (size_t)base * ld + h * dh,
                            .dK = dqkv + (size_t)base * ld + HD + h * dh,
                            .dV = dqkv + (size_t)base * ld + 2 * HD + h * dh,
                            .yq = Yq + (size_t)base * Hk + h * kc,
                            .yk = Yk + (size_t)base * Hk + h * kc,
                            .GYk = GYk, .GTYq = GTYq, .Hk = Hk, .kc = kc, .reg = reg};
            memset(GYk, 0, sizeof(float) * (size_t)L * kc);
            memset(GTYq, 0, sizeof(float) * (size_t)L * kc);
            unit_bwd(g, &io, &gr, &sc);
            const float *Sh = S + (size_t)h * kk;
            if (L > 0) {
                // dYq = (G Yk) S^T, dYk = (G^T Yq) S, dS = Yq^T (G Yk).
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, kc, kc, 1.0f, GYk, kc, Sh,
                            kc, 0.0f, dYq + (size_t)base * Hk + h * kc, Hk);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, kc, kc, 1.0f, GTYq, kc,
                            Sh, kc, 0.0f, dYk + (size_t)base * Hk + h * kc, Hk);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kc, kc, L, 1.0f, gr.yq, Hk,
                            GYk, kc, 0.0f, dS_part + (size_t)u * kk, kc);
            }
        }
        attn_scratch_free(&sc);
        free(GYk);
        free(GTYq);
    }
    memset(dS, 0, sizeof(float) * (size_t)H * kk);
    for (int u = 0; u < gs->units; u++)
        for (size_t i = 0; i < kk; i++) dS[(size_t)(u % H) * kk + i] += dS_part[(size_t)u * kk + i];
    free(dS_part);
}
