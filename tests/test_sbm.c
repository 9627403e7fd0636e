// test_sbm.c: the SBM-attention kernels of kernels/sbm.h against SPEC.md section 2, computed
// densely in double precision in this file.
//
//  1. Sparse attention forward on sampled (fastRG, dense) and hand-built graphs vs a dense
//     L x L reference that materialises the adjacency from the CSR (scores on edges only,
//     softmax per row over the edges, attention dropout recomputed from dropout.h with element
//     i*n + j of stream (seed, RNG_DROPOUT, step, layer, slot + h, sample)); rows without edges
//     give exactly 0. With a complete graph it equals k_attn_softmax_fwd/bwd.
//  2. With the graph fixed, k_sbm_attn_bwd's dqkv against central finite differences.
//  3. The straight-through gradient against the dense formula: A is treated as a continuous
//     matrix in a_ij = exp(s_ij) A_ij / sum_l exp(s_il) A_il, dL/dA is computed analytically in
//     double (and that formula itself checked by finite differences on A), then
//     G = clip(A . (dL/dA + reg), -1, 1) and dYq = (G Yk) S^T, dYk = (G^T Yq) S, dS = Yq^T G Yk.
//     Since a = w A / Z, dL/dA_ij = (w_ij / Z_i)(da_ij - sum_l a_il da_il) with
//     da_ij = f_ij dy_i . v_j (the dropout factor f inside da, as SPEC says "after dropout
//     scaling"); on an edge w_ij / Z_i = a_ij, which is the kernel's g_ij.
//  4. Memberships and block matrices (forward vs double, backward vs finite differences), and
//     the end-to-end surrogate f(phi, C) = sum G . (Yq S Yk^T) with G fixed, whose gradient is
//     members_bwd + blocks_bwd fed with (G Yk) S^T, (G^T Yq) S and Yq^T G Yk.
//  5. Sampler statistics of fastRG and the dense sampler: per-pair edge frequencies, row and
//     column degrees, edge-count mean and variance against the exact distribution; the same
//     statistics reject a wrong distribution (so the test can fail).
//  6. Determinism and independence of batch composition, head split (head0) and thread count.
//  7. Edge cases: a sequence with a single valid position, a fully padded sequence, the AUTO
//     sampler's choice at SBM_AUTO_DENSE_FRACTION.
//
// Finite-difference method and tolerances are those of testlib.h (see its header):
// L(x) = sum(R * f(x)) in double, central differences with the float32 step actually taken,
// per-entry |a - n| <= atol + rtol * max(|a|, |n|) and an aggregate relative L2 bound.
// Dense references are compared with an error budget relative to the sum of the absolute values
// of the terms summed (float32 rounding is relative to that), as in test_kernels.c.
//
// Statistical bounds. The file makes about 850 two-sided z-tests (per sampler and
// configuration: one per valid pair, one per valid row and column, edge-count mean and
// variance; M = 82 to 134 each). Under the normal approximation Pr[|z| > 5] = 5.7e-7, so by
// Bonferroni the family-wise false-alarm probability is <= 850 * 5.7e-7 < 5e-4; every tested
// count has N p >= 50 (asserted for pairs), so the normal approximation of the tails holds.
// The chi-square sum of the per-pair z^2 (K pairs) must also stay below K + 5 sqrt(2K). A real
// error of a few percent in a probability gives |z| >> 5 (checked: the wrong-eps and
// wrong-formula alternatives are rejected). All seeds are fixed, so the outcome is
// reproducible; the measured statistics are printed.
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka.h needs the above first.
#include <cmocka.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/dropout.h"
#include "kernels/kernels.h"
#include "kernels/philox.h"
#include "kernels/sbm.h"

#define TESTLIB_GRAD_NAME_WIDTH 40
#include "testlib.h"

// ---------------------------------------------------------------- buffers, dense references

static double *dzeros(size_t n) { return xcalloc(n ? n : 1, sizeof(double)); }
static bool all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}
// Kernel values x against double references r, entry-wise |x - r| <= rel * mag + abs; returns
// the worst ratio |x - r| / bound (NaN counts as infinite) and prints the first failure.
static double compare_ref(const char *what, const float *x, const double *r, const double *mag,
                          size_t n, double rel, double abs_) {
    double worst = 0.0;
    bool printed = false;
    for (size_t i = 0; i < n; i++) {
        double bound = rel * mag[i] + abs_;
        double ratio = fabs((double)x[i] - r[i]) / bound;
        if (!(ratio <= worst)) worst = isnan(ratio) ? INFINITY : ratio;
        if (!(ratio <= 1.0) && !printed) {
            print_error("%s: entry %zu: got %.9g, reference %.9g (bound %.2e)\n", what, i,
                        (double)x[i], r[i], bound);
            printed = true;
        }
    }
    return worst;
}

// ---------------------------------------------------------------- SBM helpers

// Random memberships Y [2T, H*kc] uniform in (lo, hi), zero rows at padded positions (queries
// and keys), as k_sbm_members_fwd produces them.
static float *rand_members(const kbatch *bt, int H, int kc, double lo, double hi) {
    const int Hk = H * kc;
    float *Y = xmalloc(sizeof(float) * (size_t)2 * (bt->T ? bt->T : 1) * Hk);
    for (int r = 0; r < 2 * bt->T; r++)
        for (int c = 0; c < Hk; c++)
            Y[(size_t)r * Hk + c] =
                bt->mask[r % bt->T] != 0.0f ? (float)(lo + (hi - lo) * urand()) : 0.0f;
    return Y;
}

// Random block matrices S [H, kc, kc]: softmax over the k*k entries of scale * N(0, 1).
static float *rand_blocks(int H, int kc, double scale) {
    const int kk = kc * kc;
    float *S = xmalloc(sizeof(float) * (size_t)H * kk);
    double *z = dzeros((size_t)kk);
    for (int h = 0; h < H; h++) {
        double sum = 0.0;
        for (int i = 0; i < kk; i++) sum += (z[i] = exp(scale * randn()));
        for (int i = 0; i < kk; i++) S[h * kk + i] = (float)(z[i] / sum);
    }
    free(z);
    return S;
}

// P_ij = Yq_i S_h Yk_j^T of sequence b, head h (i, j within the sequence), in double.
static double edge_prob(const float *Y, const float *S, const kbatch *bt, int H, int kc, int b,
                        int h, int i, int j) {
    const int Hk = H * kc, base = bt->off[b];
    const float *yq = Y + (size_t)(base + i) * Hk + h * kc;
    const float *yk = Y + (size_t)(bt->T + base + j) * Hk + h * kc;
    const float *Sh = S + (size_t)h * kc * kc;
    double p = 0.0;
    for (int u = 0; u < kc; u++)
        for (int v = 0; v < kc; v++) p += (double)yq[u] * Sh[u * kc + v] * yk[v];
    return p;
}

// sum_ij (P_ij + eps) over the valid pairs of sequence b, head h.
static double expected_ref(const float *Y, const float *S, const kbatch *bt, int H, int kc,
                           int b, int h, float eps) {
    const int L = bt->len[b], base = bt->off[b];
    double e = 0.0;
    for (int i = 0; i < L; i++)
        for (int j = 0; j < L; j++)
            if (bt->mask[base + i] != 0.0f && bt->mask[base + j] != 0.0f)
                e += edge_prob(Y, S, bt, H, kc, b, h, i, j) + eps;
    return e;
}

// CSR well formed: rows == L, rowptr from 0 to nnz and monotone, keys in range, no duplicate
// key within a row, no edge from or to a padded position (mask of the sequence's rows).
static bool graph_ok(const sbm_graph *g, int L, const float *mask) {
    if (g->rows != L || g->nnz < 0 || g->rowptr == NULL || g->rowptr[0] != 0 ||
        g->rowptr[L] != g->nnz) {
        print_error("graph: rows %d (L %d), nnz %d, rowptr[0] %d, rowptr[L] %d\n", g->rows, L,
                    g->nnz, g->rowptr ? g->rowptr[0] : -1, g->rowptr ? g->rowptr[L] : -1);
        return false;
    }
    int *stamp = xmalloc(sizeof(int) * (size_t)(L ? L : 1));
    for (int j = 0; j < L; j++) stamp[j] = -1;
    bool ok = true;
    for (int i = 0; i < L && ok; i++) {
        int e0 = g->rowptr[i], e1 = g->rowptr[i + 1];
        if (e1 < e0) {
            print_error("graph: rowptr decreases at row %d\n", i);
            ok = false;
            break;
        }
        if (e1 > e0 && mask[i] == 0.0f) {
            print_error("graph: padded query %d has %d edges\n", i, e1 - e0);
            ok = false;
        }
        for (int e = e0; e < e1 && ok; e++) {
            int j = g->col[e];
            if (j < 0 || j >= L) {
                print_error("graph: row %d key %d out of range\n", i, j);
                ok = false;
            } else if (mask[j] == 0.0f) {
                print_error("graph: edge (%d, %d) to a padded key\n", i, j);
                ok = false;
            } else if (stamp[j] == i) {
                print_error("graph: duplicate edge (%d, %d)\n", i, j);
                ok = false;
            } else {
                stamp[j] = i;
            }
        }
    }
    free(stamp);
    return ok;
}

static bool graph_equal(const sbm_graph *a, const sbm_graph *b) {
    return a->rows == b->rows && a->nnz == b->nnz && a->dense == b->dense &&
           a->expected == b->expected &&
           memcmp(a->rowptr, b->rowptr, sizeof(int) * (size_t)(a->rows + 1)) == 0 &&
           (a->nnz == 0 || memcmp(a->col, b->col, sizeof(int) * (size_t)a->nnz) == 0);
}

// Materialises the adjacency of a graph as an L x L 0/1 matrix.
static void graph_dense(const sbm_graph *g, double *A) {
    const int L = g->rows;
    memset(A, 0, sizeof(double) * (size_t)L * L);
    for (int i = 0; i < L; i++)
        for (int e = g->rowptr[i]; e < g->rowptr[i + 1]; e++) A[(size_t)i * L + g->col[e]] = 1.0;
}

// Attention dropout factor of (query i, key j) of head h: straight from dropout.h, element
// i * n + j of stream (seed, RNG_DROPOUT, step, layer, slot + h, sample).
static double drop_factor(kdrop d, int h, uint32_t sample, int n, int i, int j, float p) {
    if (p <= 0.0f) return 1.0;
    rng_stream s = rng_make(d.seed, RNG_DROPOUT, d.step, d.layer, d.slot + (uint32_t)h, sample);
    uint32_t e = (uint32_t)i * (uint32_t)n + (uint32_t)j;
    return dropout_u16(rng_block(s, e >> 3), e) >= dropout_threshold(p) ? 1.0 / (1.0 - (double)p)
                                                                        : 0.0;
}

// Hand-built graphs on a batch: each (sequence, head) gets valid pairs with probability dens,
// in random column order; the first valid query row is empty, the second has one edge, the
// last has every valid key. Freed by sbm_graphs_free like sampled ones.
static void graphs_handmade(sbm_graphs *gs, const kbatch *bt, int H, double dens) {
    const int units = bt->B * H;
    gs->g = xcalloc((size_t)units, sizeof(sbm_graph));
    gs->units = gs->units_cap = units;
    for (int u = 0; u < units; u++) {
        const int b = u / H, L = bt->len[b];
        const float *mask = bt->mask + bt->off[b];
        sbm_graph *g = &gs->g[u];
        g->rows = L;
        g->rows_cap = L + 1;
        g->cap = L * L + 1;
        g->rowptr = xmalloc(sizeof(int) * (size_t)g->rows_cap);
        g->col = xmalloc(sizeof(int) * (size_t)g->cap);
        g->a = xmalloc(sizeof(float) * (size_t)g->cap);
        g->keep = xmalloc((size_t)g->cap);
        int first = -1, second = -1, last = -1;
        for (int i = 0; i < L; i++)
            if (mask[i] != 0.0f) {
                if (first < 0)
                    first = i;
                else if (second < 0)
                    second = i;
                last = i;
            }
        int nnz = 0;
        for (int i = 0; i < L; i++) {
            g->rowptr[i] = nnz;
            if (mask[i] == 0.0f || i == first) continue;
            int r0 = nnz;
            if (i == second && i != last) {
                int j;
                do j = randint(L);
                while (mask[j] == 0.0f);
                g->col[nnz++] = j;
                continue;
            }
            for (int j = 0; j < L; j++)
                if (mask[j] != 0.0f && (i == last || urand() < dens)) g->col[nnz++] = j;
            for (int e = nnz - 1; e > r0; e--) {  // shuffle the row
                int f = r0 + randint(e - r0 + 1), t = g->col[e];
                g->col[e] = g->col[f];
                g->col[f] = t;
            }
        }
        g->rowptr[L] = nnz;
        g->nnz = nnz;
        g->expected = 0.0;
    }
}

// One (sequence, head) in double: q, k, v, dout rows, exp(scores) and dropout factors of all
// pairs, and an L x L adjacency that the STE reference treats as continuous.
typedef struct {
    int L, dh;
    double *q, *k, *v, *dy;  // [L, dh]
    double *w, *f, *A;       // [L, L]
} unit_dense;

static void unit_load(unit_dense *u, const float *qkv, const float *dout, const sbm_graph *g,
                      const kbatch *bt, int b, int h, int H, int dh, float p, kdrop d) {
    const int L = bt->len[b], base = bt->off[b], HD = H * dh, ld = 3 * HD;
    u->L = L;
    u->dh = dh;
    u->q = dzeros((size_t)L * dh);
    u->k = dzeros((size_t)L * dh);
    u->v = dzeros((size_t)L * dh);
    u->dy = dzeros((size_t)L * dh);
    u->w = dzeros((size_t)L * L);
    u->f = dzeros((size_t)L * L);
    u->A = dzeros((size_t)L * L);
    for (int i = 0; i < L; i++)
        for (int c = 0; c < dh; c++) {
            const float *row = qkv + (size_t)(base + i) * ld + h * dh + c;
            u->q[i * dh + c] = row[0];
            u->k[i * dh + c] = row[HD];
            u->v[i * dh + c] = row[2 * HD];
            u->dy[i * dh + c] = dout ? dout[(size_t)(base + i) * HD + h * dh + c] : 0.0;
        }
    for (int i = 0; i < L; i++)
        for (int j = 0; j < L; j++) {
            double s = 0.0;
            for (int c = 0; c < dh; c++) s += u->q[i * dh + c] * u->k[j * dh + c];
            u->w[i * L + j] = exp(s / sqrt((double)dh));
            u->f[i * L + j] = drop_factor(d, h, bt->sample[b], bt->n, i, j, p);
        }
    if (g) graph_dense(g, u->A);
}

static void unit_free(unit_dense *u) {
    free(u->q), free(u->k), free(u->v), free(u->dy), free(u->w), free(u->f), free(u->A);
}

// y_i = sum_j f_ij v_j w_ij A_ij / sum_l w_il A_il (0 where the row of A is 0); mag_i: the
// sum of the absolute terms. Returns sum_i dy_i . y_i. y, mag may be NULL.
static double unit_out(const unit_dense *u, double *y, double *mag) {
    const int L = u->L, dh = u->dh;
    double loss = 0.0;
    for (int i = 0; i < L; i++) {
        double Z = 0.0;
        for (int j = 0; j < L; j++) Z += u->w[i * L + j] * u->A[i * L + j];
        for (int c = 0; c < dh; c++) {
            double acc = 0.0, m = 0.0;
            if (Z != 0.0)
                for (int j = 0; j < L; j++) {
                    double t = u->f[i * L + j] * u->w[i * L + j] * u->A[i * L + j] / Z *
                               u->v[j * dh + c];
                    acc += t;
                    m += fabs(t);
                }
            if (y) y[i * dh + c] = acc;
            if (mag) mag[i * dh + c] = m;
            loss += u->dy[i * dh + c] * acc;
        }
    }
    return loss;
}

// Dense double reference of k_sbm_attn_fwd: out [T, H*dh], mag (error scale), and the
// per-edge softmax probabilities and keep flags in CSR order (aref [units][nnz], kref).
static void sparse_attn_ref(double *out, double *mag, double **aref, uint8_t **kref,
                            const float *qkv, const sbm_graphs *gs, const kbatch *bt, int H,
                            int dh, float p, kdrop d) {
    const int HD = H * dh;
    for (int u = 0; u < gs->units; u++) {
        const int b = u / H, h = u % H, base = bt->off[b];
        const sbm_graph *g = &gs->g[u];
        unit_dense ud;
        unit_load(&ud, qkv, NULL, g, bt, b, h, H, dh, p, d);
        const int L = ud.L;
        double *y = dzeros((size_t)L * dh), *m = dzeros((size_t)L * dh);
        unit_out(&ud, y, m);
        for (int i = 0; i < L; i++)
            for (int c = 0; c < dh; c++) {
                out[(size_t)(base + i) * HD + h * dh + c] = y[i * dh + c];
                mag[(size_t)(base + i) * HD + h * dh + c] = m[i * dh + c];
            }
        aref[u] = dzeros((size_t)g->nnz);
        kref[u] = xcalloc((size_t)g->nnz + 1, 1);
        for (int i = 0; i < L; i++) {
            double Z = 0.0;
            for (int j = 0; j < L; j++) Z += ud.w[i * L + j] * ud.A[i * L + j];
            for (int e = g->rowptr[i]; e < g->rowptr[i + 1]; e++) {
                int j = g->col[e];
                aref[u][e] = ud.w[i * L + j] / Z;
                kref[u][e] = ud.f[i * L + j] != 0.0;
            }
        }
        free(y), free(m);
        unit_free(&ud);
    }
}

// ---------------------------------------------------------------- the attention batch

enum { AH = 2, ADH = 8, AKC = 3 };  // heads, head dim (vectorised kernels), clusters

// Short: three sequences of lengths 9, 14, 6 (n = 16) with interior padding. Long: lengths 70
// (more than 64 query rows, the row-block size of blocked code paths) and 9 (n = 72).
static void make_sbm_batch(tbatch *tb, int lng) {
    if (lng) {
        int lens[2] = {70, 9};
        uint32_t samples[2] = {12, 13};
        tb_make(tb, 2, 72, lens, samples, 20);
        tb_pad(tb, 0, 0);
        tb_pad(tb, 0, 33);
        tb_pad(tb, 0, 34);
        tb_pad(tb, 0, 64);
        tb_pad(tb, 1, 2);
        return;
    }
    int lens[3] = {9, 14, 6};
    uint32_t samples[3] = {7, 3, 1000};
    tb_make(tb, 3, 16, lens, samples, 20);
    tb_pad(tb, 0, 1);
    tb_pad(tb, 0, 5);
    tb_pad(tb, 1, 0);
    tb_pad(tb, 1, 7);
    tb_pad(tb, 1, 8);
    tb_pad(tb, 2, 2);
}

// Memberships and blocks as the model computes them: random phi and C through the kernels.
static void model_members(kctx *k, float **Y, float **S, const kbatch *bt, int H, int kc, int dh,
                          float cscale) {
    const int T = bt->T;
    float *phi = randn_buf((size_t)2 * T * H * dh, 1.0f), *C = randn_buf((size_t)H * kc * dh, cscale);
    *Y = fill_buf((size_t)2 * T * H * kc, NAN);
    *S = fill_buf((size_t)H * kc * kc, NAN);
    k_sbm_blocks_fwd(k, *S, C, H, kc, dh);
    k_sbm_members_fwd(k, *Y, phi, C, bt, 2 * T, H, kc, dh);
    free(phi), free(C);
}

// Hand-built graphs are run with the dense flag off and on: the kernels may take another code
// path for units the dense sampler drew (GEMM blocks); both must compute the same thing.
typedef enum { G_FASTRG, G_DENSE, G_HAND, G_HAND_DENSE, G_COMPLETE } graph_kind;
static const char *kind_name[] = {"fastRG", "dense sampler", "hand-built", "hand, dense=1",
                                  "complete"};

// Graphs of the given kind for the batch (fresh gs).
static void make_graphs(kctx *k, sbm_graphs *gs, graph_kind kind, const float *Y, const float *S,
                        const kbatch *bt, int H, int kc) {
    memset(gs, 0, sizeof(*gs));
    int64_t edges[8];
    if (kind == G_HAND || kind == G_HAND_DENSE) {
        graphs_handmade(gs, bt, H, 0.5);
        for (int u = 0; u < gs->units; u++) {
            gs->g[u].dense = kind == G_HAND_DENSE;
            gs->g[u].path = kind == G_HAND_DENSE ? SBM_PATH_BLOCKS : SBM_PATH_EDGES;
        }
        return;
    }
    sbm_sampler smp = kind == G_FASTRG ? SBM_SAMPLER_FASTRG : SBM_SAMPLER_DENSE;
    float eps = kind == G_COMPLETE ? 1.0f : 0.1f;  // eps = 1: every valid pair (u < 1 <= P + 1)
    k_sbm_sample(k, gs, Y, S, bt, H, kc, eps, smp, 0xABCDEF01ULL, 5, 1, 0, edges);
    for (int u = 0; u < gs->units; u++) {
        int b = u / H;
        assert_true(graph_ok(&gs->g[u], bt->len[b], bt->mask + bt->off[b]));
    }
}

// The samplers in the order the loops below take them (fastRG, dense, auto).
static const char *sampler_label(int s) { return s == 0 ? "fastRG" : (s == 1 ? "dense" : "auto"); }

// ---------------------------------------------------------------- 1. forward

static void run_fwd_case(graph_kind kind, float p, int lng) {
    seed_rng(1001 + 17 * (uint64_t)kind + (uint64_t)(p * 1000) + 7 * (uint64_t)lng);
    kctx k;
    kctx_init(&k, KB_CPU, 1);
    tbatch tb;
    make_sbm_batch(&tb, lng);
    const kbatch *bt = &tb.bt;
    const int H = AH, dh = ADH, kc = AKC, HD = H * dh, ld = 3 * HD, T = bt->T;
    const kdrop d = {0x5EED5EED1234ULL, 11, 2, 3};  // slot 3: heads use streams 3 and 4
    float *Y, *S;
    model_members(&k, &Y, &S, bt, H, kc, dh, 0.7f);
    sbm_graphs gs;
    make_graphs(&k, &gs, kind, Y, S, bt, H, kc);
    float *qkv = randn_buf((size_t)T * ld, 1.0f), *out = fill_buf((size_t)T * HD, NAN);
    k_sbm_attn_fwd(&k, out, &gs, qkv, bt, H, dh, p, d);

    double *ro = dzeros((size_t)T * HD), *mg = dzeros((size_t)T * HD);
    double **aref = xcalloc((size_t)gs.units, sizeof(double *));
    uint8_t **kref = xcalloc((size_t)gs.units, sizeof(uint8_t *));
    sparse_attn_ref(ro, mg, aref, kref, qkv, &gs, bt, H, dh, p, d);
    double worst = compare_ref("sbm attn fwd", out, ro, mg, (size_t)T * HD, 1e-5, 1e-12);
    assert_true(worst <= 1.0);
    // Probabilities stored on the edges (before dropout) and the keep flags.
    int empty_rows = 0, dropped = 0, edges = 0;
    double worst_a = 0.0;
    for (int u = 0; u < gs.units; u++) {
        const sbm_graph *g = &gs.g[u];
        const int b = u / H, h = u % H, base = bt->off[b];
        for (int e = 0; e < g->nnz; e++) {
            double r = fabs(g->a[e] - aref[u][e]) / (1e-5 * aref[u][e] + 1e-9);
            if (!(r <= worst_a)) worst_a = r;
            assert_true(g->keep[e] == kref[u][e]);
            dropped += !kref[u][e];
            edges++;
        }
        for (int i = 0; i < g->rows; i++)
            if (g->rowptr[i + 1] == g->rowptr[i]) {
                empty_rows++;
                for (int c = 0; c < dh; c++)
                    assert_true(out[(size_t)(base + i) * HD + h * dh + c] == 0.0f);
            }
    }
    printf("    fwd %-13s %s p=%.1f: %4d edges, %2d dropped, %2d empty rows; max err/bound out %.3f, "
           "a %.3f\n",
           kind_name[kind], lng ? "long " : "short", p, edges, dropped, empty_rows, worst, worst_a);
    assert_true(worst_a <= 1.0);
    assert_true(edges > 0);
    if (p > 0.0f) assert_true(dropped > 0);
    if (kind == G_HAND || kind == G_HAND_DENSE) assert_true(empty_rows >= gs.units);  // first valid row of every unit

    for (int u = 0; u < gs.units; u++) free(aref[u]), free(kref[u]);
    free(aref), free(kref), free(ro), free(mg), free(qkv), free(out), free(Y), free(S);
    sbm_graphs_free(&gs);
    tb_free(&tb);
}

static void test_sparse_attn_fwd(void **state) {
    (void)state;
    const graph_kind kinds[4] = {G_FASTRG, G_DENSE, G_HAND, G_HAND_DENSE};
    for (int lng = 0; lng < 2; lng++)
        for (int i = 0; i < 4; i++) {
            run_fwd_case(kinds[i], 0.0f, lng);
            run_fwd_case(kinds[i], 0.2f, lng);
        }
}

// With every valid pair an edge (dense sampler, eps = 1) sparse attention is softmax attention
// with a key padding mask, on valid query rows (padded queries have no edges in SBM attention;
// with zero dout on them the backward passes agree everywhere).
static void test_sparse_attn_complete_graph(void **state) {
    (void)state;
    seed_rng(1100);
    kctx k;
    kctx_init(&k, KB_CPU, 1);
    tbatch tb;
    make_sbm_batch(&tb, 0);
    const kbatch *bt = &tb.bt;
    const int H = AH, dh = ADH, kc = AKC, HD = H * dh, ld = 3 * HD, T = bt->T;
    float *Y, *S;
    model_members(&k, &Y, &S, bt, H, kc, dh, 0.7f);
    sbm_graphs gs;
    make_graphs(&k, &gs, G_COMPLETE, Y, S, bt, H, kc);
    for (int u = 0; u < gs.units; u++) {
        int b = u / H, valid = 0;
        for (int i = 0; i < bt->len[b]; i++) valid += bt->mask[bt->off[b] + i] != 0.0f;
        assert_int_equal(gs.g[u].nnz, valid * valid);
    }
    float *qkv = randn_buf((size_t)T * ld, 1.0f), *R = randn_buf((size_t)T * HD, 1.0f);
    for (int r = 0; r < T; r++)
        if (bt->mask[r] == 0.0f)
            for (int c = 0; c < HD; c++) R[(size_t)r * HD + c] = 0.0f;
    for (int pi = 0; pi < 2; pi++) {
        float p = pi ? 0.2f : 0.0f;
        const kdrop d = {0x77ULL, 4, 1, 0};  // slot 0: the streams of softmax attention
        float *o1 = fill_buf((size_t)T * HD, NAN), *o2 = fill_buf((size_t)T * HD, NAN);
        float *lse = fill_buf((size_t)T * H, NAN);
        float *g1 = fill_buf((size_t)T * ld, NAN), *g2 = fill_buf((size_t)T * ld, NAN);
        float *dY = fill_buf((size_t)2 * T * H * kc, NAN), *dS = fill_buf((size_t)H * kc * kc, NAN);
        k_sbm_attn_fwd(&k, o1, &gs, qkv, bt, H, dh, p, d);
        k_attn_softmax_fwd(&k, o2, lse, qkv, bt, H, dh, p, d);
        for (int r = 0; r < T; r++)
            if (bt->mask[r] == 0.0f)
                for (int c = 0; c < HD; c++) {
                    assert_true(o1[(size_t)r * HD + c] == 0.0f);
                    o2[(size_t)r * HD + c] = 0.0f;
                }
        assert_close("complete graph fwd vs softmax attention", o1, o2, (size_t)T * HD, 2e-6);
        k_attn_softmax_fwd(&k, o2, lse, qkv, bt, H, dh, p, d);
        k_sbm_attn_bwd(&k, g1, dY, dS, R, qkv, o1, &gs, Y, S, bt, H, dh, kc, p, d, 0.0f);
        k_attn_softmax_bwd(&k, g2, R, qkv, o2, lse, bt, H, dh, p, d);
        assert_close("complete graph bwd vs softmax attention", g1, g2, (size_t)T * ld, 1e-5);
        printf("    complete graph p=%.1f: fwd and bwd equal softmax attention\n", p);
        free(o1), free(o2), free(lse), free(g1), free(g2), free(dY), free(dS);
    }
    free(qkv), free(R), free(Y), free(S);
    sbm_graphs_free(&gs);
    tb_free(&tb);
}

// ---------------------------------------------------------------- 2. attention backward (FD)

typedef struct {
    kctx *k;
    float *out, *qkv, *R;
    sbm_graphs *gs;
    const kbatch *bt;
    int H, dh;
    float p;
    kdrop d;
} sattn_ctx;

static double sattn_loss(void *pp) {
    sattn_ctx *c = pp;
    k_sbm_attn_fwd(c->k, c->out, c->gs, c->qkv, c->bt, c->H, c->dh, c->p, c->d);
    return dot_rd(c->R, c->out, (size_t)c->bt->T * c->H * c->dh);
}

static void run_bwd_fd_case(graph_kind kind, float p, int lng) {
    seed_rng(2001 + 31 * (uint64_t)kind + (uint64_t)(p * 1000) + 7 * (uint64_t)lng);
    kctx k;
    kctx_init(&k, KB_CPU, 1);
    tbatch tb;
    make_sbm_batch(&tb, lng);
    const kbatch *bt = &tb.bt;
    const int H = AH, dh = ADH, kc = AKC, HD = H * dh, ld = 3 * HD, T = bt->T;
    const size_t nq = (size_t)T * ld, no = (size_t)T * HD;
    const kdrop d = {0x1234ULL, 6, 0, 9};
    float *Y, *S;
    model_members(&k, &Y, &S, bt, H, kc, dh, 0.7f);
    sbm_graphs gs;
    make_graphs(&k, &gs, kind, Y, S, bt, H, kc);
    float *qkv = randn_buf(nq, 1.0f), *R = randn_buf(no, 1.0f), *out = fill_buf(no, NAN);
    float *dqkv = fill_buf(nq, NAN), *dY = fill_buf((size_t)2 * T * H * kc, NAN);
    float *dS = fill_buf((size_t)H * kc * kc, NAN);
    k_sbm_attn_fwd(&k, out, &gs, qkv, bt, H, dh, p, d);
    k_sbm_attn_bwd(&k, dqkv, dY, dS, R, qkv, out, &gs, Y, S, bt, H, dh, kc, p, d, 0.01f);
    assert_true(all_finite(dqkv, nq));

    // Two threads: same forward and backward.
    kctx k2;
    kctx_init(&k2, KB_CPU, 2);
    float *out2 = fill_buf(no, NAN), *dqkv2 = fill_buf(nq, NAN);
    float *dY2 = fill_buf((size_t)2 * T * H * kc, NAN), *dS2 = fill_buf((size_t)H * kc * kc, NAN);
    k_sbm_attn_fwd(&k2, out2, &gs, qkv, bt, H, dh, p, d);
    k_sbm_attn_bwd(&k2, dqkv2, dY2, dS2, R, qkv, out2, &gs, Y, S, bt, H, dh, kc, p, d, 0.01f);
    assert_close("sbm attn out 2 threads", out2, out, no, 1e-6);
    assert_close("sbm attn dqkv 2 threads", dqkv2, dqkv, nq, 1e-6);
    assert_close("sbm attn dY 2 threads", dY2, dY, (size_t)2 * T * H * kc, 1e-6);
    assert_close("sbm attn dS 2 threads", dS2, dS, (size_t)H * kc * kc, 1e-6);

    char what[64];
    snprintf(what, sizeof(what), "sbm attn d/dqkv (%s,%s p=%.1f)", kind_name[kind],
             lng ? " long," : "", p);
    sattn_ctx c = {&k, out, qkv, R, &gs, bt, H, dh, p, d};
    check_grad(what, sattn_loss, &c, qkv, nq, dqkv, nq, TOL_ATTN);

    free(qkv), free(R), free(out), free(dqkv), free(dY), free(dS), free(out2), free(dqkv2);
    free(dY2), free(dS2), free(Y), free(S);
    sbm_graphs_free(&gs);
    tb_free(&tb);
}

static void test_sparse_attn_bwd(void **state) {
    (void)state;
    run_bwd_fd_case(G_FASTRG, 0.0f, 0);
    run_bwd_fd_case(G_FASTRG, 0.2f, 0);
    run_bwd_fd_case(G_DENSE, 0.2f, 0);
    run_bwd_fd_case(G_HAND, 0.0f, 0);
    run_bwd_fd_case(G_HAND, 0.2f, 0);
    run_bwd_fd_case(G_HAND_DENSE, 0.0f, 0);
    run_bwd_fd_case(G_HAND_DENSE, 0.2f, 0);
    run_bwd_fd_case(G_FASTRG, 0.2f, 1);
    run_bwd_fd_case(G_DENSE, 0.2f, 1);
    run_bwd_fd_case(G_HAND_DENSE, 0.2f, 1);
}

// ---------------------------------------------------------------- 3. straight-through gradient

typedef struct {
    double *dY, *mY;  // [2T, H*kc] reference and error scale
    double *dS, *mS;  // [H, kc, kc]
    int edges, clipped;
    double fd_worst;  // dL/dA formula vs finite differences on A: worst err / bound
} ste_ref;

// Dense reference of k_sbm_attn_bwd's dY and dS (see the file header).
static void ste_reference(ste_ref *o, const float *qkv, const float *dout, const sbm_graphs *gs,
                          const float *Y, const float *S, const kbatch *bt, int H, int dh, int kc,
                          float p, kdrop d, float reg) {
    const int T = bt->T, Hk = H * kc;
    o->dY = dzeros((size_t)2 * T * Hk);
    o->mY = dzeros((size_t)2 * T * Hk);
    o->dS = dzeros((size_t)H * kc * kc);
    o->mS = dzeros((size_t)H * kc * kc);
    o->edges = o->clipped = 0;
    o->fd_worst = 0.0;
    for (int u = 0; u < gs->units; u++) {
        const int b = u / H, h = u % H, base = bt->off[b];
        unit_dense ud;
        unit_load(&ud, qkv, dout, &gs->g[u], bt, b, h, H, dh, p, d);
        const int L = ud.L;
        double *dLdA = dzeros((size_t)L * L), *G = dzeros((size_t)L * L), *Gm = dzeros((size_t)L * L);
        double *DA = dzeros((size_t)L * L);
        for (int i = 0; i < L; i++) {
            double Z = 0.0, Di = 0.0, Dm = 0.0;
            for (int j = 0; j < L; j++) {
                double dad = 0.0;
                for (int c = 0; c < dh; c++) dad += ud.dy[i * dh + c] * ud.v[j * dh + c];
                DA[i * L + j] = ud.f[i * L + j] * dad;  // da_ij, after dropout scaling
                Z += ud.w[i * L + j] * ud.A[i * L + j];
            }
            if (Z == 0.0) continue;  // no edge: A row is 0, so is G
            for (int j = 0; j < L; j++) {
                double a = ud.w[i * L + j] * ud.A[i * L + j] / Z;
                Di += a * DA[i * L + j];
                Dm += a * fabs(DA[i * L + j]);
            }
            for (int j = 0; j < L; j++) {
                double wz = ud.w[i * L + j] / Z;
                dLdA[i * L + j] = wz * (DA[i * L + j] - Di);
                if (ud.A[i * L + j] == 0.0) continue;
                double gr = ud.A[i * L + j] * (dLdA[i * L + j] + (double)reg);
                G[i * L + j] = gr > 1.0 ? 1.0 : (gr < -1.0 ? -1.0 : gr);
                // Error scale: float32 sums of |G| terms, plus the rounding of g itself
                // (~1e-7 of a_ij (|da_ij| + sum_l a_il |da_il|)) unless g is clipped whatever
                // that rounding (both sides then hold exactly +-1).
                double gm = wz * (fabs(DA[i * L + j]) + Dm) + fabs((double)reg);
                Gm[i * L + j] = fabs(G[i * L + j]) + (fabs(gr) - 1.0 > 1e-4 * gm ? 0.0 : gm);
                o->edges++;
                o->clipped += fabs(gr) > 1.0;
            }
        }
        // The formula for dL/dA against central differences of the L1-renormalised attention
        // with continuous A (every pair of rows that have an edge; off-edge A_ij = +-h too).
        // The step is 1e-5 of the scale on which a_i. changes (Z_i / w_ij), so the O(h^2)
        // truncation stays ~1e-10 relative even where w_ij >> Z_i.
        for (int i = 0; i < (L <= 20 ? L : 0); i++) {
            double Z = 0.0;
            for (int j = 0; j < L; j++) Z += ud.w[i * L + j] * ud.A[i * L + j];
            if (Z == 0.0) continue;
            for (int j = 0; j < L; j++) {
                const double hA = 1e-5 * fmin(1.0, Z / ud.w[i * L + j]);
                double a0 = ud.A[i * L + j];
                ud.A[i * L + j] = a0 + hA;
                double lp = unit_out(&ud, NULL, NULL);
                ud.A[i * L + j] = a0 - hA;
                double lm = unit_out(&ud, NULL, NULL);
                ud.A[i * L + j] = a0;
                double num = (lp - lm) / (2.0 * hA), an = dLdA[i * L + j];
                double r = fabs(num - an) / (1e-8 + 1e-6 * (fabs(an) + fabs(num)));
                if (!(r <= o->fd_worst)) o->fd_worst = r;
            }
        }
        // dYq = (G Yk) S^T, dYk = (G^T Yq) S, dS += Yq^T (G Yk), with error scales from |G|.
        const float *Sh = S + (size_t)h * kc * kc;
        double *GYk = dzeros((size_t)L * kc), *mGYk = dzeros((size_t)L * kc);
        double *GTYq = dzeros((size_t)L * kc), *mGTYq = dzeros((size_t)L * kc);
        for (int i = 0; i < L; i++)
            for (int j = 0; j < L; j++) {
                if (G[i * L + j] == 0.0 && Gm[i * L + j] == 0.0) continue;
                const float *yq = Y + (size_t)(base + i) * Hk + h * kc;
                const float *yk = Y + (size_t)(T + base + j) * Hk + h * kc;
                for (int c = 0; c < kc; c++) {
                    GYk[i * kc + c] += G[i * L + j] * yk[c];
                    mGYk[i * kc + c] += Gm[i * L + j] * yk[c];
                    GTYq[j * kc + c] += G[i * L + j] * yq[c];
                    mGTYq[j * kc + c] += Gm[i * L + j] * yq[c];
                }
            }
        for (int i = 0; i < L; i++)
            for (int x = 0; x < kc; x++)
                for (int z = 0; z < kc; z++) {
                    size_t rq = (size_t)(base + i) * Hk + h * kc + x;
                    size_t rk = (size_t)(T + base + i) * Hk + h * kc + z;
                    o->dY[rq] += GYk[i * kc + z] * Sh[x * kc + z];
                    o->mY[rq] += mGYk[i * kc + z] * Sh[x * kc + z];
                    o->dY[rk] += GTYq[i * kc + x] * Sh[x * kc + z];
                    o->mY[rk] += mGTYq[i * kc + x] * Sh[x * kc + z];
                    double yq = Y[(size_t)(base + i) * Hk + h * kc + x];
                    o->dS[(size_t)h * kc * kc + x * kc + z] += yq * GYk[i * kc + z];
                    o->mS[(size_t)h * kc * kc + x * kc + z] += yq * mGYk[i * kc + z];
                }
        free(GYk), free(mGYk), free(GTYq), free(mGTYq);
        free(dLdA), free(G), free(Gm), free(DA);
        unit_free(&ud);
    }
}

static void ste_free(ste_ref *o) { free(o->dY), free(o->mY), free(o->dS), free(o->mS); }

// Runs fwd + bwd on the batch and compares dY and dS with the dense reference; returns the
// number of clipped edges (and of edges in *edges).
static int check_ste(kctx *k, const char *what, const float *qkv, const float *dout,
                     sbm_graphs *gs, const float *Y, const float *S, const kbatch *bt, int H,
                     int dh, int kc, float p, kdrop d, float reg, int *edges) {
    const int T = bt->T, HD = H * dh, Hk = H * kc;
    float *out = fill_buf((size_t)T * HD, NAN), *dqkv = fill_buf((size_t)T * 3 * HD, NAN);
    float *dY = fill_buf((size_t)2 * T * Hk, NAN), *dS = fill_buf((size_t)H * kc * kc, NAN);
    k_sbm_attn_fwd(k, out, gs, qkv, bt, H, dh, p, d);
    k_sbm_attn_bwd(k, dqkv, dY, dS, dout, qkv, out, gs, Y, S, bt, H, dh, kc, p, d, reg);
    ste_ref r;
    ste_reference(&r, qkv, dout, gs, Y, S, bt, H, dh, kc, p, d, reg);
    // Float32 budget: g_ij carries ~1e-6 of a_ij (|da_ij| + sum a |da|) (softmax, fast_expf,
    // dot products); the products with Y and S add a few ulps: 1e-5 of the scale leaves >= 10x.
    double wy = compare_ref("STE dY", dY, r.dY, r.mY, (size_t)2 * T * Hk, 1e-5, 1e-9);
    double ws = compare_ref("STE dS", dS, r.dS, r.mS, (size_t)H * kc * kc, 1e-5, 1e-9);
    double maxy = 0.0;
    for (size_t i = 0; i < (size_t)2 * T * Hk; i++) maxy = fmax(maxy, fabs(r.dY[i]));
    printf("    %-44s edges %4d clipped %4d | max|dY| %.3g err/bound dY %.3f dS %.3f | "
           "dL/dA vs FD on A %.3f\n",
           what, r.edges, r.clipped, maxy, wy, ws, r.fd_worst);
    assert_true(r.fd_worst <= 1.0);
    assert_true(wy <= 1.0);
    assert_true(ws <= 1.0);
    assert_true(maxy > 1e-3);  // not vacuous
    // Padded rows get no gradient.
    for (int r2 = 0; r2 < 2 * T; r2++)
        if (bt->mask[r2 % T] == 0.0f)
            for (int c = 0; c < Hk; c++) assert_true(dY[(size_t)r2 * Hk + c] == 0.0f);
    int clipped = r.clipped;
    *edges = r.edges;
    ste_free(&r);
    free(out), free(dqkv), free(dY), free(dS);
    return clipped;
}

typedef struct {
    graph_kind kind;
    float p, reg, scale;
    int expect_clip;
} ste_case;

static void run_ste_batch(int lng) {
    seed_rng(3001 + (uint64_t)lng);
    kctx k;
    kctx_init(&k, KB_CPU, 1);
    tbatch tb;
    make_sbm_batch(&tb, lng);
    const kbatch *bt = &tb.bt;
    const int H = AH, dh = ADH, kc = AKC, HD = H * dh, T = bt->T;
    float *Y, *S;
    model_members(&k, &Y, &S, bt, H, kc, dh, 0.7f);
    float *qkv = randn_buf((size_t)T * 3 * HD, 1.0f), *R = randn_buf((size_t)T * HD, 1.0f);
    float *Rs = xmalloc(sizeof(float) * (size_t)T * HD);
    const kdrop d = {0xFEEDULL, 21, 1, 2};
    // scale multiplies dout: x40 drives most |g| past the clip, x8 some.
    const ste_case cases[] = {
        {G_FASTRG, 0.0f, 0.0f, 1.0f, 0},      {G_FASTRG, 0.2f, 0.05f, 1.0f, 0},
        {G_FASTRG, 0.2f, 0.05f, 40.0f, 1},    {G_DENSE, 0.1f, 0.05f, 8.0f, 1},
        {G_DENSE, 0.0f, 0.0f, 1.0f, 0},       {G_HAND, 0.2f, 0.05f, 40.0f, 1},
        {G_HAND_DENSE, 0.2f, 0.05f, 40.0f, 1}, {G_HAND_DENSE, 0.0f, 0.0f, 1.0f, 0},
    };
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        const ste_case *cs = &cases[ci];
        sbm_graphs gs;
        make_graphs(&k, &gs, cs->kind, Y, S, bt, H, kc);
        for (size_t i = 0; i < (size_t)T * HD; i++) Rs[i] = cs->scale * R[i];
        char what[96];
        snprintf(what, sizeof(what), "%s%-13s p=%.1f reg=%.2f dout=%gR", lng ? "long " : "",
                 kind_name[cs->kind], cs->p, cs->reg, cs->scale);
        int e, c = check_ste(&k, what, qkv, Rs, &gs, Y, S, bt, H, dh, kc, cs->p, d, cs->reg, &e);
        if (cs->expect_clip) assert_true(c > 0 && c < e);  // the clip acts on some edges, not all
        sbm_graphs_free(&gs);
    }
    free(qkv), free(R), free(Rs), free(Y), free(S);
    tb_free(&tb);
}

static void test_ste_gradient(void **state) {
    (void)state;
    run_ste_batch(0);
    run_ste_batch(1);
}

// ---------------------------------------------------------------- 4. memberships and blocks

typedef struct {
    kctx *k;
    float *Y, *phi, *C, *R;
    const kbatch *bt;
    int rows, H, kc, d;
} mem_ctx;

static double mem_loss(void *pp) {
    mem_ctx *c = pp;
    k_sbm_members_fwd(c->k, c->Y, c->phi, c->C, c->bt, c->rows, c->H, c->kc, c->d);
    return dot_rd(c->R, c->Y, (size_t)c->rows * c->H * c->kc);
}

typedef struct {
    kctx *k;
    float *S, *C, *R;
    int H, kc, d;
} blk_ctx;

static double blk_loss(void *pp) {
    blk_ctx *c = pp;
    k_sbm_blocks_fwd(c->k, c->S, c->C, c->H, c->kc, c->d);
    return dot_rd(c->R, c->S, (size_t)c->H * c->kc * c->kc);
}

static void test_members_blocks(void **state) {
    (void)state;
    seed_rng(4001);
    kctx k, k2;
    kctx_init(&k, KB_CPU, 1);
    kctx_init(&k2, KB_CPU, 2);
    tbatch tb;
    make_sbm_batch(&tb, 0);
    const kbatch *bt = &tb.bt;
    const int H = AH, dh = ADH, kc = AKC, T = bt->T, rows = 2 * T, Hk = H * kc, Hd = H * dh;
    const size_t ny = (size_t)rows * Hk, np = (size_t)rows * Hd, nc = (size_t)H * kc * dh;
    const size_t ns = (size_t)H * kc * kc;
    float *phi = randn_buf(np, 1.0f), *C = randn_buf(nc, 0.7f), *RY = randn_buf(ny, 1.0f);
    float *RS = randn_buf(ns, 1.0f);
    float *Y = fill_buf(ny, NAN), *S = fill_buf(ns, NAN);

    // Members forward vs double: mask(r % T) * sigmoid(phi . C).
    k_sbm_members_fwd(&k, Y, phi, C, bt, rows, H, kc, dh);
    float *Yr = xmalloc(ny * sizeof(float));
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < H; h++)
            for (int u = 0; u < kc; u++) {
                double z = 0.0;
                for (int c = 0; c < dh; c++)
                    z += (double)phi[(size_t)r * Hd + h * dh + c] * C[((size_t)h * kc + u) * dh + c];
                Yr[(size_t)r * Hk + h * kc + u] = bt->mask[r % T] != 0.0f ? (float)(1.0 / (1.0 + exp(-z))) : 0.0f;
            }
    assert_close("members fwd", Y, Yr, ny, 2e-6);
    for (int r = 0; r < rows; r++)
        if (bt->mask[r % T] == 0.0f)
            for (int c = 0; c < Hk; c++) assert_true(Y[(size_t)r * Hk + c] == 0.0f);
    float *Y2 = fill_buf(ny, NAN);
    k_sbm_members_fwd(&k2, Y2, phi, C, bt, rows, H, kc, dh);
    assert_close("members fwd 2 threads", Y2, Y, ny, 1e-7);

    // Members backward: dphi overwritten (NaN before), dC accumulated.
    float *dY = copy_buf(RY, ny), *dphi = fill_buf(np, NAN), *dC = fill_buf(nc, 0.0f);
    k_sbm_members_bwd(&k, dphi, dC, dY, Y, phi, C, rows, H, kc, dh);
    for (int r = 0; r < rows; r++)
        if (bt->mask[r % T] == 0.0f)
            for (int c = 0; c < Hd; c++) assert_true(dphi[(size_t)r * Hd + c] == 0.0f);
    mem_ctx mc = {&k, Y, phi, C, RY, bt, rows, H, kc, dh};
    check_grad("members d/dphi", mem_loss, &mc, phi, np, dphi, np, TOL_DENSE);
    check_grad("members d/dC", mem_loss, &mc, C, nc, dC, nc, TOL_DENSE);
    k_sbm_members_fwd(&k, Y, phi, C, bt, rows, H, kc, dh);
    float *dY2 = copy_buf(RY, ny), *dphi2 = fill_buf(np, 3.0f), *dC2 = fill_buf(nc, 1.0f);
    float *eC = xmalloc(nc * sizeof(float));
    for (size_t i = 0; i < nc; i++) eC[i] = 1.0f + dC[i];
    k_sbm_members_bwd(&k2, dphi2, dC2, dY2, Y, phi, C, rows, H, kc, dh);
    assert_close("members dphi (overwritten, 2 threads)", dphi2, dphi, np, 1e-6);
    assert_close("members dC accumulates", dC2, eC, nc, 1e-6);

    // Blocks forward vs double, sums to 1 per head; backward vs FD; dC accumulates.
    k_sbm_blocks_fwd(&k, S, C, H, kc, dh);
    float *Sr = xmalloc(ns * sizeof(float));
    for (int h = 0; h < H; h++) {
        double m[64], sum = 0.0, tot = 0.0;
        for (int a = 0; a < kc; a++)
            for (int b = 0; b < kc; b++) {
                double z = 0.0;
                for (int c = 0; c < dh; c++)
                    z += (double)C[((size_t)h * kc + a) * dh + c] * C[((size_t)h * kc + b) * dh + c];
                sum += (m[a * kc + b] = exp(z));
            }
        for (int i = 0; i < kc * kc; i++) {
            Sr[h * kc * kc + i] = (float)(m[i] / sum);
            tot += S[h * kc * kc + i];
        }
        assert_true(fabs(tot - 1.0) < 1e-6);
    }
    assert_close("blocks fwd", S, Sr, ns, 1e-6);
    float *dCb = fill_buf(nc, 0.0f);
    k_sbm_blocks_bwd(&k, dCb, RS, S, C, H, kc, dh);
    blk_ctx bc = {&k, S, C, RS, H, kc, dh};
    check_grad("blocks d/dC", blk_loss, &bc, C, nc, dCb, nc, TOL_DENSE);
    k_sbm_blocks_fwd(&k, S, C, H, kc, dh);
    float *dCb2 = fill_buf(nc, -2.0f);
    for (size_t i = 0; i < nc; i++) eC[i] = -2.0f + dCb[i];
    k_sbm_blocks_bwd(&k, dCb2, RS, S, C, H, kc, dh);
    assert_close("blocks dC accumulates", dCb2, eC, nc, 1e-6);

    free(phi), free(C), free(RY), free(RS), free(Y), free(S), free(Yr), free(Y2), free(dY);
    free(dphi), free(dC), free(dY2), free(dphi2), free(dC2), free(eC), free(Sr), free(dCb);
    free(dCb2);
    tb_free(&tb);
}

// End to end: f(phi, C) = sum_units sum_ij G_ij P_ij with P = Yq S Yk^T from the kernels and
// G fixed (random, sparse, in [-1, 1]); the gradient members_bwd + blocks_bwd computes from
// dY = [(G Yk) S^T ; (G^T Yq) S] and dS = Yq^T G Yk (formed here in double) must be its gradient.
typedef struct {
    kctx *k;
    float *Y, *S, *phi, *C;
    double **G;
    const kbatch *bt;
    int H, kc, d;
} sur_ctx;

static double sur_value(const float *Y, const float *S, double *const *G, const kbatch *bt, int H,
                        int kc) {
    double f = 0.0;
    for (int u = 0; u < bt->B * H; u++) {
        const int b = u / H, h = u % H, L = bt->len[b];
        for (int i = 0; i < L; i++)
            for (int j = 0; j < L; j++)
                if (G[u][i * L + j] != 0.0) f += G[u][i * L + j] * edge_prob(Y, S, bt, H, kc, b, h, i, j);
    }
    return f;
}

static double sur_loss(void *pp) {
    sur_ctx *c = pp;
    k_sbm_blocks_fwd(c->k, c->S, c->C, c->H, c->kc, c->d);
    k_sbm_members_fwd(c->k, c->Y, c->phi, c->C, c->bt, 2 * c->bt->T, c->H, c->kc, c->d);
    return sur_value(c->Y, c->S, c->G, c->bt, c->H, c->kc);
}

static void test_members_blocks_surrogate(void **state) {
    (void)state;
    seed_rng(4101);
    kctx k;
    kctx_init(&k, KB_CPU, 1);
    tbatch tb;
    make_sbm_batch(&tb, 0);
    const kbatch *bt = &tb.bt;
    const int H = AH, dh = ADH, kc = AKC, T = bt->T, Hk = H * kc, Hd = H * dh;
    const size_t ny = (size_t)2 * T * Hk, np = (size_t)2 * T * Hd, nc = (size_t)H * kc * dh;
    float *phi = randn_buf(np, 1.0f), *C = randn_buf(nc, 0.7f);
    float *Y = fill_buf(ny, NAN), *S = fill_buf((size_t)H * kc * kc, NAN);
    k_sbm_blocks_fwd(&k, S, C, H, kc, dh);
    k_sbm_members_fwd(&k, Y, phi, C, bt, 2 * T, H, kc, dh);
    double **G = xcalloc((size_t)bt->B * H, sizeof(double *));
    double *dYd = dzeros(ny), *dSd = dzeros((size_t)H * kc * kc);
    for (int u = 0; u < bt->B * H; u++) {
        const int b = u / H, h = u % H, L = bt->len[b], base = bt->off[b];
        G[u] = dzeros((size_t)L * L);
        for (int i = 0; i < L; i++)
            for (int j = 0; j < L; j++)
                if (urand() < 0.5) G[u][i * L + j] = 2.0 * urand() - 1.0;
        const float *Sh = S + (size_t)h * kc * kc;
        for (int i = 0; i < L; i++)
            for (int j = 0; j < L; j++) {
                double gij = G[u][i * L + j];
                if (gij == 0.0) continue;
                const float *yq = Y + (size_t)(base + i) * Hk + h * kc;
                const float *yk = Y + (size_t)(T + base + j) * Hk + h * kc;
                for (int x = 0; x < kc; x++)
                    for (int z = 0; z < kc; z++) {
                        dYd[(size_t)(base + i) * Hk + h * kc + x] += gij * yk[z] * Sh[x * kc + z];
                        dYd[(size_t)(T + base + j) * Hk + h * kc + z] += gij * yq[x] * Sh[x * kc + z];
                        dSd[(size_t)h * kc * kc + x * kc + z] += gij * yq[x] * yk[z];
                    }
            }
    }
    float *dY = xmalloc(ny * sizeof(float)), *dS = xmalloc(sizeof(float) * (size_t)H * kc * kc);
    for (size_t i = 0; i < ny; i++) dY[i] = (float)dYd[i];
    for (int i = 0; i < H * kc * kc; i++) dS[i] = (float)dSd[i];
    float *dphi = fill_buf(np, NAN), *dC = fill_buf(nc, 0.0f);
    k_sbm_blocks_bwd(&k, dC, dS, S, C, H, kc, dh);
    k_sbm_members_bwd(&k, dphi, dC, dY, Y, phi, C, 2 * T, H, kc, dh);
    sur_ctx sc = {&k, Y, S, phi, C, G, bt, H, kc, dh};
    check_grad("surrogate sum G.P d/dphi", sur_loss, &sc, phi, np, dphi, np, TOL_DENSE);
    check_grad("surrogate sum G.P d/dC", sur_loss, &sc, C, nc, dC, nc, TOL_DENSE);
    for (int u = 0; u < bt->B * H; u++) free(G[u]);
    free(G), free(dYd), free(dSd), free(dY), free(dS), free(dphi), free(dC), free(phi), free(C);
    free(Y), free(S);
    tb_free(&tb);
}

// ---------------------------------------------------------------- 5. sampler statistics

typedef struct {
    const char *name;
    int L, n, npad;
    int pads[4];
    double ylo, yhi;
    float eps;
    int draws;
    int pairs;   // per-pair tests (needs draws * p >= 50 for every pair)
    int power;   // also show that wrong distributions are rejected
    int blocky;  // each valid row: one membership in (0.8, 0.95), the others in (ylo, yhi)
} stat_cfg;

static double zscore(double count, double mean, double var) {
    if (var <= 0.0) return count == mean ? 0.0 : INFINITY;
    return (count - mean) / sqrt(var);
}

static void sampler_stats(sbm_sampler which, const stat_cfg *cfg, uint64_t rs) {
    seed_rng(rs);
    kctx k;
    kctx_init(&k, KB_CPU, 1);
    const int L = cfg->L, H = 1, kc = 3, N = cfg->draws;
    int lens[1] = {L};
    uint32_t samples[1] = {77};
    tbatch tb;
    tb_make(&tb, 1, cfg->n, lens, samples, 10);
    for (int t = 0; t < cfg->npad; t++) tb_pad(&tb, 0, cfg->pads[t]);
    const kbatch *bt = &tb.bt;
    const float *mask = bt->mask;
    float *Y = rand_members(bt, H, kc, cfg->ylo, cfg->yhi), *S = rand_blocks(H, kc, 1.0);
    if (cfg->blocky)  // P_ij near 0 for some pairs, large for others: eps shows directly
        for (int r = 0; r < 2 * bt->T; r++)
            if (mask[r % bt->T] != 0.0f) Y[(size_t)r * kc + randint(kc)] = (float)(0.8 + 0.15 * urand());
    const bool frg = which == SBM_SAMPLER_FASTRG;
    // Model: pm (the sampler's law), pw (eps forgotten), px (the other sampler's law).
    double *pm = dzeros((size_t)L * L), *pw = dzeros((size_t)L * L), *px = dzeros((size_t)L * L);
    double exp_ref = expected_ref(Y, S, bt, H, kc, 0, 0, cfg->eps), msum = 0.0, mvar = 0.0, mk4 = 0.0;
    double pmin = 1.0;
    for (int i = 0; i < L; i++)
        for (int j = 0; j < L; j++) {
            if (mask[i] == 0.0f || mask[j] == 0.0f) continue;
            double P = edge_prob(Y, S, bt, H, kc, 0, 0, i, j), x = P + cfg->eps;
            double pf = 1.0 - exp(-x), pd = fmin(1.0, x);
            pm[i * L + j] = frg ? pf : pd;
            px[i * L + j] = frg ? pd : pf;
            pw[i * L + j] = frg ? 1.0 - exp(-P) : fmin(1.0, P);
            double q = pm[i * L + j], v = q * (1.0 - q);
            msum += q;
            mvar += v;
            mk4 += v * (1.0 - 6.0 * v);  // 4th cumulant of a Bernoulli
            pmin = fmin(pmin, q);
        }
    int *cnt = xcalloc((size_t)L * L, sizeof(int));
    double s1 = 0.0, s2 = 0.0;
    sbm_graphs gs;
    memset(&gs, 0, sizeof(gs));
    int64_t edges[1];
    for (int t = 0; t < N; t++) {
        k_sbm_sample(&k, &gs, Y, S, bt, H, kc, cfg->eps, which, 0xC0FFEEULL, (uint32_t)t, 1, 0, edges);
        const sbm_graph *g = &gs.g[0];
        if (!graph_ok(g, L, mask)) fail_msg("draw %d: malformed graph", t);
        assert_int_equal(g->dense, !frg);
        assert_int_equal(edges[0], g->nnz);
        if (!(fabs(g->expected - exp_ref) <= 1e-5 * exp_ref))
            fail_msg("expected %.9g, reference %.9g", g->expected, exp_ref);
        for (int i = 0; i < L; i++)
            for (int e = g->rowptr[i]; e < g->rowptr[i + 1]; e++) cnt[i * L + g->col[e]]++;
        s1 += g->nnz;
        s2 += (double)g->nnz * g->nnz;
    }
    // Tests (all |z| < 5, see the file header).
    int ntests = 0;
    double zmax = 0.0, zw = 0.0, zx = 0.0, chi2 = 0.0;
    int npairs = 0;
    if (cfg->pairs) {
        assert_true(N * pmin >= 50.0);
        for (int i = 0; i < L; i++)
            for (int j = 0; j < L; j++) {
                if (mask[i] == 0.0f || mask[j] == 0.0f) continue;
                double q = pm[i * L + j];
                double z = zscore(cnt[i * L + j], N * q, N * q * (1.0 - q));
                zmax = fmax(zmax, fabs(z));
                chi2 += z * z;
                npairs++;
                // The same frequencies under the wrong laws (their own variance).
                double a = pw[i * L + j], c = px[i * L + j];
                zw = fmax(zw, fabs(zscore(cnt[i * L + j], N * a, N * a * (1.0 - a))));
                zx = fmax(zx, fabs(zscore(cnt[i * L + j], N * c, N * c * (1.0 - c))));
                ntests++;
            }
    }
    // Row and column degrees (pairs are independent within a draw, draws are independent).
    double zrow = 0.0;
    for (int i = 0; i < L; i++) {
        if (mask[i] == 0.0f) continue;
        double cr = 0.0, mr = 0.0, vr = 0.0, cc = 0.0, mc = 0.0, vc = 0.0;
        for (int j = 0; j < L; j++) {
            cr += cnt[i * L + j];
            mr += pm[i * L + j];
            vr += pm[i * L + j] * (1.0 - pm[i * L + j]);
            cc += cnt[j * L + i];
            mc += pm[j * L + i];
            vc += pm[j * L + i] * (1.0 - pm[j * L + i]);
        }
        zrow = fmax(zrow, fabs(zscore(cr, N * mr, N * vr)));
        zrow = fmax(zrow, fabs(zscore(cc, N * mc, N * vc)));
        ntests += 2;
    }
    // Edge count: mean sum q, variance sum q (1 - q) (the sample variance's own variance is
    // (kappa4 + 2 kappa2^2) / N for a sum of independent Bernoullis). A fixed instead of
    // Poisson fastRG edge count would shrink the variance far below this.
    double mean = s1 / N, var = (s2 - N * mean * mean) / (N - 1);
    double zmean = (mean - msum) / sqrt(mvar / N);
    double zvar = (var - mvar) / sqrt((mk4 + 2.0 * mvar * mvar) / N);
    ntests += 2;
    printf("    %-6s %-22s L=%d draws=%d: expected %.3f, edges mean %.3f (model %.3f, z %+.2f), "
           "var %.3f (model %.3f, z %+.2f)\n",
           frg ? "fastRG" : "dense", cfg->name, L, N, exp_ref, mean, msum, zmean, var, mvar, zvar);
    if (npairs > 0)
        printf("           %d tests: max|z| pairs %.2f (chi2 %.1f on %d), rows/cols %.2f", ntests,
               zmax, chi2, npairs, zrow);
    else
        printf("           %d tests: max|z| rows/cols %.2f", ntests, zrow);
    if (cfg->power) printf("; wrong laws: eps=0 max|z| %.1f, %s max|z| %.1f", zw, frg ? "min(1,P+eps)" : "1-exp(-(P+eps))", zx);
    printf("\n");
    assert_true(zmax < 5.0);
    assert_true(zrow < 5.0);
    assert_true(fabs(zmean) < 5.0);
    assert_true(fabs(zvar) < 5.0);
    if (npairs > 0) assert_true(chi2 < npairs + 5.0 * sqrt(2.0 * npairs));
    if (cfg->power) {
        // The same data rejects the wrong laws at the bound used above.
        assert_true(zw > 5.0);
        assert_true(zx > 5.0);
    }
    free(pm), free(pw), free(px), free(cnt), free(Y), free(S);
    sbm_graphs_free(&gs);
    tb_free(&tb);
}

static const stat_cfg STAT_MAIN = {"main (lam ~ 25, PTRS)", 10, 12, 2, {2, 6, 0, 0},
                                   0.3, 0.95, 0.05f, 4000, 1, 1, 0};
static const stat_cfg STAT_SPARSE = {"sparse (lam < 10)", 10, 12, 2, {0, 5, 0, 0},
                                     0.05, 0.4, 0.03f, 3000, 1, 0, 0};
static const stat_cfg STAT_BLOCKY = {"block-structured", 12, 14, 2, {3, 8, 0, 0},
                                     0.0, 0.05, 0.1f, 4000, 1, 1, 1};
static const stat_cfg STAT_LONG = {"long (L > 64 rows)", 70, 72, 4, {0, 33, 34, 64},
                                   0.05, 0.6, 0.02f, 300, 0, 0, 0};

static void test_sampler_fastrg_stats(void **state) {
    (void)state;
    sampler_stats(SBM_SAMPLER_FASTRG, &STAT_MAIN, 5001);
    sampler_stats(SBM_SAMPLER_FASTRG, &STAT_SPARSE, 5002);
    sampler_stats(SBM_SAMPLER_FASTRG, &STAT_BLOCKY, 5004);
    sampler_stats(SBM_SAMPLER_FASTRG, &STAT_LONG, 5003);
}

static void test_sampler_dense_stats(void **state) {
    (void)state;
    sampler_stats(SBM_SAMPLER_DENSE, &STAT_MAIN, 5001);
    sampler_stats(SBM_SAMPLER_DENSE, &STAT_SPARSE, 5002);
    sampler_stats(SBM_SAMPLER_DENSE, &STAT_BLOCKY, 5004);
    sampler_stats(SBM_SAMPLER_DENSE, &STAT_LONG, 5003);
}

// ---------------------------------------------------------------- 6. determinism, independence

static void test_sampler_determinism(void **state) {
    (void)state;
    seed_rng(6001);
    kctx k, k2;
    kctx_init(&k, KB_CPU, 1);
    kctx_init(&k2, KB_CPU, 2);
    const int H = 2, kc = 3, Hk = H * kc, n = 16, dh = 4, HD = H * dh, ld = 3 * HD;
    // A: the sequence alone (sample 5); B: the same sequence at position 1 of 3.
    int la[1] = {9}, lb[3] = {12, 9, 7};
    uint32_t sa[1] = {5}, sb[3] = {9, 5, 2};
    tbatch ta, tbb;
    tb_make(&ta, 1, n, la, sa, 20);
    tb_make(&tbb, 3, n, lb, sb, 20);
    tb_pad(&ta, 0, 3);
    tb_pad(&tbb, 1, 3);
    tb_pad(&tbb, 0, 4);
    tb_pad(&tbb, 2, 0);
    const kbatch *A = &ta.bt, *Bb = &tbb.bt;
    float *YA = rand_members(A, H, kc, 0.1, 0.9), *YB = rand_members(Bb, H, kc, 0.1, 0.9);
    for (int r = 0; r < 9; r++) {
        memcpy(YB + (size_t)(Bb->off[1] + r) * Hk, YA + (size_t)r * Hk, sizeof(float) * Hk);
        memcpy(YB + (size_t)(Bb->T + Bb->off[1] + r) * Hk, YA + (size_t)(A->T + r) * Hk,
               sizeof(float) * Hk);
    }
    float *S = rand_blocks(H, kc, 1.0);
    // Head 1 alone (a rank holding one head: head0 = 1).
    float *Y1 = xmalloc(sizeof(float) * (size_t)2 * A->T * kc);
    for (int r = 0; r < 2 * A->T; r++) memcpy(Y1 + (size_t)r * kc, YA + (size_t)r * Hk + kc, sizeof(float) * kc);
    const sbm_sampler smp[3] = {SBM_SAMPLER_FASTRG, SBM_SAMPLER_DENSE, SBM_SAMPLER_AUTO};
    const uint64_t seed = 0x0DDBA11ULL;
    const float eps = 0.05f;
    int64_t e1[2], e2[3 * 2];
    for (int s = 0; s < 3; s++) {
        sbm_graphs g1, g2, gb, gb2, gh, gx;
        memset(&g1, 0, sizeof(g1)), memset(&g2, 0, sizeof(g2)), memset(&gb, 0, sizeof(gb));
        memset(&gb2, 0, sizeof(gb2)), memset(&gh, 0, sizeof(gh)), memset(&gx, 0, sizeof(gx));
        k_sbm_sample(&k, &g1, YA, S, A, H, kc, eps, smp[s], seed, 12, 3, 0, e1);
        k_sbm_sample(&k, &gb, YB, S, Bb, H, kc, eps, smp[s], seed, 12, 3, 0, e2);
        assert_true(e2[1] == gb.g[1].nnz + gb.g[3].nnz + gb.g[5].nnz);
        assert_true(e2[0] == gb.g[0].nnz + gb.g[2].nnz + gb.g[4].nnz);
        // Same call again, into fresh graphs and into graphs that held a bigger batch.
        k_sbm_sample(&k, &g2, YA, S, A, H, kc, eps, smp[s], seed, 12, 3, 0, e1);
        k_sbm_sample(&k, &gx, YB, S, Bb, H, kc, eps, smp[s], seed, 99, 3, 0, e2);
        k_sbm_sample(&k, &gx, YA, S, A, H, kc, eps, smp[s], seed, 12, 3, 0, e1);
        for (int h = 0; h < H; h++) {
            assert_true(g1.g[h].nnz > 0);
            assert_true(graph_ok(&g1.g[h], 9, A->mask));
            assert_true(graph_equal(&g1.g[h], &g2.g[h]));
            assert_true(graph_equal(&g1.g[h], &gx.g[h]));
            assert_true(graph_equal(&g1.g[h], &gb.g[1 * H + h]));  // batch independence
        }
        k_sbm_sample(&k, &g2, YA, S, A, H, kc, eps, smp[s], seed, 12, 3, 0, e1);
        assert_true(e1[0] == g1.g[0].nnz && e1[1] == g1.g[1].nnz);
        // Two threads.
        k_sbm_sample(&k2, &gb2, YB, S, Bb, H, kc, eps, smp[s], seed, 12, 3, 0, e2);
        for (int u = 0; u < 3 * H; u++) assert_true(graph_equal(&gb.g[u], &gb2.g[u]));
        // Head split: head 1 sampled alone by a rank whose first head is 1.
        k_sbm_sample(&k, &gh, Y1, S + kc * kc, A, 1, kc, eps, smp[s], seed, 12, 3, 1, e1);
        assert_true(graph_equal(&g1.g[1], &gh.g[0]));
        // Any change of sample index, step, layer, seed or global head changes the graph.
        uint32_t s6 = 6;
        uint32_t *keep_sample = ta.bt.sample;
        ta.bt.sample = &s6;
        k_sbm_sample(&k, &gx, YA, S, A, H, kc, eps, smp[s], seed, 12, 3, 0, e1);
        ta.bt.sample = keep_sample;
        assert_false(graph_equal(&g1.g[0], &gx.g[0]));
        k_sbm_sample(&k, &gx, YA, S, A, H, kc, eps, smp[s], seed, 13, 3, 0, e1);
        assert_false(graph_equal(&g1.g[0], &gx.g[0]));
        k_sbm_sample(&k, &gx, YA, S, A, H, kc, eps, smp[s], seed, 12, 4, 0, e1);
        assert_false(graph_equal(&g1.g[0], &gx.g[0]));
        k_sbm_sample(&k, &gx, YA, S, A, H, kc, eps, smp[s], seed + 1, 12, 3, 0, e1);
        assert_false(graph_equal(&g1.g[0], &gx.g[0]));
        k_sbm_sample(&k, &gx, YA, S, A, H, kc, eps, smp[s], seed, 12, 3, 2, e1);
        assert_false(graph_equal(&g1.g[0], &gx.g[0]));

        // Attention on it: probabilities, dropout flags and outputs of the sequence do not
        // depend on the batch either.
        float *qa = randn_buf((size_t)A->T * ld, 1.0f), *qb = randn_buf((size_t)Bb->T * ld, 1.0f);
        memcpy(qb + (size_t)Bb->off[1] * ld, qa, sizeof(float) * (size_t)9 * ld);
        float *oa = fill_buf((size_t)A->T * HD, NAN), *ob = fill_buf((size_t)Bb->T * HD, NAN);
        const kdrop d = {0xD0D0ULL, 12, 3, 0};
        k_sbm_attn_fwd(&k, oa, &g1, qa, A, H, dh, 0.3f, d);
        k_sbm_attn_fwd(&k, ob, &gb, qb, Bb, H, dh, 0.3f, d);
        assert_true(memcmp(oa, ob + (size_t)Bb->off[1] * HD, sizeof(float) * (size_t)9 * HD) == 0);
        for (int h = 0; h < H; h++) {
            const sbm_graph *x = &g1.g[h], *y = &gb.g[H + h];
            assert_true(memcmp(x->a, y->a, sizeof(float) * (size_t)x->nnz) == 0);
            assert_true(memcmp(x->keep, y->keep, (size_t)x->nnz) == 0);
        }
        printf("    %-6s: nnz %d/%d, identical across repeats, batch position, threads, head split;"
               " changes with sample/step/layer/seed/head\n",
               sampler_label(s), g1.g[0].nnz, g1.g[1].nnz);
        free(qa), free(qb), free(oa), free(ob);
        sbm_graphs_free(&g1), sbm_graphs_free(&g2), sbm_graphs_free(&gb);
        sbm_graphs_free(&gb2), sbm_graphs_free(&gh), sbm_graphs_free(&gx);
    }
    free(YA), free(YB), free(S), free(Y1);
    tb_free(&ta);
    tb_free(&tbb);
}

// ---------------------------------------------------------------- 7. edge cases

// Sequence 0: only its last position valid; sequence 1: every position padded; sequence 2:
// ordinary. Sampling, attention and its backward on it, for every sampler.
static void test_edge_cases(void **state) {
    (void)state;
    seed_rng(7001);
    kctx k;
    kctx_init(&k, KB_CPU, 1);
    const int H = 2, kc = 3, dh = 4, HD = H * dh, ld = 3 * HD, Hk = H * kc;
    int lens[3] = {5, 4, 6};
    uint32_t samples[3] = {1, 2, 3};
    tbatch tb;
    tb_make(&tb, 3, 8, lens, samples, 20);
    for (int t = 0; t < 4; t++) tb_pad(&tb, 0, t);
    for (int t = 0; t < 4; t++) tb_pad(&tb, 1, t);
    tb_pad(&tb, 2, 1);
    tb_pad(&tb, 2, 4);
    const kbatch *bt = &tb.bt;
    const int T = bt->T;
    float *Y, *S;
    model_members(&k, &Y, &S, bt, H, kc, dh, 0.7f);
    const float eps = 0.1f;
    const sbm_sampler smp[3] = {SBM_SAMPLER_FASTRG, SBM_SAMPLER_DENSE, SBM_SAMPLER_AUTO};
    float *qkv = randn_buf((size_t)T * ld, 1.0f), *R = randn_buf((size_t)T * HD, 1.0f);
    const int N = 600;
    for (int s = 0; s < 3; s++) {
        sbm_graphs gs;
        memset(&gs, 0, sizeof(gs));
        int64_t edges[2];
        int hits[2] = {0, 0}, dense[2] = {0, 0}, with_edge = -1;
        for (int t = 0; t < N; t++) {
            k_sbm_sample(&k, &gs, Y, S, bt, H, kc, eps, smp[s], 0x5A5AULL, (uint32_t)t, 0, 0, edges);
            for (int u = 0; u < 3 * H; u++) {
                const int b = u / H, h = u % H;
                const sbm_graph *g = &gs.g[u];
                assert_true(graph_ok(g, bt->len[b], bt->mask + bt->off[b]));
                if (b == 1) {  // fully padded: nothing expected, nothing drawn
                    assert_int_equal(g->nnz, 0);
                    assert_true(g->expected == 0.0);
                }
                if (b == 0) {  // the only valid pair is (4, 4)
                    double x = edge_prob(Y, S, bt, H, kc, 0, h, 4, 4) + eps;
                    assert_true(fabs(g->expected - x) <= 1e-6 * x);
                    assert_true(g->nnz <= 1);
                    hits[h] += g->nnz;
                    dense[h] = g->dense;
                    if (g->nnz == 1 && h == 0) with_edge = t;
                }
            }
        }
        for (int h = 0; h < H; h++) {
            double x = edge_prob(Y, S, bt, H, kc, 0, h, 4, 4) + eps;
            double q = dense[h] ? fmin(1.0, x) : 1.0 - exp(-x);
            if (smp[s] == SBM_SAMPLER_AUTO) assert_int_equal(dense[h], x > SBM_AUTO_DENSE_FRACTION);
            double z = zscore(hits[h], N * q, N * q * (1.0 - q));
            printf("    %-6s single valid position, head %d: P+eps %.3f, edge in %d of %d draws "
                   "(%s law: %.1f, z %+.2f)\n",
                   sampler_label(s), h, x, hits[h], N,
                   dense[h] ? "dense" : "fastRG", N * q, z);
            assert_true(fabs(z) < 5.0);
        }
        // Attention on a draw where sequence 0, head 0 has its edge.
        assert_true(with_edge >= 0);
        k_sbm_sample(&k, &gs, Y, S, bt, H, kc, eps, smp[s], 0x5A5AULL, (uint32_t)with_edge, 0, 0, edges);
        for (int pi = 0; pi < 2; pi++) {
            float p = pi ? 0.2f : 0.0f;
            const kdrop d = {0x99ULL, 1, 0, 0};
            float *out = fill_buf((size_t)T * HD, NAN), *dqkv = fill_buf((size_t)T * ld, NAN);
            float *dY = fill_buf((size_t)2 * T * Hk, NAN), *dS = fill_buf((size_t)H * kc * kc, NAN);
            k_sbm_attn_fwd(&k, out, &gs, qkv, bt, H, dh, p, d);
            // Sequence 0, head 0: a = 1 on (4, 4), y_4 = f v_4; rows 0..3 are 0.
            double f = drop_factor(d, 0, bt->sample[0], bt->n, 4, 4, p);
            for (int c = 0; c < dh; c++) {
                for (int i = 0; i < 4; i++) assert_true(out[(size_t)i * HD + c] == 0.0f);
                double v = qkv[(size_t)4 * ld + 2 * HD + c];
                assert_true(fabs(out[(size_t)4 * HD + c] - f * v) <= 1e-6 * (1.0 + fabs(v)));
            }
            assert_true(gs.g[0].a[0] == 1.0f);
            for (int r = bt->off[1]; r < bt->off[2]; r++)
                for (int c = 0; c < HD; c++) assert_true(out[(size_t)r * HD + c] == 0.0f);
            k_sbm_attn_bwd(&k, dqkv, dY, dS, R, qkv, out, &gs, Y, S, bt, H, dh, kc, p, d, 0.05f);
            assert_true(all_finite(dqkv, (size_t)T * ld));
            assert_true(all_finite(dY, (size_t)2 * T * Hk));
            assert_true(all_finite(dS, (size_t)H * kc * kc));
            for (int r = bt->off[1]; r < bt->off[2]; r++)
                for (int c = 0; c < ld; c++) assert_true(dqkv[(size_t)r * ld + c] == 0.0f);
            free(out), free(dqkv), free(dY), free(dS);
            int e;
            char what[64];
            snprintf(what, sizeof(what), "edge-case batch %s p=%.1f", sampler_label(s), p);
            check_ste(&k, what, qkv, R, &gs, Y, S, bt, H, dh, kc, p, d, 0.05f, &e);
        }
        sbm_graphs_free(&gs);
    }
    free(qkv), free(R), free(Y), free(S);
    tb_free(&tb);
}

// AUTO: dense exactly when the expected edge count exceeds SBM_AUTO_DENSE_FRACTION of the valid
// pairs, decided per (sequence, head).
static void test_auto_sampler(void **state) {
    (void)state;
    seed_rng(7101);
    kctx k;
    kctx_init(&k, KB_CPU, 1);
    int lens[1] = {10};
    uint32_t samples[1] = {4};
    tbatch tb;
    tb_make(&tb, 1, 12, lens, samples, 10);
    tb_pad(&tb, 0, 4);
    const kbatch *bt = &tb.bt;
    const int kc = 3, valid = 9;
    float *S = rand_blocks(2, kc, 1.0);
    int64_t edges[2];
    // All the weight in the floor (Y = 0 on valid rows too): expected = eps * valid^2 exactly.
    float *Y0 = fill_buf((size_t)2 * bt->T * kc, 0.0f);
    const float epss[2] = {(float)SBM_AUTO_DENSE_FRACTION - 0.01f,
                           (float)SBM_AUTO_DENSE_FRACTION + 0.01f};
    for (int i = 0; i < 2; i++) {
        sbm_graphs gs;
        memset(&gs, 0, sizeof(gs));
        double nnz = 0.0;
        for (int t = 0; t < 200; t++) {
            k_sbm_sample(&k, &gs, Y0, S, bt, 1, kc, epss[i], SBM_SAMPLER_AUTO, 1, (uint32_t)t, 0, 0, edges);
            assert_true(graph_ok(&gs.g[0], 10, bt->mask));
            nnz += gs.g[0].nnz;
        }
        double x = epss[i], q = gs.g[0].dense ? x : 1.0 - exp(-x);
        printf("    auto, eps %.2f (density %.2f vs %.2f): dense=%d, mean edges %.2f (law %.2f)\n",
               x, x, SBM_AUTO_DENSE_FRACTION, gs.g[0].dense, nnz / 200, q * valid * valid);
        assert_true(fabs(gs.g[0].expected - (double)epss[i] * valid * valid) <= 1e-9);
        assert_int_equal(gs.g[0].dense, i == 1);
        double z = zscore(nnz, 200.0 * valid * valid * q, 200.0 * valid * valid * q * (1.0 - q));
        assert_true(fabs(z) < 5.0);
        sbm_graphs_free(&gs);
    }
    // Two heads in one call: head 0 dense (memberships near 1), head 1 sparse (near 0).
    float *Y = xmalloc(sizeof(float) * (size_t)2 * bt->T * 2 * kc);
    for (int r = 0; r < 2 * bt->T; r++)
        for (int c = 0; c < 2 * kc; c++)
            Y[(size_t)r * 2 * kc + c] = bt->mask[r % bt->T] == 0.0f ? 0.0f
                                        : c < kc ? (float)(0.9 + 0.1 * urand())
                                                 : (float)(0.01 * urand());
    sbm_graphs gs;
    memset(&gs, 0, sizeof(gs));
    k_sbm_sample(&k, &gs, Y, S, bt, 2, kc, 0.01f, SBM_SAMPLER_AUTO, 1, 0, 0, 0, edges);
    for (int h = 0; h < 2; h++) {
        double e = expected_ref(Y, S, bt, 2, kc, 0, h, 0.01f);
        assert_true(fabs(gs.g[h].expected - e) <= 1e-5 * e);
        assert_int_equal(gs.g[h].dense, e > SBM_AUTO_DENSE_FRACTION * valid * valid);
        assert_true(graph_ok(&gs.g[h], 10, bt->mask));
        printf("    auto, head %d: density %.3f -> %s\n", h, e / (valid * valid),
               gs.g[h].dense ? "dense" : "fastRG");
    }
    assert_true(gs.g[0].dense == 1 && gs.g[1].dense == 0);
    sbm_graphs_free(&gs);
    free(Y), free(Y0), free(S);
    tb_free(&tb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sparse_attn_fwd),
        cmocka_unit_test(test_sparse_attn_complete_graph),
        cmocka_unit_test(test_sparse_attn_bwd),
        cmocka_unit_test(test_ste_gradient),
        cmocka_unit_test(test_members_blocks),
        cmocka_unit_test(test_members_blocks_surrogate),
        cmocka_unit_test(test_sampler_fastrg_stats),
        cmocka_unit_test(test_sampler_dense_stats),
        cmocka_unit_test(test_sampler_determinism),
        cmocka_unit_test(test_edge_cases),
        cmocka_unit_test(test_auto_sampler),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
