// backend.h: the boundary between the model and the backends. Every primitive of kernels.h and
// sbm.h is one entry of a backend's ops table; the k_* functions dispatch on the context's
// table (kernels/dispatch.c), so a backend is a table plus its implementations: CPU under
// kernels/cpu/, CUDA under kernels/cuda/. Each entry has exactly the type of its k_* function.
#ifndef SBMT_BACKEND_H
#define SBMT_BACKEND_H

#include "kernels/kernels.h"
#include "kernels/sbm.h"

typedef struct kops {
    const char *name;
    __typeof__(k_alloc) *alloc;
    __typeof__(k_free) *free;
    __typeof__(k_upload) *upload;
    __typeof__(k_download) *download;
    __typeof__(k_copy) *copy;
    __typeof__(k_batch_upload) *batch_upload;
    __typeof__(k_linear_fwd) *linear_fwd;
    __typeof__(k_linear_bwd) *linear_bwd;
    __typeof__(k_layernorm_fwd) *layernorm_fwd;
    __typeof__(k_layernorm_bwd) *layernorm_bwd;
    __typeof__(k_gelu_fwd) *gelu_fwd;
    __typeof__(k_gelu_bwd) *gelu_bwd;
    __typeof__(k_relu_fwd) *relu_fwd;
    __typeof__(k_relu_bwd) *relu_bwd;
    __typeof__(k_add) *add;
    __typeof__(k_bias_add) *bias_add;
    __typeof__(k_dropout) *dropout;
    __typeof__(k_embed_fwd) *embed_fwd;
    __typeof__(k_embed_bwd) *embed_bwd;
    __typeof__(k_attn_softmax_fwd) *attn_softmax_fwd;
    __typeof__(k_attn_softmax_bwd) *attn_softmax_bwd;
    __typeof__(k_mask_pool_fwd) *mask_pool_fwd;
    __typeof__(k_mask_pool_bwd) *mask_pool_bwd;
    __typeof__(k_dual_combine_fwd) *dual_combine_fwd;
    __typeof__(k_dual_combine_bwd) *dual_combine_bwd;
    __typeof__(k_xent_fwd) *xent_fwd;
    __typeof__(k_xent_bwd) *xent_bwd;
    __typeof__(k_adamw) *adamw;
    __typeof__(k_sumsq) *sumsq;
    __typeof__(k_scale) *scale;
    __typeof__(k_zero) *zero;
    __typeof__(k_sbm_blocks_fwd) *sbm_blocks_fwd;
    __typeof__(k_sbm_blocks_bwd) *sbm_blocks_bwd;
    __typeof__(k_sbm_members_fwd) *sbm_members_fwd;
    __typeof__(k_sbm_members_bwd) *sbm_members_bwd;
    __typeof__(k_sbm_sample) *sbm_sample;
    __typeof__(k_sbm_graph_stats) *sbm_graph_stats;
    __typeof__(k_sbm_graph_csr) *sbm_graph_csr;
    __typeof__(k_sbm_attn_fwd) *sbm_attn_fwd;
    __typeof__(k_sbm_attn_bwd) *sbm_attn_bwd;
    __typeof__(k_copy2d) *copy2d;
    __typeof__(k_add2d) *add2d;
} kops;

// The first primitive a model needs that the context's backend lacks (softmax attention, and
// SBM attention when sbm is set), by name, or NULL when it has them all.
const char *kctx_missing_op(const kctx *k, int sbm);

// The CPU backend (kernels/cpu/ops.c).
extern const kops kops_cpu;

#endif
