// sbm_attn_tiled.cuh: sampled-tile SBM attention on the GPU, forward (SPEC.md section 2.5; the
// design of the SBM-on-GPU issue): per (query tile, key tile) the edge probabilities and draws
// of sbm_tile.cuh give the tile's edges, the scores of those pairs go through the online softmax
// of attention_tiled_kernels.cuh, attention dropout and the aggregation, so a unit's attention
// equals the CPU's edge attention on the CPU dense sampler's graph without a CSR or an n x n
// buffer. Per row it keeps the log-sum-exp over its edges (+inf for a row without edges), from
// which backward recomputes each edge's probability. Device code in a header so that
// tests/test_cuda_emu.cc runs it through tests/cuda_emu.h.
#ifndef SBMT_CUDA_SBM_ATTN_TILED_CUH
#define SBMT_CUDA_SBM_ATTN_TILED_CUH

#include "kernels/cuda/attention_tiled_kernels.cuh"
#include "kernels/cuda/sbm_tile.cuh"

static_assert(TC == SBM_TC && NTHREADS == SBM_NTHREADS, "one thread layout for both tiles");

// Shared memory of the forward: attention tiles (Q, K, V, probabilities, dropout flags) and
// sampling tiles (Yq S, Yk, words, validity).
template <int DH, int TR> struct sbm_attn_smem {
    static size_t fwd(int kc) {
        return sizeof(float) * ((size_t)TR * (DH + 1) + 2 * (size_t)TC * (DH + 1) +
                                (size_t)TR * (TC + 1)) +
               (size_t)TR * TC + sbm_tile_smem<TR>::bytes(kc);
    }
};

// out [T, H*DH] and lse [T, H]: grid (query tiles of TR, B, H). a: the attention's tensors and
// dropout; s: the sampling's (same batch).
template <int DH, int TR>
__global__ void __launch_bounds__(NTHREADS)
    sbm_attn_fwd_kernel(tile_args a, sbm_tile_args s, float *out, float *lse) {
    constexpr int RPT = TR / 16, CPT = DH / 8, P = DH + 1;
    const int b = blockIdx.y, h = blockIdx.z, i0 = blockIdx.x * TR;
    const int L = a.bt.len[b], base = a.bt.off[b];
    if (i0 >= L) return;
    SBMT_DYN_SMEM(float, smem);
    float *Qs = smem, *Ks = Qs + TR * P, *Vs = Ks + TC * P, *Ps = Vs + TC * P;
    uint8_t *keep = (uint8_t *)(Ps + TR * (TC + 1));
    float *T1s = (float *)(keep + TR * TC);  // TR * TC is a multiple of 4: aligned
    const int PK = s.kc + 1;
    float *Yks = T1s + TR * PK, *qv = Yks + TC * PK, *kv = qv + TR;
    uint32_t *W = (uint32_t *)(kv + TC);
    load_rows<DH>(Qs, a, base, i0, TR, L, 0, h, a.sc);
    sbm_load_rows(T1s, s.T1, s, base, i0, TR, L, h);
    for (int r = threadIdx.x; r < TR; r += NTHREADS)
        qv[r] = i0 + r < L && a.bt.mask[base + i0 + r] != 0.0f ? 1.0f : 0.0f;
    const rng_stream drop = rng_make(a.d.seed, RNG_DROPOUT, a.d.step, a.d.layer,
                                     a.d.slot + (uint32_t)h, a.bt.sample[b]);
    const rng_stream graph = rng_make(s.seed, RNG_GRAPH, s.step, s.layer, s.head0 + (uint32_t)h,
                                      a.bt.sample[b]);
    online_rows<RPT, CPT> on;
    online_init(on);
    bool edge[RPT];
#pragma unroll
    for (int r = 0; r < RPT; r++) edge[r] = false;
    for (int j0 = 0; j0 < L; j0 += TC) {
        __syncthreads();
        load_rows<DH>(Ks, a, base, j0, TC, L, 1, h, 1.0f);
        load_rows<DH>(Vs, a, base, j0, TC, L, 2, h, 1.0f);
        sbm_load_rows(Yks, s.Yk, s, base, j0, TC, L, h);
        for (int j = threadIdx.x; j < TC; j += NTHREADS)
            kv[j] = j0 + j < L && a.bt.mask[base + j0 + j] != 0.0f ? 1.0f : 0.0f;
        sbm_tile_words<TR>(W, s, graph, i0, j0);
        if (a.p > 0.0f) draw_keep<TR, TC>(keep, a, drop, i0, j0);
        __syncthreads();
        const uint32_t bits = sbm_tile_flags<TR>(T1s, Yks, W, qv, kv, s);
        float sc[RPT][8];
        tile_scores<DH, RPT>(sc, Qs, Ks);
#pragma unroll
        for (int r = 0; r < RPT; r++)
#pragma unroll
            for (int c = 0; c < 8; c++) {
                const bool e = (bits >> (r * 8 + c)) & 1u;
                edge[r] = edge[r] || e;
                if (!e) sc[r][c] = -INFINITY;
            }
        online_update(on, sc, Ps, keep, a);
        __syncthreads();
        online_accumulate<DH>(on, Ps, Vs);
    }
    bool has[RPT];  // whether the row has an edge in any of its 8 threads' columns
#pragma unroll
    for (int r = 0; r < RPT; r++) has[r] = row_max8(edge[r] ? 1.0f : 0.0f) > 0.0f;
    online_write<DH>(on, has, a, base, i0, L, h, out, lse);
}

#endif
