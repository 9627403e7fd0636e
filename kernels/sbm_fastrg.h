// sbm_fastrg.h: the parts of fastRG (SPEC.md section 2.4) that the CPU sampler and the CUDA
// edge path share, so both draw the same graph from the same Philox words: Vose's alias table
// over the (k+1)^2 block-pair weights, the pair draw from an edge's words 0 and 3, and the
// inverse-CDF target of an endpoint draw. Header-only and host/device; nothing here may depend
// on floating-point contraction (no a * b + c) or reassociation (kept off below), so nvcc and
// the host compiler compute the same bits.
#ifndef SBMT_SBM_FASTRG_H
#define SBMT_SBM_FASTRG_H

#include "kernels/philox.h"

// The CPU build reassociates floating-point sums (-fassociative-math, so reductions
// vectorise), which would reorder the alias table's sum and updates and the pair weights'
// products here: an ulp in prob moves a rare pair draw, and the CPU's graph would differ from
// the GPU's (nvcc keeps the written order) by an edge now and then. The per-unit code up to
// the matching pop keeps the written order on every host compiler.
#if defined(__CUDACC__)
#elif defined(__clang__)
#pragma float_control(precise, on, push)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("no-associative-math")
#endif

// Vose's alias table over N weights w[i * stride] (not all zero): prob[i] the chance to keep
// i, alias[i] the other outcome; stack [N] is work space. Sequential and in index order, so
// every caller gets the same table bit for bit.
SBMT_HD void sbm_alias_build(const float *w, size_t stride, int N, float *prob, int *alias,
                             int *stack) {
    double sum = 0.0;
    for (int i = 0; i < N; i++) sum += w[(size_t)i * stride];
    double scale = N / sum;
    int ns = 0, nl = N;  // small from the front, large from the back of stack
    for (int i = 0; i < N; i++) {
        prob[i] = (float)(w[(size_t)i * stride] * scale);
        alias[i] = i;
        if (prob[i] < 1.0f)
            stack[ns++] = i;
        else
            stack[--nl] = i;
    }
    while (ns > 0 && nl < N) {
        int s = stack[--ns], l = stack[nl++];
        alias[s] = l;
        prob[l] = (prob[l] + prob[s]) - 1.0f;
        if (prob[l] < 1.0f)
            stack[ns++] = l;
        else
            stack[--nl] = l;
    }
    // Leftovers are 1 up to rounding.
    while (ns > 0) prob[stack[--ns]] = 1.0f;
    while (nl < N) prob[stack[nl++]] = 1.0f;
}

// Column sums of a unit's memberships Y [L rows, ld apart][kc] into sum [kc], and of its mask
// (the valid rows) into sum[kc], each in row order as the GPU's column kernel adds them: the
// totals fastRG's counts, pair weights and endpoint targets come from.
SBMT_HD void sbm_column_sums(const float *Y, size_t ld, const float *mask, int L, int kc,
                             double *sum) {
    for (int u = 0; u <= kc; u++) sum[u] = 0.0;
    for (int i = 0; i < L; i++) {
        for (int u = 0; u < kc; u++) sum[u] += Y[(size_t)i * ld + u];
        sum[kc] += mask[i];
    }
}

// The block-pair weight (u, v) of the augmented (k+1) x (k+1) matrix: membership column sums
// cq, ck [k], the valid rows (the all-ones column's sums) vq, vk, blocks S_h [k, k], the floor
// eps on the extra diagonal entry.
SBMT_HD float sbm_pair_weight(const double *cq, const double *ck, double vq, double vk,
                              const float *Sh, int kc, float eps, int u, int v) {
    double x = 0.0;
    if (u < kc && v < kc) x = cq[u] * Sh[(size_t)u * kc + v] * ck[v];
    if (u == kc && v == kc) x = (double)eps * vq * vk;
    return (float)x;
}

#if defined(__CUDACC__)
#elif defined(__clang__)
#pragma float_control(pop)
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

// The per-edge parts below need no such care: each is exact or a single rounding however it
// is associated ((w 2^-32) total = w (2^-32 total), powers of two being exact), and they stay
// inlined into the CPU's per-edge loops.
SBMT_HD int sbm_alias_draw(const float *prob, const int *alias, int N, double u01) {
    double x = u01 * N;
    int i = (int)x;
    if (i >= N) i = N - 1;
    return (float)(x - i) < prob[i] ? i : alias[i];
}

// The 53-bit uniform that picks edge e's block pair, from words 0 and 3 of its Philox block.
SBMT_HD double sbm_pair_u01(uint32_t w0, uint32_t w3) {
    return (double)(((uint64_t)w0 << 21) ^ (w3 >> 11)) * (1.0 / 9007199254740992.0);
}

// The inverse-CDF target of an endpoint draw with 32-bit word w in a column summing to total:
// the draw is the first row whose running column sum (double, row order) exceeds it.
SBMT_HD double sbm_draw_target(uint32_t w, double total) {
    return (double)w * (1.0 / 4294967296.0) * total;
}

#endif
