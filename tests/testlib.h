// testlib.h: what the kernel tests (test_kernels.c, test_sbm.c) share: seeded random inputs
// and float buffers, packed-batch construction (tbatch), and the finite-difference gradient
// checker with its tolerances (TOL_DENSE, TOL_ATTN).
//
// Header-only: every function is static inline, so a test file that does not call one of them
// gets no -Wunused-function warning. The including file must already have included cmocka.h
// (which itself needs setjmp.h, stdarg.h, stddef.h and stdint.h first): assert_true and
// print_error come from there. check_grad pads the name of each check to
// TESTLIB_GRAD_NAME_WIDTH columns (34 unless the including file defines it first).
//
// Method. For an op y = f(x) draw a fixed random projection R shaped like y and define the
// scalar L(x) = sum(R * f(x)), accumulated in double. Its gradient w.r.t. any input is exactly
// what the op's backward returns when called with dout = R. The numerical gradient is the
// central difference (L(x + h e_i) - L(x - h e_i)) / (x_i^+ - x_i^-), where x_i^+- are the
// float32 values actually stored (so the rounding of x_i +- h does not bias the step).
//
// Tolerances. An entry passes when |a - n| <= atol + rtol * max(|a|, |n|), and the whole
// sample must also satisfy ||a - n||_2 <= l2tol * ||n||_2. The error of n has two parts:
//  * truncation: (h^2 / 6) f'''(x). Every input here is O(1) and so are the third derivatives
//    of these ops (GELU, LayerNorm with unit variance, softmax of O(1) scores), so with
//    h = 1e-2 this is <~ 2e-5 relative to the gradient; the linear ops (linear, embed,
//    pooling, dropout) have none.
//  * float32 rounding of the forward: only the outputs that x_i touches differ between
//    L(x+) and L(x-) (all other terms are bitwise identical, and the double accumulation adds
//    ~1e-16). Each such output is a float32 sum of K terms with error <~ sqrt(K) * u * sum|terms|
//    (u = 6e-8; worst case K * u). For attention, a key/value entry touches up to M = L * dh = 280
//    outputs (the attention test of test_kernels.c), each a K = 70-term sum of O(1) terms:
//    sqrt(M) * sqrt(K) * u * O(1) ~ 1e-5 in L, divided by 2h = 2e-2 gives ~5e-4 absolute in the
//    worst case; the smaller ops stay around 1e-5.
// Hence atol = 2e-3 (attention) / 5e-4 (others) absorbs the rounding noise of near-zero
// gradients, rtol = 5e-3 covers truncation with a wide margin, and the aggregate l2tol = 1e-3
// (the noise averages out over the sample) catches a 1 % error in all entries, which a
// per-entry rtol alone would not (test_self_check in test_kernels.c proves both detectors fire).
#ifndef SBMT_TESTS_TESTLIB_H
#define SBMT_TESTS_TESTLIB_H

#ifndef CMOCKA_H_
#error "include cmocka.h (after setjmp.h, stdarg.h, stddef.h, stdint.h) before testlib.h"
#endif

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/kernels.h"

#ifndef TESTLIB_GRAD_NAME_WIDTH
#define TESTLIB_GRAD_NAME_WIDTH 34
#endif

// ---------------------------------------------------------------- random numbers, buffers

static uint64_t g_rng = 1;
static inline void seed_rng(uint64_t s) {
    g_rng = s * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
}
static inline uint64_t next_u64(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
static inline double urand(void) { return (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
static inline float randn(void) {
    double u1 = urand(), u2 = urand();
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
static inline int randint(int n) { return (int)(next_u64() % (uint64_t)n); }

// The buffers below hold at least one element, so n = 0 is allowed.
static inline float *randn_buf(size_t n, float scale) {
    float *p = xmalloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = scale * randn();
    return p;
}
static inline float *fill_buf(size_t n, float v) {
    float *p = xmalloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}
static inline float *copy_buf(const float *x, size_t n) {
    float *p = xmalloc((n ? n : 1) * sizeof(float));
    memcpy(p, x, n * sizeof(float));
    return p;
}
static inline double dot_rd(const float *R, const float *y, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)R[i] * (double)y[i];
    return s;
}
// |x - y| <= tol * (1 + |y|) elementwise; returns the index of the first failure or -1.
static inline long first_mismatch(const float *x, const float *y, size_t n, double tol) {
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)x[i] - (double)y[i]);
        if (!(d <= tol * (1.0 + fabs((double)y[i])))) return (long)i;
    }
    return -1;
}
static inline void assert_close(const char *what, const float *x, const float *y, size_t n,
                                double tol) {
    long i = first_mismatch(x, y, n, tol);
    if (i >= 0)
        print_error("%s: entry %ld: got %.9g, expected %.9g (tol %.1e)\n", what, i, x[i], y[i],
                    tol);
    assert_true(i < 0);
}

// ---------------------------------------------------------------- packed batches

typedef struct {
    kbatch bt;
} tbatch;

// B sequences of the given lengths (padded length n), random ids in 1..V-1 (mask 1).
static inline void tb_make(tbatch *tb, int B, int n, const int *lens, const uint32_t *samples,
                           int V) {
    kbatch *bt = &tb->bt;
    bt->B = B;
    bt->n = n;
    bt->len = xmalloc(sizeof(int) * (size_t)B);
    bt->off = xmalloc(sizeof(int) * (size_t)(B + 1));
    bt->sample = xmalloc(sizeof(uint32_t) * (size_t)B);
    bt->off[0] = 0;
    for (int b = 0; b < B; b++) {
        bt->len[b] = lens[b];
        bt->off[b + 1] = bt->off[b] + lens[b];
        bt->sample[b] = samples[b];
    }
    bt->T = bt->off[B];
    bt->ids = xmalloc(sizeof(int32_t) * (size_t)(bt->T > 0 ? bt->T : 1));
    bt->mask = xmalloc(sizeof(float) * (size_t)(bt->T > 0 ? bt->T : 1));
    for (int r = 0; r < bt->T; r++) {
        bt->ids[r] = 1 + randint(V - 1);
        bt->mask[r] = 1.0f;
    }
}
// Position t of sequence b becomes padding (id 0, mask 0).
static inline void tb_pad(tbatch *tb, int b, int t) {
    int r = tb->bt.off[b] + t;
    tb->bt.ids[r] = 0;
    tb->bt.mask[r] = 0.0f;
}
static inline void tb_free(tbatch *tb) {
    free(tb->bt.len);
    free(tb->bt.off);
    free(tb->bt.sample);
    free(tb->bt.ids);
    free(tb->bt.mask);
}

// ---------------------------------------------------------------- gradient checking

typedef double (*loss_fn)(void *ctx);

typedef struct {
    double h, atol, rtol, l2tol;
} gtol;

// Step and tolerances derived in the comment at the top of this file.
__attribute__((unused)) static const gtol TOL_DENSE = {1e-2, 5e-4, 5e-3, 1e-3};
__attribute__((unused)) static const gtol TOL_ATTN = {1e-2, 2e-3, 5e-3, 1e-3};

typedef struct {
    size_t k;
    size_t *idx;
    double *a, *num;
} gsample;

static inline void gsample_free(gsample *g) {
    free(g->idx);
    free(g->a);
    free(g->num);
}

// Numerical gradient of f w.r.t. x[0..n) at all coordinates (n <= maxk) or a random sample of
// maxk distinct ones, paired with the analytical gradient ga at the same coordinates.
static inline gsample fd_sample(loss_fn f, void *ctx, float *x, size_t n, const float *ga,
                                size_t maxk, double h) {
    gsample g;
    size_t *perm = xmalloc(sizeof(size_t) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) perm[i] = i;
    g.k = n <= maxk ? n : maxk;
    if (g.k < n)
        for (size_t i = 0; i < g.k; i++) {  // partial Fisher-Yates
            size_t j = i + (size_t)(next_u64() % (uint64_t)(n - i));
            size_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
    g.idx = perm;
    g.a = xmalloc(sizeof(double) * (g.k ? g.k : 1));
    g.num = xmalloc(sizeof(double) * (g.k ? g.k : 1));
    for (size_t s = 0; s < g.k; s++) {
        size_t i = perm[s];
        float x0 = x[i];
        float xp = (float)((double)x0 + h), xm = (float)((double)x0 - h);
        x[i] = xp;
        double lp = f(ctx);
        x[i] = xm;
        double lm = f(ctx);
        x[i] = x0;
        g.num[s] = (lp - lm) / ((double)xp - (double)xm);
        g.a[s] = ga[i];
    }
    return g;
}

typedef struct {
    size_t nbad, worst;
    double worst_ratio;  // max over entries of |a - n| / (atol + rtol * max(|a|, |n|))
    double max_err, rel_l2, max_a, max_n;
} gstats;

static inline gstats grad_stats(const double *a, const double *num, size_t k, gtol t) {
    gstats s = {0, 0, 0.0, 0.0, 0.0, 0.0, 0.0};
    double se = 0.0, sn = 0.0;
    for (size_t i = 0; i < k; i++) {
        double err = fabs(a[i] - num[i]);
        double bound = t.atol + t.rtol * fmax(fabs(a[i]), fabs(num[i]));
        double ratio = err / bound;
        if (!(err <= bound)) s.nbad++;
        if (!(ratio <= s.worst_ratio)) {  // NaN becomes the worst
            s.worst_ratio = ratio;
            s.worst = i;
        }
        if (err > s.max_err) s.max_err = err;
        s.max_a = fmax(s.max_a, fabs(a[i]));
        s.max_n = fmax(s.max_n, fabs(num[i]));
        se += (a[i] - num[i]) * (a[i] - num[i]);
        sn += num[i] * num[i];
    }
    s.rel_l2 = sqrt(se) / fmax(sqrt(sn), 1e-300);
    if (isnan(se)) s.rel_l2 = NAN;
    return s;
}

// The comparison: every entry within atol + rtol * max(|a|, |n|) and the whole sample within
// l2tol relative L2 error.
static inline bool grad_match(const double *a, const double *num, size_t k, gtol t) {
    gstats s = grad_stats(a, num, k, t);
    return s.nbad == 0 && s.rel_l2 <= t.l2tol;
}

// Not vacuous: at least min(k, 3) numerical entries and the analytical maximum clearly above
// the noise floor atol.
static inline bool nonvacuous(const gsample *g, gtol t) {
    size_t big = 0;
    double maxa = 0.0;
    for (size_t i = 0; i < g->k; i++) {
        if (fabs(g->num[i]) > 10.0 * t.atol) big++;
        maxa = fmax(maxa, fabs(g->a[i]));
    }
    size_t need = g->k < 3 ? g->k : 3;
    return g->k > 0 && big >= need && maxa > 10.0 * t.atol;
}

// The whole check of one gradient: sample, compare, print one line of statistics (and the worst
// entry on failure), assert that it matches and is not vacuous.
static inline void check_grad(const char *what, loss_fn f, void *ctx, float *x, size_t n,
                              const float *ga, size_t maxk, gtol t) {
    gsample g = fd_sample(f, ctx, x, n, ga, maxk, t.h);
    gstats s = grad_stats(g.a, g.num, g.k, t);
    bool ok = grad_match(g.a, g.num, g.k, t), nv = nonvacuous(&g, t);
    printf("    %-*s k=%5zu max|g|=%8.3g max|a-n|=%8.2e worst err/bound=%5.3f relL2=%8.2e\n",
           TESTLIB_GRAD_NAME_WIDTH, what, g.k, s.max_n, s.max_err, s.worst_ratio, s.rel_l2);
    if (!ok)
        print_error("%s: %zu of %zu entries out of tolerance, relL2 %.3e (limit %.1e); worst at "
                    "index %zu: analytical %.8g numerical %.8g\n",
                    what, s.nbad, g.k, s.rel_l2, t.l2tol, g.k ? g.idx[s.worst] : 0,
                    g.k ? g.a[s.worst] : 0.0, g.k ? g.num[s.worst] : 0.0);
    if (!nv) print_error("%s: vacuous check: gradients are ~0\n", what);
    gsample_free(&g);
    assert_true(ok);
    assert_true(nv);
}

#endif  // SBMT_TESTS_TESTLIB_H
