// sbm_edges.cu: the CUDA edge path for sparse SBM heads (SPEC.md section 2.4-2.5, sbm_edges.cuh).
// fastRG draws the CPU's graphs from the same Philox words: block pairs through the alias table
// the CPU builds (sbm_fastrg.h, one thread per unit, in the CPU's order), then each endpoint by
// inverse CDF. For that the raw edges are sorted by (unit, column, uniform) with CUB and one
// thread per (unit, column) walks the column's rows with the CPU's running double sum, handing
// out rows as targets are passed: the same sums in the same order, so no draw lands on the other
// side of a boundary. Duplicates collapse by a CUB sort of (head, query row, key) keys and
// DeviceSelect::Unique, which gives CSR; a second sort gives the transposed index for dK/dV.
// Attention and its backward go a warp per row (queries, then keys): no atomics, deterministic.
#include <cub/cub.cuh>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/sbm_edges.cuh"
#include "kernels/dropout.h"
#include "kernels/sbm_fastrg.h"

#define EDGE_THREADS 256
#define KEY_J_BITS 20  // key rows of a sequence in a CSR key (n < 2^20)
#define DRAW_F_SHIFT 41

namespace {

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// First index in keys[0, n) whose key is >= x.
__device__ __forceinline__ int64_t lower_bound_u64(const uint64_t *keys, int64_t n, uint64_t x) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (keys[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

// The unit slot f of raw edge g: moff[f] <= g < moff[f + 1].
__device__ __forceinline__ int edge_slot(const int64_t *moff, int nf, int64_t g) {
    int lo = 0, hi = nf - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (moff[mid] <= g)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

__device__ __forceinline__ size_t gtid() { return (size_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t gstride() { return (size_t)gridDim.x * blockDim.x; }

// w[f, pair] = the augmented block-pair weight of unit units[f].
__global__ void weights_kernel(float *w, sbm_edge_args a, const int *units, const double *valid,
                               int nf) {
    const int K1 = a.k.kc + 1;
    const size_t NP = (size_t)K1 * K1;
    for (size_t x = gtid(); x < (size_t)nf * NP; x += gstride()) {
        const int f = (int)(x / NP), pr = (int)(x % NP), unit = units[f], h = unit % a.k.H;
        const double *cq = a.colsum + (size_t)unit * a.k.kc;
        const double *ck = a.colsum + ((size_t)a.units + unit) * a.k.kc;
        const float *Sh = a.S + (size_t)h * a.k.kc * a.k.kc;
        w[x] = sbm_pair_weight(cq, ck, valid[f], valid[f], Sh, a.k.kc, a.k.eps, pr / K1, pr % K1);
    }
}

// One thread per unit with edges: Vose's table, sequentially in the CPU's order.
__global__ void alias_kernel(sbm_edge_state e, int NP) {
    for (size_t f = gtid(); f < (size_t)e.nf; f += gstride()) {
        if (e.moff[f + 1] == e.moff[f]) continue;
        const size_t o = f * (size_t)NP;
        sbm_alias_build(e.w + o, 1, NP, e.prob + o, e.alias + o, e.stack + o);
    }
}

// Raw edge g (edge e of its unit) takes Philox block e of the unit's RNG_GRAPH stream: words 0
// and 3 pick its block pair (u, v), word 1 its query from column u, word 2 its key from column
// v. Keys (slot, column, word) for the two endpoint sorts; values the edge.
__global__ void pairs_kernel(sbm_edge_state e, sbm_edge_args a) {
    const int K1 = a.k.kc + 1, NP = K1 * K1;
    for (size_t g = gtid(); g < (size_t)e.M; g += gstride()) {
        const int f = edge_slot(e.moff, e.nf, (int64_t)g), unit = e.units[f];
        const int b = unit / a.k.H, h = unit % a.k.H;
        const rng_stream st = rng_make(a.k.seed, RNG_GRAPH, a.k.step, a.k.layer,
                                       a.k.head0 + (uint32_t)h, a.k.bt.sample[b]);
        const philox4x32 r = rng_block(st, (uint32_t)((int64_t)g - e.moff[f]));
        const size_t o = (size_t)f * NP;
        const int pr = sbm_alias_draw(e.prob + o, e.alias + o, NP, sbm_pair_u01(r.v[0], r.v[3]));
        const uint64_t fs = (uint64_t)f << DRAW_F_SHIFT;
        e.ka[g] = fs | ((uint64_t)(pr / K1) << 32) | r.v[1];
        e.kb[g] = fs | ((uint64_t)(pr % K1) << 32) | r.v[2];
        e.va[g] = (uint32_t)g;
    }
}

// Endpoint draws of one side (0 queries, 1 keys): thread (slot f, column c) walks the unit's
// rows, summing column c in double in row order as the CPU does, and gives row i to each of
// the column's edges (sorted by uniform) whose target that sum has passed. Targets past the
// total (rounding) get the column's last row with weight, as on the CPU.
__global__ void draw_kernel(int *rows, const uint64_t *keys, const uint32_t *vals,
                            sbm_edge_state e, sbm_edge_args a, int side) {
    const int K1 = a.k.kc + 1, Hk = a.k.H * a.k.kc;
    for (size_t x = gtid(); x < (size_t)e.nf * K1; x += gstride()) {
        const int f = (int)(x / K1), c = (int)(x % K1), unit = e.units[f];
        const int b = unit / a.k.H, h = unit % a.k.H, L = a.k.bt.len[b], off = a.k.bt.off[b];
        const uint64_t pre = ((uint64_t)f << DRAW_F_SHIFT) | ((uint64_t)c << 32);
        int64_t p = lower_bound_u64(keys, e.M, pre);
        const int64_t hi = lower_bound_u64(keys, e.M, pre + (1ull << 32));
        if (p == hi) continue;
        const double total =
            c < a.k.kc ? a.colsum[((size_t)side * a.units + unit) * a.k.kc + c] : e.valid[f];
        const float *y = a.Y + ((size_t)side * a.k.bt.T + off) * Hk + h * a.k.kc + c;
        const float *mask = a.k.bt.mask + off;
        double cum = 0.0, next = sbm_draw_target((uint32_t)keys[p], total);
        for (int i = 0; i < L && p < hi; i++) {
            cum += c < a.k.kc ? y[(size_t)i * Hk] : mask[i];
            while (cum > next) {
                rows[vals[p]] = i;
                if (++p == hi) break;
                next = sbm_draw_target((uint32_t)keys[p], total);
            }
        }
        if (p < hi) {
            int last = L - 1;
            while (last > 0 && (c < a.k.kc ? y[(size_t)last * Hk] : mask[last]) <= 0.0f) last--;
            for (; p < hi; p++) rows[vals[p]] = last;
        }
    }
}

// CSR key of raw edge g: (h T + packed query row) << 20 | key row.
__global__ void csr_keys_kernel(sbm_edge_state e, sbm_edge_args a) {
    for (size_t g = gtid(); g < (size_t)e.M; g += gstride()) {
        const int unit = e.units[edge_slot(e.moff, e.nf, (int64_t)g)];
        const int b = unit / a.k.H, h = unit % a.k.H;
        const uint64_t r = (uint64_t)h * a.k.bt.T + a.k.bt.off[b] + e.ei[g];
        e.ka[g] = r << KEY_J_BITS | (uint32_t)e.ej[g];
    }
}

// ptr[r] = first of the n sorted keys at or past row r, for r in [0, rows].
__global__ void rowptr_kernel(int *ptr, const uint64_t *keys, const int *n, size_t rows) {
    for (size_t r = gtid(); r <= rows; r += gstride())
        ptr[r] = (int)lower_bound_u64(keys, *n, (uint64_t)r << KEY_J_BITS);
}

// From the unique CSR keys (in kb): col, and the transposed keys (h T + packed key row) << 20 |
// query row with the CSR slot as value (slots past nnz sort last).
__global__ void csc_keys_kernel(sbm_edge_state e, dbatch bt) {
    const int nnz = *e.nsel;
    const uint64_t jm = (1ull << KEY_J_BITS) - 1;
    for (size_t p = gtid(); p < (size_t)e.M; p += gstride()) {
        e.vb[p] = (uint32_t)p;
        if ((int64_t)p >= nnz) {
            e.ka[p] = ~0ull;
            continue;
        }
        const uint64_t key = e.kb[p], r = key >> KEY_J_BITS;
        const int j = (int)(key & jm);
        const int t = (int)(r % (uint64_t)bt.T), hh = (int)(r / (uint64_t)bt.T);
        const int b = row_seq(bt, t), off = bt.off[b];
        e.col[p] = j;
        e.ka[p] = (((uint64_t)hh * bt.T + off + j) << KEY_J_BITS) | (uint64_t)(t - off);
    }
}

__global__ void csc_fill_kernel(sbm_edge_state e) {
    const int nnz = *e.nsel;
    for (size_t q = gtid(); q < (size_t)nnz; q += gstride()) {
        e.crow[q] = (int)(e.kb[q] & ((1ull << KEY_J_BITS) - 1));
        e.cpos[q] = (int)e.va[q];
    }
}

__global__ void count_kernel(unsigned long long *count, sbm_edge_state e, dbatch bt, int H) {
    for (size_t f = gtid(); f < (size_t)e.nf; f += gstride()) {
        const int unit = e.units[f], b = unit / H, h = unit % H;
        const size_t r0 = (size_t)h * bt.T + bt.off[b];
        count[unit] = (unsigned long long)(e.rowptr[r0 + bt.len[b]] - e.rowptr[r0]);
    }
}

// Row r = h T + t (a warp's row in the edge kernels): its head, packed row, sequence and the
// sequence's first row; false when its unit is not on the edge path.
__device__ __forceinline__ bool edge_row(const tile_args &a, const uint8_t *on, size_t r, int &h,
                                         int &t, int &b, int &off) {
    h = (int)(r / a.bt.T);
    t = (int)(r % a.bt.T);
    b = row_seq(a.bt, t);
    off = a.bt.off[b];
    return on[b * a.H + h] != 0;
}

// A warp per row r = h T + t of a flagged unit: scores on the row's edges, softmax, dropout
// flags (element i n + j of the head's stream, as the CPU), then out_t = sum a~ v.
__global__ void edge_fwd_kernel(sbm_edge_state e, tile_args a, const uint8_t *on, float *out) {
    const int lane = threadIdx.x & 31, T = a.bt.T, dh = a.dh;
    const size_t warps = gstride() / 32;
    for (size_t r = gtid() / 32; r < (size_t)T * a.H; r += warps) {
        int h, t, b, off;
        if (!edge_row(a, on, r, h, t, b, off)) continue;
        const int i = t - off, p0 = e.rowptr[r], p1 = e.rowptr[r + 1];
        const float *q = a.qkv + (size_t)t * a.ld + h * dh;
        const float *K = a.qkv + (size_t)off * a.ld + a.HD + h * dh;
        const float *V = a.qkv + (size_t)off * a.ld + 2 * a.HD + h * dh;
        float *y = out + (size_t)t * a.HD + h * dh;
        float mx = -INFINITY;
        for (int p = p0; p < p1; p++) {
            const float *kr = K + (size_t)e.col[p] * a.ld;
            float s = 0.0f;
            for (int c = lane; c < dh; c += 32) s += q[c] * kr[c];
            s = warp_sum(s) * a.sc;
            if (lane == 0) e.a[p] = s;
            mx = fmaxf(mx, s);
        }
        __syncwarp();
        float l = 0.0f;
        for (int p = p0 + lane; p < p1; p += 32) {
            const float x = expf(e.a[p] - mx);
            e.a[p] = x;
            l += x;
        }
        const float inv = 1.0f / warp_sum(l);
        const rng_stream st = rng_make(a.d.seed, RNG_DROPOUT, a.d.step, a.d.layer,
                                       a.d.slot + (uint32_t)h, a.bt.sample[b]);
        for (int p = p0 + lane; p < p1; p += 32) {
            e.a[p] *= inv;
            const uint32_t el = (uint32_t)i * (uint32_t)a.bt.n + (uint32_t)e.col[p];
            e.keep[p] = a.p <= 0.0f || dropout_u16(rng_block(st, el >> 3), el) >= a.thr;
        }
        __syncwarp();
        for (int c = lane; c < dh; c += 32) {
            float acc = 0.0f;
            for (int p = p0; p < p1; p++)
                if (e.keep[p]) acc += e.a[p] * a.dscale * V[(size_t)e.col[p] * a.ld + c];
            y[c] = acc;
        }
    }
}

#define EDGE_ACC (SBM_EDGE_MAX_DIM / 32)

// A warp per query row of a flagged unit: per edge dA = dy . v, ds = a (dA keep/(1-p) - D),
// G = clip(ds + reg, -1, 1) (kept for the key side), dq = sc sum ds k, GYk row = sum G yk.
__global__ void edge_bwd_q_kernel(sbm_edge_state e, tile_args a, const uint8_t *on,
                                  const float *Yk, int kc, float *dqkv, float *GYk,
                                  const float *Dbuf, const float *dout, float reg) {
    const int lane = threadIdx.x & 31, T = a.bt.T, dh = a.dh, Hk = a.H * kc;
    const size_t warps = gstride() / 32;
    for (size_t r = gtid() / 32; r < (size_t)T * a.H; r += warps) {
        int h, t, b, off;
        if (!edge_row(a, on, r, h, t, b, off)) continue;
        const int p0 = e.rowptr[r], p1 = e.rowptr[r + 1];
        const float *K = a.qkv + (size_t)off * a.ld + a.HD + h * dh;
        const float *V = a.qkv + (size_t)off * a.ld + 2 * a.HD + h * dh;
        const float *dy = dout + (size_t)t * a.HD + h * dh;
        const float *yk = Yk + (size_t)off * Hk + h * kc;
        const float Di = Dbuf[(size_t)t * a.H + h];
        float dq[EDGE_ACC], gk[EDGE_ACC];
#pragma unroll
        for (int x = 0; x < EDGE_ACC; x++) dq[x] = gk[x] = 0.0f;
        for (int p = p0; p < p1; p++) {
            const int j = e.col[p];
            const float *vr = V + (size_t)j * a.ld, *kr = K + (size_t)j * a.ld;
            float dA = 0.0f;
            for (int c = lane; c < dh; c += 32) dA += dy[c] * vr[c];
            dA = warp_sum(dA);
            const float kf = e.keep[p] ? a.dscale : 0.0f;
            const float ds = e.a[p] * (dA * kf - Di), dsc = a.sc * ds;
            float g = ds + reg;
            g = g > 1.0f ? 1.0f : (g < -1.0f ? -1.0f : g);
            if (lane == 0) {
                e.gv[p] = g;
                e.dsv[p] = dsc;
            }
#pragma unroll
            for (int x = 0; x < EDGE_ACC; x++) {
                const int c = lane + 32 * x;
                if (c < dh) dq[x] += dsc * kr[c];
                if (c < kc) gk[x] += g * yk[(size_t)j * Hk + c];
            }
        }
#pragma unroll
        for (int x = 0; x < EDGE_ACC; x++) {
            const int c = lane + 32 * x;
            if (c < dh) dqkv[(size_t)t * a.ld + h * dh + c] = dq[x];
            if (c < kc) GYk[(size_t)t * Hk + h * kc + c] = gk[x];
        }
    }
}

// A warp per key row of a flagged unit, over its transposed index: dk = sum ds q,
// dv = sum a~ dy, GTYq row = sum G yq.
__global__ void edge_bwd_kv_kernel(sbm_edge_state e, tile_args a, const uint8_t *on,
                                   const float *Yq, int kc, float *dqkv, float *GTYq,
                                   const float *dout) {
    const int lane = threadIdx.x & 31, T = a.bt.T, dh = a.dh, Hk = a.H * kc;
    const size_t warps = gstride() / 32;
    for (size_t r = gtid() / 32; r < (size_t)T * a.H; r += warps) {
        int h, t, b, off;
        if (!edge_row(a, on, r, h, t, b, off)) continue;
        const int q0 = e.colptr[r], q1 = e.colptr[r + 1];
        float dk[EDGE_ACC], dv[EDGE_ACC], gq[EDGE_ACC];
#pragma unroll
        for (int x = 0; x < EDGE_ACC; x++) dk[x] = dv[x] = gq[x] = 0.0f;
        for (int q = q0; q < q1; q++) {
            const int ti = off + e.crow[q], p = e.cpos[q];
            const float dsc = e.dsv[p], g = e.gv[p], af = e.keep[p] ? e.a[p] * a.dscale : 0.0f;
            const float *qr = a.qkv + (size_t)ti * a.ld + h * dh;
            const float *dyr = dout + (size_t)ti * a.HD + h * dh;
            const float *yq = Yq + (size_t)ti * Hk + h * kc;
#pragma unroll
            for (int x = 0; x < EDGE_ACC; x++) {
                const int c = lane + 32 * x;
                if (c < dh) {
                    dk[x] += dsc * qr[c];
                    dv[x] += af * dyr[c];
                }
                if (c < kc) gq[x] += g * yq[c];
            }
        }
#pragma unroll
        for (int x = 0; x < EDGE_ACC; x++) {
            const int c = lane + 32 * x;
            if (c < dh) {
                dqkv[(size_t)t * a.ld + a.HD + h * dh + c] = dk[x];
                dqkv[(size_t)t * a.ld + 2 * a.HD + h * dh + c] = dv[x];
            }
            if (c < kc) GTYq[(size_t)t * Hk + h * kc + c] = gq[x];
        }
    }
}

#define CUB_CHECK(call) CUDA_CHECK(call)

unsigned bits_for(uint64_t n) {
    unsigned b = 0;
    while (b < 64 && (n >> b) != 0) b++;
    return b;
}

size_t grown(size_t need) { return need + need / 4 + 64; }

// Every buffer of the list replaced by one of n elements (contents not kept).
template <class... P> void grow_all(size_t n, P **...p) { (cuda_grow(p, n), ...); }

}  // namespace

void sbm_edges_free(sbm_edge_state *e) {
    void *bufs[] = {e->units, e->moff, e->valid, e->w,    e->prob,   e->alias,  e->stack,
                    e->ei,    e->ej,   e->ka,    e->kb,   e->va,     e->vb,     e->nsel,
                    e->rowptr, e->colptr, e->col, e->crow, e->cpos,  e->a,      e->keep,
                    e->gv,    e->dsv,  e->temp};
    for (void *p : bufs) cudaFree(p);
    memset(e, 0, sizeof(*e));
}

void sbm_edges_sample(cuda_state *s, sbm_edge_state *e, const sbm_edge_args &a,
                      const int *units_h, const int64_t *m_h, const double *valid_h, int nf,
                      unsigned long long *count) {
    const int K1 = a.k.kc + 1, T = a.k.bt.T;
    const size_t NP = (size_t)K1 * K1, rows = (size_t)a.k.H * T;
    if (a.k.bt.n >= (1 << KEY_J_BITS) || K1 > 512 || nf >= (1 << 22))
        sbmt_fatal(__FILE__, __LINE__, "SBM edge path on cuda: sequences of %d (at most %d), %d "
                   "clusters (at most 511) and %d sparse heads in a batch (at most %d)", a.k.bt.n,
                   (1 << KEY_J_BITS) - 1, a.k.kc, nf, (1 << 22) - 1);
    int64_t M = 0;
    int64_t *moff = (int64_t *)xmalloc(sizeof(int64_t) * ((size_t)nf + 1));
    for (int f = 0; f < nf; f++) {
        moff[f] = M;
        M += m_h[f];
    }
    moff[nf] = M;
    if (M > INT32_MAX)
        sbmt_fatal(__FILE__, __LINE__, "SBM edge path on cuda: %lld edges drawn in one layer, more "
                   "than 2^31 - 1: use a smaller batch or model.sampler = dense", (long long)M);
    // Everything of the previous layer's use is ordered before on the stream, but the host may
    // free buffers a running kernel reads: wait before any reallocation.
    const bool grow_f = (size_t)nf + 1 > e->cap_f, grow_np = nf * NP > e->cap_np,
               grow_m = (size_t)M > e->cap_m, grow_r = rows + 1 > e->cap_rows;
    if (grow_f || grow_np || grow_m || grow_r) CUDA_CHECK(cudaStreamSynchronize(s->stream));
    if (grow_f) {
        e->cap_f = grown((size_t)nf + 1);
        grow_all(e->cap_f, &e->units, &e->moff, &e->valid);
        if (!e->nsel) CUDA_CHECK(cudaMalloc((void **)&e->nsel, sizeof(int)));
    }
    if (grow_np) {
        e->cap_np = grown(nf * NP);
        grow_all(e->cap_np, &e->w, &e->prob, &e->alias, &e->stack);
    }
    if (grow_m) {
        e->cap_m = grown((size_t)M);
        grow_all(e->cap_m, &e->ei, &e->ej, &e->ka, &e->kb, &e->va, &e->vb, &e->col, &e->crow,
                 &e->cpos, &e->a, &e->keep, &e->gv, &e->dsv);
    }
    if (grow_r) {
        e->cap_rows = grown(rows + 1);
        grow_all(e->cap_rows, &e->rowptr, &e->colptr);
    }
    e->nf = nf;
    e->M = M;
    if (nf == 0) {
        free(moff);
        return;
    }
    // moff stays in host memory until the copy has run: synchronised below with the counts.
    CUDA_CHECK(cudaMemcpyAsync(e->units, units_h, sizeof(int) * nf, cudaMemcpyHostToDevice,
                               s->stream));
    CUDA_CHECK(cudaMemcpyAsync(e->moff, moff, sizeof(int64_t) * ((size_t)nf + 1),
                               cudaMemcpyHostToDevice, s->stream));
    CUDA_CHECK(cudaMemcpyAsync(e->valid, valid_h, sizeof(double) * nf, cudaMemcpyHostToDevice,
                               s->stream));
    if (M == 0) {
        CUDA_CHECK(cudaMemsetAsync(e->rowptr, 0, sizeof(int) * (rows + 1), s->stream));
        CUDA_CHECK(cudaMemsetAsync(e->colptr, 0, sizeof(int) * (rows + 1), s->stream));
        CUDA_CHECK(cudaMemsetAsync(e->nsel, 0, sizeof(int), s->stream));
    } else {
        // CUB's temporary storage for the largest of the calls below, asked with their own
        // arguments (the size depends on the key bits sorted).
        const int draw_bits = DRAW_F_SHIFT + (int)bits_for((uint64_t)nf);
        const int csr_bits = KEY_J_BITS + (int)bits_for((uint64_t)rows + 1);
        size_t need = 0, b1 = 0;
        CUB_CHECK(cub::DeviceRadixSort::SortPairs(NULL, b1, e->ka, e->kb, e->va, e->vb, (int)M, 0,
                                                  draw_bits, s->stream));
        need = b1 > need ? b1 : need;
        CUB_CHECK(cub::DeviceRadixSort::SortKeys(NULL, b1, e->ka, e->kb, (int)M, 0, csr_bits,
                                                 s->stream));
        need = b1 > need ? b1 : need;
        CUB_CHECK(cub::DeviceSelect::Unique(NULL, b1, e->kb, e->ka, e->nsel, (int)M, s->stream));
        need = b1 > need ? b1 : need;
        CUB_CHECK(cub::DeviceRadixSort::SortPairs(NULL, b1, e->ka, e->kb, e->vb, e->va, (int)M, 0,
                                                  64, s->stream));
        need = b1 > need ? b1 : need;
        if (need > e->temp_bytes) {
            CUDA_CHECK(cudaStreamSynchronize(s->stream));
            cudaFree(e->temp);
            e->temp_bytes = need + need / 4;
            CUDA_CHECK(cudaMalloc(&e->temp, e->temp_bytes));
        }
        size_t tb = e->temp_bytes;
        const unsigned TH = EDGE_THREADS;
        weights_kernel<<<grid_for((size_t)nf * NP, TH), TH, 0, s->stream>>>(e->w, a, e->units,
                                                                           e->valid, nf);
        CUDA_CHECK(cudaGetLastError());
        alias_kernel<<<grid_for((size_t)nf, 32), 32, 0, s->stream>>>(*e, (int)NP);
        CUDA_CHECK(cudaGetLastError());
        pairs_kernel<<<grid_for((size_t)M, TH), TH, 0, s->stream>>>(*e, a);
        CUDA_CHECK(cudaGetLastError());
        // Queries from the ka keys, keys from kb: each sorted into (kb | ka) with values vb.
        uint64_t *sorted = e->kb;
        CUB_CHECK(cub::DeviceRadixSort::SortPairs(e->temp, tb, e->ka, sorted, e->va, e->vb,
                                                  (int)M, 0, draw_bits, s->stream));
        draw_kernel<<<grid_for((size_t)nf * K1, 64), 64, 0, s->stream>>>(e->ei, sorted, e->vb, *e,
                                                                         a, 0);
        CUDA_CHECK(cudaGetLastError());
        // The key side's keys were in kb, now overwritten: draw them again (same words).
        pairs_kernel<<<grid_for((size_t)M, TH), TH, 0, s->stream>>>(*e, a);
        CUDA_CHECK(cudaGetLastError());
        CUB_CHECK(cub::DeviceRadixSort::SortPairs(e->temp, tb, e->kb, e->ka, e->va, e->vb, (int)M,
                                                  0, draw_bits, s->stream));
        draw_kernel<<<grid_for((size_t)nf * K1, 64), 64, 0, s->stream>>>(e->ej, e->ka, e->vb, *e,
                                                                         a, 1);
        CUDA_CHECK(cudaGetLastError());
        // CSR: sort (row, key), drop repeats, row pointers.
        csr_keys_kernel<<<grid_for((size_t)M, TH), TH, 0, s->stream>>>(*e, a);
        CUDA_CHECK(cudaGetLastError());
        CUB_CHECK(cub::DeviceRadixSort::SortKeys(e->temp, tb, e->ka, e->kb, (int)M, 0, csr_bits,
                                                 s->stream));
        CUB_CHECK(cub::DeviceSelect::Unique(e->temp, tb, e->kb, e->ka, e->nsel, (int)M,
                                            s->stream));
        rowptr_kernel<<<grid_for(rows + 1, TH), TH, 0, s->stream>>>(e->rowptr, e->ka, e->nsel,
                                                                    rows);
        CUDA_CHECK(cudaGetLastError());
        // The transposed index: unique keys moved to kb, transposed keys into ka, sorted to kb.
        CUDA_CHECK(cudaMemcpyAsync(e->kb, e->ka, sizeof(uint64_t) * (size_t)M,
                                   cudaMemcpyDeviceToDevice, s->stream));
        csc_keys_kernel<<<grid_for((size_t)M, TH), TH, 0, s->stream>>>(*e, a.k.bt);
        CUDA_CHECK(cudaGetLastError());
        CUB_CHECK(cub::DeviceRadixSort::SortPairs(e->temp, tb, e->ka, e->kb, e->vb, e->va, (int)M,
                                                  0, 64, s->stream));
        rowptr_kernel<<<grid_for(rows + 1, TH), TH, 0, s->stream>>>(e->colptr, e->kb, e->nsel,
                                                                    rows);
        CUDA_CHECK(cudaGetLastError());
        csc_fill_kernel<<<grid_for((size_t)M, TH), TH, 0, s->stream>>>(*e);
        CUDA_CHECK(cudaGetLastError());
    }
    count_kernel<<<grid_for((size_t)nf, 64), 64, 0, s->stream>>>(count, *e, a.k.bt, a.k.H);
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaStreamSynchronize(s->stream));  // moff, units_h, valid_h copied
    free(moff);
}

void sbm_edges_fwd(cuda_state *s, sbm_edge_state *e, const tile_args &a, const uint8_t *on,
                   float *out) {
    const size_t warps = (size_t)a.bt.T * a.H;
    edge_fwd_kernel<<<grid_for(warps * 32, EDGE_THREADS), EDGE_THREADS, 0, s->stream>>>(*e, a, on,
                                                                                      out);
    CUDA_CHECK(cudaGetLastError());
}

void sbm_edges_bwd(cuda_state *s, sbm_edge_state *e, const tile_args &a, const uint8_t *on,
                   const float *Y, int kc, float *dqkv, float *GYk, float *GTYq,
                   const float *Dbuf, const float *dout, float reg) {
    const size_t warps = (size_t)a.bt.T * a.H;
    const float *Yk = Y + (size_t)a.bt.T * a.H * kc;
    const unsigned g = grid_for(warps * 32, EDGE_THREADS);
    edge_bwd_q_kernel<<<g, EDGE_THREADS, 0, s->stream>>>(*e, a, on, Yk, kc, dqkv, GYk, Dbuf, dout,
                                                         reg);
    CUDA_CHECK(cudaGetLastError());
    edge_bwd_kv_kernel<<<g, EDGE_THREADS, 0, s->stream>>>(*e, a, on, Y, kc, dqkv, GTYq, dout);
    CUDA_CHECK(cudaGetLastError());
}

void sbm_edges_download(cuda_state *s, const sbm_edge_state *e, const kbatch *bt, int H, int u,
                        int *rowptr, int *col) {
    const int b = u / H, h = u % H, L = bt->len[b];
    const size_t r0 = (size_t)h * bt->T + bt->off[b];
    CUDA_CHECK(cudaMemcpyAsync(rowptr, e->rowptr + r0, sizeof(int) * ((size_t)L + 1),
                               cudaMemcpyDeviceToHost, s->stream));
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    const int base = rowptr[0];
    for (int i = 0; i <= L; i++) rowptr[i] -= base;
    if (rowptr[L] > 0)
        CUDA_CHECK(cudaMemcpyAsync(col, e->col + base, sizeof(int) * (size_t)rowptr[L],
                                   cudaMemcpyDeviceToHost, s->stream));
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
}
