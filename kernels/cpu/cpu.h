// cpu.h: the CPU backend's implementations of the ops table (one per k_* primitive, same type
// and contract as documented in kernels.h and sbm.h), collected in kops_cpu (ops.c).
#ifndef SBMT_CPU_H
#define SBMT_CPU_H

#include "kernels/backend.h"

// Rows [*r0, *r1) of N for thread t of nt (the OpenMP loops that split rows by hand).
static inline void split_range(int N, int t, int nt, int *r0, int *r1) {
    *r0 = (int)((long)N * t / nt);
    *r1 = (int)((long)N * (t + 1) / nt);
}

// Fills a context for the CPU backend (threads, SIMD variant, single-threaded BLAS).
void cpu_ctx_init(kctx *k, int nthreads);

__typeof__(k_alloc) cpu_alloc;
__typeof__(k_free) cpu_free;
__typeof__(k_upload) cpu_upload;
__typeof__(k_download) cpu_download;
__typeof__(k_copy) cpu_copy;
__typeof__(k_batch_upload) cpu_batch_upload;
__typeof__(k_linear_fwd) cpu_linear_fwd;
__typeof__(k_linear_bwd) cpu_linear_bwd;
__typeof__(k_layernorm_fwd) cpu_layernorm_fwd;
__typeof__(k_layernorm_bwd) cpu_layernorm_bwd;
__typeof__(k_gelu_fwd) cpu_gelu_fwd;
__typeof__(k_gelu_bwd) cpu_gelu_bwd;
__typeof__(k_relu_fwd) cpu_relu_fwd;
__typeof__(k_relu_bwd) cpu_relu_bwd;
__typeof__(k_add) cpu_add;
__typeof__(k_bias_add) cpu_bias_add;
__typeof__(k_dropout) cpu_dropout;
__typeof__(k_embed_fwd) cpu_embed_fwd;
__typeof__(k_embed_bwd) cpu_embed_bwd;
__typeof__(k_attn_softmax_fwd) cpu_attn_softmax_fwd;
__typeof__(k_attn_softmax_bwd) cpu_attn_softmax_bwd;
__typeof__(k_mask_pool_fwd) cpu_mask_pool_fwd;
__typeof__(k_mask_pool_bwd) cpu_mask_pool_bwd;
__typeof__(k_dual_combine_fwd) cpu_dual_combine_fwd;
__typeof__(k_dual_combine_bwd) cpu_dual_combine_bwd;
__typeof__(k_xent_fwd) cpu_xent_fwd;
__typeof__(k_xent_bwd) cpu_xent_bwd;
__typeof__(k_adamw) cpu_adamw;
__typeof__(k_sumsq) cpu_sumsq;
__typeof__(k_scale) cpu_scale;
__typeof__(k_zero) cpu_zero;
__typeof__(k_sbm_blocks_fwd) cpu_sbm_blocks_fwd;
__typeof__(k_sbm_blocks_bwd) cpu_sbm_blocks_bwd;
__typeof__(k_sbm_members_fwd) cpu_sbm_members_fwd;
__typeof__(k_sbm_members_bwd) cpu_sbm_members_bwd;
__typeof__(k_sbm_sample) cpu_sbm_sample;
__typeof__(k_sbm_graph_csr) cpu_sbm_graph_csr;
__typeof__(k_sbm_attn_fwd) cpu_sbm_attn_fwd;
__typeof__(k_sbm_attn_bwd) cpu_sbm_attn_bwd;
__typeof__(k_copy2d) cpu_copy2d;
__typeof__(k_add2d) cpu_add2d;

#endif
