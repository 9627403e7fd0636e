// spmm.h: CPU sparse (CSR) x dense products of the SBM straight-through gradient, G Yk and
// G^T Yq, in one pass over the edges. Each edge costs a k-wide multiply-add into a register
// accumulator and one into a cache-resident row, so the pair costs O(m k) near the FMA rate at
// any density (a dense GEMM would also pay for every pair that has no edge).
#ifndef SBMT_SPMM_H
#define SBMT_SPMM_H

#include <stddef.h>

// For the CSR graph (ptr [rows + 1], idx [nnz] ascending within each row and < ncols, w [nnz]):
//   GA[i, 0:kc] += sum_e w[e] * B[idx[e], 0:kc]    (GA = G B,   i < rows)
//   GB[j, 0:kc] += sum_e w[e] * A[i, 0:kc]         (GB = G^T A, j < ncols)
// A, B with row stride ldy; GA, GB with row stride ldo. Edges are visited in a fixed order, so
// results are deterministic. scratch: spmm_scratch_floats(ncols, kc) floats. simd = 0 takes the
// portable loops even where AVX2 is compiled in.
void spmm_pair(float *GA, float *GB, int ldo, const int *ptr, const int *idx, const float *w,
               int rows, int ncols, const float *A, const float *B, int ldy, int kc,
               float *scratch, int simd);
size_t spmm_scratch_floats(int ncols, int kc);

#endif
