// sbm_tile.cuh: the dense sampler on the GPU, one (query tile, key tile) at a time, for the
// sampled-tile attention of SBM heads: edge probabilities P = (Yq S) Yk^T formed in shared
// memory and registers (never stored), and the draws of kernels/sbm_rule.h with the CPU dense
// sampler's Philox words, so a unit's graph is the CPU's up to float rounding of P at the
// threshold. sbm_count_kernel counts each unit's edges (and, for tests, writes the flags); the
// attention kernels call sbm_tile_flags on their own tiles. Device code in a header so that
// tests/test_cuda_emu.cc runs it through tests/cuda_emu.h.
//
// Thread layout as attention_tiled_kernels.cuh: 128 threads, thread t owns rows
// (t / 8) * RPT + a of the tile (RPT = TR / 16) and columns t % 8 + 8 c (c < 8) of TC = 64 keys.
#ifndef SBMT_CUDA_SBM_TILE_CUH
#define SBMT_CUDA_SBM_TILE_CUH

#include <stdint.h>

#include "kernels/cuda/attention_tiled_kernels.cuh"  // the thread layout and tile_products
#include "kernels/philox.h"
#include "kernels/sbm_rule.h"

#define SBM_TC TC
#define SBM_NTHREADS NTHREADS

struct sbm_tile_args {
    dbatch bt;
    const float *T1;  // [T, H*kc] Yq S per head (row-major, ld H*kc)
    const float *Yk;  // [T, H*kc] key memberships
    int H, kc;
    float eps;
    uint64_t seed;
    uint32_t step, layer, head0;
    const uint8_t *skip;  // [B * H] 1: the unit is on the edge path (sbm_edges.cuh); NULL: none
};

// 1 when the tile kernels leave unit (b, h) to the edge path.
__device__ __forceinline__ bool sbm_tile_skips(const sbm_tile_args &a, int b, int h) {
    return a.skip && a.skip[b * a.H + h];
}

// Row strides of the membership tiles (T1, Yq, Yk) and of the straight-through accumulators:
// kc + 1 floats on the SIMT path; with tensor cores (TCORE, the backward kernels) the columns
// round up to kc16, a multiple of 16, zero-filled (WMMA's block width), rows kc16 + 4 apart and
// accumulator rows kc16. The P products read the same values either way (sbm_flags), so the
// graphs do not depend on the layout.
template <bool TCORE> struct sbm_pad {
    static __host__ __device__ int kc16(int kc) { return (kc + 15) / 16 * 16; }
    static __host__ __device__ int width(int kc) { return TCORE ? kc16(kc) : kc; }  // loaded
    static __host__ __device__ int pk(int kc) { return TCORE ? kc16(kc) + 4 : kc + 1; }
    static __host__ __device__ int ks(int kc) { return TCORE ? kc16(kc) : kc; }
};

// Shared memory of a tile of TR query rows: T1 and Yk rows pk floats apart, the 24-bit words
// of the tile's pairs, the validity of its queries and keys.
template <int TR> struct sbm_tile_smem {
    static size_t bytes_pk(int pk) {
        return sizeof(float) * ((size_t)TR * pk + (size_t)SBM_TC * pk + TR + SBM_TC) +
               sizeof(uint32_t) * (size_t)TR * SBM_TC;
    }
    static size_t bytes(int kc) { return bytes_pk(kc + 1); }
};

// Rows [r0, r0 + R) of head h of X [T, H*kc] (rows of sequence `base`) into S [R][P], columns
// [0, width) (those past kc zero); rows at or past lim are zero.
__device__ inline void sbm_load_rows(float *S, const float *X, const sbm_tile_args &a, int base,
                                     int r0, int R, int lim, int h, int P, int width) {
    const int Hk = a.H * a.kc;
    for (int x = threadIdx.x; x < R * width; x += SBM_NTHREADS) {
        int r = x / width, c = x % width;
        S[r * P + c] = r0 + r < lim && c < a.kc ? X[(size_t)(base + r0 + r) * Hk + h * a.kc + c]
                                                : 0.0f;
    }
}
__device__ inline void sbm_load_rows(float *S, const float *X, const sbm_tile_args &a, int base,
                                     int r0, int R, int lim, int h) {
    sbm_load_rows(S, X, a, base, r0, R, lim, h, a.kc + 1, a.kc);
}

// The words of pairs (i0 + r, j0 + c), r < NQ queries, c < NK keys, into W[r * NK + c]:
// element e = i n + j takes word e % 4 of Philox block e / 4 (a row of NK keys touches at most
// NK / 4 + 1 blocks).
template <int NQ, int NK = SBM_TC>
__device__ void sbm_tile_words(uint32_t *W, const sbm_tile_args &a, rng_stream st, int i0,
                               int j0) {
    constexpr int BPR = NK / 4 + 1;
    const uint32_t n = (uint32_t)a.bt.n;
    for (int x = threadIdx.x; x < NQ * BPR; x += SBM_NTHREADS) {
        const int r = x / BPR, q = x % BPR;
        const uint32_t e0 = (uint32_t)(i0 + r) * n + (uint32_t)j0;
        const uint32_t blk = (e0 >> 2) + (uint32_t)q;
        const philox4x32 w = rng_block(st, blk);
        for (int t = 0; t < 4; t++) {
            const uint32_t e = blk * 4u + (uint32_t)t;
            if (e >= e0 && e < e0 + NK) W[r * NK + (int)(e - e0)] = sbm_edge_word(w, e);
        }
    }
}

// This thread's edge flags of a tile (bit a * 8 + c: its row tr * RPT + a of TR, its column
// tc + 8 c of SBM_TC), from the tile's rows R and columns X [.][pk], the words W and the
// validity of rows (rv) and columns (xv), all in shared memory (the caller loads them and
// synchronises). KEYS = false: rows are queries (T1), columns keys (Yk), W [TR][SBM_TC].
// KEYS = true (the dK/dV kernel): rows are keys (Yk), columns queries (T1), W [SBM_TC][TR]
// still query-major; as fmaf(a, b, c) == fmaf(b, a, c), each pair's P is bit for bit the
// query-major tile's.
template <int TR, bool KEYS>
__device__ uint32_t sbm_flags(const float *R, const float *X, const uint32_t *W, const float *rv,
                              const float *xv, const sbm_tile_args &a, int pk) {
    constexpr int RPT = TR / 16;
    const int tr = threadIdx.x / 8, tc = threadIdx.x % 8;
    float p[RPT][8];
    tile_products<RPT>(p, R, X, a.kc, pk);
    uint32_t bits = 0;
#pragma unroll
    for (int r = 0; r < RPT; r++) {
        const int row = tr * RPT + r;
#pragma unroll
        for (int c = 0; c < 8; c++) {
            const int col = tc + 8 * c;
            const uint32_t w = KEYS ? W[col * TR + row] : W[row * SBM_TC + col];
            const int e = rv[row] != 0.0f && xv[col] != 0.0f &&
                          sbm_edge_drawn(w, sbm_edge_threshold(p[r][c], a.eps));
            bits |= (uint32_t)e << (r * 8 + c);
        }
    }
    return bits;
}

template <int TR>
__device__ uint32_t sbm_tile_flags(const float *T1s, const float *Yks, const uint32_t *W,
                                   const float *qv, const float *kv, const sbm_tile_args &a,
                                   int pk) {
    return sbm_flags<TR, false>(T1s, Yks, W, qv, kv, a, pk);
}

template <int TR>
__device__ uint32_t sbm_tile_flags_keys(const float *Yks, const float *T1s, const uint32_t *W,
                                        const float *kv, const float *qv, const sbm_tile_args &a,
                                        int pk) {
    return sbm_flags<TR, true>(Yks, T1s, W, kv, qv, a, pk);
}

// Edges of every unit u = b H + h into count[u] (zeroed by the caller); with flags != NULL also
// flags[b][h][i][j] (uint8, [B, H, n, n]: tests only). Grid (query tiles of TR, B, H).
template <int TR>
__global__ void __launch_bounds__(SBM_NTHREADS)
    sbm_count_kernel(sbm_tile_args a, unsigned long long *count, uint8_t *flags) {
    constexpr int RPT = TR / 16;
    const int b = blockIdx.y, h = blockIdx.z, i0 = blockIdx.x * TR;
    const int L = a.bt.len[b], base = a.bt.off[b];
    if (i0 >= L || sbm_tile_skips(a, b, h)) return;
    SBMT_DYN_SMEM(float, smem);
    const int P = a.kc + 1;
    float *T1s = smem, *Yks = T1s + TR * P, *qv = Yks + SBM_TC * P, *kv = qv + TR;
    uint32_t *W = (uint32_t *)(kv + SBM_TC);
    __shared__ unsigned long long block_edges;
    const int tr = threadIdx.x / 8, tc = threadIdx.x % 8;
    if (threadIdx.x == 0) block_edges = 0;
    sbm_load_rows(T1s, a.T1, a, base, i0, TR, L, h);
    for (int r = threadIdx.x; r < TR; r += SBM_NTHREADS)
        qv[r] = i0 + r < L && a.bt.mask[base + i0 + r] != 0.0f ? 1.0f : 0.0f;
    const rng_stream st = rng_make(a.seed, RNG_GRAPH, a.step, a.layer, a.head0 + (uint32_t)h,
                                   a.bt.sample[b]);
    unsigned long long mine = 0;
    for (int j0 = 0; j0 < L; j0 += SBM_TC) {
        __syncthreads();
        sbm_load_rows(Yks, a.Yk, a, base, j0, SBM_TC, L, h);
        for (int j = threadIdx.x; j < SBM_TC; j += SBM_NTHREADS)
            kv[j] = j0 + j < L && a.bt.mask[base + j0 + j] != 0.0f ? 1.0f : 0.0f;
        sbm_tile_words<TR>(W, a, st, i0, j0);
        __syncthreads();
        const uint32_t bits = sbm_tile_flags<TR>(T1s, Yks, W, qv, kv, a, P);
        mine += (unsigned long long)__popc(bits);
        if (flags)
            for (int r = 0; r < RPT; r++)
                for (int c = 0; c < 8; c++) {
                    const int i = i0 + tr * RPT + r, j = j0 + tc + 8 * c;
                    if (i < L && j < L)
                        flags[(((size_t)b * a.H + h) * a.bt.n + i) * a.bt.n + j] =
                            (uint8_t)((bits >> (r * 8 + c)) & 1u);
                }
    }
    atomicAdd(&block_edges, mine);
    __syncthreads();
    if (threadIdx.x == 0) atomicAdd(&count[(size_t)b * a.H + h], block_edges);
}

#endif
