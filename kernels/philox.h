// philox.h: Philox4x32-10 counter-based generator (Salmon et al., SC'11) and the counter layout
// that makes every random draw in sbmt a pure function of (seed, purpose, step, layer, head,
// sample, element). Header-only and host/device so CPU and CUDA produce identical numbers.
#ifndef SBMT_PHILOX_H
#define SBMT_PHILOX_H

#include <stdint.h>

#if defined(__CUDACC__)
#define SBMT_HD __host__ __device__ __forceinline__
#else
#define SBMT_HD static inline
#endif

typedef struct {
    uint32_t v[4];
} philox4x32;

SBMT_HD philox4x32 philox4x32_10(philox4x32 ctr, uint32_t k0, uint32_t k1) {
    const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    const uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)M0 * ctr.v[0];
        uint64_t p1 = (uint64_t)M1 * ctr.v[2];
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        philox4x32 n;
        n.v[0] = hi1 ^ ctr.v[1] ^ k0;
        n.v[1] = lo1;
        n.v[2] = hi0 ^ ctr.v[3] ^ k1;
        n.v[3] = lo0;
        ctr = n;
        k0 += W0;
        k1 += W1;
    }
    return ctr;
}

// What a stream of random numbers is for; part of the counter so streams never overlap.
enum {
    RNG_DATA_ORDER = 1,  // shuffling the training split
    RNG_DROPOUT = 2,     // dropout masks (layer/head fields say where)
    RNG_GRAPH = 3,       // SBM graph sampling
    RNG_INIT = 4,        // parameter initialisation
    RNG_GENERATE = 5,    // synthetic data generators
    RNG_GRAPH_COUNT = 6, // SBM graph sampling: the Poisson edge count
};

// A stream: key = run seed, counter words c1..c3 fixed, c0 = block index within the stream.
// c1 = global sample index, c2 = step, c3 = purpose (8 bits) | layer (8 bits) | head/slot (16 bits).
typedef struct {
    uint32_t k0, k1;
    uint32_t c1, c2, c3;
} rng_stream;

SBMT_HD rng_stream rng_make(uint64_t seed, uint32_t purpose, uint32_t step, uint32_t layer,
                            uint32_t head, uint32_t sample) {
    rng_stream s;
    s.k0 = (uint32_t)seed;
    s.k1 = (uint32_t)(seed >> 32);
    s.c1 = sample;
    s.c2 = step;
    s.c3 = (purpose << 24) | ((layer & 0xFFu) << 16) | (head & 0xFFFFu);
    return s;
}

// Four 32-bit words of block `block` of the stream.
SBMT_HD philox4x32 rng_block(rng_stream s, uint32_t block) {
    philox4x32 c;
    c.v[0] = block;
    c.v[1] = s.c1;
    c.v[2] = s.c2;
    c.v[3] = s.c3;
    return philox4x32_10(c, s.k0, s.k1);
}

// Uniform in [0, 1) with 24 random bits (exactly representable in float).
SBMT_HD float rng_u01(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

// Uniform in (0, 1] as a double with 32 bits, safe for log().
SBMT_HD double rng_u01_open(uint32_t x) { return ((double)x + 1.0) * (1.0 / 4294967296.0); }

#endif
