// sbm_edges.c: per-row SBM attention kernels on sampled edges (see sbm_edges.h).
//
// The AVX2 path holds a row's query (or output gradient) in NV = dh / 8 registers. Scores and
// dy . v are computed for eight edges at once and reduced across lanes together (two rounds of
// horizontal adds and one 128-bit swap for eight sums), so no edge pays a full horizontal sum.
#include "kernels/cpu/sbm_edges.h"

#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define EDGES_AVX2 1
#endif

static inline float clip1(float x) {
    return x > 1.0f ? 1.0f : (x < -1.0f ? -1.0f : x);
}

// ---------------------------------------------------------------- portable reference loops

static void scores_c(float *a, const int *col, int cnt, const float *q, const float *Kp, int dh,
                     float sc) {
    for (int e = 0; e < cnt; e++) {
        const float *k = Kp + (size_t)col[e] * dh;
        float s = 0.0f;
        for (int c = 0; c < dh; c++) s += q[c] * k[c];
        a[e] = s * sc;
    }
}

static void aggregate_c(float *y, const int *col, const float *a, const uint8_t *keep, int cnt,
                        const float *Vp, int dh, float dscale) {
    memset(y, 0, sizeof(float) * (size_t)dh);
    for (int e = 0; e < cnt; e++) {
        if (!keep[e]) continue;
        float w = a[e] * dscale;
        const float *v = Vp + (size_t)col[e] * dh;
        for (int c = 0; c < dh; c++) y[c] += w * v[c];
    }
}

static void bwd_row_c(float *dq, float *dKp, float *dVp, float *gv, const int *col, const float *a,
                      const uint8_t *keep, int cnt, const float *q, const float *dy, float Di,
                      const float *Kp, const float *Vp, int dh, float sc, float dscale, float reg) {
    memset(dq, 0, sizeof(float) * (size_t)dh);
    for (int e = 0; e < cnt; e++) {
        const int j = col[e];
        const float *v = Vp + (size_t)j * dh, *k = Kp + (size_t)j * dh;
        float *dv = dVp + (size_t)j * dh, *dk = dKp + (size_t)j * dh;
        float kf = keep[e] ? dscale : 0.0f, dad = 0.0f;
        for (int c = 0; c < dh; c++) dad += dy[c] * v[c];
        float at = a[e] * kf, ds = a[e] * (dad * kf - Di), s1 = sc * ds;
        for (int c = 0; c < dh; c++) {
            dv[c] += at * dy[c];
            dq[c] += s1 * k[c];
            dk[c] += s1 * q[c];
        }
        gv[e] = clip1(ds + reg);
    }
}

#ifdef EDGES_AVX2
// ---------------------------------------------------------------- AVX2, dh = 8 * NV

// Sum of x . R[cols[l]] over the NV vectors, unreduced (eight lanes).
static inline __attribute__((always_inline)) __m256 dot_lanes(const __m256 *x, const float *r,
                                                              int NV) {
    __m256 s = _mm256_mul_ps(x[0], _mm256_loadu_ps(r));
    for (int v = 1; v < NV; v++) s = _mm256_fmadd_ps(x[v], _mm256_loadu_ps(r + 8 * v), s);
    return s;
}

// out[l] = x . R[cols[l]] for the eight (possibly repeated) rows cols[0..8). Four rows are
// reduced to one register before the next four are loaded, to leave registers to the caller.
static inline __attribute__((always_inline)) __m256 dots8(const __m256 *x, const int *cols,
                                                          const float *R, int NV) {
    const size_t st = (size_t)(8 * NV);
    __m256 u0 = _mm256_hadd_ps(
        _mm256_hadd_ps(dot_lanes(x, R + cols[0] * st, NV), dot_lanes(x, R + cols[1] * st, NV)),
        _mm256_hadd_ps(dot_lanes(x, R + cols[2] * st, NV), dot_lanes(x, R + cols[3] * st, NV)));
    __m256 u1 = _mm256_hadd_ps(
        _mm256_hadd_ps(dot_lanes(x, R + cols[4] * st, NV), dot_lanes(x, R + cols[5] * st, NV)),
        _mm256_hadd_ps(dot_lanes(x, R + cols[6] * st, NV), dot_lanes(x, R + cols[7] * st, NV)));
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                         _mm256_permute2f128_ps(u0, u1, 0x31));
}

// The eight column indices starting at e; past cnt, repeats of a valid index (results unused).
static inline void cols8(int *c8, const int *col, int e, int cnt) {
    for (int l = 0; l < 8; l++) c8[l] = col[e + l < cnt ? e + l : cnt - 1];
}

static inline __attribute__((always_inline)) void scores_avx2(float *a, const int *col, int cnt,
                                                              const float *q, const float *Kp,
                                                              float sc, int NV) {
    __m256 x[8];
    const __m256 vs = _mm256_set1_ps(sc);
    for (int v = 0; v < NV; v++) x[v] = _mm256_mul_ps(vs, _mm256_loadu_ps(q + 8 * v));
    int e = 0;
    for (; e + 8 <= cnt; e += 8) _mm256_storeu_ps(a + e, dots8(x, col + e, Kp, NV));
    if (e < cnt) {
        int c8[8];
        float tmp[8];
        cols8(c8, col, e, cnt);
        _mm256_storeu_ps(tmp, dots8(x, c8, Kp, NV));
        for (int l = 0; e + l < cnt; l++) a[e + l] = tmp[l];
    }
}

static inline __attribute__((always_inline)) void aggregate_avx2(float *y, const int *col,
                                                                 const float *a,
                                                                 const uint8_t *keep, int cnt,
                                                                 const float *Vp, float dscale,
                                                                 int NV) {
    // Two accumulator sets (even and odd edges) halve the FMA dependency chains.
    __m256 y0[8], y1[8];
    for (int v = 0; v < NV; v++) y0[v] = y1[v] = _mm256_setzero_ps();
    int e = 0;
    for (; e + 2 <= cnt; e += 2) {
        const __m256 w0 = _mm256_set1_ps(keep[e] ? a[e] * dscale : 0.0f);
        const __m256 w1 = _mm256_set1_ps(keep[e + 1] ? a[e + 1] * dscale : 0.0f);
        const float *v0 = Vp + (size_t)col[e] * (8 * NV), *v1 = Vp + (size_t)col[e + 1] * (8 * NV);
        for (int v = 0; v < NV; v++) {
            y0[v] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(v0 + 8 * v), y0[v]);
            y1[v] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(v1 + 8 * v), y1[v]);
        }
    }
    if (e < cnt) {
        const __m256 w0 = _mm256_set1_ps(keep[e] ? a[e] * dscale : 0.0f);
        const float *v0 = Vp + (size_t)col[e] * (8 * NV);
        for (int v = 0; v < NV; v++)
            y0[v] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(v0 + 8 * v), y0[v]);
    }
    for (int v = 0; v < NV; v++) _mm256_storeu_ps(y + 8 * v, _mm256_add_ps(y0[v], y1[v]));
}

static inline __attribute__((always_inline)) void bwd_row_avx2(
    float *dq, float *dKp, float *dVp, float *gv, const int *col, const float *a,
    const uint8_t *keep, int cnt, const float *q, const float *dy, float Di, const float *Kp,
    const float *Vp, float sc, float dscale, float reg, int NV) {
    const int dh = 8 * NV;
    __m256 dyv[8], dqa[8];
    const __m256 vsc = _mm256_set1_ps(sc);
    for (int v = 0; v < NV; v++) {
        dyv[v] = _mm256_loadu_ps(dy + 8 * v);
        dqa[v] = _mm256_setzero_ps();
    }
    const __m256 vDi = _mm256_set1_ps(Di), vds = _mm256_set1_ps(dscale);
    const __m256 vreg = _mm256_set1_ps(reg), one = _mm256_set1_ps(1.0f);
    const __m256 mone = _mm256_set1_ps(-1.0f);
    for (int e = 0; e < cnt; e += 8) {
        const int n8 = cnt - e < 8 ? cnt - e : 8;
        int c8[8];
        const int *cp = col + e;
        __m256 av, kf;
        if (n8 == 8) {
            av = _mm256_loadu_ps(a + e);
            long long kb8;
            memcpy(&kb8, keep + e, 8);
            kf = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(kb8))),
                               vds);
        } else {
            float ab[8], kb[8];
            for (int l = 0; l < 8; l++) {
                ab[l] = l < n8 ? a[e + l] : 0.0f;
                kb[l] = l < n8 && keep[e + l] ? 1.0f : 0.0f;
            }
            av = _mm256_loadu_ps(ab);
            kf = _mm256_mul_ps(_mm256_loadu_ps(kb), vds);
            cols8(c8, col, e, cnt);
            cp = c8;
        }
        const __m256 dad = dots8(dyv, cp, Vp, NV);
        const __m256 ds = _mm256_mul_ps(av, _mm256_fmsub_ps(dad, kf, vDi));
        const __m256 gpv = _mm256_max_ps(mone, _mm256_min_ps(one, _mm256_add_ps(ds, vreg)));
        float at[8], s1[8];
        _mm256_storeu_ps(at, _mm256_mul_ps(av, kf));
        _mm256_storeu_ps(s1, _mm256_mul_ps(vsc, ds));
        if (n8 == 8) {
            _mm256_storeu_ps(gv + e, gpv);
        } else {
            float gp[8];
            _mm256_storeu_ps(gp, gpv);
            for (int l = 0; l < n8; l++) gv[e + l] = gp[l];
        }
        for (int l = 0; l < n8; l++) {
            const size_t j = (size_t)cp[l] * dh;
            const __m256 w_at = _mm256_broadcast_ss(at + l), w_s1 = _mm256_broadcast_ss(s1 + l);
            float *dv = dVp + j, *dk = dKp + j;
            const float *k = Kp + j;
            for (int v = 0; v < NV; v++) {
                dqa[v] = _mm256_fmadd_ps(w_s1, _mm256_loadu_ps(k + 8 * v), dqa[v]);
                _mm256_storeu_ps(dv + 8 * v,
                                 _mm256_fmadd_ps(w_at, dyv[v], _mm256_loadu_ps(dv + 8 * v)));
                _mm256_storeu_ps(dk + 8 * v, _mm256_fmadd_ps(w_s1, _mm256_loadu_ps(q + 8 * v),
                                                             _mm256_loadu_ps(dk + 8 * v)));
            }
        }
    }
    for (int v = 0; v < NV; v++) _mm256_storeu_ps(dq + 8 * v, dqa[v]);
}

// One specialised body per NV, so that every register array has a constant size.
// clang-format off
#define EDGES_DISPATCH(call)                  \
    switch (dh >> 3) {                        \
        case 1: call(1); return;              \
        case 2: call(2); return;              \
        case 3: call(3); return;              \
        case 4: call(4); return;              \
        case 5: call(5); return;              \
        case 6: call(6); return;              \
        case 7: call(7); return;              \
        case 8: call(8); return;              \
        default: break;                       \
    }
// clang-format on
#define EDGES_FAST(dh) ((dh) % 8 == 0 && (dh) >= 8 && (dh) <= 64)
#endif

int edges_fast(int dh) {
#ifdef EDGES_AVX2
    return EDGES_FAST(dh);
#else
    (void)dh;
    return 0;
#endif
}

void edges_scores(float *a, const int *col, int cnt, const float *q, const float *Kp, int dh,
                  float sc, int simd) {
    (void)simd;
    if (cnt <= 0) return;
#ifdef EDGES_AVX2
    if (simd && EDGES_FAST(dh)) {
#define CALL(NV) scores_avx2(a, col, cnt, q, Kp, sc, NV)
        EDGES_DISPATCH(CALL)
#undef CALL
    }
#endif
    scores_c(a, col, cnt, q, Kp, dh, sc);
}

void edges_aggregate(float *y, const int *col, const float *a, const uint8_t *keep, int cnt,
                     const float *Vp, int dh, float dscale, int simd) {
    (void)simd;
#ifdef EDGES_AVX2
    if (simd && EDGES_FAST(dh)) {
#define CALL(NV) aggregate_avx2(y, col, a, keep, cnt, Vp, dscale, NV)
        EDGES_DISPATCH(CALL)
#undef CALL
    }
#endif
    aggregate_c(y, col, a, keep, cnt, Vp, dh, dscale);
}

void edges_bwd_row(float *dq, float *dKp, float *dVp, float *gv, const int *col, const float *a,
                   const uint8_t *keep, int cnt, const float *q, const float *dy, float Di,
                   const float *Kp, const float *Vp, int dh, float sc, float dscale, float reg,
                   int simd) {
    (void)simd;
#ifdef EDGES_AVX2
    if (simd && EDGES_FAST(dh)) {
#define CALL(NV) \
    bwd_row_avx2(dq, dKp, dVp, gv, col, a, keep, cnt, q, dy, Di, Kp, Vp, sc, dscale, reg, NV)
        EDGES_DISPATCH(CALL)
#undef CALL
    }
#endif
    bwd_row_c(dq, dKp, dVp, gv, col, a, keep, cnt, q, dy, Di, Kp, Vp, dh, sc, dscale, reg);
}
