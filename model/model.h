// model.h: the Transformer encoder classifier of SPEC.md section 1 (softmax attention; SBM
// attention plugs in per layer), forward and backward by hand over packed token rows. All
// parameters, gradients and Adam moments live in flat buffers described by one param_table.
#ifndef SBMT_MODEL_H
#define SBMT_MODEL_H

#include <stdint.h>

#include "kernels/kernels.h"
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
    float dropout, attn_dropout;
} model_dims;

// Offsets (in floats) of one layer's tensors inside the flat buffers.
typedef struct {
    size_t ln1_w, ln1_b;  // [D]
    size_t wqkv, bqkv;    // [3*H*d, D] = wq | wk | wv stacked, [3*H*d]
    size_t wo, bo;        // [D, H*d], [D]
    size_t ln2_w, ln2_b;  // [D]
    size_t fc1_w, fc1_b;  // [Dh, D], [Dh]
    size_t fc2_w, fc2_b;  // [D, Dh], [D]
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
} layer_acts;

typedef struct {
    model_dims dim;
    param_table table;
    size_t nparams;
    float *params, *grads, *adam_m, *adam_v;  // [nparams] each
    size_t tok, pos;                          // [V, D], [n, D]
    layer_offsets *lo;                        // [L]
    size_t lnf_w, lnf_b;                      // [D]
    size_t head1_w, head1_b, head2_w, head2_b;  // [Dh, D], [Dh], [C, Dh], [C]
    int max_tokens, max_batch;
    // activations
    layer_acts *la;      // [L]
    float *res_out;      // [T, D] residual stream after the last layer
    float *lnf;          // [T, D] final LayerNorm output, masked in place
    float *lnf_mean, *lnf_rstd;  // [T]
    float *pooled;       // [B, D]
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
    float *d_pooled;     // [B, D]
    float *d_head;       // [B, Dh]
    float *d_logits;     // [B, C]
    float *tmp;          // [T, D] forward scratch (sub-layer output before dropout/residual)
} model;

// Builds the parameter table, allocates buffers for batches of up to max_batch sequences,
// and initialises parameters (PyTorch defaults, SPEC.md section 1) from the seed.
void model_init(model *m, const model_dims *dim, int max_batch, uint64_t seed);
void model_free(model *m);

// Forward pass; returns the summed cross-entropy over the batch and adds argmax hits to
// *correct. train != 0 enables dropout keyed by (seed, step).
double model_forward(model *m, kctx *k, const kbatch *bt, const int32_t *labels, int train,
                     uint64_t seed, uint32_t step, int *correct);
// Backward pass of the last forward (same batch, train flag, seed and step). Gradients of the
// loss sum * loss_scale are ADDED to m->grads.
void model_backward(model *m, kctx *k, const kbatch *bt, const int32_t *labels, int train,
                    uint64_t seed, uint32_t step, float loss_scale);

// Packs B padded sequences ids [B, n] into bt (buffers allocated by batch_alloc). CLS pooling
// prepends token cls_id and drops the last position. sample[b] is the global sample index.
void batch_alloc(kbatch *bt, int max_batch, int n);
void batch_free(kbatch *bt);
void batch_pack(kbatch *bt, const int32_t *ids, int B, int n, const uint32_t *sample, int cls,
                int cls_id);

#endif
