// sbm_rule.h: the dense sampler's Bernoulli rule (SPEC.md section 2), shared by the CPU dense
// sampler and the CUDA tile kernels so both draw the same graph. Pair (i, j) of a sequence
// (query row i, key row j, both valid) is an edge when the 24-bit uniform of element e = i n + j
// of the unit's RNG_GRAPH stream is below min(1, P_ij + eps) in units of 2^-24: the uniform is
// the top 24 bits of word e % 4 of Philox block e / 4, the threshold the truncation of
// min(1, P_ij + eps) * 2^24. An edge thus has probability floor(min(1, P + eps) 2^24) / 2^24
// (at most 2^-24 below the exact one). Header-only and host/device.
#ifndef SBMT_SBM_RULE_H
#define SBMT_SBM_RULE_H

#include "kernels/philox.h"

// The integer threshold of probability p + eps (clamped at 1).
SBMT_HD int32_t sbm_edge_threshold(float p, float eps) {
    float pr = p + eps;
    pr = pr < 1.0f ? pr : 1.0f;
    return (int32_t)(pr * 16777216.0f);
}

// The word of element e from an already computed block e / 4.
SBMT_HD uint32_t sbm_edge_word(philox4x32 blk, uint32_t e) { return blk.v[e & 3u]; }

// 1 when the pair whose word is w is an edge at threshold thr.
SBMT_HD int sbm_edge_drawn(uint32_t w, int32_t thr) { return (int32_t)(w >> 8) < thr; }

#endif
