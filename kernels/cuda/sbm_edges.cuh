// sbm_edges.cuh: the CUDA edge path of SBM attention for sparse heads (sbm_edges.cu): fastRG on
// the GPU into CSR with a transposed index, and attention forward and backward on those edges.
// Internal to kernels/cuda/; sbm_attn.cu routes each (sequence, head) here or to the tiles.
#ifndef SBMT_CUDA_SBM_EDGES_CUH
#define SBMT_CUDA_SBM_EDGES_CUH

#include "kernels/cuda/attention_tiled_kernels.cuh"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/sbm_tile.cuh"

// Largest head size and cluster count of the edge kernels (per-lane accumulators of 8 values).
#define SBM_EDGE_MAX_DIM 256

// What the edge path keeps of a layer between sampling and backward. Edge indices are int32:
// a layer's raw draws are capped at 2^31 - 1 (sbm_edges_sample says so by name).
struct sbm_edge_state {
    int nf;            // units on the edge path
    int64_t M;         // raw edges drawn for them (before duplicates collapse)
    int *units;        // [nf] their unit ids u = b * H + h
    int64_t *moff;     // [nf + 1] offsets of their raw edges
    double *valid;     // [nf] their valid rows
    float *w, *prob;   // [nf, (kc+1)^2] block-pair weights, alias probabilities
    int *alias, *stack;  // [nf, (kc+1)^2] alias targets, Vose's work list
    int *ei, *ej;      // [M] raw edges: query and key rows within the sequence
    uint64_t *ka, *kb;  // [M] sort keys
    uint32_t *va, *vb;  // [M] sort values
    int *nsel;         // [1] edges after duplicates collapse (nnz)
    int *rowptr;       // [H*T + 1] CSR over rows r = h T + t (t a packed row): edges of query t
    int *colptr;       // [H*T + 1] the transposed index: edges of key t
    int *col;          // [M] CSR: key row within the sequence
    int *crow, *cpos;  // [M] transposed: query row within the sequence, the edge's CSR slot
    float *a;          // [M] softmax probability on the edge (before dropout)
    uint8_t *keep;     // [M] attention-dropout keep flag
    float *gv, *dsv;   // [M] straight-through gradient G, scaled score gradient (backward)
    void *temp;        // CUB temporary storage
    size_t temp_bytes, cap_f, cap_np, cap_m, cap_rows;
};

void sbm_edges_free(sbm_edge_state *e);

struct sbm_edge_args {
    sbm_tile_args k;       // the batch, sizes, floor and the draws' key, as the tiles take them
    const float *Y;        // [2T, H*kc] memberships (queries, then keys)
    const float *S;        // [H, kc, kc]
    const double *colsum;  // [2, units, kc] column sums of Y per unit (row order, double)
    int units;
};

// Draws the graphs of the nf units `units_h` with fastRG: m_h[f] raw edges each (the Poisson
// counts, drawn on the host), valid_h[f] valid rows; writes count[u] (edges after duplicates
// collapse) of those units. The CPU's fastRG graphs, bit for bit.
void sbm_edges_sample(cuda_state *s, sbm_edge_state *e, const sbm_edge_args &a,
                      const int *units_h, const int64_t *m_h, const double *valid_h, int nf,
                      unsigned long long *count);

// Attention on the edges for the units flagged in `on` [units]: out rows of those units.
void sbm_edges_fwd(cuda_state *s, sbm_edge_state *e, const tile_args &a, const uint8_t *on,
                   float *out);

// Backward for the flagged units: their dQ, dK, dV rows of dqkv, and of GYk = G Yk and
// GTYq = G^T Yq [T, H*kc]. Dbuf [T, H] = rowsum(dout * out).
void sbm_edges_bwd(cuda_state *s, sbm_edge_state *e, const tile_args &a, const uint8_t *on,
                   const float *Y, int kc, float *dqkv, float *GYk, float *GTYq,
                   const float *Dbuf, const float *dout, float reg);

// Host copies of unit u's CSR (rows = its sequence length): rowptr [rows + 1], col [nnz].
void sbm_edges_download(cuda_state *s, const sbm_edge_state *e, const kbatch *bt, int H, int u,
                        int *rowptr, int *col);

#endif
