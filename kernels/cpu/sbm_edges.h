// sbm_edges.h: per-query-row kernels of SBM attention on a row's sampled edges (CPU). Key-side
// operands are packed [L, dh] (contiguous rows) so that a row's keys stream from cache. With
// AVX2 and dh a multiple of 8 (up to 64), dot products run eight edges at a time and the
// updates keep the row's accumulators in registers; otherwise portable loops compute the same.
#ifndef SBMT_SBM_EDGES_H
#define SBMT_SBM_EDGES_H

#include <stdint.h>

// 1 when the kernels below have their vectorised form for head size dh. Each kernel takes it
// when simd != 0; simd = 0 runs the portable loops (as builds without AVX2 do).
int edges_fast(int dh);

// a[e] = sc * q . Kp[col[e]] for e < cnt.
void edges_scores(float *a, const int *col, int cnt, const float *q, const float *Kp, int dh,
                  float sc, int simd);

// y[0:dh] = sum_e (keep[e] ? a[e] * dscale : 0) * Vp[col[e]].
void edges_aggregate(float *y, const int *col, const float *a, const uint8_t *keep, int cnt,
                     const float *Vp, int dh, float dscale, int simd);

// Backward of one query row i given its edges (softmax weights a, keep flags), dy = dL/dy_i and
// Di = dy . y_i. Writes dq[0:dh] = sum_e sc*ds_e Kp[j] (overwrites), adds at_e*dy to dVp[j] and
// sc*ds_e*q to dKp[j], and stores the clipped straight-through gradient gv[e] = clip(ds_e + reg)
// with ds_e = a_e (kf_e dy . Vp[j] - Di), at_e = a_e kf_e, kf_e = keep ? dscale : 0.
void edges_bwd_row(float *dq, float *dKp, float *dVp, float *gv, const int *col, const float *a,
                   const uint8_t *keep, int cnt, const float *q, const float *dy, float Di,
                   const float *Kp, const float *Vp, int dh, float sc, float dscale, float reg,
                   int simd);

#endif
