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
    const int tr = threadIdx.x / 8, tc = threadIdx.x % 8;
    load_rows<DH>(Qs, a, base, i0, TR, L, 0, h, a.sc);
    sbm_load_rows(T1s, s.T1, s, base, i0, TR, L, h);
    for (int r = threadIdx.x; r < TR; r += NTHREADS)
        qv[r] = i0 + r < L && a.bt.mask[base + i0 + r] != 0.0f ? 1.0f : 0.0f;
    const rng_stream drop = rng_make(a.d.seed, RNG_DROPOUT, a.d.step, a.d.layer,
                                     a.d.slot + (uint32_t)h, a.bt.sample[b]);
    const rng_stream graph = rng_make(s.seed, RNG_GRAPH, s.step, s.layer, s.head0 + (uint32_t)h,
                                      a.bt.sample[b]);
    float m[RPT], l[RPT], o[RPT][CPT];
    bool edge[RPT];
#pragma unroll
    for (int r = 0; r < RPT; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
        edge[r] = false;
#pragma unroll
        for (int c = 0; c < CPT; c++) o[r][c] = 0.0f;
    }
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
#pragma unroll
        for (int r = 0; r < RPT; r++)
#pragma unroll
            for (int c = 0; c < 8; c++) sc[r][c] = 0.0f;
#pragma unroll 4
        for (int x = 0; x < DH; x++) {
            float kx[8];
#pragma unroll
            for (int c = 0; c < 8; c++) kx[c] = Ks[(tc + 8 * c) * P + x];
#pragma unroll
            for (int r = 0; r < RPT; r++) {
                const float q = Qs[(tr * RPT + r) * P + x];
#pragma unroll
                for (int c = 0; c < 8; c++) sc[r][c] = fmaf(q, kx[c], sc[r][c]);
            }
        }
#pragma unroll
        for (int r = 0; r < RPT; r++) {
            float mt = -INFINITY;
#pragma unroll
            for (int c = 0; c < 8; c++) {
                const bool e = (bits >> (r * 8 + c)) & 1u;
                edge[r] = edge[r] || e;
                if (!e) sc[r][c] = -INFINITY;
                mt = fmaxf(mt, sc[r][c]);
            }
            const float mn = fmaxf(m[r], row_max8(mt));
            const float alpha = mn == -INFINITY ? 1.0f : expf(m[r] - mn);
            float ls = 0.0f;
            const int qi = tr * RPT + r;
#pragma unroll
            for (int c = 0; c < 8; c++) {
                float pr = mn == -INFINITY ? 0.0f : expf(sc[r][c] - mn);
                ls += pr;
                if (a.p > 0.0f) pr *= keep[qi * TC + tc + 8 * c] ? a.dscale : 0.0f;
                Ps[qi * (TC + 1) + tc + 8 * c] = pr;
            }
            l[r] = l[r] * alpha + row_sum8(ls);
            m[r] = mn;
#pragma unroll
            for (int c = 0; c < CPT; c++) o[r][c] *= alpha;
        }
        __syncthreads();
        for (int j = 0; j < TC; j++) {
            float vx[CPT];
#pragma unroll
            for (int c = 0; c < CPT; c++) vx[c] = Vs[j * P + tc + 8 * c];
#pragma unroll
            for (int r = 0; r < RPT; r++) {
                const float pr = Ps[(tr * RPT + r) * (TC + 1) + j];
#pragma unroll
                for (int c = 0; c < CPT; c++) o[r][c] = fmaf(pr, vx[c], o[r][c]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RPT; r++) {
        // Whether the row has an edge in any of the 8 threads' columns.
        const bool any = row_max8(edge[r] ? 1.0f : 0.0f) > 0.0f;
        const int i = i0 + tr * RPT + r;
        if (i >= L) continue;
        float *orow = out + (size_t)(base + i) * a.HD + h * DH;
        float lv;
        if (!any) {  // no edge: output 0, and backward's probabilities are exp(-inf) = 0
            lv = INFINITY;
#pragma unroll
            for (int c = 0; c < CPT; c++) orow[tc + 8 * c] = 0.0f;
        } else if (m[r] == -INFINITY) {  // edges, but only NaN scores: a NaN row
            lv = NAN;
#pragma unroll
            for (int c = 0; c < CPT; c++) orow[tc + 8 * c] = NAN;
        } else {
            const float inv = 1.0f / l[r];
            lv = m[r] + logf(l[r]);
#pragma unroll
            for (int c = 0; c < CPT; c++) orow[tc + 8 * c] = o[r][c] * inv;
        }
        if (tc == 0) lse[(size_t)(base + i) * a.H + h] = lv;
    }
}

#endif
