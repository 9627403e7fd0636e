// attention_tiled.cuh: the tiled softmax attention kernels (attention_tiled.cu) that
// attention.cu dispatches to for the head sizes they support. Internal to kernels/cuda/.
#ifndef SBMT_CUDA_ATTENTION_TILED_CUH
#define SBMT_CUDA_ATTENTION_TILED_CUH

#include "kernels/cuda/cuda_common.cuh"  // first: the CUDA (or emulated) built-ins
#include "kernels/cuda/attention_tiled_kernels.cuh"

// The kernels' view of one attention call on the context's batch.
tile_args cuda_attn_args(kctx *k, const float *qkv, int H, int dh, float p, kdrop d);

// 1 when the tiled kernels handle heads of size dh (16, 32, 64, 128).
int cuda_attn_tiled_supports(int dh);
// Same contracts as k_attn_softmax_fwd / k_attn_softmax_bwd.
void cuda_attn_tiled_fwd(kctx *k, float *out, float *lse, const float *qkv, const kbatch *bt,
                         int H, int dh, float p, kdrop d);
void cuda_attn_tiled_bwd(kctx *k, float *dqkv, const float *dout, const float *qkv,
                         const float *out, const float *lse, const kbatch *bt, int H, int dh,
                         float p, kdrop d);

#endif
