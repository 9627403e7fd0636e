// sbm.h: the SBM-attention primitives of SPEC.md section 2 behind the kernels interface:
// block matrices, memberships, graph sampling (fastRG and exact dense Bernoulli), sparse
// attention on the sampled edges and its backward with the straight-through gradient.
// Every per-(sequence, head) graph is CSR over the sequence's packed rows; nothing is n x n.
#ifndef SBMT_SBM_H
#define SBMT_SBM_H

#include <stdint.h>

#include "kernels/kernels.h"
#include "kernels/philox.h"

typedef enum { SBM_SAMPLER_FASTRG = 0, SBM_SAMPLER_DENSE = 1, SBM_SAMPLER_AUTO = 2 } sbm_sampler;

// auto picks the dense sampler when the expected edge count exceeds this fraction of the
// valid (query, key) pairs: `bench_sbm sampler` measures the crossover (about 0.06 on one core
// of the development machine, k = 128, n = 1024 and 2048).
#define SBM_AUTO_DENSE_FRACTION 0.06

// Attention on a dense-sampled unit runs in dense row blocks (GEMMs) instead of edge by edge
// when its sampled density reaches this fraction: `bench_sbm paths` measures the crossover
// (about 0.4 on one core of the development machine). The second value is for head sizes
// without the vectorised edge kernels (sbm_edges.h), whose edge loops are slower.
#define SBM_BLOCKS_FRACTION 0.40
#define SBM_BLOCKS_FRACTION_PORTABLE 0.10

typedef enum { SBM_PATH_AUTO = 0, SBM_PATH_EDGES = 1, SBM_PATH_BLOCKS = 2 } sbm_path;

// The sampled graph of one (sequence, head) and what backward needs of it.
typedef struct {
    int rows;          // L: query rows of the sequence
    int nnz;           // edges after collapsing duplicates
    int dense;         // 1 when the dense sampler drew it
    sbm_path path;     // attention path: AUTO (by density) unless a test forces one
    int blocks;        // 1 when attention ran in dense row blocks (set by k_sbm_attn_fwd)
    double expected;   // expected edge count sum_ij (P_ij + eps) over valid pairs
    int *rowptr;       // [rows + 1]
    int *col;          // [nnz] key row within the sequence
    float *a;          // [nnz] softmax probability on the edge (before dropout)
    uint8_t *keep;     // [nnz] attention-dropout keep flag
    int rows_cap, cap;
} sbm_graph;

// The graphs of one layer: unit u = b * H + h.
typedef struct {
    int units, units_cap;
    sbm_graph *g;     // per unit: its size and counts (and, on the CPU, its CSR)
    // A backend that draws the edges inside attention (CUDA's sampled tiles) keeps what the
    // draws need here instead of CSR; sbm_graphs_free releases it through dev_free.
    void *dev;
    void (*dev_free)(void *dev);
} sbm_graphs;

// Shared by the backends (kernels/sbm_graphs.c).
void sbm_graphs_free(sbm_graphs *gs);
// Room for `units` unit records (new ones zeroed); sets gs->units.
void sbm_graphs_reserve(sbm_graphs *gs, int units);
// k_sbm_graph_stats from the unit records alone (every backend keeps them on the host).
void sbm_graph_stats_host(kctx *k, const sbm_graphs *gs, int H, int64_t *edges,
                          double *expected);
// A unit's expected edge count (1^T Yq) S_h (Yk^T 1) + eps * valid^2 over its valid pairs, from
// the column sums cq = 1^T Yq and ck = 1^T Yk [kc] and its block matrix S_h [kc, kc].
double sbm_expected_edges(const double *cq, const double *ck, const float *Sh, int kc, float eps,
                          double valid);
// fastRG's edge count m ~ Poisson(lam) from the unit's RNG_GRAPH_COUNT stream (capped at 2^30).
int64_t sbm_fastrg_count(rng_stream count_stream, double lam);

// S[h] = softmax over all k*k entries of C_h C_h^T.   S, C: [H, k, k], [H, k, d]
void k_sbm_blocks_fwd(kctx *k, float *S, const float *C, int H, int kc, int d);
// dC[H, k, d] += gradient through the softmax and C C^T, given dS [H, k, k].
void k_sbm_blocks_bwd(kctx *k, float *dC, const float *dS, const float *S, const float *C, int H,
                      int kc, int d);

// Y[r, h*k + u] = mask(r) * sigmoid(phi[r, h*d:] . C[h, u, :]) for rows r of `rows` rows
// (queries then keys: rows = 2T and mask(r) = bt->mask[r % T]).   Y: [rows, H*k]; phi: [rows, H*d]
void k_sbm_members_fwd(kctx *k, float *Y, const float *phi, const float *C, const kbatch *bt,
                       int rows, int H, int kc, int d);
// dY is turned into dZ in place; dphi [rows, H*d] is overwritten; dC [H, k, d] accumulates.
void k_sbm_members_bwd(kctx *k, float *dphi, float *dC, float *dY, const float *Y,
                       const float *phi, const float *C, int rows, int H, int kc, int d);

// Samples every (sequence, head) graph of a layer from Yq = Y[0:T], Yk = Y[T:2T] and S.
// Draws are keyed by (seed, step, layer, head0 + h, bt->sample[b]) (head0: global index of the
// first local head), so graphs do not depend on batch composition or the split over ranks.
// edges[h] receives the summed edge count of head h over the batch.
void k_sbm_sample(kctx *k, sbm_graphs *gs, const float *Y, const float *S, const kbatch *bt, int H,
                  int kc, float eps, sbm_sampler sampler, uint64_t seed, uint32_t step,
                  uint32_t layer, uint32_t head0, int64_t *edges);

// Unit u's graph as CSR on the host (rows = its sequence length): rowptr [rows + 1], col [nnz]
// (each row's keys ascending). -1 when the backend keeps no edge list for it (CUDA's
// sampled tiles redraw the edges inside attention).
int k_sbm_graph_csr(kctx *k, const sbm_graphs *gs, const kbatch *bt, int H, int u, int *rowptr,
                    int *col);

// Per-head totals over the units of a layer's graphs (unit u = b * H + h): edges[h] the sampled
// edges, expected[h] the expected count (either may be NULL).
void k_sbm_graph_stats(kctx *k, const sbm_graphs *gs, int H, int64_t *edges, double *expected);

// Sparse attention on the sampled edges: out [T, H*d] from qkv [T, 3*H*d] (layout of
// k_attn_softmax_fwd); stores per-edge probabilities and dropout flags in gs.
void k_sbm_attn_fwd(kctx *k, float *out, sbm_graphs *gs, const float *qkv, const kbatch *bt,
                    int H, int dh, float p, kdrop d);
// Backward: dqkv [T, 3*H*d] overwritten by the attention gradients; dY [2T, H*k] overwritten by
// the straight-through gradients of the memberships (dYq = (G Yk) S^T, dYk = (G^T Yq) S);
// dS [H, k, k] overwritten by Yq^T G Yk summed over the batch. G_ij = clip(g_ij + reg, -1, 1) on
// sampled edges, g_ij = a_ij (da_ij - sum_l a_il da_il).
void k_sbm_attn_bwd(kctx *k, float *dqkv, float *dY, float *dS, const float *dout,
                    const float *qkv, const float *out, const sbm_graphs *gs, const float *Y,
                    const float *S, const kbatch *bt, int H, int dh, int kc, float p, kdrop d,
                    float reg);

// dst[r, 0:cols] = src[r, 0:cols] (strided rows), and the accumulate variant.
void k_copy2d(kctx *k, float *dst, int ld_dst, const float *src, int ld_src, int rows, int cols);
void k_add2d(kctx *k, float *dst, int ld_dst, const float *src, int ld_src, int rows, int cols);

#endif
