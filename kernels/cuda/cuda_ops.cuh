// cuda_ops.cuh: the CUDA backend's implementations of the ops table (same types and contracts
// as kernels.h documents). A primitive without a CUDA implementation keeps a NULL entry, which
// kctx_missing_op names, so nothing falls back silently.
#ifndef SBMT_CUDA_OPS_CUH
#define SBMT_CUDA_OPS_CUH

#include "kernels/cuda/cuda_common.cuh"

__typeof__(k_alloc) cuda_alloc;
__typeof__(k_free) cuda_free;
__typeof__(k_upload) cuda_upload;
__typeof__(k_download) cuda_download;
__typeof__(k_copy) cuda_copy;
__typeof__(k_batch_upload) cuda_batch_upload;
__typeof__(k_linear_fwd) cuda_linear_fwd;
__typeof__(k_linear_bwd) cuda_linear_bwd;
__typeof__(k_layernorm_fwd) cuda_layernorm_fwd;
__typeof__(k_layernorm_bwd) cuda_layernorm_bwd;
__typeof__(k_gelu_fwd) cuda_gelu_fwd;
__typeof__(k_gelu_bwd) cuda_gelu_bwd;
__typeof__(k_relu_fwd) cuda_relu_fwd;
__typeof__(k_relu_bwd) cuda_relu_bwd;
__typeof__(k_add) cuda_add;
__typeof__(k_bias_add) cuda_bias_add;
__typeof__(k_dropout) cuda_dropout;
__typeof__(k_embed_fwd) cuda_embed_fwd;
__typeof__(k_embed_bwd) cuda_embed_bwd;
__typeof__(k_attn_softmax_fwd) cuda_attn_softmax_fwd;
__typeof__(k_attn_softmax_bwd) cuda_attn_softmax_bwd;
__typeof__(k_mask_pool_fwd) cuda_mask_pool_fwd;
__typeof__(k_mask_pool_bwd) cuda_mask_pool_bwd;
__typeof__(k_dual_combine_fwd) cuda_dual_combine_fwd;
__typeof__(k_dual_combine_bwd) cuda_dual_combine_bwd;
__typeof__(k_xent_fwd) cuda_xent_fwd;
__typeof__(k_xent_bwd) cuda_xent_bwd;
__typeof__(k_adamw) cuda_adamw;
__typeof__(k_sumsq) cuda_sumsq;
__typeof__(k_scale) cuda_scale;
__typeof__(k_zero) cuda_zero;
__typeof__(k_sbm_blocks_fwd) cuda_sbm_blocks_fwd;
__typeof__(k_sbm_blocks_bwd) cuda_sbm_blocks_bwd;
__typeof__(k_sbm_members_fwd) cuda_sbm_members_fwd;
__typeof__(k_sbm_members_bwd) cuda_sbm_members_bwd;
__typeof__(k_sbm_sample) cuda_sbm_sample;
__typeof__(k_sbm_graph_csr) cuda_sbm_graph_csr;
__typeof__(k_sbm_attn_fwd) cuda_sbm_attn_fwd;
__typeof__(k_sbm_attn_bwd) cuda_sbm_attn_bwd;
__typeof__(k_copy2d) cuda_copy2d;
__typeof__(k_add2d) cuda_add2d;

#endif
