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
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    return x < -87.0f ? 0.0f : y * scale;
}

// Philox blocks of a stream for `count` block indices (consecutive from `first` when
// blocks == NULL, else blocks[i]) into out[4*i + w], 16 lanes at a time in a form the compiler
// vectorises; identical to rng_block() per block.
static inline void philox_lanes(rng_stream s, uint32_t first, const uint32_t *blocks, int count,
                                uint32_t *out) {
    enum { W = 16 };
    for (int base = 0; base < count; base += W) {
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
// rule of dropout.h. scratch holds 4 * (count / 8 + 2) words.
static inline void dropout_factors(float *ks, uint32_t e0, int count, rng_stream s, uint32_t thr,
                                   float scale, uint32_t *scratch) {
    if (count <= 0) return;
    uint32_t b0 = e0 >> 3, b1 = (e0 + (uint32_t)count - 1) >> 3;
    philox_blocks(s, b0, (int)(b1 - b0 + 1), scratch);
    uint32_t skip = e0 & 7u;  // elements of block b0 before e0
    for (int j = 0; j < count; j++) {
        uint32_t idx = skip + (uint32_t)j;  // element idx uses half idx & 1 of word idx >> 1
        uint32_t u = (scratch[idx >> 1] >> (16u * (idx & 1u))) & 0xFFFFu;
        ks[j] = u >= thr ? scale : 0.0f;
    }
}

#endif
