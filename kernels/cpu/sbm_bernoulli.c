// sbm_bernoulli.c: fused probabilities and Bernoulli draws of the dense sampler (see
// sbm_bernoulli.h). The 6 x 16 register tile is the usual AVX2 shape: 12 accumulators, two
// loads of a key panel row and six broadcasts per cluster index.
#include "kernels/cpu/sbm_bernoulli.h"

#include <string.h>

#include "kernels/sbm_rule.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define BERN_AVX2 1
#endif

int bern_fast(void) {
#ifdef BERN_AVX2
    return 1;
#else
    return 0;
#endif
}

size_t bern_keys_floats(int L, int kc) {
    return (size_t)((L + BERN_KEYS - 1) / BERN_KEYS) * BERN_KEYS * (size_t)kc;
}

void bern_pack_keys(float *Ykp, uint16_t *valid, const float *Yk, int ld, const float *mask, int L,
                    int kc) {
    const int np = (L + BERN_KEYS - 1) / BERN_KEYS;
    for (int p = 0; p < np; p++) {
        float *dst = Ykp + (size_t)p * kc * BERN_KEYS;
        uint16_t v = 0;
        for (int jj = 0; jj < BERN_KEYS; jj++) {
            const int j = p * BERN_KEYS + jj;
            if (j < L && mask[j] != 0.0f) v |= (uint16_t)(1u << jj);
            for (int c = 0; c < kc; c++)
                dst[(size_t)c * BERN_KEYS + jj] = j < L ? Yk[(size_t)j * ld + c] : 0.0f;
        }
        valid[p] = v;
    }
}

static inline int append_bits(int *col, int c, uint32_t bits, int j0) {
    while (bits) {
        col[c++] = j0 + __builtin_ctz(bits);
        bits &= bits - 1;
    }
    return c;
}

#ifdef BERN_AVX2
// 8 edge flags: sbm_rule.h's u < thr with thr = (int)(min(1, p + eps) * 2^24), vectorised.
static inline uint32_t flags8(__m256 p, const uint32_t *w, __m256 veps) {
    const __m256 one = _mm256_set1_ps(1.0f), two24 = _mm256_set1_ps(16777216.0f);
    __m256i thr =
        _mm256_cvttps_epi32(_mm256_mul_ps(_mm256_min_ps(_mm256_add_ps(p, veps), one), two24));
    __m256i u = _mm256_srli_epi32(_mm256_loadu_si256((const __m256i *)w), 8);
    return (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(thr, u)));
}
#endif

void bern_rows(int *const *col, int *count, const float *T1, int ldt, int R, const float *Ykp,
               const uint16_t *valid, int L, int kc, float eps, const uint32_t *const *words,
               int simd) {
    const int np = (L + BERN_KEYS - 1) / BERN_KEYS;
    for (int r = 0; r < R; r++) count[r] = 0;
    (void)simd;
#ifdef BERN_AVX2
    if (simd) {
        // Rows past R repeat row 0; their results are not used.
        const float *t[BERN_ROWS];
        for (int r = 0; r < BERN_ROWS; r++) t[r] = T1 + (size_t)(r < R ? r : 0) * ldt;
        const __m256 veps = _mm256_set1_ps(eps);
        for (int p = 0; p < np; p++) {
            const float *y = Ykp + (size_t)p * kc * BERN_KEYS;
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00;
            __m256 a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
            for (int c = 0; c < kc; c++) {
                const __m256 y0 = _mm256_loadu_ps(y + (size_t)c * BERN_KEYS);
                const __m256 y1 = _mm256_loadu_ps(y + (size_t)c * BERN_KEYS + 8);
#define BERN_ROW(r, lo, hi)                             \
    do {                                                \
        const __m256 b = _mm256_broadcast_ss(t[r] + c); \
        lo = _mm256_fmadd_ps(b, y0, lo);                \
        hi = _mm256_fmadd_ps(b, y1, hi);                \
    } while (0)
                BERN_ROW(0, a00, a01);
                BERN_ROW(1, a10, a11);
                BERN_ROW(2, a20, a21);
                BERN_ROW(3, a30, a31);
                BERN_ROW(4, a40, a41);
                BERN_ROW(5, a50, a51);
#undef BERN_ROW
            }
            const __m256 lo[BERN_ROWS] = {a00, a10, a20, a30, a40, a50};
            const __m256 hi[BERN_ROWS] = {a01, a11, a21, a31, a41, a51};
            const int j0 = p * BERN_KEYS;
            for (int r = 0; r < R; r++) {
                const uint32_t *w = words[r] + j0;
                uint32_t bits = flags8(lo[r], w, veps) | flags8(hi[r], w + 8, veps) << 8;
                count[r] = append_bits(col[r], count[r], bits & valid[p], j0);
            }
        }
        return;
    }
#endif
    for (int r = 0; r < R; r++) {
        const float *t = T1 + (size_t)r * ldt;
        for (int p = 0; p < np; p++) {
            const float *y = Ykp + (size_t)p * kc * BERN_KEYS;
            uint32_t bits = 0;
            for (int jj = 0; jj < BERN_KEYS; jj++) {
                float acc = 0.0f;
                for (int c = 0; c < kc; c++) acc += t[c] * y[(size_t)c * BERN_KEYS + jj];
                bits |= (uint32_t)sbm_edge_drawn(words[r][p * BERN_KEYS + jj],
                                                 sbm_edge_threshold(acc, eps))
                        << jj;
            }
            count[r] = append_bits(col[r], count[r], bits & valid[p], p * BERN_KEYS);
        }
    }
}
