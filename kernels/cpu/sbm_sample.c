// sbm_sample.c: CPU backend of SBM graph sampling (SPEC.md section 2.4): fastRG with the floor
// in an augmented block, and the exact dense Bernoulli sampler, into per-(sequence, head) CSR
// graphs with duplicates collapsed. A (sequence, head) is one OpenMP work unit. Cost
// O(m + L k + k^2) per unit for fastRG; no buffer is L x L.
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/fastmath.h"
#include "kernels/cpu/sbm_bernoulli.h"
#include "kernels/sbm_fastrg.h"
#include "kernels/sbm_rule.h"
#include "kernels/philox.h"
#include "kernels/sbm.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the dense sampler packs edge flags assuming little-endian byte order"
#endif

// ---------------------------------------------------------------- sampling helpers

// Per-thread scratch, grown on demand (each array with its own capacity).
typedef struct {
    float *prob;      // alias probabilities
    int *alias;       // alias targets
    int *stack;       // Vose work list
    int *ei, *ej;     // raw edges
    int *tmpcol;      // edges bucketed by row
    int *cnt;         // per-row (or per-column) counts / positions
    uint32_t *wq, *wk;  // random words of each raw edge for its query and key draws
    int *seen;        // duplicate detection per key
    uint32_t *words;  // Philox output
    uint8_t *hit;     // dense sampler: edge flags of one row
    float *T1, *P;    // dense sampler: Yq S, a block of probabilities (or the packed keys)
    uint16_t *kvalid; // dense sampler: key validity per 16-key panel
    uint64_t *draws;  // fastRG: (uniform << 32 | edge) of one side, sorted by column and uniform
    double *dcum;     // fastRG: running column sums and next targets [2 * (k + 1) + 8]
    size_t n_kvalid, n_draws, n_dcum;
    size_t n_prob, n_alias, n_stack, n_ei, n_ej, n_tmpcol, n_cnt, n_seen, n_words, n_T1, n_P;
    size_t n_wq, n_wk, n_hit;
} sample_scratch;

static void *grow(void *ptr, size_t *have, size_t need, size_t elem) {
    if (*have >= need) return ptr;
    free(ptr);
    *have = need + need / 2 + 16;
    return xmalloc(*have * elem);
}
#define GROW(s, field, need) ((s)->field = grow((s)->field, &(s)->n_##field, (need), sizeof(*(s)->field)))

static void scratch_free(sample_scratch *s) {
    free(s->prob);
    free(s->alias);
    free(s->stack);
    free(s->ei);
    free(s->ej);
    free(s->tmpcol);
    free(s->cnt);
    free(s->wq);
    free(s->wk);
    free(s->hit);
    free(s->seen);
    free(s->words);
    free(s->T1);
    free(s->P);
    free(s->kvalid);
    free(s->draws);
    free(s->dcum);
}

// One side of fastRG's endpoint draws: edge e (column u = col[e] of the augmented Yq or Yk,
// column kc being the mask) gets the row i with probability Y[i, u] / total[u], by inverse CDF
// of the uniform w[e] / 2^32; the row is written over col[e]. The edges are bucket-sorted by
// (column, uniform) (2^b buckets for a column of about 4 * 2^b edges, then insertion sort), and
// one pass over the rows accumulates every column's sum (double, row order, as total was) and
// hands row i to each pending edge of column u whose target w * total[u] the sum has passed:
// O(m + L k) for all columns. Which edge of a column receives which of the column's draws is
// immaterial: those edges are exchangeable (independent draws of their other end).
static void draw_rows(int *col, const float *Y, int ld, const float *mask, int L, int kc,
                      const double *total, int64_t m, const uint32_t *w, sample_scratch *sc) {
    const int K1 = kc + 1;
    GROW(sc, seen, 5 * (size_t)K1 + 2);
    int *ptr = sc->seen, *end = ptr + K1, *bits = end + K1, *base = bits + K1;
    for (int u = 0; u < K1; u++) end[u] = 0;
    for (int64_t e = 0; e < m; e++) end[col[e]]++;
    base[0] = 0;
    for (int u = 0; u < K1; u++) {
        int b = 0;
        while (b < 24 && ((int64_t)4 << b) < end[u]) b++;
        bits[u] = b;
        base[u + 1] = base[u] + (1 << b);
    }
    const int nb = base[K1];
    GROW(sc, cnt, (size_t)nb + 1);
    GROW(sc, draws, (size_t)m);
    int *cnt = sc->cnt;
    uint64_t *d = sc->draws;
    memset(cnt, 0, sizeof(int) * ((size_t)nb + 1));
#define DRAW_KEY(e) (base[col[e]] + (bits[col[e]] ? (int)(w[e] >> (32 - bits[col[e]])) : 0))
    for (int64_t e = 0; e < m; e++) cnt[DRAW_KEY(e) + 1]++;
    for (int b = 0; b < nb; b++) cnt[b + 1] += cnt[b];
    for (int64_t e = 0; e < m; e++) d[cnt[DRAW_KEY(e)]++] = (uint64_t)w[e] << 32 | (uint32_t)e;
#undef DRAW_KEY
    for (int u = 0, at = 0; u < K1; u++) {
        ptr[u] = at;
        at += end[u];
        end[u] = at;
        // Buckets are in order; within the column, the few uniforms left out of order.
        for (int t = ptr[u] + 1; t < end[u]; t++) {
            const uint64_t x = d[t];
            int s = t;
            while (s > ptr[u] && d[s - 1] > x) {
                d[s] = d[s - 1];
                s--;
            }
            d[s] = x;
        }
    }
    GROW(sc, dcum, 2 * (size_t)K1 + 8);
    double *cum = sc->dcum, *next = cum + K1 + 4;
#define DRAW_TARGET(u) \
    (ptr[u] < end[u] ? sbm_draw_target((uint32_t)(d[ptr[u]] >> 32), total[u]) : INFINITY)
    for (int u = 0; u < K1; u++) {
        cum[u] = 0.0;
        next[u] = DRAW_TARGET(u);
    }
    for (int i = 0; i < L; i++) {
        const float *y = Y + (size_t)i * ld;
        int u = 0;
#if defined(__AVX2__)
        for (; u + 4 <= kc; u += 4) {
            __m256d c =
                _mm256_add_pd(_mm256_loadu_pd(cum + u), _mm256_cvtps_pd(_mm_loadu_ps(y + u)));
            _mm256_storeu_pd(cum + u, c);
            int hit = _mm256_movemask_pd(_mm256_cmp_pd(c, _mm256_loadu_pd(next + u), _CMP_GT_OQ));
            while (hit) {
                const int v = u + __builtin_ctz((unsigned)hit);
                hit &= hit - 1;
                while (cum[v] > next[v]) {
                    col[(uint32_t)d[ptr[v]++]] = i;
                    next[v] = DRAW_TARGET(v);
                }
            }
        }
#endif
        for (; u < K1; u++) {
            cum[u] += u < kc ? y[u] : mask[i];
            while (cum[u] > next[u]) {
                col[(uint32_t)d[ptr[u]++]] = i;
                next[u] = DRAW_TARGET(u);
            }
        }
    }
#undef DRAW_TARGET
    // Targets at the very top (rounding): the column's last row with weight.
    for (int u = 0; u < K1; u++) {
        if (ptr[u] == end[u]) continue;
        int last = L - 1;
        while (last > 0 && (u < kc ? Y[(size_t)last * ld + u] : mask[last]) <= 0.0f) last--;
        while (ptr[u] < end[u]) col[(uint32_t)d[ptr[u]++]] = last;
    }
}

static void graph_reserve(sbm_graph *g, int rows, int nnz) {
    if (g->rows_cap < rows + 1) {
        free(g->rowptr);
        g->rows_cap = rows + 1;
        g->rowptr = xmalloc(sizeof(int) * (size_t)g->rows_cap);
    }
    if (g->cap < nnz) {
        free(g->col);
        free(g->a);
        free(g->keep);
        g->cap = nnz + nnz / 4 + 16;
        g->col = xmalloc(sizeof(int) * (size_t)g->cap);
        g->a = xmalloc(sizeof(float) * (size_t)g->cap);
        g->keep = xmalloc((size_t)g->cap);
    }
}

// Collapses the raw edges (ei, ej) of one unit into CSR with each row's keys ascending and
// duplicates removed: a counting sort by key, then a stable one by query row, then adjacent
// repeats dropped. O(m + L). Sorted rows let attention walk keys in cache-sized tiles.
static void edges_to_csr(sbm_graph *g, int L, int64_t m, sample_scratch *sc) {
    GROW(sc, cnt, (size_t)L + 1);
    GROW(sc, seen, (size_t)m + 1);    // rows of the key-sorted edges
    GROW(sc, tmpcol, (size_t)m + 1);  // keys of the key-sorted edges, then of the row-sorted
    int *cnt = sc->cnt;
    memset(cnt, 0, sizeof(int) * ((size_t)L + 1));
    for (int64_t e = 0; e < m; e++) cnt[sc->ej[e] + 1]++;
    for (int j = 0; j < L; j++) cnt[j + 1] += cnt[j];
    for (int64_t e = 0; e < m; e++) {
        int p = cnt[sc->ej[e]]++;
        sc->seen[p] = sc->ei[e];
        sc->tmpcol[p] = sc->ej[e];
    }
    memset(cnt, 0, sizeof(int) * ((size_t)L + 1));
    for (int64_t e = 0; e < m; e++) cnt[sc->seen[e] + 1]++;
    for (int i = 0; i < L; i++) cnt[i + 1] += cnt[i];
    // Row-sorted keys go back into ej (no longer needed), stable in key order.
    for (int64_t e = 0; e < m; e++) sc->ej[cnt[sc->seen[e]]++] = sc->tmpcol[e];
    // cnt[i] is now the end of row i's run; it starts where row i-1's ends.
    graph_reserve(g, L, (int)m);
    int nnz = 0, start = 0;
    for (int i = 0; i < L; i++) {
        g->rowptr[i] = nnz;
        int last = -1;
        for (int e = start; e < cnt[i]; e++) {
            int j = sc->ej[e];
            if (j != last) g->col[nnz++] = j;
            last = j;
        }
        start = cnt[i];
    }
    g->rowptr[L] = nnz;
    g->nnz = nnz;
}

// fastRG with the floor: memberships augmented by an all-ones column (valid rows) and the block
// matrix by eps on the extra diagonal entry, so E[count of (i,j)] = P_ij + eps. Each edge e
// takes Philox block e: words 0,3 pick its block pair (u, v), word 1 its query from column u
// of Yq, word 2 its key from column v of Yk. Edges are bucketed by u (then by v) before the
// row draws so each column's alias table stays in L1 while it is used.
static void sample_fastrg(sbm_graph *g, const float *Yq, const float *Yk, int ld, const float *S,
                          const float *mask, int L, int kc, float eps, double lam_total,
                          rng_stream count_stream, rng_stream edge_stream, sample_scratch *sc) {
    const int K1 = kc + 1, NP = K1 * K1;
    const int64_t m = sbm_fastrg_count(count_stream, lam_total);
    // Column sums (the last column: number of valid rows), in double.
    double cq[K1], ck[K1];
    sbm_column_sums(Yq, (size_t)ld, mask, L, kc, cq);
    sbm_column_sums(Yk, (size_t)ld, mask, L, kc, ck);
    GROW(sc, ei, (size_t)m + 1);
    GROW(sc, ej, (size_t)m + 1);
    if (m > 0) {
        GROW(sc, prob, (size_t)NP);
        GROW(sc, alias, (size_t)NP);
        GROW(sc, stack, (size_t)NP);
        GROW(sc, wq, (size_t)m);
        GROW(sc, wk, (size_t)m);
        GROW(sc, P, (size_t)NP);
        float *w = sc->P;  // block-pair weights
        for (int u = 0; u < K1; u++)
            for (int v = 0; v < K1; v++)
                w[(size_t)u * K1 + v] = sbm_pair_weight(cq, ck, cq[kc], ck[kc], S, kc, eps, u, v);
        float *pp = sc->prob;
        int *ap = sc->alias;
        sbm_alias_build(w, 1, NP, pp, ap, sc->stack);
        enum { CH = 256 };
        GROW(sc, words, 4 * (size_t)CH);
        for (int64_t e0 = 0; e0 < m; e0 += CH) {
            int cnt = m - e0 < CH ? (int)(m - e0) : CH;
            philox_blocks(edge_stream, (uint32_t)e0, cnt, sc->words);
            for (int t = 0; t < cnt; t++) {
                const uint32_t *r = sc->words + 4 * t;
                const int pr = sbm_alias_draw(pp, ap, NP, sbm_pair_u01(r[0], r[3]));
                sc->ei[e0 + t] = pr / K1;
                sc->ej[e0 + t] = pr % K1;
                sc->wq[e0 + t] = r[1];
                sc->wk[e0 + t] = r[2];
            }
        }
        // Each edge's query is a row drawn from column u of the augmented Yq, its key one from
        // column v of Yk (draw_rows; ei and ej hold u and v until then).
        draw_rows(sc->ei, Yq, ld, mask, L, kc, cq, m, sc->wq, sc);
        draw_rows(sc->ej, Yk, ld, mask, L, kc, ck, m, sc->wk, sc);
    }
    edges_to_csr(g, L, m, sc);
}

// Room for `need` edges, keeping the first nnz (the per-edge a and keep are not kept: they are
// written after sampling).
static void graph_grow(sbm_graph *g, int nnz, int need) {
    if (g->cap >= need) return;
    int newcap = need * 2;
    int *col = xmalloc(sizeof(int) * (size_t)newcap);
    memcpy(col, g->col, sizeof(int) * (size_t)nnz);
    free(g->col);
    free(g->a);
    free(g->keep);
    g->col = col;
    g->a = xmalloc(sizeof(float) * (size_t)newcap);
    g->keep = xmalloc((size_t)newcap);
    g->cap = newcap;
}

// Appends the `cnt` keys of query row i to the graph (rows are appended in order).
static void graph_append_row(sbm_graph *g, int *nnz, const int *cols, int cnt) {
    graph_grow(g, *nnz, *nnz + cnt);
    memcpy(g->col + *nnz, cols, sizeof(int) * (size_t)cnt);
    *nnz += cnt;
}

// Exact Bernoulli with the fused kernel (sbm_bernoulli.h): T1 = Yq S once, the keys packed into
// 16-key panels, then six query rows at a time against all panels. The uniforms are the same
// words as in sample_dense_blocks (pair (i, j) uses word (i n + j) % 4 of block (i n + j) / 4).
static void sample_dense_fused(sbm_graph *g, const float *Yq, const float *Yk, int ld,
                               const float *S, const float *mask, int L, int n, int kc, float eps,
                               rng_stream stream, sample_scratch *sc) {
    const int np = (L + BERN_KEYS - 1) / BERN_KEYS, Lw = np * BERN_KEYS;
    const size_t wrow = 4 * ((size_t)Lw / 4 + 2);
    GROW(sc, T1, (size_t)L * kc);
    GROW(sc, P, bern_keys_floats(L, kc));
    GROW(sc, kvalid, (size_t)np);
    GROW(sc, words, BERN_ROWS * wrow);
    GROW(sc, tmpcol, (size_t)BERN_ROWS * L);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, kc, kc, 1.0f, Yq, ld, S, kc, 0.0f,
                sc->T1, kc);
    bern_pack_keys(sc->P, sc->kvalid, Yk, ld, mask, L, kc);
    graph_reserve(g, L, L > 0 ? L : 1);
    int nnz = 0;
    for (int i0 = 0; i0 < L; i0 += BERN_ROWS) {
        const int R = L - i0 < BERN_ROWS ? L - i0 : BERN_ROWS;
        const uint32_t *w[BERN_ROWS];
        int *cols[BERN_ROWS], count[BERN_ROWS];
        for (int r = 0; r < R; r++) {
            uint32_t e0 = (uint32_t)(i0 + r) * (uint32_t)n, *buf = sc->words + r * wrow;
            uint32_t b0 = e0 >> 2, b1 = (e0 + (uint32_t)Lw - 1) >> 2;
            philox_blocks(stream, b0, (int)(b1 - b0 + 1), buf);
            w[r] = buf + (e0 & 3u);
            cols[r] = sc->tmpcol + (size_t)r * L;
        }
        bern_rows(cols, count, sc->T1 + (size_t)i0 * kc, kc, R, sc->P, sc->kvalid, L, kc, eps, w,
                  1);
        for (int r = 0; r < R; r++) {
            const int i = i0 + r;
            g->rowptr[i] = nnz;
            if (mask[i] != 0.0f) graph_append_row(g, &nnz, cols[r], count[r]);
        }
    }
    g->rowptr[L] = nnz;
    g->nnz = nnz;
}

// Exact Bernoulli: A_ij ~ Bernoulli(min(1, P_ij + eps)) for valid pairs, P formed a block of
// query rows at a time (Yq S once, then (Yq S) Yk^T per block) with BLAS; for builds without
// the fused kernel.
static void sample_dense_blocks(sbm_graph *g, const float *Yq, const float *Yk, int ld, const float *S,
                         const float *mask, int L, int n, int kc, float eps, rng_stream stream,
                         sample_scratch *sc) {
    enum { RB = 64 };
    GROW(sc, T1, (size_t)L * kc);
    GROW(sc, P, (size_t)RB * L);
    GROW(sc, words, 4 * ((size_t)L / 4 + 2));
    GROW(sc, hit, (size_t)L + 64);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, kc, kc, 1.0f, Yq, ld, S, kc, 0.0f,
                sc->T1, kc);
    // Edges are appended row by row; the capacity grows as needed.
    graph_reserve(g, L, L > 0 ? L : 1);
    int nnz = 0;
    for (int i0 = 0; i0 < L; i0 += RB) {
        int R = L - i0 < RB ? L - i0 : RB;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, L, kc, 1.0f,
                    sc->T1 + (size_t)i0 * kc, kc, Yk, ld, 0.0f, sc->P, L);
        for (int r = 0; r < R; r++) {
            int i = i0 + r;
            g->rowptr[i] = nnz;
            if (mask[i] == 0.0f) continue;
            graph_grow(g, nnz, nnz + L);
            uint32_t e0 = (uint32_t)i * (uint32_t)n;
            uint32_t b0 = e0 >> 2, b1 = (e0 + (uint32_t)L - 1) >> 2;
            philox_blocks(stream, b0, (int)(b1 - b0 + 1), sc->words);
            const float *prow = sc->P + (size_t)r * L;
            const uint32_t *wr = sc->words + (e0 & 3u);
            // Pass 1 (vectorised): edge flags by comparing 24-bit uniforms with integer
            // thresholds. Pass 2: flags packed 8 at a time into bit masks (a multiply gathers the
            // low bit of each byte), then set bits are walked, so work follows the edges.
            uint8_t *hit = sc->hit;
            for (int j = 0; j < L; j++)
                hit[j] = (uint8_t)((mask[j] != 0.0f) &
                                   sbm_edge_drawn(wr[j], sbm_edge_threshold(prow[j], eps)));
            int Lp = (L + 63) & ~63;
            for (int j = L; j < Lp; j++) hit[j] = 0;
            int *col = g->col + nnz;
            int c = 0;
            for (int j0 = 0; j0 < Lp; j0 += 64) {
                uint64_t bits = 0;
                for (int b = 0; b < 8; b++) {
                    uint64_t x;
                    memcpy(&x, hit + j0 + 8 * b, 8);
                    bits |= ((x * 0x0102040810204080ULL) >> 56) << (8 * b);
                }
                while (bits) {
                    col[c++] = j0 + __builtin_ctzll(bits);
                    bits &= bits - 1;
                }
            }
            nnz += c;
        }
    }
    g->rowptr[L] = nnz;
    g->nnz = nnz;
}

void cpu_sbm_sample(kctx *k, sbm_graphs *gs, const float *Y, const float *S, const kbatch *bt, int H,
                  int kc, float eps, sbm_sampler sampler, uint64_t seed, uint32_t step,
                  uint32_t layer, uint32_t head0, int64_t *edges) {
    const int units = bt->B * H, Hk = H * kc;
    sbm_graphs_reserve(gs, units);
    const float *Yq = Y, *Yk = Y + (size_t)bt->T * Hk;
#pragma omp parallel num_threads(k->nthreads)
    {
        sample_scratch sc;
        memset(&sc, 0, sizeof(sc));
#pragma omp for schedule(dynamic, 1)
        for (int u = 0; u < units; u++) {
            int b = u / H, h = u % H;
            int L = bt->len[b], base = bt->off[b];
            sbm_graph *g = &gs->g[u];
            g->rows = L;
            const float *yq = Yq + (size_t)base * Hk + h * kc, *yk = Yk + (size_t)base * Hk + h * kc;
            const float *Sh = S + (size_t)h * kc * kc, *mask = bt->mask + base;
            // Expected edges: (1^T Yq) S (Yk^T 1) + eps * valid^2, O(L k + k^2).
            double *cq = xmalloc(2 * sizeof(double) * ((size_t)kc + 1));
            double *ck = cq + kc + 1;
            sbm_column_sums(yq, (size_t)Hk, mask, L, kc, cq);
            sbm_column_sums(yk, (size_t)Hk, mask, L, kc, ck);
            const double valid = cq[kc];
            const double lam = sbm_expected_edges(cq, ck, Sh, kc, eps, valid);
            free(cq);
            g->expected = lam;
            uint32_t gh = head0 + (uint32_t)h;
            int dense = sampler == SBM_SAMPLER_DENSE ||
                        (sampler == SBM_SAMPLER_AUTO && lam > SBM_AUTO_DENSE_FRACTION * valid * valid);
            g->dense = dense;
            rng_stream es = rng_make(seed, RNG_GRAPH, step, layer, gh, bt->sample[b]);
            if (dense && bern_fast() && k->simd)
                sample_dense_fused(g, yq, yk, Hk, Sh, mask, L, bt->n, kc, eps, es, &sc);
            else if (dense)
                sample_dense_blocks(g, yq, yk, Hk, Sh, mask, L, bt->n, kc, eps, es, &sc);
            else
                sample_fastrg(g, yq, yk, Hk, Sh, mask, L, kc, eps, lam,
                              rng_make(seed, RNG_GRAPH_COUNT, step, layer, gh, bt->sample[b]), es,
                              &sc);
        }
        scratch_free(&sc);
    }
    for (int h = 0; h < H; h++) edges[h] = 0;
    for (int u = 0; u < units; u++) edges[u % H] += gs->g[u].nnz;
}


int cpu_sbm_graph_csr(kctx *k, const sbm_graphs *gs, const kbatch *bt, int H, int u, int *rowptr,
                      int *col) {
    (void)k;
    (void)bt;
    (void)H;
    const sbm_graph *g = &gs->g[u];
    if (!g->rowptr) {  // never sampled into (no rows)
        rowptr[0] = 0;
        return 0;
    }
    memcpy(rowptr, g->rowptr, sizeof(int) * ((size_t)g->rows + 1));
    if (g->nnz > 0) memcpy(col, g->col, sizeof(int) * (size_t)g->nnz);
    return 0;
}
