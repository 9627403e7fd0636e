// attention.cu: the CUDA backend of full softmax attention with key padding mask and
// attention-probability dropout (the baseline): the entry points, which send the head sizes
// the tiled kernels support (attention_tiled.cu) there, and the row-wise kernels for the rest:
// one warp per (sequence, head, row), scores recomputed in each pass and never stored (O(T H)
// memory beyond the inputs), the CPU's Philox dropout masks (element i n + j of stream
// slot + h). Backward runs one warp per query row (D_i and dQ) and one per key row (dK, dV), so
// nothing is accumulated atomically. SBMT_CUDA_ATTN=rowwise sends every size to the row-wise
// kernels (the cross-check of test_backend_ops, and the benchmark's baseline).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/attention_tiled.cuh"

#include "kernels/cuda/cuda_ops.cuh"
#include "kernels/dropout.h"

#define MAX_DH 128  // per-lane accumulators; larger heads are refused at the call
#define WARPS 4     // warps per block


__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float dot(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int c = 0; c < n; c++) s += a[c] * b[c];
    return s;
}

__device__ __forceinline__ float keep_factor(const tile_args &a, rng_stream s, int i, int j) {
    if (a.p <= 0.0f) return 1.0f;
    uint32_t e = (uint32_t)i * (uint32_t)a.bt.n + (uint32_t)j;
    return dropout_u16(rng_block(s, e >> 3), e) >= a.thr ? a.dscale : 0.0f;
}

// Warp w of the grid handles row `row` (a packed query row or key row) of head h.
__device__ __forceinline__ bool warp_unit(const tile_args &a, int *row, int *h, int *b) {
    int w = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    if (w >= a.bt.T * a.H) return false;
    *row = w / a.H;
    *h = w % a.H;
    *b = row_seq(a.bt, *row);
    return true;
}

__global__ void attn_fwd_kernel(tile_args a, float *out, float *lse) {
    int row, h, b;
    if (!warp_unit(a, &row, &h, &b)) return;
    const int lane = threadIdx.x & 31, base = a.bt.off[b], L = a.bt.len[b], i = row - base;
    const float *q = a.qkv + (size_t)row * a.ld + h * a.dh;
    const float *K = a.qkv + (size_t)base * a.ld + a.HD + h * a.dh, *V = K + a.HD;
    float m = -INFINITY, s = 0.0f, valid = 0.0f;
    for (int j = lane; j < L; j += 32) {
        if (a.bt.mask[base + j] == 0.0f) continue;
        valid += 1.0f;
        float x = dot(q, K + (size_t)j * a.ld, a.dh) * a.sc;
        if (x > m) {
            s = s * expf(m - x) + 1.0f;
            m = x;
        } else {
            s += expf(x - m);
        }
    }
    float M = warp_max(m);
    float S = warp_sum(m == -INFINITY ? 0.0f : s * expf(m - M));
    float *o = out + (size_t)row * a.HD + h * a.dh;
    if (M == -INFINITY && warp_sum(valid) > 0.0f) {  // keys, but only NaN scores: NaN row
        for (int c = lane; c < a.dh; c += 32) o[c] = NAN;
        if (lane == 0) lse[(size_t)row * a.H + h] = NAN;
        return;
    }
    if (M == -INFINITY) {  // no key to attend to: output 0, and backward's probabilities are 0
        for (int c = lane; c < a.dh; c += 32) o[c] = 0.0f;
        if (lane == 0) lse[(size_t)row * a.H + h] = INFINITY;
        return;
    }
    const float l = M + logf(S);
    rng_stream st = rng_make(a.d.seed, RNG_DROPOUT, a.d.step, a.d.layer, a.d.slot + (uint32_t)h,
                             a.bt.sample[b]);
    float acc[MAX_DH];
    for (int c = 0; c < a.dh; c++) acc[c] = 0.0f;
    for (int j = lane; j < L; j += 32) {
        if (a.bt.mask[base + j] == 0.0f) continue;
        float w = expf(dot(q, K + (size_t)j * a.ld, a.dh) * a.sc - l) * keep_factor(a, st, i, j);
        const float *v = V + (size_t)j * a.ld;
        for (int c = 0; c < a.dh; c++) acc[c] += w * v[c];
    }
    for (int c = 0; c < a.dh; c++) {
        float t = warp_sum(acc[c]);
        if (lane == 0) o[c] = t;
    }
    if (lane == 0) lse[(size_t)row * a.H + h] = l;
}

// Query rows: D_i = dy_i . y_i (kept for the key pass) and dQ_i = sc sum_j ds_ij k_j.
__global__ void attn_bwd_q_kernel(tile_args a, float *dqkv, float *Dbuf, const float *dout,
                                  const float *out, const float *lse) {
    int row, h, b;
    if (!warp_unit(a, &row, &h, &b)) return;
    const int lane = threadIdx.x & 31, base = a.bt.off[b], L = a.bt.len[b], i = row - base;
    const float *q = a.qkv + (size_t)row * a.ld + h * a.dh;
    const float *K = a.qkv + (size_t)base * a.ld + a.HD + h * a.dh, *V = K + a.HD;
    const float *dy = dout + (size_t)row * a.HD + h * a.dh, *y = out + (size_t)row * a.HD + h * a.dh;
    float Di = 0.0f;
    for (int c = lane; c < a.dh; c += 32) Di += dy[c] * y[c];
    Di = warp_sum(Di);
    if (lane == 0) Dbuf[(size_t)row * a.H + h] = Di;
    const float l = lse[(size_t)row * a.H + h];
    rng_stream st = rng_make(a.d.seed, RNG_DROPOUT, a.d.step, a.d.layer, a.d.slot + (uint32_t)h,
                             a.bt.sample[b]);
    float acc[MAX_DH];
    for (int c = 0; c < a.dh; c++) acc[c] = 0.0f;
    for (int j = lane; j < L; j += 32) {
        if (a.bt.mask[base + j] == 0.0f) continue;
        const float *k = K + (size_t)j * a.ld;
        float p = expf(dot(q, k, a.dh) * a.sc - l);  // 0 when l = +inf
        float g = dot(dy, V + (size_t)j * a.ld, a.dh);
        float ds = p * (g * keep_factor(a, st, i, j) - Di);
        for (int c = 0; c < a.dh; c++) acc[c] += ds * k[c];
    }
    float *dq = dqkv + (size_t)row * a.ld + h * a.dh;
    for (int c = 0; c < a.dh; c++) {
        float t = warp_sum(acc[c]);
        if (lane == 0) dq[c] = t * a.sc;
    }
}

// Key rows: dK_j = sc sum_i ds_ij q_i, dV_j = sum_i a~_ij dy_i (a~ after dropout).
__global__ void attn_bwd_kv_kernel(tile_args a, float *dqkv, const float *Dbuf, const float *dout,
                                   const float *lse) {
    int row, h, b;
    if (!warp_unit(a, &row, &h, &b)) return;
    const int lane = threadIdx.x & 31, base = a.bt.off[b], L = a.bt.len[b], j = row - base;
    float *dk = dqkv + (size_t)row * a.ld + a.HD + h * a.dh, *dv = dk + a.HD;
    if (a.bt.mask[row] == 0.0f) {  // a padded key gets no gradient
        for (int c = lane; c < a.dh; c += 32) dk[c] = dv[c] = 0.0f;
        return;
    }
    const float *k = a.qkv + (size_t)row * a.ld + a.HD + h * a.dh, *v = k + a.HD;
    rng_stream st = rng_make(a.d.seed, RNG_DROPOUT, a.d.step, a.d.layer, a.d.slot + (uint32_t)h,
                             a.bt.sample[b]);
    float ak[MAX_DH], av[MAX_DH];
    for (int c = 0; c < a.dh; c++) ak[c] = av[c] = 0.0f;
    for (int i = lane; i < L; i += 32) {
        const size_t r = (size_t)base + i;
        const float *q = a.qkv + r * a.ld + h * a.dh, *dy = dout + r * a.HD + h * a.dh;
        float p = expf(dot(q, k, a.dh) * a.sc - lse[r * a.H + h]);
        float kf = keep_factor(a, st, i, j);
        float ds = p * (dot(dy, v, a.dh) * kf - Dbuf[r * a.H + h]);
        float pa = p * kf;
        for (int c = 0; c < a.dh; c++) {
            ak[c] += ds * q[c];
            av[c] += pa * dy[c];
        }
    }
    for (int c = 0; c < a.dh; c++) {
        float tk = warp_sum(ak[c]), tv = warp_sum(av[c]);
        if (lane == 0) {
            dk[c] = tk * a.sc;
            dv[c] = tv;
        }
    }
}

static tile_args make_args(kctx *k, const float *qkv, int H, int dh, float p, kdrop d) {
    if (dh > MAX_DH)
        sbmt_fatal(__FILE__, __LINE__, "CUDA softmax attention: head size %d > %d", dh, MAX_DH);
    return cuda_attn_args(k, qkv, H, dh, p, d);
}

static unsigned warp_blocks(const kbatch *bt, int H) {
    size_t warps = (size_t)bt->T * H;
    return (unsigned)((warps + WARPS - 1) / WARPS);
}

static bool use_tiled(int dh) {
    const char *e = getenv("SBMT_CUDA_ATTN");
    return cuda_attn_tiled_supports(dh) && !(e && !strcmp(e, "rowwise"));
}

void cuda_attn_softmax_fwd(kctx *k, float *out, float *lse, const float *qkv, const kbatch *bt,
                           int H, int dh, float p, kdrop d) {
    if (bt->T == 0) return;
    if (use_tiled(dh)) return cuda_attn_tiled_fwd(k, out, lse, qkv, bt, H, dh, p, d);
    tile_args a = make_args(k, qkv, H, dh, p, d);
    attn_fwd_kernel<<<warp_blocks(bt, H), 32 * WARPS, 0, cuda_of(k)->stream>>>(a, out, lse);
    CUDA_CHECK(cudaGetLastError());
}

void cuda_attn_softmax_bwd(kctx *k, float *dqkv, const float *dout, const float *qkv,
                           const float *out, const float *lse, const kbatch *bt, int H, int dh,
                           float p, kdrop d) {
    if (bt->T == 0) return;
    if (use_tiled(dh)) return cuda_attn_tiled_bwd(k, dqkv, dout, qkv, out, lse, bt, H, dh, p, d);
    cuda_state *s = cuda_of(k);
    tile_args a = make_args(k, qkv, H, dh, p, d);
    cuda_work_reserve(s, sizeof(float) * (size_t)bt->T * H);
    float *Dbuf = (float *)s->dwork;
    CUDA_CHECK(cudaMemsetAsync(dqkv, 0, sizeof(float) * (size_t)bt->T * a.ld, s->stream));
    attn_bwd_q_kernel<<<warp_blocks(bt, H), 32 * WARPS, 0, s->stream>>>(a, dqkv, Dbuf, dout, out,
                                                                        lse);
    CUDA_CHECK(cudaGetLastError());
    attn_bwd_kv_kernel<<<warp_blocks(bt, H), 32 * WARPS, 0, s->stream>>>(a, dqkv, Dbuf, dout, lse);
    CUDA_CHECK(cudaGetLastError());
}
