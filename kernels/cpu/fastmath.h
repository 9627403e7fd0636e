// fastmath.h: vectorisable elementwise math for the CPU hot loops (softmax exponentials,
// batched Philox). libm's expf is a scalar call; this one inlines into SIMD loops.
#ifndef SBMT_FASTMATH_H
#define SBMT_FASTMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/philox.h"

// exp(x) with relative error < 3e-7 over [-87, 88] (Cephes expf polynomial after reduction
// by ln 2); returns exactly 0 below -87 (and for -inf), so masked scores contribute nothing.
static inline float fast_expf(float x) {
    float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = floorf(xc * 1.44269504088896341f + 0.5f);
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    // 2^n from the bits of n + 1.5 * 2^23 (whose low mantissa bits hold n), in unsigned
    // arithmetic: no float-to-int conversion, so a NaN x gives a NaN result, not undefined
    // behaviour.
    float t = n + 12582912.0f;
    uint32_t tb;
    memcpy(&tb, &t, sizeof(tb));
    uint32_t bits = (tb - 0x4B400000u + 127u) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    return x < -87.0f ? 0.0f : y * scale;
}

#if defined(__AVX2__)
#include <immintrin.h>

// Eight Philox4x32-10 blocks at once: counters c0 (per lane) and the stream's c1..c3, key;
// out receives the blocks one after another (out[4*l + w]), transposed in registers.
static inline void philox8_avx2(const uint32_t *c0in, rng_stream s, uint32_t *out) {
    const __m256i M0 = _mm256_set1_epi32((int)0xD2511F53u), M1 = _mm256_set1_epi32((int)0xCD9E8D57u);
    __m256i c0 = _mm256_loadu_si256((const __m256i *)c0in);
    __m256i c1 = _mm256_set1_epi32((int)s.c1), c2 = _mm256_set1_epi32((int)s.c2);
    __m256i c3 = _mm256_set1_epi32((int)s.c3);
    uint32_t k0 = s.k0, k1 = s.k1;
    for (int r = 0; r < 10; r++) {
        // 32x32 -> 64-bit products of even and odd lanes, split into high and low words.
        __m256i pe0 = _mm256_mul_epu32(c0, M0), po0 = _mm256_mul_epu32(_mm256_srli_epi64(c0, 32), M0);
        __m256i pe1 = _mm256_mul_epu32(c2, M1), po1 = _mm256_mul_epu32(_mm256_srli_epi64(c2, 32), M1);
        __m256i hi0 = _mm256_blend_epi32(_mm256_srli_epi64(pe0, 32), po0, 0xAA);
        __m256i lo0 = _mm256_blend_epi32(pe0, _mm256_slli_epi64(po0, 32), 0xAA);
        __m256i hi1 = _mm256_blend_epi32(_mm256_srli_epi64(pe1, 32), po1, 0xAA);
        __m256i lo1 = _mm256_blend_epi32(pe1, _mm256_slli_epi64(po1, 32), 0xAA);
        c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32((int)k0));
        c1 = lo1;
        c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32((int)k1));
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    // 4 x 8 words -> 8 blocks of 4: interleave words, then blocks, then 128-bit halves.
    __m256i t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpackhi_epi32(c0, c1);
    __m256i t2 = _mm256_unpacklo_epi32(c2, c3), t3 = _mm256_unpackhi_epi32(c2, c3);
    __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    _mm256_storeu_si256((__m256i *)out, _mm256_permute2x128_si256(u0, u1, 0x20));
    _mm256_storeu_si256((__m256i *)(out + 8), _mm256_permute2x128_si256(u2, u3, 0x20));
    _mm256_storeu_si256((__m256i *)(out + 16), _mm256_permute2x128_si256(u0, u1, 0x31));
    _mm256_storeu_si256((__m256i *)(out + 24), _mm256_permute2x128_si256(u2, u3, 0x31));
}
#endif

// Philox blocks of a stream for `count` block indices (consecutive from `first` when
// blocks == NULL, else blocks[i]) into out[4*i + w]; identical to rng_block() per block.
// Eight lanes at a time with AVX2 where available, else 16 lanes of portable code that the
// compiler vectorises.
static inline void philox_lanes(rng_stream s, uint32_t first, const uint32_t *blocks, int count,
                                uint32_t *out) {
    int base = 0;
#if defined(__AVX2__)
    for (; base + 8 <= count; base += 8) {
        uint32_t c[8];
        for (int l = 0; l < 8; l++) c[l] = blocks ? blocks[base + l] : first + (uint32_t)(base + l);
        philox8_avx2(c, s, out + 4 * base);
    }
#endif
    enum { W = 16 };
    for (; base < count; base += W) {
        int m = count - base < W ? count - base : W;
        uint32_t c0[W], c1[W], c2[W], c3[W];
        for (int l = 0; l < W; l++) {
            c0[l] = blocks ? (l < m ? blocks[base + l] : 0u) : first + (uint32_t)(base + l);
            c1[l] = s.c1;
            c2[l] = s.c2;
            c3[l] = s.c3;
        }
        uint32_t k0 = s.k0, k1 = s.k1;
        for (int r = 0; r < 10; r++) {
            for (int l = 0; l < W; l++) {
                uint64_t p0 = (uint64_t)0xD2511F53u * c0[l];
                uint64_t p1 = (uint64_t)0xCD9E8D57u * c2[l];
                uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[l] ^ k0;
                uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[l] ^ k1;
                c1[l] = (uint32_t)p1;
                c3[l] = (uint32_t)p0;
                c0[l] = n0;
                c2[l] = n2;
            }
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        for (int l = 0; l < m; l++) {
            out[4 * (base + l) + 0] = c0[l];
            out[4 * (base + l) + 1] = c1[l];
            out[4 * (base + l) + 2] = c2[l];
            out[4 * (base + l) + 3] = c3[l];
        }
    }
}

static inline void philox_blocks(rng_stream s, uint32_t first, int count, uint32_t *out) {
    philox_lanes(s, first, NULL, count, out);
}

// Dropout factors of elements e0 .. e0+count-1 of a stream: ks[j] = keep ? scale : 0 under the
// rule of dropout.h. scratch holds 4 * (count / 8 + 2) words; its words are turned into factors
// two at a time (low half: even element, high half: odd element) in place, which vectorises.
static inline void dropout_factors(float *ks, uint32_t e0, int count, rng_stream s, uint32_t thr,
                                   float scale, uint32_t *scratch) {
    if (count <= 0) return;
    uint32_t b0 = e0 >> 3, b1 = (e0 + (uint32_t)count - 1) >> 3;
    int nwords = 4 * (int)(b1 - b0 + 1);
    philox_blocks(s, b0, (int)(b1 - b0 + 1), scratch);
    uint32_t skip = e0 & 7u;  // elements of block b0 before e0
    enum { CH = 512 };
    float tmp[2 * CH];
    for (int w0 = 0; w0 < nwords; w0 += CH) {
        int nw = nwords - w0 < CH ? nwords - w0 : CH;
        for (int t = 0; t < nw; t++) {
            uint32_t w = scratch[w0 + t];
            tmp[2 * t] = (w & 0xFFFFu) >= thr ? scale : 0.0f;
            tmp[2 * t + 1] = (w >> 16) >= thr ? scale : 0.0f;
        }
        // Elements [2*w0, 2*(w0+nw)) of the block range map to ks[j] with j = elem - skip.
        int lo = 2 * w0 - (int)skip, hi = 2 * (w0 + nw) - (int)skip;
        int j0 = lo < 0 ? 0 : lo, j1 = hi < count ? hi : count;
        for (int j = j0; j < j1; j++) ks[j] = tmp[j - lo];
    }
}

#endif
