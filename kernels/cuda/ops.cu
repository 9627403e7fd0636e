// ops.cu: the CUDA backend's ops table.
#include "kernels/cuda/cuda_ops.cuh"

extern "C" const kops kops_cuda = {
    "cuda",
    cuda_alloc,  // alloc
    cuda_free,  // free
    cuda_upload,  // upload
    cuda_download,  // download
    cuda_copy,  // copy
    cuda_batch_upload,  // batch_upload
    cuda_linear_fwd,  // linear_fwd
    cuda_linear_bwd,  // linear_bwd
    cuda_layernorm_fwd,  // layernorm_fwd
    cuda_layernorm_bwd,  // layernorm_bwd
    cuda_gelu_fwd,  // gelu_fwd
    cuda_gelu_bwd,  // gelu_bwd
    cuda_relu_fwd,  // relu_fwd
    cuda_relu_bwd,  // relu_bwd
    cuda_add,  // add
    cuda_bias_add,  // bias_add
    cuda_dropout,  // dropout
    cuda_embed_fwd,  // embed_fwd
    cuda_embed_bwd,  // embed_bwd
    cuda_attn_softmax_fwd,  // attn_softmax_fwd
    cuda_attn_softmax_bwd,  // attn_softmax_bwd
    cuda_mask_pool_fwd,  // mask_pool_fwd
    cuda_mask_pool_bwd,  // mask_pool_bwd
    cuda_dual_combine_fwd,  // dual_combine_fwd
    cuda_dual_combine_bwd,  // dual_combine_bwd
    cuda_xent_fwd,  // xent_fwd
    cuda_xent_bwd,  // xent_bwd
    cuda_adamw,  // adamw
    cuda_sumsq,  // sumsq
    cuda_scale,  // scale
    cuda_zero,  // zero
    cuda_sbm_blocks_fwd,  // sbm_blocks_fwd
    cuda_sbm_blocks_bwd,  // sbm_blocks_bwd
    cuda_sbm_members_fwd,  // sbm_members_fwd
    cuda_sbm_members_bwd,  // sbm_members_bwd
    cuda_sbm_sample,  // sbm_sample
    sbm_graph_stats_host,  // sbm_graph_stats
    cuda_sbm_graph_csr,  // sbm_graph_csr
    cuda_sbm_attn_fwd,  // sbm_attn_fwd
    cuda_sbm_attn_bwd,  // sbm_attn_bwd
    cuda_copy2d,  // copy2d
    cuda_add2d,  // add2d
};
