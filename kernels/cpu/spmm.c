// spmm.c: the straight-through products G B and G^T A over a CSR graph (see spmm.h).
//
// k is taken 32 floats (one chunk) at a time, with A, B and both results packed chunk-major
// ([chunk][row][32]): the source rows are H * k floats apart, a power of two, and unpacked
// would all fall into a few L1 sets. Rows go in blocks of SPMM_ROWS and columns in tiles of
// SPMM_TILE: a tile's B and GB rows (2 x 16 KB) stay in L1 while every row of the block adds
// w * B[j] to register accumulators (two sets, even and odd edges, so that FMA latency does
// not bound the rate) and w * A[i] (held in registers) to GB[j]. A row's edges are sorted, so
// its edges into a tile follow on from where the previous tile stopped. A sparse graph gets wider
// tiles: each (row, tile) visit and each reload of a tile has a fixed cost, so a tile is made
// wide enough for rows to have about SPMM_SEG edges in it (up to all columns in one tile).
#include "kernels/cpu/spmm.h"

#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SPMM_AVX2 1
#endif

enum { SPMM_ROWS = 64, SPMM_TILE = 128, SPMM_W = 32, SPMM_SEG = 8 };

size_t spmm_scratch_floats(int ncols, int kc) {
    size_t kw = (size_t)(kc / SPMM_W) * SPMM_W;
    return 2 * kw * ((size_t)ncols + SPMM_ROWS) + SPMM_ROWS;
}

// Packs columns [c0, c0 + 32) of n rows (stride ld) for every full chunk: dst[ch][i][0:32].
static void pack_chunks(float *dst, const float *src, int ld, int n, int nch) {
    for (int ch = 0; ch < nch; ch++)
        for (int i = 0; i < n; i++)
            memcpy(dst + ((size_t)ch * n + i) * SPMM_W, src + (size_t)i * ld + ch * SPMM_W,
                   sizeof(float) * SPMM_W);
}

static void unpack_add(float *dst, int ld, const float *src, int n, int nch) {
    for (int ch = 0; ch < nch; ch++)
        for (int i = 0; i < n; i++) {
            float *d = dst + (size_t)i * ld + ch * SPMM_W;
            const float *s = src + ((size_t)ch * n + i) * SPMM_W;
            for (int c = 0; c < SPMM_W; c++) d[c] += s[c];
        }
}

// Row i's edges from *pe while their column is below j1 and e < end, on one packed chunk:
// ga += w B[j], GB[j] += w a. Returns with *pe at the first edge not taken.
static void row_tile_c(float *ga, float *GB, const float *a, const int *idx, const float *w,
                       int *pe, int end, int j1, const float *B) {
    int e = *pe;
    for (; e < end && idx[e] < j1; e++) {
        const float we = w[e], *b = B + (size_t)idx[e] * SPMM_W;
        float *gb = GB + (size_t)idx[e] * SPMM_W;
        for (int c = 0; c < SPMM_W; c++) {
            ga[c] += we * b[c];
            gb[c] += we * a[c];
        }
    }
    *pe = e;
}

#ifdef SPMM_AVX2
// The same with AVX2.
static inline void row_tile_avx2(float *ga, float *GB, const float *a, const int *idx,
                                 const float *w, int *pe, int end, int j1, const float *B) {
    int e = *pe;
    __m256 s0 = _mm256_loadu_ps(ga), s1 = _mm256_loadu_ps(ga + 8);
    __m256 s2 = _mm256_loadu_ps(ga + 16), s3 = _mm256_loadu_ps(ga + 24);
    __m256 t0 = _mm256_setzero_ps(), t1 = t0, t2 = t0, t3 = t0;
    const __m256 q0 = _mm256_loadu_ps(a), q1 = _mm256_loadu_ps(a + 8);
    const __m256 q2 = _mm256_loadu_ps(a + 16), q3 = _mm256_loadu_ps(a + 24);
#define SPMM_GB(gb, g)                                                               \
    do {                                                                             \
        _mm256_storeu_ps(gb, _mm256_fmadd_ps(g, q0, _mm256_loadu_ps(gb)));           \
        _mm256_storeu_ps(gb + 8, _mm256_fmadd_ps(g, q1, _mm256_loadu_ps(gb + 8)));   \
        _mm256_storeu_ps(gb + 16, _mm256_fmadd_ps(g, q2, _mm256_loadu_ps(gb + 16))); \
        _mm256_storeu_ps(gb + 24, _mm256_fmadd_ps(g, q3, _mm256_loadu_ps(gb + 24))); \
    } while (0)
    for (; e + 1 < end && idx[e + 1] < j1; e += 2) {
        const int j = idx[e], k = idx[e + 1];
        const __m256 g = _mm256_broadcast_ss(w + e), h = _mm256_broadcast_ss(w + e + 1);
        const float *b = B + (size_t)j * SPMM_W, *c = B + (size_t)k * SPMM_W;
        s0 = _mm256_fmadd_ps(g, _mm256_loadu_ps(b), s0);
        s1 = _mm256_fmadd_ps(g, _mm256_loadu_ps(b + 8), s1);
        s2 = _mm256_fmadd_ps(g, _mm256_loadu_ps(b + 16), s2);
        s3 = _mm256_fmadd_ps(g, _mm256_loadu_ps(b + 24), s3);
        t0 = _mm256_fmadd_ps(h, _mm256_loadu_ps(c), t0);
        t1 = _mm256_fmadd_ps(h, _mm256_loadu_ps(c + 8), t1);
        t2 = _mm256_fmadd_ps(h, _mm256_loadu_ps(c + 16), t2);
        t3 = _mm256_fmadd_ps(h, _mm256_loadu_ps(c + 24), t3);
        SPMM_GB(GB + (size_t)j * SPMM_W, g);
        SPMM_GB(GB + (size_t)k * SPMM_W, h);
    }
    if (e < end && idx[e] < j1) {
        const int j = idx[e];
        const __m256 g = _mm256_broadcast_ss(w + e);
        const float *b = B + (size_t)j * SPMM_W;
        s0 = _mm256_fmadd_ps(g, _mm256_loadu_ps(b), s0);
        s1 = _mm256_fmadd_ps(g, _mm256_loadu_ps(b + 8), s1);
        s2 = _mm256_fmadd_ps(g, _mm256_loadu_ps(b + 16), s2);
        s3 = _mm256_fmadd_ps(g, _mm256_loadu_ps(b + 24), s3);
        SPMM_GB(GB + (size_t)j * SPMM_W, g);
        e++;
    }
#undef SPMM_GB
    _mm256_storeu_ps(ga, _mm256_add_ps(s0, t0));
    _mm256_storeu_ps(ga + 8, _mm256_add_ps(s1, t1));
    _mm256_storeu_ps(ga + 16, _mm256_add_ps(s2, t2));
    _mm256_storeu_ps(ga + 24, _mm256_add_ps(s3, t3));
    *pe = e;
}
#endif

void spmm_pair(float *GA, float *GB, int ldo, const int *ptr, const int *idx, const float *w,
               int rows, int ncols, const float *A, const float *B, int ldy, int kc, float *scratch,
               int simd) {
    (void)simd;
    if (rows <= 0 || ptr[rows] == ptr[0]) return;
    const int nch = kc / SPMM_W;
    // Column tile: SPMM_TILE doubled until a row's expected edges in a tile reach SPMM_SEG.
    const double deg = (double)(ptr[rows] - ptr[0]) / rows;
    int tile = SPMM_TILE;
    while (tile < ncols && deg * tile < (double)SPMM_SEG * ncols) tile *= 2;
    if (nch > 0) {
        const size_t kw = (size_t)nch * SPMM_W;
        float *Bp = scratch, *GBp = Bp + kw * ncols, *Ap = GBp + kw * ncols;
        float *GAp = Ap + kw * SPMM_ROWS;
        int *cur = (int *)(GAp + kw * SPMM_ROWS);
        pack_chunks(Bp, B, ldy, ncols, nch);
        memset(GBp, 0, sizeof(float) * kw * ncols);
        for (int i0 = 0; i0 < rows; i0 += SPMM_ROWS) {
            const int R = rows - i0 < SPMM_ROWS ? rows - i0 : SPMM_ROWS;
            pack_chunks(Ap, A + (size_t)i0 * ldy, ldy, R, nch);
            memset(GAp, 0, sizeof(float) * kw * R);
            for (int ch = 0; ch < nch; ch++) {
                const float *Bc = Bp + (size_t)ch * ncols * SPMM_W;
                float *GBc = GBp + (size_t)ch * ncols * SPMM_W;
                const float *Ac = Ap + (size_t)ch * R * SPMM_W;
                float *GAc = GAp + (size_t)ch * R * SPMM_W;
                memcpy(cur, ptr + i0, sizeof(int) * (size_t)R);
                for (int j1 = tile; j1 - tile < ncols; j1 += tile)
                    for (int r = 0; r < R; r++) {
                        float *ga = GAc + (size_t)r * SPMM_W;
                        const float *a = Ac + (size_t)r * SPMM_W;
#ifdef SPMM_AVX2
                        if (simd) {
                            row_tile_avx2(ga, GBc, a, idx, w, &cur[r], ptr[i0 + r + 1], j1, Bc);
                            continue;
                        }
#endif
                        row_tile_c(ga, GBc, a, idx, w, &cur[r], ptr[i0 + r + 1], j1, Bc);
                    }
            }
            unpack_add(GA + (size_t)i0 * ldo, ldo, GAp, R, nch);
        }
        unpack_add(GB, ldo, GBp, ncols, nch);
    }
    const int c0 = nch * SPMM_W;
    if (c0 < kc) {
        // The last kc % 32 columns, edge by edge on the unpacked rows.
        for (int i = 0; i < rows; i++) {
            float *ga = GA + (size_t)i * ldo;
            const float *a = A + (size_t)i * ldy;
            for (int e = ptr[i]; e < ptr[i + 1]; e++) {
                const int j = idx[e];
                const float we = w[e], *b = B + (size_t)j * ldy;
                float *gb = GB + (size_t)j * ldo;
                for (int c = c0; c < kc; c++) {
                    ga[c] += we * b[c];
                    gb[c] += we * a[c];
                }
            }
        }
    }
}
