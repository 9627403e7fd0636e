// test_sbm_fastrg.c: the fastRG parts both backends share (kernels/sbm_fastrg.h and the Poisson
// count of kernels/sbm_graphs.c), on the CPU: the alias table reproduces its weights exactly
// (zero-weight block pairs are never drawn), draws map uniforms to outcomes as the table says,
// the pair uniform and the endpoint targets stay in range and in order, and the edge count is
// Poisson (mean and variance over many streams, degenerate rates give 0).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "tests/testlib.h"

#include "kernels/sbm.h"
#include "kernels/sbm_fastrg.h"

// The probability the table gives outcome i: its own column plus what aliases hand it.
static void implied(const float *prob, const int *alias, int N, double *q) {
    for (int i = 0; i < N; i++) q[i] = 0.0;
    for (int i = 0; i < N; i++) {
        q[i] += prob[i];
        if (alias[i] != i) q[alias[i]] += 1.0 - prob[i];
    }
    for (int i = 0; i < N; i++) q[i] /= N;
}

static void alias_reproduces_weights(void **state) {
    (void)state;
    seed_rng(3);
    for (int kc = 1; kc <= 40; kc += 13) {
        const int K1 = kc + 1, N = K1 * K1;
        double cq[64], ck[64];
        float S[64 * 64];
        for (int u = 0; u < kc; u++) {
            cq[u] = 100.0 * urand();
            ck[u] = 100.0 * urand();
        }
        double sum = 0.0;
        for (int i = 0; i < kc * kc; i++) sum += S[i] = (float)(urand() * urand());
        for (int i = 0; i < kc * kc; i++) S[i] = (float)(S[i] / sum);
        S[0] = 0.0f;  // a zero block inside the k x k part too
        float *w = xmalloc(sizeof(float) * N), *prob = xmalloc(sizeof(float) * N);
        int *alias = xmalloc(sizeof(int) * N), *stack = xmalloc(sizeof(int) * N);
        double *q = xmalloc(sizeof(double) * N), tot = 0.0;
        for (int u = 0; u < K1; u++)
            for (int v = 0; v < K1; v++) {
                w[u * K1 + v] = sbm_pair_weight(cq, ck, 90.0, 90.0, S, kc, 0.01f, u, v);
                tot += w[u * K1 + v];
            }
        // The augmented matrix: zero off the diagonal of the extra row and column.
        for (int x = 0; x < kc; x++) {
            assert_true(w[x * K1 + kc] == 0.0f && w[kc * K1 + x] == 0.0f);
        }
        assert_true(w[kc * K1 + kc] == (float)(0.01f * 90.0 * 90.0));
        sbm_alias_build(w, 1, N, prob, alias, stack);
        implied(prob, alias, N, q);
        for (int i = 0; i < N; i++) {
            const double want = w[i] / tot;
            if (w[i] == 0.0f) {
                // Never drawn: no mass of its own and nobody aliases to it.
                assert_true(q[i] == 0.0);
            } else {
                assert_true(fabs(q[i] - want) <= 1e-5 * want + 1e-9);
            }
            assert_true(prob[i] >= 0.0f && prob[i] <= 1.0f && alias[i] >= 0 && alias[i] < N);
        }
        // Uniforms across each column of the table land where it says.
        for (int i = 0; i < N; i++) {
            const double lo = (i + 0.25 * prob[i] + 1e-9) / N, hi = (i + 0.5 + 0.49 * prob[i]) / N;
            const int dl = sbm_alias_draw(prob, alias, N, lo);
            if (prob[i] > 1e-6f || prob[i] == 0.0f)  // (tiny ones: below the uniform's resolution)
                assert_int_equal(dl, prob[i] > 0.0f ? i : alias[i]);
            else
                assert_true(dl == i || dl == alias[i]);
            const int d = sbm_alias_draw(prob, alias, N, hi);
            assert_true(d == i || d == alias[i]);
        }
        assert_true(sbm_alias_draw(prob, alias, N, 1.0 - 1e-17) < N);
        free(w);
        free(prob);
        free(alias);
        free(stack);
        free(q);
    }
}

// The shared parts as written, each floating-point operation forced in order through volatile:
// what the GPU computes. The CPU build reassociates (-fassociative-math) unless the header
// stops it, and a reassociated sum moves prob by an ulp, which moves a rare pair draw: the
// graphs of the two backends would differ by an edge now and then.
static float ref_pair_weight(const double *cq, const double *ck, double vq, double vk,
                             const float *Sh, int kc, float eps, int u, int v) {
    volatile double x = 0.0;
    if (u < kc && v < kc) {
        x = cq[u] * Sh[(size_t)u * kc + v];
        x = x * ck[v];
    }
    if (u == kc && v == kc) {
        x = (double)eps * vq;
        x = x * vk;
    }
    return (float)x;
}

static void ref_alias_build(const float *w, int N, float *prob, int *alias, int *stack) {
    volatile double sum = 0.0;
    for (int i = 0; i < N; i++) sum = sum + w[i];
    const double scale = N / sum;
    int ns = 0, nl = N;
    for (int i = 0; i < N; i++) {
        prob[i] = (float)(w[i] * scale);
        alias[i] = i;
        if (prob[i] < 1.0f) stack[ns++] = i;
        else stack[--nl] = i;
    }
    while (ns > 0 && nl < N) {
        int sm = stack[--ns], l = stack[nl++];
        alias[sm] = l;
        volatile float t = prob[l] + prob[sm];
        prob[l] = t - 1.0f;
        if (prob[l] < 1.0f) stack[ns++] = l;
        else stack[--nl] = l;
    }
    while (ns > 0) prob[stack[--ns]] = 1.0f;
    while (nl < N) prob[stack[nl++]] = 1.0f;
}

static void shared_parts_in_written_order(void **state) {
    (void)state;
    seed_rng(17);
    enum { KC = 32, K1 = KC + 1, N = K1 * K1 };
    static float w[N], wr[N], prob[N], probr[N], S[KC * KC];
    static int alias[N], aliasr[N], stack[N];
    double cq[K1], ck[K1];
    int differ = 0;
    for (int trial = 0; trial < 20; trial++) {
        for (int u = 0; u < KC; u++) {
            cq[u] = 300.0 * urand();
            ck[u] = 300.0 * urand();
        }
        for (int i = 0; i < KC * KC; i++) S[i] = (float)(urand() * urand() / (KC * KC));
        for (int u = 0; u < K1; u++)
            for (int v = 0; v < K1; v++) {
                w[u * K1 + v] = sbm_pair_weight(cq, ck, 280.0, 280.0, S, KC, 0.01f, u, v);
                wr[u * K1 + v] = ref_pair_weight(cq, ck, 280.0, 280.0, S, KC, 0.01f, u, v);
            }
        differ += memcmp(w, wr, sizeof(w)) != 0;
        sbm_alias_build(w, 1, N, prob, alias, stack);
        ref_alias_build(w, N, probr, aliasr, stack);
        differ += memcmp(prob, probr, sizeof(prob)) != 0 || memcmp(alias, aliasr, sizeof(alias)) != 0;
    }
    assert_int_equal(differ, 0);
}

static void pair_uniform_and_targets(void **state) {
    (void)state;
    assert_true(sbm_pair_u01(0, 0) == 0.0);
    const double top = sbm_pair_u01(0xFFFFFFFFu, 0xFFFFFFFFu);
    assert_true(top < 1.0 && top > 1.0 - 1e-15);
    // 53 bits: word 0 the top 32, word 3's top 21 below them.
    assert_true(sbm_pair_u01(1, 0) == 0x1p-32 && sbm_pair_u01(0, 1u << 11) == 0x1p-53);
    double prev = -1.0;
    for (uint64_t w = 0; w <= 0xFFFFFFFFull; w += 0x01000193ull) {
        const double t = sbm_draw_target((uint32_t)w, 37.5);
        assert_true(t > prev && t < 37.5);
        prev = t;
    }
    assert_true(sbm_draw_target(0, 5.0) == 0.0 && sbm_draw_target(0xFFFFFFFFu, 5.0) < 5.0);
}

static void poisson_counts(void **state) {
    (void)state;
    const double lams[] = {0.3, 4.0, 9.9, 10.1, 57.0, 3000.0, 2.5e6};
    for (size_t l = 0; l < sizeof(lams) / sizeof(lams[0]); l++) {
        const double lam = lams[l];
        const int N = 20000;
        double s = 0.0, s2 = 0.0;
        for (int i = 0; i < N; i++) {
            const rng_stream st = rng_make(11, RNG_GRAPH_COUNT, 3, 1, 2, (uint32_t)i);
            const int64_t m = sbm_fastrg_count(st, lam);
            assert_true(m >= 0);
            s += (double)m;
            s2 += (double)m * m;
        }
        const double mean = s / N, var = s2 / N - mean * mean;
        // The mean within 5 standard errors; the variance within 6% (N = 20000: its standard
        // error is about sqrt(2 / N) = 1% for large lambda).
        assert_true(fabs(mean - lam) <= 5.0 * sqrt(lam / N));
        assert_true(fabs(var / lam - 1.0) <= 0.06);
        // The same stream gives the same count (a pure function of its key).
        rng_stream st = rng_make(11, RNG_GRAPH_COUNT, 3, 1, 2, 7);
        assert_int_equal(sbm_fastrg_count(st, lam), sbm_fastrg_count(st, lam));
    }
    rng_stream st = rng_make(1, RNG_GRAPH_COUNT, 0, 0, 0, 0);
    assert_int_equal(sbm_fastrg_count(st, 0.0), 0);
    assert_int_equal(sbm_fastrg_count(st, -3.0), 0);
    assert_int_equal(sbm_fastrg_count(st, NAN), 0);
    assert_int_equal(sbm_fastrg_count(st, INFINITY), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(alias_reproduces_weights),
        cmocka_unit_test(shared_parts_in_written_order),
        cmocka_unit_test(pair_uniform_and_targets),
        cmocka_unit_test(poisson_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
