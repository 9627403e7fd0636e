// model.h: the Transformer encoder classifier of SPEC.md section 1 (softmax attention; SBM
// attention plugs in per layer), forward and backward by hand over packed token rows. All
// parameters, gradients and Adam moments live in flat buffers described by one param_table.
#ifndef SBMT_MODEL_H
#define SBMT_MODEL_H

#include <stdint.h>

#include "dist/dist.h"
#include "kernels/kernels.h"
#include "kernels/sbm.h"
#include "model/params.h"

typedef struct {
    int vocab;     // V
    int seq_len;   // n
    int d_model;   // D
    int d_ff;      // Dh
    int heads;     // H
    int head_dim;  // d
    int layers;    // L
    int classes;   // C
    int cls;       // 1: CLS pooling, 0: MEAN pooling
    int dual;      // 1: dual encoder (pairs of documents, head input [x0, x1, x0*x1, x0-x1])
    float dropout, attn_dropout;
    int sbm;                 // 1: SBM attention, 0: full softmax attention
    int clusters;            // k (sbm)
    float edge_floor;        // eps (sbm)
    float sparsity_weight;   // density regulariser weight (sbm)
    sbm_sampler sampler;     // (sbm)
    int tp, tp_rank;         // head parallelism: this rank holds heads [tp_rank H/tp, ..) (0: 1)
} model_dims;

// Offsets (in floats) of one layer's tensors inside the flat buffers.
typedef struct {
    size_t ln1_w, ln1_b;  // [D]
    size_t wqkv, bqkv;    // [3*H*d, D] = wq | wk | wv stacked, [3*H*d]
    size_t wo, bo;        // [D, H*d], [D]
    size_t ln2_w, ln2_b;  // [D]
    size_t fc1_w, fc1_b;  // [Dh, D], [Dh]
    size_t fc2_w, fc2_b;  // [D, Dh], [D]
    size_t clusters;      // [H, k, d] (sbm)
    size_t p1_w, p1_b;    // [d, d], [d] phi's first linear (sbm)
    size_t p2_w, p2_b;    // [d, d], [d] phi's second linear (sbm)
} layer_offsets;

// Saved activations of one layer, rows = packed tokens (capacity max_tokens).
typedef struct {
    float *res_in;       // [T, D] residual stream entering the layer
    float *ln1;          // [T, D]
    float *ln1_mean, *ln1_rstd;  // [T]
    float *qkv;          // [T, 3*H*d]
    float *att;          // [T, H*d] attention output (merged heads)
    float *lse;          // [T, H]
    float *res_mid;      // [T, D] after the attention residual
    float *ln2;          // [T, D]
    float *ln2_mean, *ln2_rstd;  // [T]
    float *ffn_pre;      // [T, Dh] fc1 output before GELU
    float *ffn_act;      // [T, Dh] GELU output after dropout (fc2 input)
    // SBM attention (rows 0..T-1 are queries, T..2T-1 keys; [2T, H*d] = [2T*H, d])
    float *qk;           // [2T, H*d] Q then K, contiguous
    float *phi_pre;      // [2T, H*d] phi's first linear output
    float *phi_hid;      // [2T, H*d] after ReLU
    float *phi;          // [2T, H*d] phi(Q), phi(K)
    float *Y;            // [2T, H*k] memberships Yq then Yk
    float *S;            // [H, k, k] block matrices
    sbm_graphs graphs;   // sampled graphs, unit b*H + h
} layer_acts;

typedef struct {
    model_dims dim;
    kctx *k;              // the backend every buffer below lives on
    float *arena;         // [arena_floats] activations and scratch, carved into the tensors below
    size_t arena_floats;
    param_table table;    // this rank's tensors (slices of the logical ones when tp > 1)
    param_table full;     // the logical whole tensors (SPEC.md section 6), same entry order
    size_t nparams;       // floats in this rank's buffers (table.total)
    int tp, tp_rank;      // head parallelism (1, 0 in one process)
    int heads_local;      // H / tp: heads this rank computes
    int head0;            // global index of its first head (keys its random streams)
    dist_ctx *dist;       // communication for tp > 1 (NULL in one process)
    // Called during backward each time a bucket's gradients are final (model_bucket_range):
    // buckets L+1 (final LayerNorm and head), L..1 (layers), 0 (embeddings), in that order.
    void (*grad_ready)(void *ctx, int bucket);
    void *grad_ctx;
    float *params, *grads, *adam_m, *adam_v;  // [nparams] each (backend memory, one allocation)
    size_t tok, pos;                          // [V, D], [n, D]
    layer_offsets *lo;                        // [L]
    size_t lnf_w, lnf_b;                      // [D]
    size_t head1_w, head1_b, head2_w, head2_b;  // [Dh, D], [Dh], [C, Dh], [C]
    int max_tokens, max_batch;  // max_batch: examples (a dual example is two sequences)
    // activations
    layer_acts *la;      // [L]
    float *res_out;      // [T, D] residual stream after the last layer
    float *lnf;          // [T, D] final LayerNorm output, masked in place
    float *lnf_mean, *lnf_rstd;  // [T]
    float *pooled;       // [S, D] per sequence (S = B, or 2B for a dual encoder)
    float *head_in;      // [B, 4D] dual encoder: [x0, x1, x0*x1, x0-x1]
    float *head_pre;     // [B, Dh]
    float *head_act;     // [B, Dh]
    float *logits;       // [B, C]
    float *probs;        // [B, C]
    // backward scratch
    float *d_res;        // [T, D] gradient of the residual stream
    float *d_tmp;        // [T, D]
    float *d_ln;         // [T, D]
    float *d_qkv;        // [T, 3*H*d]
    float *d_att;        // [T, H*d]
    float *d_ffn;        // [T, Dh]
    float *d_pooled;     // [S, D]
    float *d_head_in;    // [B, 4D] dual encoder
    float *d_head;       // [B, Dh]
    float *d_logits;     // [B, C]
    float *tmp;          // [T, D] forward scratch (sub-layer output before dropout/residual)
    // SBM backward scratch
    float *d_qk, *d_phi, *d_phi_hid;  // [2T, H*d]
    float *d_Y;                       // [2T, H*k]
    float *d_S;                       // [H, k, k]
    // SBM statistics of the last forward, at global head positions (other ranks' heads 0)
    int64_t *edges;      // [L, H] sampled edges (after collapsing duplicates) over the batch
    double *expected;    // [L, H] expected edges over the batch
    float *density;      // [L, H] edges / (reg_batch * n * n)
    double reg_loss;     // sparsity_weight * mean density
    int reg_batch;       // global sequences per batch for densities and the regulariser
                         // (0: the local bt->B)
    // Test switches: reuse the last sampled graphs instead of sampling (same batch), and drop
    // the straight-through path, so finite differences see exactly the analytical gradient.
    int freeze_graphs, no_ste;
} model;

// Builds the parameter table, allocates the backend's buffers for batches of up to max_batch
// examples (parameters, gradients and moments in one allocation, activations carved from one
// arena), and initialises parameters (PyTorch defaults, SPEC.md section 1) on the host from the
// seed, then uploads them. Every later call on m uses the same backend context k.
void model_init(model *m, kctx *k, const model_dims *dim, int max_batch, uint64_t seed);
void model_free(model *m);
// Host copies of this rank's parameters and Adam moments [nparams] (any may be NULL), in and out.
void model_set_state(model *m, const float *params, const float *adam_m, const float *adam_v);
void model_get_state(const model *m, float *params, float *adam_m, float *adam_v);

// Forward pass; returns the summed cross-entropy over the batch and adds argmax hits to
// *correct. train != 0 enables dropout keyed by (seed, step). For a dual encoder bt holds the
// two documents of example b as sequences 2b and 2b+1, and labels has bt->B / 2 entries.
double model_forward(model *m, kctx *k, const kbatch *bt, const int32_t *labels, int train,
                     uint64_t seed, uint32_t step, int *correct);
// The summed cross-entropy excludes the density regulariser; the loss of a batch is
// ce_sum / B + m->reg_loss.
// Backward pass of the last forward (same batch, train flag, seed and step). Gradients of the
// loss sum * loss_scale are ADDED to m->grads.
void model_backward(model *m, kctx *k, const kbatch *bt, const int32_t *labels, int train,
                    uint64_t seed, uint32_t step, float loss_scale);

// The gradient range [begin, end) (floats into grads) of a backward bucket (see grad_ready).
void model_bucket_range(const model *m, int bucket, size_t *begin, size_t *end);

// density[L*H] = edges / nb; returns the regulariser sparsity_weight * mean density.
double model_sbm_stats(const model *m, const int64_t *edges, double nb, float *density);

// This rank's slices of logical tensors: local[nparams] from full[full.total] (any buffer laid
// out by m->full), and the inverse from the tp group's gathered buffers ([tp][nparams], as
// dist_gather over the tp group delivers them) into full.
void model_from_full(model *m, const float *full, float *local);
void model_to_full(const model *m, const float *gathered, float *full);

// Model FLOPs of the last forward + backward on bt: dense layers at 3x their forward GEMMs,
// softmax attention 12 L^2 d per head, SBM attention (12 d + 4 k) per sampled edge plus
// 6 L k^2 per (sequence, head) for the straight-through products; padding, recomputation and
// the dense sampler's P are not counted. Used to report throughput as a fraction of BLAS peak.
double model_step_flops(const model *m, const kbatch *bt);

// Packs B padded sequences ids [B, n] into bt (buffers allocated by batch_alloc). CLS pooling
// prepends token cls_id and drops the last position. sample[b] is the global sample index.
void batch_alloc(kbatch *bt, int max_batch, int n);
void batch_free(kbatch *bt);
void batch_pack(kbatch *bt, const int32_t *ids, int B, int n, const uint32_t *sample, int cls,
                int cls_id);

#endif
