// test_backend_ops.c: every primitive a second backend implements, run on that backend and on the
// CPU backend with the same inputs and compared (in the spirit of ggml's test-backend-ops). One
// table of cases (op, shapes, which buffers are inputs and outputs); inputs are fresh random
// values (never zeros), outputs are poisoned with NaN before each run, so an op that skips an
// element or writes the wrong one fails. Error: ||a - b|| / max(||b||, 1e-30) per output, within
// the case's tolerance (fp32: rounding of a different summation order; dropout masks and
// integer-like results exactly). The CPU backend itself is checked against finite differences
// and double references by the other tests; this file only compares backends. Exits 77 (ctest
// skip) when no other backend can run here (no CUDA build or no GPU), saying why.
// SBMT_TEST_FILTER / SBMT_TEST_SKIP (cmocka glob patterns) run a part of the tests.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/backend.h"
#include "kernels/common.h"
#include "model/model.h"
#include "model/optim.h"
#include "testlib.h"

#define MAXBUF 8

// A case's buffers: sizes in floats; role 0 input, 1 output, 2 input and output.
typedef struct {
    size_t n[MAXBUF];
    int role[MAXBUF];
    float scale[MAXBUF];  // input magnitude (0: 1)
    int nbuf;
    double tol;
    double min_err;  // > 0: the error must reach it (a reduced precision really took effect)
    double scalar;  // a scalar result (xent loss, sumsq), compared too
    uint64_t exact;  // a result that must be equal bit for bit (a hash of sampled graphs)
} op_case;

typedef void (*op_run)(kctx *k, float **b, const kbatch *bt, op_case *c);

typedef struct {
    const char *name;
    op_run run;
    void (*shape)(op_case *c, const kbatch *bt);
} op_entry;

static int32_t g_labels[8];
static tbatch g_tb;  // B = 3 sequences of 5, 9 and 16 rows, n = 16

enum { D = 24, DH = 40, C = 5 };

// ---- the cases ----

#define SHAPE(nm) static void nm(op_case *c, const kbatch *bt)
#define BUF(i, size, r)                                                                            \
    do {                                                                                           \
        c->n[i] = (size);                                                                          \
        c->role[i] = (r);                                                                          \
        if (c->nbuf < (i) + 1) c->nbuf = (i) + 1;                                                  \
    } while (0)

SHAPE(shape_linear_fwd) {
    BUF(0, (size_t)bt->T * D, 0);   // in
    BUF(1, (size_t)DH * D, 0);      // W
    BUF(2, DH, 0);                  // b
    BUF(3, (size_t)bt->T * DH, 1);  // out
    c->tol = 1e-5;
}
static void run_linear_fwd(kctx *k, float **b, const kbatch *bt, op_case *c) {
    k_linear_fwd(k, b[3], b[0], b[1], b[2], bt->T, D, DH);
}

SHAPE(shape_linear_bwd) {
    BUF(0, (size_t)bt->T * DH, 0);  // dout
    BUF(1, (size_t)bt->T * D, 0);   // in
    BUF(2, (size_t)DH * D, 0);      // W
    BUF(3, (size_t)bt->T * D, 2);   // din (accumulated)
    BUF(4, (size_t)DH * D, 2);      // dW
    BUF(5, DH, 2);                  // db
    c->tol = 1e-5;
}
static void run_linear_bwd(kctx *k, float **b, const kbatch *bt, op_case *c) {
    k_linear_bwd(k, b[3], b[4], b[5], b[0], b[1], b[2], bt->T, D, DH, 1);
}
// bf16 GEMM operands (train.precision = bf16) on the backend under test, fp32 on the CPU: the
// difference is the operands' rounding (relative 2^-9 each), so the tolerance is bf16's.
static void run_linear_fwd_bf16(kctx *k, float **b, const kbatch *bt, op_case *c) {
    k->bf16 = k->backend != KB_CPU;
    run_linear_fwd(k, b, bt, c);
    k->bf16 = 0;
}
static void run_linear_bwd_bf16(kctx *k, float **b, const kbatch *bt, op_case *c) {
    k->bf16 = k->backend != KB_CPU;
    run_linear_bwd(k, b, bt, c);
    k->bf16 = 0;
}
SHAPE(shape_linear_fwd_bf16) {
    shape_linear_fwd(c, bt);
    c->tol = 1e-2;
    c->min_err = 1e-5;
}
SHAPE(shape_linear_bwd_bf16) {
    shape_linear_bwd(c, bt);
    c->tol = 1e-2;
    c->min_err = 1e-5;
}

static void run_linear_bwd_overwrite(kctx *k, float **b, const kbatch *bt, op_case *c) {
    k_linear_bwd(k, b[3], b[4], b[5], b[0], b[1], b[2], bt->T, D, DH, 0);
}

SHAPE(shape_layernorm_fwd) {
    BUF(0, (size_t)bt->T * D, 0);  // in
    BUF(1, D, 0);                  // w
    BUF(2, D, 0);                  // b
    BUF(3, (size_t)bt->T * D, 1);  // out
    BUF(4, bt->T, 1);              // mean
    BUF(5, bt->T, 1);              // rstd
    c->tol = 1e-5;
}
static void run_layernorm_fwd(kctx *k, float **b, const kbatch *bt, op_case *c) {
    k_layernorm_fwd(k, b[3], b[4], b[5], b[0], b[1], b[2], bt->T, D);
}

SHAPE(shape_layernorm_bwd) {
    BUF(0, (size_t)bt->T * D, 0);  // dout
    BUF(1, (size_t)bt->T * D, 0);  // in
    BUF(2, D, 0);                  // w
    BUF(3, (size_t)bt->T * D, 2);  // din
    BUF(4, D, 2);                  // dw
    BUF(5, D, 2);                  // db
    BUF(6, bt->T, 1);              // mean (computed by the forward first)
    BUF(7, bt->T, 1);              // rstd
    c->tol = 1e-5;
}
static void run_layernorm_bwd(kctx *k, float **b, const kbatch *bt, op_case *c) {
    float *tmp = k_alloc(k, sizeof(float) * (size_t)bt->T * D);
    k_layernorm_fwd(k, tmp, b[6], b[7], b[1], b[2], b[2], bt->T, D);
    k_layernorm_bwd(k, b[3], b[4], b[5], b[0], b[1], b[6], b[7], b[2], bt->T, D);
    k_free(k, tmp);
}

#define ELEMENTWISE(nm, call)                                                                      \
    SHAPE(shape_##nm) {                                                                            \
        BUF(0, (size_t)bt->T * D, 0);                                                              \
        BUF(1, (size_t)bt->T * D, 0);                                                              \
        BUF(2, (size_t)bt->T * D, 1);                                                              \
        c->tol = 1e-6;                                                                             \
    }                                                                                              \
    static void run_##nm(kctx *k, float **b, const kbatch *bt, op_case *c) {                       \
        size_t n = (size_t)bt->T * D;                                                              \
        call;                                                                                      \
    }
ELEMENTWISE(gelu_fwd, k_gelu_fwd(k, b[2], b[0], n))
ELEMENTWISE(gelu_bwd, k_gelu_bwd(k, b[2], b[0], b[1], n))
ELEMENTWISE(relu_fwd, k_relu_fwd(k, b[2], b[0], n))
ELEMENTWISE(relu_bwd, k_relu_bwd(k, b[2], b[0], b[1], n))
ELEMENTWISE(add, (k_copy(k, b[2], b[0], n), k_add(k, b[2], b[1], n)))
ELEMENTWISE(bias_add, (k_copy(k, b[2], b[0], n), k_bias_add(k, b[2], b[1], bt->T, D)))
ELEMENTWISE(scale, (k_copy(k, b[2], b[0], n), k_scale(k, b[2], n, -1.75f)))
ELEMENTWISE(zero, (k_copy(k, b[2], b[0], n), k_zero(k, b[2] + 3, n - 7)))
ELEMENTWISE(copy2d, (k_zero(k, b[2], n), k_copy2d(k, b[2] + 1, D, b[0] + 2, D, bt->T, D - 5)))
ELEMENTWISE(add2d, (k_copy(k, b[2], b[1], n), k_add2d(k, b[2] + 1, D, b[0] + 2, D, bt->T, D - 5)))

// Dropout masks are the same Philox words on every backend: compared exactly.
SHAPE(shape_dropout) {
    BUF(0, (size_t)bt->T * D, 0);
    BUF(1, (size_t)bt->T * D, 1);
    c->tol = 0.0;
}
static void run_dropout(kctx *k, float **b, const kbatch *bt, op_case *c) {
    kdrop d = {77, 5, 1, KSLOT_FFN_HID};
    k_copy(k, b[1], b[0], (size_t)bt->T * D);
    k_dropout(k, b[1], bt, D, 0.3f, d);
}

SHAPE(shape_embed_fwd) {
    BUF(0, (size_t)12 * D, 0);    // tok (ids < 12)
    BUF(1, (size_t)bt->n * D, 0);  // pos
    BUF(2, (size_t)bt->T * D, 1);
    c->tol = 1e-6;
}
static void run_embed_fwd(kctx *k, float **b, const kbatch *bt, op_case *c) {
    k_embed_fwd(k, b[2], bt, b[0], b[1], D);
}

SHAPE(shape_embed_bwd) {
    BUF(0, (size_t)bt->T * D, 0);  // dout
    BUF(1, (size_t)12 * D, 2);     // dtok
    BUF(2, (size_t)bt->n * D, 2);  // dpos
    c->tol = 1e-5;
}
static void run_embed_bwd(kctx *k, float **b, const kbatch *bt, op_case *c) {
    k_embed_bwd(k, b[1], b[2], b[0], bt, D);
}

SHAPE(shape_mask_pool) {
    BUF(0, (size_t)bt->T * D, 2);  // x, masked in place
    BUF(1, (size_t)bt->B * D, 1);  // pooled
    c->tol = 1e-6;
}
static void run_mask_pool_mean(kctx *k, float **b, const kbatch *bt, op_case *c) {
    k_mask_pool_fwd(k, b[1], b[0], bt, D, 0);
}
static void run_mask_pool_cls(kctx *k, float **b, const kbatch *bt, op_case *c) {
    k_mask_pool_fwd(k, b[1], b[0], bt, D, 1);
}

SHAPE(shape_mask_pool_bwd) {
    BUF(0, (size_t)bt->B * D, 0);  // dpooled
    BUF(1, (size_t)bt->T * D, 1);  // dx
    c->tol = 1e-6;
}
static void run_mask_pool_bwd_mean(kctx *k, float **b, const kbatch *bt, op_case *c) {
    k_mask_pool_bwd(k, b[1], b[0], bt, D, 0);
}
static void run_mask_pool_bwd_cls(kctx *k, float **b, const kbatch *bt, op_case *c) {
    k_mask_pool_bwd(k, b[1], b[0], bt, D, 1);
}

SHAPE(shape_dual) {
    BUF(0, (size_t)4 * D, 0);  // pooled [2B, D], B = 2
    BUF(1, (size_t)8 * D, 0);  // dout [B, 4D]
    BUF(2, (size_t)8 * D, 1);  // out
    BUF(3, (size_t)4 * D, 1);  // dpooled
    c->tol = 1e-6;
}
static void run_dual(kctx *k, float **b, const kbatch *bt, op_case *c) {
    k_dual_combine_fwd(k, b[2], b[0], 2, D);
    k_dual_combine_bwd(k, b[3], b[1], b[0], 2, D);
}

SHAPE(shape_xent) {
    BUF(0, (size_t)8 * C, 0);  // logits [8, C]
    BUF(1, (size_t)8 * C, 1);  // probs
    BUF(2, (size_t)8 * C, 1);  // dlogits
    c->scale[0] = 3.0f;
    c->tol = 1e-6;
}
static void run_xent(kctx *k, float **b, const kbatch *bt, op_case *c) {
    int correct = 0;
    double loss = k_xent_fwd(k, b[1], b[0], g_labels, 8, C, &correct);
    k_xent_bwd(k, b[2], b[1], g_labels, 8, C, 0.125f);
    c->scalar = loss + 1000.0 * correct;  // hits compared exactly through the scalar
}

SHAPE(shape_adamw) {
    BUF(0, 1000, 2);  // param
    BUF(1, 1000, 0);  // grad
    BUF(2, 1000, 2);  // m
    BUF(3, 1000, 2);  // v (made positive by the runner)
    c->tol = 1e-6;
}
static void run_adamw(kctx *k, float **b, const kbatch *bt, op_case *c) {
    float *sq = k_alloc(k, sizeof(float) * 1000);
    k_copy(k, sq, b[3], 1000);
    k_zero(k, b[3], 1000);
    k_adamw(k, b[0], b[1], b[2], b[3], 1000, 1e-3f, 0.9f, 0.999f, 1e-6f, 0.01f, 0.19f, 0.002f);
    k_adamw(k, b[0], sq, b[2], b[3], 1000, 1e-3f, 0.9f, 0.999f, 1e-6f, 0.01f, 0.271f, 0.004f);
    k_free(k, sq);
}

SHAPE(shape_sumsq) {
    BUF(0, 100003, 0);
    c->tol = 1e-9;
}
static void run_sumsq(kctx *k, float **b, const kbatch *bt, op_case *c) {
    c->scalar = k_sumsq(k, b[0], 100003);
}

// Softmax attention, H = 2 heads of 8: forward (out, lse) and backward (dqkv, after the
// backend's own forward), without and with attention dropout.
enum { AH = 2, ADH = 8, AHD = AH * ADH };
SHAPE(shape_attn) {
    BUF(0, (size_t)bt->T * 3 * AHD, 0);  // qkv
    BUF(1, (size_t)bt->T * AHD, 0);      // dout
    BUF(2, (size_t)bt->T * AHD, 1);      // out
    BUF(3, (size_t)bt->T * AH, 1);       // lse
    BUF(4, (size_t)bt->T * 3 * AHD, 1);  // dqkv
    c->tol = 2e-5;
}
static void run_attn(kctx *k, float **b, const kbatch *bt, float p) {
    kdrop d = {91, 3, 1, 4};
    k_attn_softmax_fwd(k, b[2], b[3], b[0], bt, AH, ADH, p, d);
    k_attn_softmax_bwd(k, b[4], b[1], b[0], b[2], b[3], bt, AH, ADH, p, d);
}
static void run_attn_nodrop(kctx *k, float **b, const kbatch *bt, op_case *c) {
    run_attn(k, b, bt, 0.0f);
}
static void run_attn_drop(kctx *k, float **b, const kbatch *bt, op_case *c) {
    run_attn(k, b, bt, 0.25f);
}

// SBM block matrices and memberships, H = 2 heads, k = 16 clusters, d = 8: forward, then
// backward from the backend's own forward. Memberships run over 2T rows (queries then keys) of
// g_tb, whose padded position makes the mask matter.
enum { SH = 2, SK = 16, SD = 8 };
SHAPE(shape_sbm_blocks) {
    BUF(0, (size_t)SH * SK * SD, 0);  // C
    BUF(1, (size_t)SH * SK * SK, 0);  // dS
    BUF(2, (size_t)SH * SK * SK, 1);  // S
    BUF(3, (size_t)SH * SK * SD, 2);  // dC (accumulated)
    c->scale[0] = 0.5f;
    c->tol = 1e-5;
}
static void run_sbm_blocks(kctx *k, float **b, const kbatch *bt, op_case *c) {
    k_sbm_blocks_fwd(k, b[2], b[0], SH, SK, SD);
    k_sbm_blocks_bwd(k, b[3], b[1], b[2], b[0], SH, SK, SD);
}
SHAPE(shape_sbm_members) {
    const size_t rows = 2 * (size_t)bt->T;
    BUF(0, rows * SH * SD, 0);  // phi
    BUF(1, (size_t)SH * SK * SD, 0);  // C
    BUF(2, rows * SH * SK, 2);  // dY in, dZ out
    BUF(3, rows * SH * SK, 1);  // Y
    BUF(4, rows * SH * SD, 1);  // dphi
    BUF(5, (size_t)SH * SK * SD, 2);  // dC (accumulated)
    c->tol = 1e-5;
}
static void run_sbm_members(kctx *k, float **b, const kbatch *bt, op_case *c) {
    const int rows = 2 * bt->T;
    k_sbm_members_fwd(k, b[3], b[0], b[1], bt, rows, SH, SK, SD);
    k_sbm_members_bwd(k, b[4], b[5], b[2], b[3], b[0], b[1], rows, SH, SK, SD);
}

// SBM sampling and attention, H = 2 heads, k = 16 clusters: memberships and blocks from the
// backend's own members/blocks ops (so Y lies in (0, 1) with padded rows zero, as in the model),
// then sampling, forward and backward, with each sampler:
// - dense: the rule the CUDA tiles draw with, heads of 16 (a size the tiles take);
// - fastrg: CUDA's edge path, heads of 16 and of 24 (no tile size: the edge path takes any);
// - auto: head 1's memberships scaled by 0.15 so its expected density falls below the
//   crossover and its units go to fastRG while head 0's stay dense (both paths in one call).
// The scalar is the sampled edge count plus dS; `exact` hashes which units fastRG drew and
// their CSR, so the graphs must be identical, not merely close.
enum { BH = 2 };
static void shape_sbm_attn_dh(op_case *c, const kbatch *bt, int dh) {
    const size_t T = (size_t)bt->T, HD = (size_t)BH * dh;
    BUF(0, 2 * T * BH * SD, 0);         // phi
    BUF(1, (size_t)BH * SK * SD, 0);    // C (memberships)
    BUF(2, (size_t)BH * SK * SD, 0);    // C (blocks)
    BUF(3, T * 3 * HD, 0);              // qkv
    BUF(4, T * HD, 0);                  // dout
    BUF(5, T * HD, 1);                  // out
    BUF(6, T * 3 * HD, 1);              // dqkv
    BUF(7, 2 * T * BH * SK, 1);         // dY
    c->scale[1] = 0.3f;
    c->tol = 2e-5;
}
SHAPE(shape_sbm_attn) { shape_sbm_attn_dh(c, bt, 16); }
SHAPE(shape_sbm_attn24) { shape_sbm_attn_dh(c, bt, 24); }

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static void sbm_attn_case(kctx *k, float **b, const kbatch *bt, op_case *c, int dh,
                          sbm_sampler sampler, float head1_scale) {
    const int T = bt->T;
    float *Y = k_alloc(k, sizeof(float) * 2 * (size_t)T * BH * SK);
    float *S = k_alloc(k, sizeof(float) * (size_t)BH * SK * SK);
    float *dS = k_alloc(k, sizeof(float) * (size_t)BH * SK * SK);
    k_sbm_members_fwd(k, Y, b[0], b[1], bt, 2 * T, BH, SK, SD);
    k_sbm_blocks_fwd(k, S, b[2], BH, SK, SD);
    if (head1_scale != 1.0f) {
        float *y1 = k_alloc(k, sizeof(float) * 2 * (size_t)T * SK);
        k_copy2d(k, y1, SK, Y + SK, BH * SK, 2 * T, SK);
        k_scale(k, y1, 2 * (size_t)T * SK, head1_scale);
        k_copy2d(k, Y + SK, BH * SK, y1, SK, 2 * T, SK);
        k_free(k, y1);
    }
    sbm_graphs gs;
    memset(&gs, 0, sizeof(gs));
    int64_t edges[BH];
    k_sbm_sample(k, &gs, Y, S, bt, BH, SK, 0.01f, sampler, 9, 4, 1, 0, edges);
    uint64_t h = 14695981039346656037ull;
    int nfast = 0;
    for (int u = 0; u < gs.units; u++) {
        const sbm_graph *g = &gs.g[u];
        h = fnv(h, &g->dense, sizeof(g->dense));
        if (g->dense) continue;
        nfast++;
        int *rowptr = xmalloc(sizeof(int) * ((size_t)g->rows + 1));
        int *col = xmalloc(sizeof(int) * ((size_t)g->nnz + 1));
        assert_int_equal(k_sbm_graph_csr(k, &gs, bt, BH, u, rowptr, col), 0);
        assert_int_equal(rowptr[g->rows], g->nnz);
        h = fnv(h, rowptr, sizeof(int) * ((size_t)g->rows + 1));
        h = fnv(h, col, sizeof(int) * (size_t)g->nnz);
        free(rowptr);
        free(col);
    }
    // The case must exercise what it names.
    if (sampler == SBM_SAMPLER_DENSE) assert_int_equal(nfast, 0);
    if (sampler == SBM_SAMPLER_FASTRG) assert_int_equal(nfast, gs.units);
    if (sampler == SBM_SAMPLER_AUTO) {
        assert_true(nfast > 0 && nfast < gs.units);
        for (int u = 0; u < gs.units; u++) assert_int_equal(!gs.g[u].dense, u % BH == 1);
    }
    c->exact = h;
    kdrop d = {91, 3, 1, 4};
    k_sbm_attn_fwd(k, b[5], &gs, b[3], bt, BH, dh, 0.2f, d);
    k_sbm_attn_bwd(k, b[6], b[7], dS, b[4], b[3], b[5], &gs, Y, S, bt, BH, dh, SK, 0.2f, d, 1e-3f);
    float dSh[BH * SK * SK];
    k_download(k, dSh, dS, sizeof(dSh));
    double sum = 0.0;  // dS folded into the scalar too (weighted, so a permutation shows)
    for (int i = 0; i < BH * SK * SK; i++) sum += (double)dSh[i] * (1 + i % 7);
    c->scalar = (double)(edges[0] + edges[1]) + 1e-3 * sum;
    sbm_graphs_free(&gs);
    k_free(k, Y);
    k_free(k, S);
    k_free(k, dS);
}
static void run_sbm_attn(kctx *k, float **b, const kbatch *bt, op_case *c) {
    sbm_attn_case(k, b, bt, c, 16, SBM_SAMPLER_DENSE, 1.0f);
}
static void run_sbm_attn_fastrg(kctx *k, float **b, const kbatch *bt, op_case *c) {
    sbm_attn_case(k, b, bt, c, 16, SBM_SAMPLER_FASTRG, 1.0f);
}
static void run_sbm_attn_fastrg24(kctx *k, float **b, const kbatch *bt, op_case *c) {
    sbm_attn_case(k, b, bt, c, 24, SBM_SAMPLER_FASTRG, 1.0f);
}
static void run_sbm_attn_auto(kctx *k, float **b, const kbatch *bt, op_case *c) {
    sbm_attn_case(k, b, bt, c, 16, SBM_SAMPLER_AUTO, 0.15f);
}
// The tiles' products on tensor cores on the backend under test (train.precision = tf32:
// operands rounded to tf32, relative 2^-11 each; bf16: the attention operands in bfloat16,
// 2^-9, the straight-through products tf32). The sampler's products stay fp32, so the graphs
// are still the CPU's exactly.
static void sbm_attn_reduced(kctx *k, float **b, const kbatch *bt, op_case *c, int *flag) {
    *flag = k->backend != KB_CPU;
    sbm_attn_case(k, b, bt, c, 16, SBM_SAMPLER_DENSE, 1.0f);
    *flag = 0;
}
static void run_sbm_attn_tf32(kctx *k, float **b, const kbatch *bt, op_case *c) {
    sbm_attn_reduced(k, b, bt, c, &k->tf32);
}
static void run_sbm_attn_bf16(kctx *k, float **b, const kbatch *bt, op_case *c) {
    sbm_attn_reduced(k, b, bt, c, &k->bf16);
}
SHAPE(shape_sbm_attn_tf32) {
    shape_sbm_attn_dh(c, bt, 16);
    c->tol = 5e-3;
    c->min_err = 1e-6;
}
SHAPE(shape_sbm_attn_bf16) {
    shape_sbm_attn_dh(c, bt, 16);
    c->tol = 2e-2;
    c->min_err = 1e-5;
}

static const op_entry OPS[] = {
    {"linear_fwd", run_linear_fwd, shape_linear_fwd},
    {"linear_bwd (accumulate)", run_linear_bwd, shape_linear_bwd},
    {"linear_bwd (overwrite din)", run_linear_bwd_overwrite, shape_linear_bwd},
    {"linear_fwd bf16", run_linear_fwd_bf16, shape_linear_fwd_bf16},
    {"linear_bwd bf16", run_linear_bwd_bf16, shape_linear_bwd_bf16},
    {"layernorm_fwd", run_layernorm_fwd, shape_layernorm_fwd},
    {"layernorm_bwd", run_layernorm_bwd, shape_layernorm_bwd},
    {"gelu_fwd", run_gelu_fwd, shape_gelu_fwd},
    {"gelu_bwd", run_gelu_bwd, shape_gelu_bwd},
    {"relu_fwd", run_relu_fwd, shape_relu_fwd},
    {"relu_bwd", run_relu_bwd, shape_relu_bwd},
    {"add", run_add, shape_add},
    {"bias_add", run_bias_add, shape_bias_add},
    {"scale", run_scale, shape_scale},
    {"zero", run_zero, shape_zero},
    {"copy2d", run_copy2d, shape_copy2d},
    {"add2d", run_add2d, shape_add2d},
    {"dropout", run_dropout, shape_dropout},
    {"embed_fwd", run_embed_fwd, shape_embed_fwd},
    {"embed_bwd", run_embed_bwd, shape_embed_bwd},
    {"mask_pool_fwd (mean)", run_mask_pool_mean, shape_mask_pool},
    {"mask_pool_fwd (cls)", run_mask_pool_cls, shape_mask_pool},
    {"mask_pool_bwd (mean)", run_mask_pool_bwd_mean, shape_mask_pool_bwd},
    {"mask_pool_bwd (cls)", run_mask_pool_bwd_cls, shape_mask_pool_bwd},
    {"dual_combine fwd+bwd", run_dual, shape_dual},
    {"xent fwd+bwd", run_xent, shape_xent},
    {"adamw (two steps)", run_adamw, shape_adamw},
    {"sumsq", run_sumsq, shape_sumsq},
    {"sbm_blocks fwd+bwd", run_sbm_blocks, shape_sbm_blocks},
    {"sbm_members fwd+bwd", run_sbm_members, shape_sbm_members},
    {"sbm dense sample+attn", run_sbm_attn, shape_sbm_attn},
    {"sbm fastrg sample+attn", run_sbm_attn_fastrg, shape_sbm_attn},
    {"sbm fastrg sample+attn d24", run_sbm_attn_fastrg24, shape_sbm_attn24},
    {"sbm auto sample+attn", run_sbm_attn_auto, shape_sbm_attn},
    {"sbm dense sample+attn tf32", run_sbm_attn_tf32, shape_sbm_attn_tf32},
    {"sbm dense sample+attn bf16", run_sbm_attn_bf16, shape_sbm_attn_bf16},
    {"attn_softmax fwd+bwd", run_attn_nodrop, shape_attn},
    {"attn_softmax fwd+bwd, dropout", run_attn_drop, shape_attn},
};
#define NOPS ((int)(sizeof(OPS) / sizeof(OPS[0])))

// ---- the harness ----

// Runs case `e` on backend k with the given host inputs; returns the outputs (host, malloc'd).
static float **run_on(kctx *k, const op_entry *e, op_case *c, float **host_in) {
    float *dev[MAXBUF] = {0};
    float **out = calloc(MAXBUF, sizeof(float *));
    float *nan = fill_buf(1 << 20, NAN);
    for (int i = 0; i < c->nbuf; i++) {
        dev[i] = k_alloc(k, sizeof(float) * c->n[i]);
        if (c->role[i] == 1) {
            for (size_t o = 0; o < c->n[i]; o += 1 << 20) {
                size_t m = c->n[i] - o < (1u << 20) ? c->n[i] - o : (1u << 20);
                k_upload(k, dev[i] + o, nan, sizeof(float) * m);
            }
        } else {
            k_upload(k, dev[i], host_in[i], sizeof(float) * c->n[i]);
        }
    }
    k_batch_upload(k, &g_tb.bt);
    e->run(k, dev, &g_tb.bt, c);
    for (int i = 0; i < c->nbuf; i++) {
        if (c->role[i] != 0) {
            out[i] = xmalloc(sizeof(float) * c->n[i]);
            k_download(k, out[i], dev[i], sizeof(float) * c->n[i]);
        }
        k_free(k, dev[i]);
    }
    free(nan);
    return out;
}

static double rel_err(const float *a, const float *b, size_t n, long *nonfinite) {
    double num = 0.0, den = 0.0;
    *nonfinite = -1;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) != !isfinite(b[i]) && *nonfinite < 0) *nonfinite = (long)i;
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num) / (den > 1e-60 ? sqrt(den) : 1e-30);
}

static kctx g_cpu, g_other;

static void compare_all(void **state) {
    (void)state;
    int failures = 0;
    for (int o = 0; o < NOPS; o++) {
        const op_entry *e = &OPS[o];
        op_case c1, c2;
        memset(&c1, 0, sizeof(c1));
        e->shape(&c1, &g_tb.bt);
        c2 = c1;
        float *in[MAXBUF] = {0};
        for (int i = 0; i < c1.nbuf; i++) {
            float sc = c1.scale[i] > 0 ? c1.scale[i] : 1.0f;
            in[i] = randn_buf(c1.n[i], sc);
            // Never zero, so an op that ignores an input cannot pass by accident.
            for (size_t j = 0; j < c1.n[i]; j++)
                if (in[i][j] == 0.0f) in[i][j] = 1e-3f;
        }
        float **ref = run_on(&g_cpu, e, &c1, in);
        float **got = run_on(&g_other, e, &c2, in);
        double worst = 0.0;
        int bad = 0;
        for (int i = 0; i < c1.nbuf; i++) {
            if (c1.role[i] == 0) continue;
            long nf;
            double err = rel_err(got[i], ref[i], c1.n[i], &nf);
            if (err > worst) worst = err;
            if (nf >= 0 || !(err <= c1.tol)) {
                print_error("%s: output %d: relative error %.3e (tolerance %.1e)%s\n", e->name, i,
                            err, c1.tol, nf >= 0 ? ", non-finite where the CPU is finite" : "");
                bad = 1;
            }
        }
        if (c1.min_err > 0 && !(worst >= c1.min_err)) {
            print_error("%s: relative error %.3e below %.1e: the reduced precision did not take "
                        "effect\n", e->name, worst, c1.min_err);
            bad = 1;
        }
        double sd = fabs(c2.scalar - c1.scalar) / (fabs(c1.scalar) > 1 ? fabs(c1.scalar) : 1.0);
        if (!(sd <= (c1.tol > 1e-9 ? c1.tol : 1e-9))) {
            print_error("%s: scalar %.12g vs CPU %.12g\n", e->name, c2.scalar, c1.scalar);
            bad = 1;
        }
        if (c2.exact != c1.exact) {
            print_error("%s: exact result %016llx vs CPU %016llx (sampled graphs differ)\n",
                        e->name, (unsigned long long)c2.exact, (unsigned long long)c1.exact);
            bad = 1;
        }
        printf("%-28s %s: relative error %.2e%s\n", e->name, g_other.ops->name, worst,
               bad ? "  FAILED" : "");
        failures += bad;
        for (int i = 0; i < c1.nbuf; i++) {
            free(in[i]);
            free(ref[i]);
            free(got[i]);
        }
        free(ref);
        free(got);
    }
    assert_int_equal(failures, 0);
}

// One training step of a whole softmax model (dropout on, CLS or MEAN pooling, single or dual)
// on each backend from the same parameters and batch: the loss and every parameter and moment
// after AdamW agree within fp32 tolerance.
// sbm: 0 softmax; 1 SBM with the dense sampler (CUDA's tiles: heads of 16, a size they take);
// 2 SBM with fastRG (CUDA's edge path), heads of 8. prec: 0 fp32, 1 bf16, 2 tf32 on the backend
// under test (the CPU computes in fp32).
static void model_step(int cls, int dual, int prec, int sbm) {
    const int bf16 = prec == 1, tf32 = prec == 2;
    model_dims d = {.vocab = 12, .seq_len = 16, .d_model = 16, .d_ff = 24, .heads = 2,
                    .head_dim = sbm == 1 ? 16 : 8, .layers = 2, .classes = 3, .cls = cls,
                    .dual = dual, .dropout = 0.1f, .attn_dropout = 0.1f, .sbm = sbm != 0,
                    .clusters = 16, .edge_floor = 0.01f, .sparsity_weight = 1e-4f,
                    .sampler = sbm == 2 ? SBM_SAMPLER_FASTRG : SBM_SAMPLER_DENSE};
    // Run 2 repeats run 1 on the other backend: the same bits (no atomics, fixed reduction
    // orders), which bit-exact resume on that backend rests on.
    kctx *ks[3] = {&g_cpu, &g_other, &g_other};
    model m[3];
    double loss[3];
    int correct[3] = {0, 0, 0};
    float *state[3];
    const int examples = dual ? 1 : 3;  // g_tb holds 3 sequences; a dual example is 2
    int32_t labels[3] = {0, 2, 1};
    kbatch bt = g_tb.bt;
    if (dual) bt.B = 2;
    if (dual) bt.T = bt.off[2];
    g_other.bf16 = bf16;
    g_other.tf32 = tf32;
    for (int i = 0; i < 3; i++) {
        model_init(&m[i], ks[i], &d, examples, 5);
        m[i].reg_batch = bt.B;
        k_zero(ks[i], m[i].grads, m[i].nparams);
        loss[i] = model_forward(&m[i], ks[i], &bt, labels, 1, 5, 2, &correct[i]);
        model_backward(&m[i], ks[i], &bt, labels, 1, 5, 2, 1.0f / examples);
        optim_adamw(ks[i], &m[i], 1, 1e-2f, 0.9f, 0.999f, 1e-6f, 0.01f);
        state[i] = xmalloc(sizeof(float) * 3 * m[i].nparams);
        model_get_state(&m[i], state[i], state[i] + m[i].nparams, state[i] + 2 * m[i].nparams);
    }
    long nf;
    double err = rel_err(state[1], state[0], 3 * m[0].nparams, &nf);
    g_other.bf16 = 0;
    g_other.tf32 = 0;
    const int repeat = loss[2] == loss[1] &&
                       !memcmp(state[2], state[1], sizeof(float) * 3 * m[1].nparams);
    printf("whole model step (%s, cls %d, dual %d, %s) %s: loss %.7f vs %.7f, state relative "
           "error %.2e, repeated run %s\n",
           sbm == 2 ? "sbm fastrg" : sbm ? "sbm dense" : "softmax", cls, dual,
           bf16 ? "bf16" : tf32 ? "tf32" : "fp32", g_other.ops->name, loss[1], loss[0], err,
           repeat ? "bit-identical" : "DIFFERS");
    assert_true(repeat);
    // bf16: GEMM operands rounded to 8 bits of mantissa; LayerNorm, softmax, loss and AdamW
    // stay fp32, so one step moves the loss and the state by about the rounding.
    // tf32: 10 bits of mantissa in the GEMMs and the attention tiles' products.
    assert_true(fabs(loss[1] - loss[0]) <= (bf16 ? 1e-2 : tf32 ? 2e-3 : 1e-5) * fabs(loss[0]));
    if (!bf16 && !tf32) assert_int_equal(correct[1], correct[0]);
    assert_true(nf < 0 && err <= (bf16 ? 5e-2 : tf32 ? 1e-2 : 1e-4));
    if (bf16 || tf32) assert_true(err > 1e-7);  // the rounding happened
    for (int i = 0; i < 3; i++) {
        free(state[i]);
        model_free(&m[i]);
    }
}

// Random memberships Y [2T, H*kc] (queries then keys; padded rows zero, head h scaled by
// scale[h]) and blocks S [H, kc, kc], each head's summing to 1: fastRG's inputs in the tests.
static void fastrg_inputs(float *Y, float *S, const kbatch *bt, int H, int KC,
                          const float *scale) {
    const int T = bt->T, Hk = H * KC;
    for (int r = 0; r < 2 * T; r++)
        for (int x = 0; x < Hk; x++)
            Y[(size_t)r * Hk + x] = bt->mask[r % T] * (float)urand() * scale[x / KC];
    for (int h = 0; h < H; h++) {
        double sum = 0.0;
        for (int x = 0; x < KC * KC; x++) sum += S[h * KC * KC + x] = (float)(urand() * urand());
        for (int x = 0; x < KC * KC; x++) S[h * KC * KC + x] = (float)(S[h * KC * KC + x] / sum);
    }
}

// fastRG on every backend against the CPU's at scale: 4 sequences (300, 211, 97 rows and one
// of 9 all padded, padding inside the others), 3 heads of 32 clusters at three densities (head
// h's memberships scaled by 1, 0.3, 0.05), tens of thousands of edges. Every unit's expected
// count and CSR must be identical bit for bit; attention forward and backward on those graphs
// (heads of 40, dropout 0.1) within 2e-5 of the CPU.
static void sbm_fastrg_graphs(void **state) {
    (void)state;
    enum { H = 3, KC = 32, DHH = 40 };
    const int n = 300, lens[4] = {300, 211, 97, 9};
    const uint32_t samples[4] = {2, 17, 5, 33};
    tbatch tb;
    tb_make(&tb, 4, n, lens, samples, 12);
    for (int t = 5; t < 211; t += 23) tb_pad(&tb, 1, t);
    for (int t = 0; t < 9; t++) tb_pad(&tb, 3, t);
    const kbatch *bt = &tb.bt;
    const int T = bt->T, Hk = H * KC, HD = H * DHH;
    const float scale[H] = {1.0f, 0.3f, 0.05f};
    float *Y = xmalloc(sizeof(float) * 2 * (size_t)T * Hk), *S = xmalloc(sizeof(float) * H * KC * KC);
    fastrg_inputs(Y, S, bt, H, KC, scale);
    const size_t nq = (size_t)T * 3 * HD, no = (size_t)T * HD, ny = 2 * (size_t)T * Hk;
    float *qkv = randn_buf(nq, 1.0f), *dout = randn_buf(no, 1.0f);
    sbm_graphs gs[2];
    float *res[2][4];
    kctx *ks[2] = {&g_cpu, &g_other};
    kdrop d = {13, 2, 0, 0};
    for (int e = 0; e < 2; e++) {
        kctx *k = ks[e];
        memset(&gs[e], 0, sizeof(gs[e]));
        float *dY = k_alloc(k, sizeof(float) * 2 * (size_t)T * Hk), *dS = k_alloc(k, sizeof(float) * H * KC * KC);
        float *dy = k_alloc(k, sizeof(float) * ny), *dsb = k_alloc(k, sizeof(float) * H * KC * KC);
        float *dq = k_alloc(k, sizeof(float) * nq), *dd = k_alloc(k, sizeof(float) * no);
        float *o = k_alloc(k, sizeof(float) * no), *g = k_alloc(k, sizeof(float) * nq);
        float *nan = fill_buf(nq > ny ? nq : ny, NAN);
        k_upload(k, dY, Y, sizeof(float) * ny);
        k_upload(k, dS, S, sizeof(float) * H * KC * KC);
        k_upload(k, dq, qkv, sizeof(float) * nq);
        k_upload(k, dd, dout, sizeof(float) * no);
        k_upload(k, o, nan, sizeof(float) * no);
        k_upload(k, g, nan, sizeof(float) * nq);
        k_upload(k, dy, nan, sizeof(float) * ny);
        k_batch_upload(k, bt);
        int64_t edges[H];
        k_sbm_sample(k, &gs[e], dY, dS, bt, H, KC, 0.01f, SBM_SAMPLER_FASTRG, 21, 7, 2, 3, edges);
        k_sbm_attn_fwd(k, o, &gs[e], dq, bt, H, DHH, 0.1f, d);
        k_sbm_attn_bwd(k, g, dy, dsb, dd, dq, o, &gs[e], dY, dS, bt, H, DHH, KC, 0.1f, d, 1e-4f);
        size_t sz[4] = {no, nq, ny, (size_t)H * KC * KC};
        float *dv[4] = {o, g, dy, dsb};
        for (int i = 0; i < 4; i++) {
            res[e][i] = xmalloc(sizeof(float) * sz[i]);
            k_download(k, res[e][i], dv[i], sizeof(float) * sz[i]);
        }
        float *bufs[] = {dY, dS, dy, dsb, dq, dd, o, g};
        for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) k_free(k, bufs[i]);
        free(nan);
    }
    int64_t total = 0, units_cmp = 0;
    double dens[H] = {0};
    for (int u = 0; u < gs[0].units; u++) {
        const sbm_graph *a = &gs[0].g[u], *b = &gs[1].g[u];
        assert_int_equal(b->dense, 0);
        assert_true(a->expected == b->expected);
        assert_int_equal(a->nnz, b->nnz);
        int *rp = xmalloc(sizeof(int) * ((size_t)a->rows + 1)), *cl = xmalloc(sizeof(int) * ((size_t)a->nnz + 1));
        assert_int_equal(k_sbm_graph_csr(&g_other, &gs[1], bt, H, u, rp, cl), 0);
        assert_memory_equal(rp, a->rowptr, sizeof(int) * ((size_t)a->rows + 1));
        if (a->nnz) assert_memory_equal(cl, a->col, sizeof(int) * (size_t)a->nnz);
        free(rp);
        free(cl);
        total += a->nnz;
        units_cmp++;
        const int L = bt->len[u / H];
        if (L > 0) dens[u % H] += (double)a->nnz / ((double)L * L) / bt->B;
    }
    const char *names[4] = {"out", "dqkv", "dY", "dS"};
    int failures = 0;
    for (int i = 0; i < 4; i++) {
        size_t szi = i == 0 ? no : i == 1 ? nq : i == 2 ? ny : (size_t)H * KC * KC;
        long nf;
        double err = rel_err(res[1][i], res[0][i], szi, &nf);
        printf("fastRG graphs, %s: relative error %.2e\n", names[i], err);
        if (nf >= 0 || !(err <= 2e-5)) failures++;
    }
    printf("fastRG graphs: %lld edges in %lld units identical to the CPU's (mean densities %.3f "
           "%.3f %.3f)\n", (long long)total, (long long)units_cmp, dens[0], dens[1], dens[2]);
    assert_true(total > 20000);
    assert_int_equal(failures, 0);
    for (int e = 0; e < 2; e++) {
        sbm_graphs_free(&gs[e]);
        for (int i = 0; i < 4; i++) free(res[e][i]);
    }
    free(Y);
    free(S);
    free(qkv);
    free(dout);
    tb_free(&tb);
}

// fastRG graphs over many draws: 16 batches of fresh memberships and blocks (4 sequences of up
// to 300 rows, 3 heads of 32 clusters at densities ~0.17, 0.02, 0.008), every unit's CSR
// identical to the CPU's. A discrepancy as rare as one edge in 10^5 (an ulp in a table entry,
// a sum reassociated by one compiler and not the other) shows here.
static void sbm_fastrg_graphs_many(void **state) {
    (void)state;
    enum { H = 3, KC = 32 };
    // (The sanitizer build, SBMT_ATTN_TILES_QUICK=1, runs 4 rounds: the normal build has all.)
    const char *q = getenv("SBMT_ATTN_TILES_QUICK");
    const int ROUNDS = q && !strcmp(q, "1") ? 4 : 16;
    const int n = 300, lens[4] = {300, 211, 97, 150};
    const uint32_t samples[4] = {3, 8, 21, 40};
    tbatch tb;
    tb_make(&tb, 4, n, lens, samples, 12);
    for (int t = 7; t < 211; t += 19) tb_pad(&tb, 1, t);
    const kbatch *bt = &tb.bt;
    const int T = bt->T, Hk = H * KC;
    const float scale[H] = {1.0f, 0.3f, 0.05f};
    const size_t ny = 2 * (size_t)T * Hk;
    float *Y = xmalloc(sizeof(float) * ny), *S = xmalloc(sizeof(float) * H * KC * KC);
    int64_t total = 0;
    for (int round = 0; round < ROUNDS; round++) {
        fastrg_inputs(Y, S, bt, H, KC, scale);
        sbm_graphs gs[2];
        kctx *ks[2] = {&g_cpu, &g_other};
        for (int e = 0; e < 2; e++) {
            kctx *k = ks[e];
            memset(&gs[e], 0, sizeof(gs[e]));
            float *dY = k_alloc(k, sizeof(float) * ny), *dS = k_alloc(k, sizeof(float) * H * KC * KC);
            k_upload(k, dY, Y, sizeof(float) * ny);
            k_upload(k, dS, S, sizeof(float) * H * KC * KC);
            k_batch_upload(k, bt);
            int64_t edges[H];
            k_sbm_sample(k, &gs[e], dY, dS, bt, H, KC, 0.01f, SBM_SAMPLER_FASTRG, 5 + round, 3, 1,
                         0, edges);
            k_free(k, dY);
            k_free(k, dS);
        }
        for (int u = 0; u < gs[0].units; u++) {
            const sbm_graph *a = &gs[0].g[u], *b = &gs[1].g[u];
            assert_true(a->expected == b->expected);
            int *rp = xmalloc(sizeof(int) * ((size_t)b->rows + 1));
            int *cl = xmalloc(sizeof(int) * ((size_t)b->nnz + 1));
            assert_int_equal(k_sbm_graph_csr(&g_other, &gs[1], bt, H, u, rp, cl), 0);
            if (a->nnz != b->nnz || memcmp(rp, a->rowptr, sizeof(int) * ((size_t)a->rows + 1)) ||
                memcmp(cl, a->col, sizeof(int) * (size_t)a->nnz)) {
                int row = 0;
                while (row < a->rows && rp[row + 1] == a->rowptr[row + 1] &&
                       !memcmp(cl + rp[row], a->col + a->rowptr[row],
                               sizeof(int) * (size_t)(rp[row + 1] - rp[row])))
                    row++;
                print_error("round %d unit %d: %d edges vs the CPU's %d, first differing row %d\n",
                            round, u, b->nnz, a->nnz, row);
                fail();
            }
            total += a->nnz;
            free(rp);
            free(cl);
        }
        sbm_graphs_free(&gs[0]);
        sbm_graphs_free(&gs[1]);
    }
    printf("fastRG graphs, %d rounds: %lld edges identical to the CPU's\n", ROUNDS,
           (long long)total);
    free(Y);
    free(S);
    tb_free(&tb);
}

// Softmax attention at the head sizes the CUDA backend tiles (16, 32, 64, 128) and one it does
// not (40), on a batch longer than a tile: lengths that are not multiples of the tile, padded
// keys inside sequences, a sequence whose keys are all padded (its rows attend to nothing),
// n = 200 (dropout blocks aligned with rows) and n = 203 (not aligned), dropout on and off.
// SBMT_ATTN_TILES_QUICK=1 (the sanitizer build, where the emulated backend is slow) keeps one
// case of each tile height and of the row-wise path, with dropout, at n = 203.
static void attn_tiles(void **state) {
    (void)state;
    const int dhs[5] = {16, 32, 64, 128, 40};
    const char *q = getenv("SBMT_ATTN_TILES_QUICK");
    const int quick = q && !strcmp(q, "1");
    int failures = 0;
    for (int nn = quick; nn < 2; nn++) {
        const int n = nn ? 203 : 200;
        int lens[4] = {n, 77, 131, 9};
        uint32_t samples[4] = {5, 8, 13, 21};
        tbatch tb;
        tb_make(&tb, 4, n, lens, samples, 12);
        for (int t = 3; t < 131; t += 17) tb_pad(&tb, 2, t);
        for (int t = 0; t < 9; t++) tb_pad(&tb, 3, t);  // no key to attend to
        const kbatch *bt = &tb.bt;
        // tf32 and bf16 (at n = 203 with dropout): the tiles' products on tensor cores, the
        // row-wise path (heads of 40) unchanged.
        for (int di = 0; di < 5; di++)
            for (int pass = quick; pass < 4; pass++) {
                const int drop = pass > 0, tf32 = pass == 2, bf16 = pass == 3;
                const int reduced = (tf32 || bf16) && dhs[di] != 40;
                if (quick && (dhs[di] == 16 || dhs[di] == 64)) continue;
                if ((tf32 || bf16) && n != 203) continue;
                const int H = 2, dh = dhs[di], HD = H * dh;
                const double tol = !reduced ? 2e-5 : tf32 ? 5e-3 : 2e-2;
                g_other.tf32 = tf32;
                g_other.bf16 = bf16;
                const size_t nq = (size_t)bt->T * 3 * HD, no = (size_t)bt->T * HD;
                const size_t nl = (size_t)bt->T * H;
                float *qkv = randn_buf(nq, 1.0f), *dout = randn_buf(no, 1.0f);
                const float p = drop ? 0.2f : 0.0f;
                kdrop d = {77, 5, 1, 2};
                float *res[2][3];
                kctx *ks[2] = {&g_cpu, &g_other};
                for (int e = 0; e < 2; e++) {
                    kctx *k = ks[e];
                    float *dq = k_alloc(k, sizeof(float) * nq), *dd = k_alloc(k, sizeof(float) * no);
                    float *o = k_alloc(k, sizeof(float) * no), *l = k_alloc(k, sizeof(float) * nl);
                    float *g = k_alloc(k, sizeof(float) * nq);
                    float *nan = fill_buf(nq, NAN);
                    k_upload(k, dq, qkv, sizeof(float) * nq);
                    k_upload(k, dd, dout, sizeof(float) * no);
                    k_upload(k, o, nan, sizeof(float) * no);
                    k_upload(k, l, nan, sizeof(float) * nl);
                    k_upload(k, g, nan, sizeof(float) * nq);
                    k_batch_upload(k, bt);
                    k_attn_softmax_fwd(k, o, l, dq, bt, H, dh, p, d);
                    k_attn_softmax_bwd(k, g, dd, dq, o, l, bt, H, dh, p, d);
                    size_t sz[3] = {no, nl, nq};
                    float *src[3] = {o, l, g};
                    for (int i = 0; i < 3; i++) {
                        res[e][i] = xmalloc(sizeof(float) * sz[i]);
                        k_download(k, res[e][i], src[i], sizeof(float) * sz[i]);
                        k_free(k, src[i]);
                    }
                    k_free(k, dq);
                    k_free(k, dd);
                    free(nan);
                }
                const char *names[3] = {"out", "lse", "dqkv"};
                size_t sz[3] = {no, nl, nq};
                double worst = 0.0;
                int bad = 0;
                for (int i = 0; i < 3; i++) {
                    long nf;
                    // lse of rows with no key is +inf on both: compare the finite entries.
                    float *a = res[1][i], *b = res[0][i];
                    size_t m = 0;
                    for (size_t j = 0; j < sz[i]; j++)
                        if (!(isinf(a[j]) && isinf(b[j]) && (a[j] > 0) == (b[j] > 0))) {
                            a[m] = a[j];
                            b[m] = b[j];
                            m++;
                        }
                    double err = rel_err(a, b, m, &nf);
                    if (err > worst) worst = err;
                    if (nf >= 0 || !(err <= tol)) {
                        print_error("attention n %d dh %d p %.1f: %s relative error %.3e%s\n", n,
                                    dh, p, names[i], err, nf >= 0 ? ", non-finite mismatch" : "");
                        bad = 1;
                    }
                }
                g_other.tf32 = 0;
                g_other.bf16 = 0;
                if (reduced && !(worst > (bf16 ? 1e-4 : 1e-6))) {
                    print_error("attention dh %d %s: error %.3e, the rounding did not happen\n",
                                dh, bf16 ? "bf16" : "tf32", worst);
                    bad = 1;
                }
                printf("attn_softmax n %d dh %3d p %.1f %s%s: relative error %.2e%s\n", n, dh, p,
                       g_other.ops->name, tf32 ? " tf32" : bf16 ? " bf16" : "", worst,
                       bad ? "  FAILED" : "");
                failures += bad;
                for (int e = 0; e < 2; e++)
                    for (int i = 0; i < 3; i++) free(res[e][i]);
                free(qkv);
                free(dout);
            }
        tb_free(&tb);
    }
    assert_int_equal(failures, 0);
}

static void model_step_mean(void **state) { (void)state; model_step(0, 0, 0, 0); }
static void model_step_cls(void **state) { (void)state; model_step(1, 0, 0, 0); }
static void model_step_dual(void **state) { (void)state; model_step(0, 1, 0, 0); }
static void model_step_bf16(void **state) {
    (void)state;
    model_step(0, 0, 1, 0);
    model_step(1, 1, 1, 0);
}
static void model_step_tf32(void **state) {
    (void)state;
    model_step(0, 0, 2, 0);
    model_step(1, 1, 2, 0);
    model_step(0, 0, 2, 1);  // the SBM tiles on tensor cores
}
static void model_step_sbm(void **state) {
    (void)state;
    model_step(0, 0, 0, 1);
    model_step(1, 1, 0, 1);
    model_step(0, 0, 1, 1);
    model_step(0, 0, 0, 2);
    model_step(1, 1, 0, 2);
    model_step(0, 0, 1, 2);
}

int main(void) {
    char err[SBMT_ERR_LEN];
    kctx_init(&g_cpu, KB_CPU, 1);
    if (kctx_open(&g_other, KB_CUDA, 0, 0, err)) {
        printf("test_backend_ops: the CUDA backend cannot run here: %s; its cases are skipped\n",
               err);
        return 77;
    }
    seed_rng(11);
    int lens[3] = {5, 9, 16};
    uint32_t samples[3] = {4, 17, 3};
    tb_make(&g_tb, 3, 16, lens, samples, 12);
    tb_pad(&g_tb, 1, 4);  // a padded position inside a sequence: masks matter
    for (int i = 0; i < 8; i++) g_labels[i] = (i * 3) % C;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(compare_all),
        cmocka_unit_test(attn_tiles),
        cmocka_unit_test(model_step_mean),
        cmocka_unit_test(model_step_cls),
        cmocka_unit_test(model_step_dual),
        cmocka_unit_test(model_step_bf16),
        cmocka_unit_test(model_step_tf32),
        cmocka_unit_test(model_step_sbm),
        cmocka_unit_test(sbm_fastrg_graphs),
        cmocka_unit_test(sbm_fastrg_graphs_many),
    };
    // A part of the table (ctest splits the long sanitizer run in two): cmocka's glob patterns.
    const char *only = getenv("SBMT_TEST_FILTER"), *skip = getenv("SBMT_TEST_SKIP");
    if (only && *only) cmocka_set_test_filter(only);
    if (skip && *skip) cmocka_set_skip_filter(skip);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    kctx_close(&g_other);
    return rc;
}
