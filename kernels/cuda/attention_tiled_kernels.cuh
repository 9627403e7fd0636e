// attention_tiled_kernels.cuh: the device code of the tiled softmax attention (see
// attention_tiled.cu for the method): the kernels, their shared-memory sizes and helpers. A
// header so that tests/test_cuda_emu.cc can run the same kernels on the CPU through
// tests/cuda_emu.h, which defines the CUDA built-ins they use before including it.
#ifndef SBMT_CUDA_ATTENTION_TILED_KERNELS_CUH
#define SBMT_CUDA_ATTENTION_TILED_KERNELS_CUH

#include <math.h>

#include "kernels/cuda/dbatch.h"
#include "kernels/cuda/tile_mma.cuh"
#include "kernels/dropout.h"
#include "kernels/kernels.h"

#ifndef SBMT_DYN_SMEM  // tests/cuda_emu.h defines its own
#define SBMT_DYN_SMEM(type, name) extern __shared__ __align__(128) type name[]
#endif

#define TC 64          // streamed tile: keys (forward, dQ) or queries (dK, dV)
#define NTHREADS 128

// The operand tiles of a kernel (TM, tile_mma.cuh): element type E (float; bf16 for TM_BF16)
// and row strides in elements, head rows (Q, K, V, dO) P = DH + pad and score rows
// (probabilities, ds) PS = TC + pad. The SIMT products read conflict-free with pad 1; the
// tensor-core products need rows 16 bytes apart and tiles 32-byte aligned, so pad 4 floats (8
// bf16), which keeps every tile a multiple of 32 bytes, plus a staging tile of TR rows of
// STAGE floats for their outputs (rows P or PS floats apart, multiples of 4 either way).
template <int DH, int TM> struct tile_layout {
    static constexpr bool tcore = TM != TM_SIMT;
    using E = typename std::conditional<TM == TM_BF16, __nv_bfloat16, float>::type;
    static constexpr int pad = TM == TM_SIMT ? 1 : TM == TM_TF32 ? 4 : 8;
    static constexpr int P = DH + pad, PS = TC + pad;
    static constexpr int STAGE = tcore ? (P > PS ? P : PS) : 0;
};

// A value as an operand tile stores it (bf16: rounded to nearest even).
template <class E> __device__ __forceinline__ E tile_elem(float v) {
    if constexpr (std::is_same<E, float>::value) return v;
    else return __float2bfloat16_rn(v);
}

// The host's choice of TM for a context: train.precision.
static inline int cuda_tile_mode(const kctx *k) {
    return k->bf16 ? TM_BF16 : k->tf32 ? TM_TF32 : TM_SIMT;
}


// One softmax-attention call as kernels see it (the row-wise kernels of attention.cu too).
struct tile_args {
    dbatch bt;
    const float *qkv;  // [T, 3 H dh]
    int H, dh, ld, HD;  // heads, head size, 3 H dh, H dh
    float sc, p, dscale;  // 1/sqrt(dh), dropout probability, 1/(1-p)
    uint32_t thr;         // dropout_threshold(p)
    kdrop d;
};

static __device__ __forceinline__ float row_max8(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 4));
}

static __device__ __forceinline__ float row_sum8(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    return v + __shfl_xor_sync(0xffffffffu, v, 4);
}

// rows [r0, r0 + R) of one third (0 q, 1 k, 2 v) of head h into S[R][P]; rows at or past
// `lim` are zero.
template <int DH, int P, class E>
__device__ void load_rows(E *S, const tile_args &a, int base, int r0, int R, int lim,
                          int part, int h, float scale) {
    for (int x = threadIdx.x; x < R * DH; x += NTHREADS) {
        int r = x / DH, c = x % DH;
        float v = 0.0f;
        if (r0 + r < lim)
            v = a.qkv[(size_t)(base + r0 + r) * a.ld + part * a.HD + h * DH + c] * scale;
        S[r * P + c] = tile_elem<E>(v);
    }
}

// The same for a [T, HD] tensor (dout, out).
template <int DH, int P, class E>
__device__ void load_rows_hd(E *S, const float *X, const tile_args &a, int base, int r0,
                             int R, int lim, int h) {
    for (int x = threadIdx.x; x < R * DH; x += NTHREADS) {
        int r = x / DH, c = x % DH;
        S[r * P + c] = tile_elem<E>(r0 + r < lim ? X[(size_t)(base + r0 + r) * a.HD + h * DH + c]
                                                 : 0.0f);
    }
}

// keep[qi][kj] = 1 when element (query i0 + qi, key j0 + kj) of the head's dropout stream is
// kept (qi < NQ, kj < NK). Element e = i n + j uses half-word e % 8 of Philox block e / 8, as on
// the CPU; each thread draws whole blocks, so a row of NK keys costs NK / 8 + 1 Philox calls.
template <int NQ, int NK>
__device__ void draw_keep(uint8_t *keep, const tile_args &a, rng_stream st, int i0, int j0) {
    constexpr int BPR = NK / 8 + 1;  // blocks a row's NK elements can touch
    const uint32_t n = (uint32_t)a.bt.n;
    for (int x = threadIdx.x; x < NQ * BPR; x += NTHREADS) {
        int qi = x / BPR, q = x % BPR;
        uint32_t e0 = (uint32_t)(i0 + qi) * n + (uint32_t)j0;
        uint32_t blk = (e0 >> 3) + (uint32_t)q;
        philox4x32 w = rng_block(st, blk);
        #pragma unroll
        for (int t = 0; t < 8; t++) {
            uint32_t e = blk * 8u + (uint32_t)t;
            if (e < e0 || e >= e0 + NK) continue;
            keep[qi * NK + (int)(e - e0)] = dropout_u16(w, e) >= a.thr;
        }
    }
}

template <int DH, int TR, int TM>
struct tile_smem {
    using LY = tile_layout<DH, TM>;
    static constexpr int P = LY::P, PS = LY::PS;
    static constexpr size_t e = sizeof(typename LY::E), stage = (size_t)TR * LY::STAGE;
    static constexpr size_t fwd = e * ((size_t)TR * P + 2 * TC * P + TR * PS) +
                                  sizeof(float) * (TC + stage) + TR * TC;
    static constexpr size_t bwd_q = e * ((size_t)2 * TR * P + 2 * TC * P + TR * PS) +
                                    sizeof(float) * (TC + 2 * TR + stage) + TR * TC;
    static constexpr size_t bwd_kv = e * ((size_t)2 * TR * P + 2 * TC * P + 2 * TR * PS) +
                                     sizeof(float) * (2 * TC + stage) + TR * TC;
};

// The thread's micro-tile of a product of two shared tiles (rows padded to `stride` floats):
// s[r][c] = row tr * RPT + r of A . row tc + 8 c of B over len entries, each a chain of fmaf
// in index order (the same per pair whatever the tile's height, which the SBM kernels rely on
// to redraw identical graphs).
template <int RPT>
__device__ __forceinline__ void tile_products(float (&s)[RPT][8], const float *A, const float *B,
                                              int len, int stride) {
    const int tr = threadIdx.x / 8, tc = threadIdx.x % 8;
#pragma unroll
    for (int r = 0; r < RPT; r++)
#pragma unroll
        for (int c = 0; c < 8; c++) s[r][c] = 0.0f;
#pragma unroll 4
    for (int x = 0; x < len; x++) {
        float bx[8];
#pragma unroll
        for (int c = 0; c < 8; c++) bx[c] = B[(tc + 8 * c) * stride + x];
#pragma unroll
        for (int r = 0; r < RPT; r++) {
            const float ax = A[(tr * RPT + r) * stride + x];
#pragma unroll
            for (int c = 0; c < 8; c++) s[r][c] = fmaf(ax, bx[c], s[r][c]);
        }
    }
}

// One pair's softmax gradient in backward: p = exp(s - lse) (0 when lse = +inf: no key), the
// dropout factor mk of its flag keep[at] (read only when dropout is on), ds = p (g mk - D);
// *pa = p mk, the dropped-out probability dV aggregates.
__device__ __forceinline__ float tile_pair_ds(const tile_args &a, float s, float g, float lse,
                                              float D, const uint8_t *keep, int at, float *pa) {
    const float pr = expf(s - lse);
    const float mk = a.p > 0.0f ? (keep[at] ? a.dscale : 0.0f) : 1.0f;
    *pa = pr * mk;
    return pr * (g * mk - D);
}

// Scores (or dy . v) of a head's tiles: s[r][c] = A row tr RPT + r . B row tc + 8 c, for A
// [TR][P] and B [TC][P]. With tensor cores the product goes through the staging tile [TR][PS]
// (the barriers inside: every thread calls it).
template <int DH, int TM, int RPT, class E>
__device__ __forceinline__ void tile_scores(float (&s)[RPT][8], const E *A, const E *B,
                                            float *stage) {
    using LY = tile_layout<DH, TM>;
    static_assert(std::is_same<E, typename LY::E>::value, "operand tiles of the layout's type");
    if constexpr (TM == TM_SIMT) {
        (void)stage;
        tile_products<RPT>(s, A, B, DH, LY::P);
    } else {
        const int tr = threadIdx.x / 8, tc = threadIdx.x % 8;
        __syncthreads();  // the staging tile's last readers are done
        mma_tile<16 * RPT, TC, DH, true>(stage, LY::PS, A, LY::P, B, LY::P);
        __syncthreads();
#pragma unroll
        for (int r = 0; r < RPT; r++)
#pragma unroll
            for (int c = 0; c < 8; c++) s[r][c] = stage[(tr * RPT + r) * LY::PS + tc + 8 * c];
    }
}

template <int RPT, int CPT> __device__ __forceinline__ void tile_zero(float (&acc)[RPT][CPT]) {
#pragma unroll
    for (int r = 0; r < RPT; r++)
#pragma unroll
        for (int c = 0; c < CPT; c++) acc[r][c] = 0.0f;
}

// acc += W X for the thread's rows of W [TR][PS] and its columns tc + 8 c of X [TC][P] (the
// aggregation P V, and backward's ds K, ds Q, p dY). With tensor cores, through the staging
// tile [TR][P].
template <int DH, int TM, int RPT, int CPT, class E>
__device__ __forceinline__ void tile_accumulate(float (&acc)[RPT][CPT], const E *W, const E *X,
                                                float *stage) {
    using LY = tile_layout<DH, TM>;
    static_assert(std::is_same<E, typename LY::E>::value, "operand tiles of the layout's type");
    constexpr int P = LY::P, PS = LY::PS;
    const int tr = threadIdx.x / 8, tc = threadIdx.x % 8;
    if constexpr (TM != TM_SIMT) {
        __syncthreads();
        mma_tile<16 * RPT, DH, TC, false>(stage, P, W, PS, X, P);
        __syncthreads();
#pragma unroll
        for (int r = 0; r < RPT; r++)
#pragma unroll
            for (int c = 0; c < CPT; c++) acc[r][c] += stage[(tr * RPT + r) * P + tc + 8 * c];
    } else {
        (void)stage;
        for (int j = 0; j < TC; j++) {
            float xj[CPT];
#pragma unroll
            for (int c = 0; c < CPT; c++) xj[c] = X[j * P + tc + 8 * c];
#pragma unroll
            for (int r = 0; r < RPT; r++) {
                const float w = W[(tr * RPT + r) * PS + j];
#pragma unroll
                for (int c = 0; c < CPT; c++) acc[r][c] = fmaf(w, xj[c], acc[r][c]);
            }
        }
    }
}

// The forward's per-thread state and steps, shared with the SBM tile kernel
// (sbm_attn_tiled.cuh): an online softmax over the thread's RPT rows, key tile by key tile.
template <int RPT, int CPT> struct online_rows {
    float m[RPT], l[RPT], o[RPT][CPT];  // running maximum, sum of exp, output accumulators
};

template <int RPT, int CPT> __device__ __forceinline__ void online_init(online_rows<RPT, CPT> &st) {
#pragma unroll
    for (int r = 0; r < RPT; r++) {
        st.m[r] = -INFINITY;
        st.l[r] = 0.0f;
    }
    tile_zero(st.o);
}

// Takes one key tile's scores (-inf where a pair is not attended) into the state and leaves
// the tile's probabilities, after dropout, in Ps [.][PS] for tile_accumulate into st.o (after
// a barrier).
template <int PS, int RPT, int CPT, class E>
__device__ __forceinline__ void online_update(online_rows<RPT, CPT> &st, float (&s)[RPT][8],
                                              E *Ps, const uint8_t *keep, const tile_args &a) {
    const int tr = threadIdx.x / 8, tc = threadIdx.x % 8;
#pragma unroll
    for (int r = 0; r < RPT; r++) {
        float mt = -INFINITY;
#pragma unroll
        for (int c = 0; c < 8; c++) mt = fmaxf(mt, s[r][c]);
        const float mn = fmaxf(st.m[r], row_max8(mt));
        // No finite score yet: nothing to rescale, and exp(-inf - -inf) must not be NaN.
        const float alpha = mn == -INFINITY ? 1.0f : expf(st.m[r] - mn);
        float ls = 0.0f;
        const int qi = tr * RPT + r;
#pragma unroll
        for (int c = 0; c < 8; c++) {
            float pr = mn == -INFINITY ? 0.0f : expf(s[r][c] - mn);
            ls += pr;
            if (a.p > 0.0f) pr *= keep[qi * TC + tc + 8 * c] ? a.dscale : 0.0f;
            Ps[qi * PS + tc + 8 * c] = tile_elem<E>(pr);
        }
        st.l[r] = st.l[r] * alpha + row_sum8(ls);
        st.m[r] = mn;
#pragma unroll
        for (int c = 0; c < CPT; c++) st.o[r][c] *= alpha;
    }
}

// Output rows and log-sum-exp. has[r]: the row had something to attend to; without, its output
// is 0 and its lse +inf (backward's probabilities exp(-inf) = 0); with only NaN scores, NaN.
template <int DH, int RPT, int CPT>
__device__ __forceinline__ void online_write(const online_rows<RPT, CPT> &st, const bool (&has)[RPT],
                                             const tile_args &a, int base, int i0, int L, int h,
                                             float *out, float *lse) {
    const int tr = threadIdx.x / 8, tc = threadIdx.x % 8;
#pragma unroll
    for (int r = 0; r < RPT; r++) {
        const int i = i0 + tr * RPT + r;
        if (i >= L) continue;
        float *orow = out + (size_t)(base + i) * a.HD + h * DH;
        float lv;
        if (!has[r]) {
            lv = INFINITY;
#pragma unroll
            for (int c = 0; c < CPT; c++) orow[tc + 8 * c] = 0.0f;
        } else if (st.m[r] == -INFINITY) {
            lv = NAN;
#pragma unroll
            for (int c = 0; c < CPT; c++) orow[tc + 8 * c] = NAN;
        } else {
            const float inv = 1.0f / st.l[r];
            lv = st.m[r] + logf(st.l[r]);
#pragma unroll
            for (int c = 0; c < CPT; c++) orow[tc + 8 * c] = st.o[r][c] * inv;
        }
        if (tc == 0) lse[(size_t)(base + i) * a.H + h] = lv;
    }
}

// Forward: grid (query tiles, sequences, heads).
template <int DH, int TR, int TM>
__global__ void __launch_bounds__(NTHREADS) tiled_fwd(tile_args a, float *out, float *lse) {
    using LY = tile_layout<DH, TM>;
    using E = typename LY::E;
    constexpr int RPT = TR / 16, CPT = DH / 8, P = LY::P, PS = LY::PS;
    const int b = blockIdx.y, h = blockIdx.z, i0 = blockIdx.x * TR;
    const int L = a.bt.len[b], base = a.bt.off[b];
    if (i0 >= L) return;
    SBMT_DYN_SMEM(float, smem);
    E *Qs = (E *)smem, *Ks = Qs + TR * P, *Vs = Ks + TC * P, *Ps = Vs + TC * P;
    float *kval = (float *)(Ps + TR * PS), *stage = kval + TC;
    uint8_t *keep = (uint8_t *)(stage + TR * LY::STAGE);
    __shared__ int any_valid;
    const int tc = threadIdx.x % 8;
    if (threadIdx.x == 0) any_valid = 0;
    load_rows<DH, P>(Qs, a, base, i0, TR, L, 0, h, a.sc);
    rng_stream st = rng_make(a.d.seed, RNG_DROPOUT, a.d.step, a.d.layer, a.d.slot + (uint32_t)h,
                             a.bt.sample[b]);
    online_rows<RPT, CPT> on;
    online_init(on);
    for (int j0 = 0; j0 < L; j0 += TC) {
        __syncthreads();  // the previous tile's readers are done
        load_rows<DH, P>(Ks, a, base, j0, TC, L, 1, h, 1.0f);
        load_rows<DH, P>(Vs, a, base, j0, TC, L, 2, h, 1.0f);
        for (int j = threadIdx.x; j < TC; j += NTHREADS) {
            bool v = j0 + j < L && a.bt.mask[base + j0 + j] != 0.0f;
            kval[j] = v ? 1.0f : 0.0f;
            if (v) any_valid = 1;
        }
        if (a.p > 0.0f) draw_keep<TR, TC>(keep, a, st, i0, j0);
        __syncthreads();
        float s[RPT][8];
        tile_scores<DH, TM>(s, Qs, Ks, stage);
#pragma unroll
        for (int r = 0; r < RPT; r++)
#pragma unroll
            for (int c = 0; c < 8; c++)
                if (kval[tc + 8 * c] == 0.0f) s[r][c] = -INFINITY;
        online_update<PS>(on, s, Ps, keep, a);
        __syncthreads();
        tile_accumulate<DH, TM>(on.o, Ps, Vs, stage);
    }
    __syncthreads();
    bool has[RPT];  // a padded key is no key: only a sequence without valid keys has none
#pragma unroll
    for (int r = 0; r < RPT; r++) has[r] = any_valid != 0;
    online_write<DH>(on, has, a, base, i0, L, h, out, lse);
}

// D_i = dy_i . y_i per (row, head): one warp per row.
static __global__ void rowdot_kernel(tile_args a, int dh, float *Dbuf, const float *dout,
                              const float *out) {
    int w = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x & 31;
    if (w >= a.bt.T * a.H) return;
    int row = w / a.H, h = w % a.H;
    const float *dy = dout + (size_t)row * a.HD + h * dh, *y = out + (size_t)row * a.HD + h * dh;
    float s = 0.0f;
    for (int c = lane; c < dh; c += 32) s += dy[c] * y[c];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) Dbuf[(size_t)row * a.H + h] = s;
}

// dQ_i = sc sum_j ds_ij k_j, ds_ij = p_ij (dp_ij m_ij - D_i), dp = dy_i . v_j: grid as forward.
template <int DH, int TR, int TM>
__global__ void __launch_bounds__(NTHREADS) tiled_bwd_q(tile_args a, float *dqkv,
                                                        const float *Dbuf, const float *dout,
                                                        const float *lse) {
    using LY = tile_layout<DH, TM>;
    using E = typename LY::E;
    constexpr int RPT = TR / 16, CPT = DH / 8, P = LY::P, PS = LY::PS;
    const int b = blockIdx.y, h = blockIdx.z, i0 = blockIdx.x * TR;
    const int L = a.bt.len[b], base = a.bt.off[b];
    if (i0 >= L) return;
    SBMT_DYN_SMEM(float, smem);
    E *Qs = (E *)smem, *dOs = Qs + TR * P, *Ks = dOs + TR * P, *Vs = Ks + TC * P;
    E *Ps = Vs + TC * P;
    float *kval = (float *)(Ps + TR * PS), *ls = kval + TC, *Ds = ls + TR;
    float *stage = Ds + TR;
    uint8_t *keep = (uint8_t *)(stage + TR * LY::STAGE);
    const int tr = threadIdx.x / 8, tc = threadIdx.x % 8;
    load_rows<DH, P>(Qs, a, base, i0, TR, L, 0, h, a.sc);
    load_rows_hd<DH, P>(dOs, dout, a, base, i0, TR, L, h);
    for (int r = threadIdx.x; r < TR; r += NTHREADS) {
        bool in = i0 + r < L;
        ls[r] = in ? lse[(size_t)(base + i0 + r) * a.H + h] : INFINITY;
        Ds[r] = in ? Dbuf[(size_t)(base + i0 + r) * a.H + h] : 0.0f;
    }
    rng_stream st = rng_make(a.d.seed, RNG_DROPOUT, a.d.step, a.d.layer, a.d.slot + (uint32_t)h,
                             a.bt.sample[b]);
    float dq[RPT][CPT];
    tile_zero(dq);
    for (int j0 = 0; j0 < L; j0 += TC) {
        __syncthreads();
        load_rows<DH, P>(Ks, a, base, j0, TC, L, 1, h, 1.0f);
        load_rows<DH, P>(Vs, a, base, j0, TC, L, 2, h, 1.0f);
        for (int j = threadIdx.x; j < TC; j += NTHREADS)
            kval[j] = j0 + j < L && a.bt.mask[base + j0 + j] != 0.0f ? 1.0f : 0.0f;
        if (a.p > 0.0f) draw_keep<TR, TC>(keep, a, st, i0, j0);
        __syncthreads();
        float s[RPT][8], g[RPT][8];
        tile_scores<DH, TM>(s, Qs, Ks, stage);
        tile_scores<DH, TM>(g, dOs, Vs, stage);
        #pragma unroll
        for (int r = 0; r < RPT; r++) {
            const int qi = tr * RPT + r;
            #pragma unroll
            for (int c = 0; c < 8; c++) {
                const int kj = tc + 8 * c;
                float ds = 0.0f, pa;
                if (kval[kj] != 0.0f)
                    ds = tile_pair_ds(a, s[r][c], g[r][c], ls[qi], Ds[qi], keep, qi * TC + kj, &pa);
                Ps[qi * PS + kj] = tile_elem<E>(ds);
            }
        }
        __syncthreads();
        tile_accumulate<DH, TM>(dq, Ps, Ks, stage);
    }
    #pragma unroll
    for (int r = 0; r < RPT; r++) {
        const int i = i0 + tr * RPT + r;
        if (i >= L) continue;
        float *d = dqkv + (size_t)(base + i) * a.ld + h * DH;
        #pragma unroll
        for (int c = 0; c < CPT; c++) d[tc + 8 * c] = dq[r][c] * a.sc;
    }
}

// dK_j = sc sum_i ds_ij q_i, dV_j = sum_i p_ij m_ij dy_i: grid (key tiles of TR, sequences,
// heads); the streamed tile is TC queries.
template <int DH, int TR, int TM>
__global__ void __launch_bounds__(NTHREADS) tiled_bwd_kv(tile_args a, float *dqkv,
                                                         const float *Dbuf, const float *dout,
                                                         const float *lse) {
    using LY = tile_layout<DH, TM>;
    using E = typename LY::E;
    constexpr int RPT = TR / 16, CPT = DH / 8, P = LY::P, PS = LY::PS;
    const int b = blockIdx.y, h = blockIdx.z, j0 = blockIdx.x * TR;
    const int L = a.bt.len[b], base = a.bt.off[b];
    if (j0 >= L) return;
    SBMT_DYN_SMEM(float, smem);
    E *Ks = (E *)smem, *Vs = Ks + TR * P, *Qs = Vs + TR * P, *dOs = Qs + TC * P;
    E *S1 = dOs + TC * P, *S2 = S1 + TR * PS;
    float *ls = (float *)(S2 + TR * PS), *Ds = ls + TC;
    float *stage = Ds + TC;
    uint8_t *keep = (uint8_t *)(stage + TR * LY::STAGE);  // [TC queries][TR keys]
    const int tr = threadIdx.x / 8, tc = threadIdx.x % 8;
    load_rows<DH, P>(Ks, a, base, j0, TR, L, 1, h, a.sc);
    load_rows<DH, P>(Vs, a, base, j0, TR, L, 2, h, 1.0f);
    rng_stream st = rng_make(a.d.seed, RNG_DROPOUT, a.d.step, a.d.layer, a.d.slot + (uint32_t)h,
                             a.bt.sample[b]);
    bool kv[RPT];
    #pragma unroll
    for (int r = 0; r < RPT; r++) {
        int j = j0 + tr * RPT + r;
        kv[r] = j < L && a.bt.mask[base + j] != 0.0f;
    }
    float dk[RPT][CPT], dv[RPT][CPT];
    tile_zero(dk);
    tile_zero(dv);
    for (int q0 = 0; q0 < L; q0 += TC) {
        __syncthreads();
        load_rows<DH, P>(Qs, a, base, q0, TC, L, 0, h, 1.0f);
        load_rows_hd<DH, P>(dOs, dout, a, base, q0, TC, L, h);
        for (int i = threadIdx.x; i < TC; i += NTHREADS) {
            bool in = q0 + i < L;
            ls[i] = in ? lse[(size_t)(base + q0 + i) * a.H + h] : INFINITY;
            Ds[i] = in ? Dbuf[(size_t)(base + q0 + i) * a.H + h] : 0.0f;
        }
        if (a.p > 0.0f) draw_keep<TC, TR>(keep, a, st, q0, j0);
        __syncthreads();
        float s[RPT][8], g[RPT][8];
        tile_scores<DH, TM>(s, Ks, Qs, stage);
        tile_scores<DH, TM>(g, Vs, dOs, stage);
        #pragma unroll
        for (int r = 0; r < RPT; r++) {
            const int kj = tr * RPT + r;
            #pragma unroll
            for (int c = 0; c < 8; c++) {
                const int qi = tc + 8 * c;
                float ds = 0.0f, pa = 0.0f;
                if (kv[r])
                    ds = tile_pair_ds(a, s[r][c], g[r][c], ls[qi], Ds[qi], keep, qi * TR + kj, &pa);
                S1[kj * PS + qi] = tile_elem<E>(ds);
                S2[kj * PS + qi] = tile_elem<E>(pa);
            }
        }
        __syncthreads();
        tile_accumulate<DH, TM>(dk, S1, Qs, stage);
        tile_accumulate<DH, TM>(dv, S2, dOs, stage);
    }
    #pragma unroll
    for (int r = 0; r < RPT; r++) {
        const int j = j0 + tr * RPT + r;
        if (j >= L) continue;
        float *d = dqkv + (size_t)(base + j) * a.ld + a.HD + h * DH;
        #pragma unroll
        for (int c = 0; c < CPT; c++) {  // a padded key gets no gradient
            d[tc + 8 * c] = kv[r] ? dk[r][c] * a.sc : 0.0f;
            d[a.HD + tc + 8 * c] = kv[r] ? dv[r][c] : 0.0f;
        }
    }
}


#endif
