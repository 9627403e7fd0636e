// attention_tiled.cu: tiled softmax attention for the CUDA backend (FlashAttention-2's schedule;
// the tile products in fp32 on the SIMT cores, or with train.precision tf32 / bf16 on tensor
// cores through tile_mma.cuh, with rows padded for WMMA): a block owns a tile of query rows
// (forward, dQ) or of key rows (dK, dV), streams the other side through shared memory in tiles, keeps an online softmax in
// registers and never stores a score matrix. Backward is two kernels (query tiles, key tiles)
// that each recompute the scores, so no gradient is accumulated atomically and results are
// deterministic. Dropout masks come from the same Philox words as the CPU (dropout.h), drawn
// once per tile into shared memory. Heads of 16, 32, 64 or 128 use it; the row-wise kernels of
// attention.cu serve the rest and are the cross-check.
//
// Thread layout (128 threads): thread t owns RPT = TR / 16 rows tr * RPT + a of its tile
// (tr = t / 8) and the columns tc + 8 c of the streamed tile and of the head (tc = t % 8), so
// the 8 threads of a row are adjacent lanes (row reductions are 3 shuffles) and, with rows
// padded to DH + 1 floats, the SIMT products read shared tiles free of bank conflicts.
#include <math.h>

#include "kernels/cuda/attention_tiled.cuh"

tile_args cuda_attn_args(kctx *k, const float *qkv, int H, int dh, float p, kdrop d) {
    tile_args a;
    a.bt = cuda_of(k)->batch;
    a.qkv = qkv;
    a.H = H;
    a.dh = dh;
    a.HD = H * dh;
    a.ld = 3 * H * dh;
    a.sc = 1.0f / sqrtf((float)dh);
    a.p = p;
    a.dscale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    a.thr = dropout_threshold(p);
    a.d = d;
    return a;
}

namespace {

template <int DH, int TR, int TM>
void launch_fwd_as(kctx *k, const tile_args &a, const kbatch *bt, float *out, float *lse) {
    const size_t sm = tile_smem<DH, TR, TM>::fwd;
    CUDA_CHECK(cudaFuncSetAttribute(tiled_fwd<DH, TR, TM>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
    dim3 grid((unsigned)((bt->n + TR - 1) / TR), (unsigned)bt->B, (unsigned)a.H);
    tiled_fwd<DH, TR, TM><<<grid, NTHREADS, sm, cuda_of(k)->stream>>>(a, out, lse);
    CUDA_CHECK(cudaGetLastError());
}

template <int DH, int TR>
void launch_fwd(kctx *k, const tile_args &a, const kbatch *bt, float *out, float *lse) {
    switch (cuda_tile_mode(k)) {
    case TM_TF32: launch_fwd_as<DH, TR, TM_TF32>(k, a, bt, out, lse); break;
    case TM_BF16: launch_fwd_as<DH, TR, TM_BF16>(k, a, bt, out, lse); break;
    default: launch_fwd_as<DH, TR, TM_SIMT>(k, a, bt, out, lse);
    }
}

template <int DH, int TR, int TM>
void launch_bwd_as(kctx *k, const tile_args &a, const kbatch *bt, float *dqkv, float *Dbuf,
                   const float *dout, const float *lse) {
    cuda_state *s = cuda_of(k);
    const size_t smq = tile_smem<DH, TR, TM>::bwd_q, smkv = tile_smem<DH, TR, TM>::bwd_kv;
    CUDA_CHECK(cudaFuncSetAttribute(tiled_bwd_q<DH, TR, TM>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smq));
    CUDA_CHECK(cudaFuncSetAttribute(tiled_bwd_kv<DH, TR, TM>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smkv));
    dim3 grid((unsigned)((bt->n + TR - 1) / TR), (unsigned)bt->B, (unsigned)a.H);
    tiled_bwd_q<DH, TR, TM><<<grid, NTHREADS, smq, s->stream>>>(a, dqkv, Dbuf, dout, lse);
    CUDA_CHECK(cudaGetLastError());
    tiled_bwd_kv<DH, TR, TM><<<grid, NTHREADS, smkv, s->stream>>>(a, dqkv, Dbuf, dout, lse);
    CUDA_CHECK(cudaGetLastError());
}

template <int DH, int TR>
void launch_bwd(kctx *k, const tile_args &a, const kbatch *bt, float *dqkv, const float *dout,
                const float *out, const float *lse) {
    cuda_state *s = cuda_of(k);
    cuda_work_reserve(s, sizeof(float) * (size_t)bt->T * a.H);
    float *Dbuf = (float *)s->dwork;
    // Rows of padded positions past a sequence's length are not written by the tiles.
    CUDA_CHECK(cudaMemsetAsync(dqkv, 0, sizeof(float) * (size_t)bt->T * a.ld, s->stream));
    const size_t warps = (size_t)bt->T * a.H;
    rowdot_kernel<<<(unsigned)((warps + 3) / 4), 128, 0, s->stream>>>(a, DH, Dbuf, dout, out);
    CUDA_CHECK(cudaGetLastError());
    switch (cuda_tile_mode(k)) {
    case TM_TF32: launch_bwd_as<DH, TR, TM_TF32>(k, a, bt, dqkv, Dbuf, dout, lse); break;
    case TM_BF16: launch_bwd_as<DH, TR, TM_BF16>(k, a, bt, dqkv, Dbuf, dout, lse); break;
    default: launch_bwd_as<DH, TR, TM_SIMT>(k, a, bt, dqkv, Dbuf, dout, lse);
    }
}

}  // namespace

int cuda_attn_tiled_supports(int dh) { return dh == 16 || dh == 32 || dh == 64 || dh == 128; }

// Tile heights: 64 rows up to heads of 64; 32 for 128, so the backward's tiles fit in shared
// memory (tile_smem: at most ~150 KB of an H100/H200's 227 KB).
void cuda_attn_tiled_fwd(kctx *k, float *out, float *lse, const float *qkv, const kbatch *bt,
                         int H, int dh, float p, kdrop d) {
    tile_args a = cuda_attn_args(k, qkv, H, dh, p, d);
    switch (dh) {
    case 16: launch_fwd<16, 64>(k, a, bt, out, lse); break;
    case 32: launch_fwd<32, 64>(k, a, bt, out, lse); break;
    case 64: launch_fwd<64, 64>(k, a, bt, out, lse); break;
    case 128: launch_fwd<128, 32>(k, a, bt, out, lse); break;
    default: sbmt_fatal(__FILE__, __LINE__, "tiled attention: head size %d not supported", dh);
    }
}

void cuda_attn_tiled_bwd(kctx *k, float *dqkv, const float *dout, const float *qkv,
                         const float *out, const float *lse, const kbatch *bt, int H, int dh,
                         float p, kdrop d) {
    tile_args a = cuda_attn_args(k, qkv, H, dh, p, d);
    switch (dh) {
    case 16: launch_bwd<16, 64>(k, a, bt, dqkv, dout, out, lse); break;
    case 32: launch_bwd<32, 64>(k, a, bt, dqkv, dout, out, lse); break;
    case 64: launch_bwd<64, 64>(k, a, bt, dqkv, dout, out, lse); break;
    case 128: launch_bwd<128, 32>(k, a, bt, dqkv, dout, out, lse); break;
    default: sbmt_fatal(__FILE__, __LINE__, "tiled attention: head size %d not supported", dh);
    }
}
