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

// Backward tiles are SBM_BTR = 32 rows (queries for dQ, keys for dK/dV) against 64 streamed:
// the straight-through accumulators (k per row) then live in shared memory, and every tile fits
// an H100/H200's 227 KB for k <= 128.
#define SBM_BTR 32

// Shared memory: attention tiles (Q, K, V, probabilities, dropout flags), sampling tiles
// (Yq S, memberships, words, validity) and, backward, the straight-through accumulators.
template <int DH, int TR, int TM> struct sbm_attn_smem {
    using LY = tile_layout<DH, TM>;
    static size_t fwd(int kc) {
        return sizeof(typename LY::E) *
                   ((size_t)TR * LY::P + 2 * (size_t)TC * LY::P + (size_t)TR * LY::PS) +
               sizeof(float) * (size_t)TR * LY::STAGE + (size_t)TR * TC +
               sbm_tile_smem<TR>::bytes(kc);
    }
};
template <int DH, int TM> struct sbm_bwd_smem {
    using LY = tile_layout<DH, TM>;
    static constexpr int R = SBM_BTR, P = LY::P, PS = LY::PS, ST = R * LY::STAGE;
    static constexpr size_t e = sizeof(typename LY::E);
    using PAD = sbm_pad<(TM != TM_SIMT)>;
    // Q, dO (R rows), K, V (TC), ds and G tiles, lse and D, dropout flags, then T1 (R), Yk (TC),
    // words, validity and the accumulator G Yk [R][kc].
    static size_t q(int kc) {
        return e * (2 * (size_t)R * P + 2 * (size_t)TC * P + (size_t)R * PS) +
               sizeof(float) * ((size_t)R * PS + 2 * (size_t)R + ST) +
               (size_t)R * TC + sbm_tile_smem<R>::bytes_pk(PAD::pk(kc)) +
               sizeof(float) * (size_t)R * PAD::ks(kc);
    }
    // K, V (R keys), Q, dO (TC queries), ds, p~ and G tiles, lse and D of the queries, flags,
    // then T1 and Yq of the queries, Yk of the keys, words, validity, accumulator G^T Yq [R][kc].
    static size_t kv(int kc) {
        return e * (2 * (size_t)R * P + 2 * (size_t)TC * P + 2 * (size_t)R * PS) +
               sizeof(float) * ((size_t)R * PS + 2 * (size_t)TC + ST) +
               (size_t)TC * R +
               sizeof(float) * (2 * (size_t)TC * PAD::pk(kc) +
                                (size_t)R * PAD::pk(kc) + TC + R) +
               sizeof(uint32_t) * (size_t)TC * R +
               sizeof(float) * (size_t)R * PAD::ks(kc);
    }
};

__device__ __forceinline__ float sbm_ste_clip(float x) {
    return x > 1.0f ? 1.0f : (x < -1.0f ? -1.0f : x);
}

// acc[row][u] += sum_j G[row][j] Y[j][u] (G [TR][PS], Y [TC][sbm_pad::pk], acc [TR][ks]): the
// straight-through products G Yk and G^T Yq; SIMT: this thread's rows and clusters tc + 8 m.
template <int TM, int PS, int RPT>
__device__ __forceinline__ void sbm_ste_accumulate(float *acc, const float *G, const float *Y,
                                                   int kc) {
    if constexpr (TM) {
        mma_tile_acc<16 * RPT, TC>(acc, sbm_pad<true>::ks(kc), sbm_pad<true>::kc16(kc), G, PS, Y,
                                   sbm_pad<true>::pk(kc));
        return;
    }
    const int tr = threadIdx.x / 8, tc = threadIdx.x % 8, PK = kc + 1;
#pragma unroll
    for (int r = 0; r < RPT; r++) {
        const int row = tr * RPT + r;
        for (int u = tc; u < kc; u += 8) {
            float t = acc[row * kc + u];
            for (int j = 0; j < TC; j++) t = fmaf(G[row * PS + j], Y[j * PK + u], t);
            acc[row * kc + u] = t;
        }
    }
}

// out [T, H*DH] and lse [T, H]: grid (query tiles of TR, B, H). a: the attention's tensors and
// dropout; s: the sampling's (same batch).
template <int DH, int TR, int TM>
__global__ void __launch_bounds__(NTHREADS)
    sbm_attn_fwd_kernel(tile_args a, sbm_tile_args s, float *out, float *lse) {
    using LY = tile_layout<DH, TM>;
    using E = typename LY::E;
    constexpr int RPT = TR / 16, CPT = DH / 8, P = LY::P, PS = LY::PS;
    const int b = blockIdx.y, h = blockIdx.z, i0 = blockIdx.x * TR;
    const int L = a.bt.len[b], base = a.bt.off[b];
    if (i0 >= L || sbm_tile_skips(s, b, h)) return;
    SBMT_DYN_SMEM(float, smem);
    E *Qs = (E *)smem, *Ks = Qs + TR * P, *Vs = Ks + TC * P, *Ps = Vs + TC * P;
    float *stage = (float *)(Ps + TR * PS);
    uint8_t *keep = (uint8_t *)(stage + TR * LY::STAGE);
    float *T1s = (float *)(keep + TR * TC);  // TR * TC is a multiple of 4: aligned
    const int PK = s.kc + 1;
    float *Yks = T1s + TR * PK, *qv = Yks + TC * PK, *kv = qv + TR;
    uint32_t *W = (uint32_t *)(kv + TC);
    load_rows<DH, P>(Qs, a, base, i0, TR, L, 0, h, a.sc);
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
        load_rows<DH, P>(Ks, a, base, j0, TC, L, 1, h, 1.0f);
        load_rows<DH, P>(Vs, a, base, j0, TC, L, 2, h, 1.0f);
        sbm_load_rows(Yks, s.Yk, s, base, j0, TC, L, h);
        for (int j = threadIdx.x; j < TC; j += NTHREADS)
            kv[j] = j0 + j < L && a.bt.mask[base + j0 + j] != 0.0f ? 1.0f : 0.0f;
        sbm_tile_words<TR>(W, s, graph, i0, j0);
        if (a.p > 0.0f) draw_keep<TR, TC>(keep, a, drop, i0, j0);
        __syncthreads();
        const uint32_t bits = sbm_tile_flags<TR>(T1s, Yks, W, qv, kv, s, PK);
        float sc[RPT][8];
        tile_scores<DH, TM>(sc, Qs, Ks, stage);
#pragma unroll
        for (int r = 0; r < RPT; r++)
#pragma unroll
            for (int c = 0; c < 8; c++) {
                const bool e = (bits >> (r * 8 + c)) & 1u;
                edge[r] = edge[r] || e;
                if (!e) sc[r][c] = -INFINITY;
            }
        online_update<PS>(on, sc, Ps, keep, a);
        __syncthreads();
        tile_accumulate<DH, TM>(on.o, Ps, Vs, stage);
    }
    bool has[RPT];  // whether the row has an edge in any of its 8 threads' columns
#pragma unroll
    for (int r = 0; r < RPT; r++) has[r] = row_max8(edge[r] ? 1.0f : 0.0f) > 0.0f;
    online_write<DH>(on, has, a, base, i0, L, h, out, lse);
}

// dQ and G Yk: grid (query tiles of SBM_BTR, B, H). For the edges of each row: p = exp(s -
// lse), ds = p (dp m - D) with dp = dy . v and m the dropout factor, dQ = sc sum ds k and the
// straight-through G = clip(ds + reg, -1, 1), GYk = sum G Yk (SPEC.md section 2.6). dqkv's Q part
// of the block's rows is written, GYk [T, H*kc] likewise.
template <int DH, int TM>
__global__ void __launch_bounds__(NTHREADS)
    sbm_attn_bwd_q_kernel(tile_args a, sbm_tile_args s, float *dqkv, float *GYk,
                          const float *Dbuf, const float *dout, const float *lse, float reg) {
    using LY = tile_layout<DH, TM>;
    using E = typename LY::E;
    constexpr int TR = SBM_BTR, RPT = TR / 16, CPT = DH / 8, P = LY::P, PS = LY::PS;
    const int b = blockIdx.y, h = blockIdx.z, i0 = blockIdx.x * TR;
    const int L = a.bt.len[b], base = a.bt.off[b], kc = s.kc, Hk = s.H * kc;
    using PAD = sbm_pad<(TM != TM_SIMT)>;
    const int PK = PAD::pk(kc), KW = PAD::width(kc), KS = PAD::ks(kc);
    if (i0 >= L || sbm_tile_skips(s, b, h)) return;
    SBMT_DYN_SMEM(float, smem);
    E *Qs = (E *)smem, *dOs = Qs + TR * P, *Ks = dOs + TR * P, *Vs = Ks + TC * P;
    E *Ps = Vs + TC * P;
    float *Gs = (float *)(Ps + TR * PS), *ls = Gs + TR * PS, *Ds = ls + TR;
    float *stage = Ds + TR;
    uint8_t *keep = (uint8_t *)(stage + TR * LY::STAGE);
    float *T1s = (float *)(keep + TR * TC), *Yks = T1s + TR * PK, *qv = Yks + TC * PK;
    float *kv = qv + TR;
    uint32_t *W = (uint32_t *)(kv + TC);
    float *acc = (float *)(W + TR * TC);  // [TR][KS]: G Yk of the block's rows
    const int tr = threadIdx.x / 8, tc = threadIdx.x % 8;
    load_rows<DH, P>(Qs, a, base, i0, TR, L, 0, h, a.sc);
    load_rows_hd<DH, P>(dOs, dout, a, base, i0, TR, L, h);
    sbm_load_rows(T1s, s.T1, s, base, i0, TR, L, h, PK, KW);
    for (int r = threadIdx.x; r < TR; r += NTHREADS) {
        const bool in = i0 + r < L;
        ls[r] = in ? lse[(size_t)(base + i0 + r) * a.H + h] : INFINITY;
        Ds[r] = in ? Dbuf[(size_t)(base + i0 + r) * a.H + h] : 0.0f;
        qv[r] = in && a.bt.mask[base + i0 + r] != 0.0f ? 1.0f : 0.0f;
    }
    for (int x = threadIdx.x; x < TR * KS; x += NTHREADS) acc[x] = 0.0f;
    const rng_stream drop = rng_make(a.d.seed, RNG_DROPOUT, a.d.step, a.d.layer,
                                     a.d.slot + (uint32_t)h, a.bt.sample[b]);
    const rng_stream graph = rng_make(s.seed, RNG_GRAPH, s.step, s.layer, s.head0 + (uint32_t)h,
                                      a.bt.sample[b]);
    float dq[RPT][CPT];
    tile_zero(dq);
    for (int j0 = 0; j0 < L; j0 += TC) {
        __syncthreads();
        load_rows<DH, P>(Ks, a, base, j0, TC, L, 1, h, 1.0f);
        load_rows<DH, P>(Vs, a, base, j0, TC, L, 2, h, 1.0f);
        sbm_load_rows(Yks, s.Yk, s, base, j0, TC, L, h, PK, KW);
        for (int j = threadIdx.x; j < TC; j += NTHREADS)
            kv[j] = j0 + j < L && a.bt.mask[base + j0 + j] != 0.0f ? 1.0f : 0.0f;
        sbm_tile_words<TR>(W, s, graph, i0, j0);
        if (a.p > 0.0f) draw_keep<TR, TC>(keep, a, drop, i0, j0);
        __syncthreads();
        const uint32_t bits = sbm_tile_flags<TR>(T1s, Yks, W, qv, kv, s, PK);
        float sc[RPT][8], g[RPT][8];
        tile_scores<DH, TM>(sc, Qs, Ks, stage);
        tile_scores<DH, TM>(g, dOs, Vs, stage);
#pragma unroll
        for (int r = 0; r < RPT; r++) {
            const int qi = tr * RPT + r;
#pragma unroll
            for (int c = 0; c < 8; c++) {
                const int kj = tc + 8 * c;
                float ds = 0.0f, G = 0.0f, pa;
                if ((bits >> (r * 8 + c)) & 1u) {
                    ds = tile_pair_ds(a, sc[r][c], g[r][c], ls[qi], Ds[qi], keep, qi * TC + kj,
                                      &pa);
                    G = sbm_ste_clip(ds + reg);
                }
                Ps[qi * PS + kj] = tile_elem<E>(ds);
                Gs[qi * PS + kj] = G;
            }
        }
        __syncthreads();
        tile_accumulate<DH, TM>(dq, Ps, Ks, stage);
        sbm_ste_accumulate<TM, PS, RPT>(acc, Gs, Yks, kc);
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < RPT; r++) {
        const int qi = tr * RPT + r, i = i0 + qi;
        if (i >= L) continue;
        float *d = dqkv + (size_t)(base + i) * a.ld + h * DH;
#pragma unroll
        for (int c = 0; c < CPT; c++) d[tc + 8 * c] = dq[r][c] * a.sc;
        for (int u = tc; u < kc; u += 8)
            GYk[(size_t)(base + i) * Hk + h * kc + u] = acc[qi * KS + u];
    }
}

// dK, dV and G^T Yq: grid (key tiles of SBM_BTR, B, H), 64 queries streamed. dK = sc sum ds q,
// dV = sum p m dy, GTYq = sum G Yq over the edges of each key.
template <int DH, int TM>
__global__ void __launch_bounds__(NTHREADS)
    sbm_attn_bwd_kv_kernel(tile_args a, sbm_tile_args s, const float *Yq, float *dqkv,
                           float *GTYq, const float *Dbuf, const float *dout, const float *lse,
                           float reg) {
    using LY = tile_layout<DH, TM>;
    using E = typename LY::E;
    constexpr int TR = SBM_BTR, RPT = TR / 16, CPT = DH / 8, P = LY::P, PS = LY::PS;
    const int b = blockIdx.y, h = blockIdx.z, j0 = blockIdx.x * TR;
    const int L = a.bt.len[b], base = a.bt.off[b], kc = s.kc, Hk = s.H * kc;
    using PAD = sbm_pad<(TM != TM_SIMT)>;
    const int PK = PAD::pk(kc), KW = PAD::width(kc), KS = PAD::ks(kc);
    if (j0 >= L || sbm_tile_skips(s, b, h)) return;
    SBMT_DYN_SMEM(float, smem);
    E *Ks = (E *)smem, *Vs = Ks + TR * P, *Qs = Vs + TR * P, *dOs = Qs + TC * P;
    E *S1 = dOs + TC * P, *S2 = S1 + TR * PS;
    float *S3 = (float *)(S2 + TR * PS);
    float *ls = S3 + TR * PS, *Ds = ls + TC, *stage = Ds + TC;
    uint8_t *keep = (uint8_t *)(stage + TR * LY::STAGE);  // [TC queries][TR keys]
    float *T1s = (float *)(keep + TC * TR), *Yqs = T1s + TC * PK, *Yks = Yqs + TC * PK;
    float *qv = Yks + TR * PK, *kv = qv + TC;
    uint32_t *W = (uint32_t *)(kv + TR);  // [TC queries][TR keys]
    float *acc = (float *)(W + TC * TR);  // [TR][KS]: G^T Yq of the block's keys
    const int tr = threadIdx.x / 8, tc = threadIdx.x % 8;
    load_rows<DH, P>(Ks, a, base, j0, TR, L, 1, h, a.sc);
    load_rows<DH, P>(Vs, a, base, j0, TR, L, 2, h, 1.0f);
    sbm_load_rows(Yks, s.Yk, s, base, j0, TR, L, h, PK, KW);
    for (int j = threadIdx.x; j < TR; j += NTHREADS)
        kv[j] = j0 + j < L && a.bt.mask[base + j0 + j] != 0.0f ? 1.0f : 0.0f;
    for (int x = threadIdx.x; x < TR * KS; x += NTHREADS) acc[x] = 0.0f;
    const rng_stream drop = rng_make(a.d.seed, RNG_DROPOUT, a.d.step, a.d.layer,
                                     a.d.slot + (uint32_t)h, a.bt.sample[b]);
    const rng_stream graph = rng_make(s.seed, RNG_GRAPH, s.step, s.layer, s.head0 + (uint32_t)h,
                                      a.bt.sample[b]);
    float dk[RPT][CPT], dv[RPT][CPT];
    tile_zero(dk);
    tile_zero(dv);
    for (int q0 = 0; q0 < L; q0 += TC) {
        __syncthreads();
        load_rows<DH, P>(Qs, a, base, q0, TC, L, 0, h, 1.0f);
        load_rows_hd<DH, P>(dOs, dout, a, base, q0, TC, L, h);
        sbm_load_rows(T1s, s.T1, s, base, q0, TC, L, h, PK, KW);
        sbm_load_rows(Yqs, Yq, s, base, q0, TC, L, h, PK, KW);
        for (int i = threadIdx.x; i < TC; i += NTHREADS) {
            const bool in = q0 + i < L;
            ls[i] = in ? lse[(size_t)(base + q0 + i) * a.H + h] : INFINITY;
            Ds[i] = in ? Dbuf[(size_t)(base + q0 + i) * a.H + h] : 0.0f;
            qv[i] = in && a.bt.mask[base + q0 + i] != 0.0f ? 1.0f : 0.0f;
        }
        sbm_tile_words<TC, TR>(W, s, graph, q0, j0);
        if (a.p > 0.0f) draw_keep<TC, TR>(keep, a, drop, q0, j0);
        __syncthreads();
        const uint32_t bits = sbm_tile_flags_keys<TR>(Yks, T1s, W, kv, qv, s, PK);
        float sc[RPT][8], g[RPT][8];
        tile_scores<DH, TM>(sc, Ks, Qs, stage);
        tile_scores<DH, TM>(g, Vs, dOs, stage);
#pragma unroll
        for (int r = 0; r < RPT; r++) {
            const int kj = tr * RPT + r;
#pragma unroll
            for (int c = 0; c < 8; c++) {
                const int qi = tc + 8 * c;
                float ds = 0.0f, pa = 0.0f, G = 0.0f;
                if ((bits >> (r * 8 + c)) & 1u) {
                    ds = tile_pair_ds(a, sc[r][c], g[r][c], ls[qi], Ds[qi], keep, qi * TR + kj,
                                      &pa);
                    G = sbm_ste_clip(ds + reg);
                }
                S1[kj * PS + qi] = tile_elem<E>(ds);
                S2[kj * PS + qi] = tile_elem<E>(pa);
                S3[kj * PS + qi] = G;
            }
        }
        __syncthreads();
        tile_accumulate<DH, TM>(dk, S1, Qs, stage);
        tile_accumulate<DH, TM>(dv, S2, dOs, stage);
        sbm_ste_accumulate<TM, PS, RPT>(acc, S3, Yqs, kc);
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < RPT; r++) {
        const int kj = tr * RPT + r, j = j0 + kj;
        if (j >= L) continue;
        float *d = dqkv + (size_t)(base + j) * a.ld + a.HD + h * DH;
#pragma unroll
        for (int c = 0; c < CPT; c++) {
            d[tc + 8 * c] = dk[r][c] * a.sc;
            d[a.HD + tc + 8 * c] = dv[r][c];
        }
        for (int u = tc; u < kc; u += 8)
            GTYq[(size_t)(base + j) * Hk + h * kc + u] = acc[kj * KS + u];
    }
}

#endif
