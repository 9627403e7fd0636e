// test_philox.c: Philox4x32-10 against the Random123 known-answer vectors, stream separation,
// and the dropout rule's rate.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kernels/dropout.h"
#include "kernels/cpu/fastmath.h"
#include "kernels/philox.h"

static void test_known_answers(void **state) {
    (void)state;
    // Random123 kat_vectors: counter[4] key[2] -> output[4].
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int t = 0; t < 3; t++) {
        philox4x32 c = {{kat[t][0], kat[t][1], kat[t][2], kat[t][3]}};
        philox4x32 r = philox4x32_10(c, kat[t][4], kat[t][5]);
        for (int i = 0; i < 4; i++) assert_int_equal(r.v[i], kat[t][6 + i]);
    }
}

static void test_streams_differ(void **state) {
    (void)state;
    // Changing any counter field or the seed changes the numbers.
    rng_stream base = rng_make(42, RNG_DROPOUT, 7, 1, 3, 1000);
    rng_stream other[] = {rng_make(43, RNG_DROPOUT, 7, 1, 3, 1000),
                          rng_make(42, RNG_GRAPH, 7, 1, 3, 1000),
                          rng_make(42, RNG_DROPOUT, 8, 1, 3, 1000),
                          rng_make(42, RNG_DROPOUT, 7, 2, 3, 1000),
                          rng_make(42, RNG_DROPOUT, 7, 1, 4, 1000),
                          rng_make(42, RNG_DROPOUT, 7, 1, 3, 1001)};
    philox4x32 a = rng_block(base, 5);
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        philox4x32 b = rng_block(other[i], 5);
        assert_true(a.v[0] != b.v[0] || a.v[1] != b.v[1]);
    }
    philox4x32 again = rng_block(base, 5);
    assert_memory_equal(&a, &again, sizeof(a));
}

static void test_uniform_moments(void **state) {
    (void)state;
    // Mean and variance of 4e5 uniforms within 5 standard errors of 1/2 and 1/12.
    rng_stream s = rng_make(1, RNG_DATA_ORDER, 0, 0, 0, 0);
    const int N = 400000;
    double sum = 0, sum2 = 0;
    for (int i = 0; i < N / 4; i++) {
        philox4x32 b = rng_block(s, (uint32_t)i);
        for (int j = 0; j < 4; j++) {
            double u = rng_u01(b.v[j]);
            assert_true(u >= 0.0 && u < 1.0);
            sum += u;
            sum2 += u * u;
        }
    }
    double mean = sum / N, var = sum2 / N - mean * mean;
    assert_true(fabs(mean - 0.5) < 5 * sqrt(1.0 / 12.0 / N));
    assert_true(fabs(var - 1.0 / 12.0) < 5 * sqrt(1.0 / 180.0 / N));
}

static void test_dropout_rate(void **state) {
    (void)state;
    const float ps[] = {0.1f, 0.5f, 0.9f};
    for (int k = 0; k < 3; k++) {
        rng_stream s = rng_make(9, RNG_DROPOUT, 1, 0, 0, 0);
        uint32_t thr = dropout_threshold(ps[k]);
        const int N = 200000;
        int dropped = 0;
        for (uint32_t e = 0; e < (uint32_t)N; e++) {
            philox4x32 b = rng_block(s, e >> 3);
            dropped += dropout_u16(b, e) < thr;
        }
        double p = ps[k], z = (dropped - N * p) / sqrt(N * p * (1 - p));
        assert_true(fabs(z) < 5.0);
    }
}

// The batched (SIMD) generator equals the scalar one block for block, for consecutive and for
// gathered counters and for counts that are not a multiple of the vector width.
static void test_batched_equals_scalar(void **state) {
    (void)state;
    rng_stream s = rng_make(0x123456789ULL, RNG_GRAPH, 17, 3, 5, 99);
    enum { N = 37 };
    uint32_t out[4 * N], blocks[N];
    for (int count = 1; count <= N; count += 6) {
        philox_blocks(s, 1000, count, out);
        for (int i = 0; i < count; i++) {
            philox4x32 r = rng_block(s, 1000 + (uint32_t)i);
            assert_memory_equal(out + 4 * i, r.v, sizeof(r.v));
        }
        for (int i = 0; i < count; i++) blocks[i] = (uint32_t)(i * 7919u + 13u);
        philox_lanes(s, 0, blocks, count, out);
        for (int i = 0; i < count; i++) {
            philox4x32 r = rng_block(s, blocks[i]);
            assert_memory_equal(out + 4 * i, r.v, sizeof(r.v));
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_streams_differ),
        cmocka_unit_test(test_uniform_moments),
        cmocka_unit_test(test_dropout_rate),
        cmocka_unit_test(test_batched_equals_scalar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
