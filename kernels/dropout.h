// dropout.h: the dropout keep/drop rule, shared by CPU and CUDA so masks are identical.
// Each Philox block yields eight 16-bit uniforms; element e of a stream uses half-word e % 8 of
// block e / 8 and is kept when that value is >= round(p * 65536). The drop probability is thus p
// rounded to 1/65536 (|error| <= 7.7e-6), the price of one Philox call per eight elements.
#ifndef SBMT_DROPOUT_H
#define SBMT_DROPOUT_H

#include "kernels/philox.h"

SBMT_HD uint32_t dropout_threshold(float p) { return (uint32_t)(p * 65536.0f + 0.5f); }

// The 16-bit uniform of element e, from an already computed block of e / 8.
SBMT_HD uint32_t dropout_u16(philox4x32 blk, uint32_t e) {
    uint32_t w = blk.v[(e & 7u) >> 1];
    return (e & 1u) ? (w >> 16) : (w & 0xFFFFu);
}

#endif
