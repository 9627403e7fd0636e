// sbm_attn.cu: the CUDA backend of SBM sampling and attention (sbm.h), and the dispatcher between
// its two paths. k_sbm_sample first forms every (sequence, head)'s expected edge count (column
// sums on the GPU, the sum on the host as the CPU forms it) and routes the unit by the CPU's
// rule: model.sampler = dense, or auto above SBM_AUTO_DENSE_FRACTION of its pairs, to the
// sampled tiles (sbm_tile.cuh, sbm_attn_tiled.cuh: the dense rule redrawn inside attention from
// T1 = Yq S, no CSR, no n x n buffer); fastrg, or auto below, to the edge path (sbm_edges.cuh:
// fastRG into CSR, attention a warp per row). Either way the GPU samples the CPU's graph for
// the same setting. Backward's straight-through products end in cuBLAS GEMMs over all rows:
// dYq = (G Yk) S^T, dYk = (G^T Yq) S, dS = Yq^T (G Yk), whichever path formed G Yk and G^T Yq.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>

#include "kernels/cuda/attention_tiled.cuh"
#include "kernels/cuda/cuda_ops.cuh"
#include "kernels/cuda/sbm_attn_tiled.cuh"
#include "kernels/cuda/sbm_edges.cuh"

#define SBM_MAX_SMEM (227 * 1024)  // opt-in shared memory per block on Hopper

namespace {

// The graphs' device state (sbm_graphs.dev) between k_sbm_sample and backward.
struct sbm_dev {
    float *T1;    // [T, H*kc] Yq S
    float *lse;   // [T, H] log-sum-exp over each row's edges (forward -> backward)
    float *G1, *G2;  // [T, H*kc] G Yk and G^T Yq (backward)
    unsigned long long *count;  // [units]
    double *colsum;  // [2, units, kc] sums of Yq and Yk over each unit's rows
    uint8_t *on_edges;  // [units] 1: the unit is on the edge path
    int n_edge, n_tile;  // units on each path
    sbm_edge_state edges;
    size_t cap_rows, cap_units;
    const float *Y, *S;  // the layer's memberships [2T, H*kc] and blocks [H, kc, kc]
    int T, H, kc;
    float eps;
    uint64_t seed;
    uint32_t step, layer, head0;
};

void dev_free(void *p) {
    sbm_dev *d = (sbm_dev *)p;
    cudaFree(d->T1);
    cudaFree(d->lse);
    cudaFree(d->G1);
    cudaFree(d->G2);
    cudaFree(d->count);
    cudaFree(d->colsum);
    cudaFree(d->on_edges);
    sbm_edges_free(&d->edges);
    free(d);
}

sbm_dev *dev_of(sbm_graphs *gs, cuda_state *s, int T, int H, int kc, int units) {
    if (!gs->dev) {
        gs->dev = xcalloc(1, sizeof(sbm_dev));
        gs->dev_free = dev_free;
    }
    sbm_dev *d = (sbm_dev *)gs->dev;
    const size_t rows = (size_t)T * H * kc;
    if (rows > d->cap_rows || (size_t)units * kc > d->cap_units) {
        CUDA_CHECK(cudaStreamSynchronize(s->stream));  // buffers may be in use
    }
    if (rows > d->cap_rows) {
        d->cap_rows = rows + rows / 4;
        cuda_grow(&d->T1, d->cap_rows);
        cuda_grow(&d->G1, d->cap_rows);
        cuda_grow(&d->G2, d->cap_rows);
        cuda_grow(&d->lse, d->cap_rows / (size_t)kc + 1);
    }
    if ((size_t)units * kc > d->cap_units) {
        d->cap_units = (size_t)units * kc + 64;
        cuda_grow(&d->count, d->cap_units);
        cuda_grow(&d->colsum, 2 * d->cap_units);
        cuda_grow(&d->on_edges, d->cap_units);
    }
    return d;
}

sbm_tile_args sample_args(const sbm_dev *d, cuda_state *s) {
    sbm_tile_args a;
    a.bt = s->batch;
    a.T1 = d->T1;
    a.Yk = d->Y + (size_t)d->T * d->H * d->kc;
    a.H = d->H;
    a.kc = d->kc;
    a.eps = d->eps;
    a.seed = d->seed;
    a.step = d->step;
    a.layer = d->layer;
    a.head0 = d->head0;
    a.skip = d->n_edge > 0 ? d->on_edges : NULL;
    return a;
}

// colsum[w][u][c] = sum over unit u's rows of Y (w = 0 queries, 1 keys), in row order in double
// as the CPU sums them: grid (B, H), threads over the clusters.
__global__ void colsum_kernel(double *colsum, const float *Y, dbatch bt, int H, int kc) {
    const int b = blockIdx.x, h = blockIdx.y, units = bt.B * H, u = b * H + h;
    const int Hk = H * kc, L = bt.len[b], base = bt.off[b];
    for (int c = threadIdx.x; c < kc; c += blockDim.x)
        for (int w = 0; w < 2; w++) {
            const float *y = Y + (size_t)w * bt.T * Hk + (size_t)base * Hk + h * kc + c;
            double acc = 0.0;
            for (int i = 0; i < L; i++) acc += y[(size_t)i * Hk];
            colsum[((size_t)w * units + u) * kc + c] = acc;
        }
}

void check_smem(size_t bytes, const char *what, int dh, int kc) {
    if (bytes > SBM_MAX_SMEM)
        sbmt_fatal(__FILE__, __LINE__,
                   "SBM tile attention (%s) with head size %d and %d clusters needs %zu bytes of "
                   "shared memory per block, more than the %d a GPU gives",
                   what, dh, kc, bytes, SBM_MAX_SMEM);
}

template <int DH, int TM>
void launch_fwd_as(kctx *k, const tile_args &a, const sbm_tile_args &sa, const kbatch *bt,
                   float *out, float *lse) {
    const size_t sm = sbm_attn_smem<DH, 64, TM>::fwd(sa.kc);
    check_smem(sm, "forward", DH, sa.kc);
    CUDA_CHECK(cudaFuncSetAttribute(sbm_attn_fwd_kernel<DH, 64, TM>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
    dim3 grid((unsigned)((bt->n + 63) / 64), (unsigned)bt->B, (unsigned)a.H);
    sbm_attn_fwd_kernel<DH, 64, TM><<<grid, NTHREADS, sm, cuda_of(k)->stream>>>(a, sa, out,
                                                                                  lse);
    CUDA_CHECK(cudaGetLastError());
}

template <int DH> void launch_fwd(kctx *k, const tile_args &a, const sbm_tile_args &sa,
                                  const kbatch *bt, float *out, float *lse) {
    switch (cuda_tile_mode(k)) {
    case TM_TF32: launch_fwd_as<DH, TM_TF32>(k, a, sa, bt, out, lse); break;
    case TM_BF16: launch_fwd_as<DH, TM_BF16>(k, a, sa, bt, out, lse); break;
    default: launch_fwd_as<DH, TM_SIMT>(k, a, sa, bt, out, lse);
    }
}

template <int DH, int TM>
void launch_bwd_as(kctx *k, const tile_args &a, const sbm_tile_args &sa, const sbm_dev *d,
                   const kbatch *bt, float *dqkv, const float *Dbuf, const float *dout,
                   float reg) {
    cuda_state *s = cuda_of(k);
    const size_t smq = sbm_bwd_smem<DH, TM>::q(sa.kc), smkv = sbm_bwd_smem<DH, TM>::kv(sa.kc);
    check_smem(smq, "backward, queries", DH, sa.kc);
    check_smem(smkv, "backward, keys", DH, sa.kc);
    CUDA_CHECK(cudaFuncSetAttribute(sbm_attn_bwd_q_kernel<DH, TM>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smq));
    CUDA_CHECK(cudaFuncSetAttribute(sbm_attn_bwd_kv_kernel<DH, TM>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smkv));
    dim3 grid((unsigned)((bt->n + SBM_BTR - 1) / SBM_BTR), (unsigned)bt->B, (unsigned)a.H);
    sbm_attn_bwd_q_kernel<DH, TM><<<grid, NTHREADS, smq, s->stream>>>(a, sa, dqkv, d->G1, Dbuf,
                                                                         dout, d->lse, reg);
    CUDA_CHECK(cudaGetLastError());
    sbm_attn_bwd_kv_kernel<DH, TM><<<grid, NTHREADS, smkv, s->stream>>>(
        a, sa, d->Y, dqkv, d->G2, Dbuf, dout, d->lse, reg);
    CUDA_CHECK(cudaGetLastError());
}

template <int DH>
void launch_bwd(kctx *k, const tile_args &a, const sbm_tile_args &sa, const sbm_dev *d,
                const kbatch *bt, float *dqkv, const float *Dbuf, const float *dout, float reg) {
    switch (cuda_tile_mode(k)) {
    case TM_TF32: launch_bwd_as<DH, TM_TF32>(k, a, sa, d, bt, dqkv, Dbuf, dout, reg); break;
    case TM_BF16: launch_bwd_as<DH, TM_BF16>(k, a, sa, d, bt, dqkv, Dbuf, dout, reg); break;
    default: launch_bwd_as<DH, TM_SIMT>(k, a, sa, d, bt, dqkv, Dbuf, dout, reg);
    }
}

void tile_head_fatal(int dh) {
    sbmt_fatal(__FILE__, __LINE__, "SBM tile attention on cuda: head size %d (supported: 16, 32, "
               "64; model.sampler = fastrg takes any up to %d)", dh, SBM_EDGE_MAX_DIM);
}

void edge_dims_check(int dh, int kc) {
    if (dh > SBM_EDGE_MAX_DIM || kc > SBM_EDGE_MAX_DIM)
        sbmt_fatal(__FILE__, __LINE__, "SBM edge attention on cuda: head size %d and %d clusters "
                   "(at most %d each)", dh, kc, SBM_EDGE_MAX_DIM);
}

}  // namespace

void cuda_sbm_sample(kctx *k, sbm_graphs *gs, const float *Y, const float *S, const kbatch *bt,
                     int H, int kc, float eps, sbm_sampler sampler, uint64_t seed, uint32_t step,
                     uint32_t layer, uint32_t head0, int64_t *edges) {
    cuda_state *s = cuda_of(k);
    const int units = bt->B * H, T = bt->T, Hk = H * kc;
    sbm_graphs_reserve(gs, units);
    sbm_dev *d = dev_of(gs, s, T, H, kc, units);
    d->Y = Y;
    d->S = S;
    d->T = T;
    d->H = H;
    d->kc = kc;
    d->eps = eps;
    d->seed = seed;
    d->step = step;
    d->layer = layer;
    d->head0 = head0;
    // Column sums and S to the host: the expected edge counts as the CPU forms them, which
    // route each unit before anything is drawn.
    double *cs = (double *)xmalloc(sizeof(double) * 2 * (size_t)units * kc);
    float *Sh = (float *)xmalloc(sizeof(float) * (size_t)H * kc * kc);
    if (T > 0) {
        colsum_kernel<<<dim3((unsigned)bt->B, (unsigned)H), 128, 0, s->stream>>>(d->colsum, Y,
                                                                                s->batch, H, kc);
        CUDA_CHECK(cudaGetLastError());
        CUDA_CHECK(cudaMemcpyAsync(cs, d->colsum, sizeof(double) * 2 * (size_t)units * kc,
                                   cudaMemcpyDeviceToHost, s->stream));
    } else {
        memset(cs, 0, sizeof(double) * 2 * (size_t)units * kc);
    }
    CUDA_CHECK(cudaMemcpyAsync(Sh, S, sizeof(float) * (size_t)H * kc * kc, cudaMemcpyDeviceToHost,
                               s->stream));
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    uint8_t *on = (uint8_t *)xmalloc((size_t)units);
    int *fu = (int *)xmalloc(sizeof(int) * (size_t)units);
    int64_t *fm = (int64_t *)xmalloc(sizeof(int64_t) * (size_t)units);
    double *fv = (double *)xmalloc(sizeof(double) * (size_t)units);
    int nf = 0;
    for (int u = 0; u < units; u++) {
        const int b = u / H, h = u % H, L = bt->len[b];
        sbm_graph *g = &gs->g[u];
        double valid = 0.0;
        for (int i = 0; i < L; i++) valid += bt->mask[bt->off[b] + i];
        const double lam = sbm_expected_edges(cs + (size_t)u * kc, cs + ((size_t)units + u) * kc,
                                              Sh + (size_t)h * kc * kc, kc, eps, valid);
        // The CPU's rule (cpu_sbm_sample), so both backends draw the same graph.
        const int dense =
            sampler == SBM_SAMPLER_DENSE ||
            (sampler == SBM_SAMPLER_AUTO && lam > SBM_AUTO_DENSE_FRACTION * valid * valid);
        g->rows = L;
        g->expected = lam;
        g->dense = dense;
        g->blocks = dense;  // the tiles attend over all pairs of their tiles
        on[u] = (uint8_t)!dense;
        if (!dense) {
            fu[nf] = u;
            fm[nf] = sbm_fastrg_count(rng_make(seed, RNG_GRAPH_COUNT, step, layer,
                                               head0 + (uint32_t)h, bt->sample[b]),
                                      lam);
            fv[nf] = valid;
            nf++;
        }
    }
    d->n_edge = nf;
    d->n_tile = units - nf;
    CUDA_CHECK(cudaMemsetAsync(d->count, 0, sizeof(unsigned long long) * units, s->stream));
    if (nf > 0)
        CUDA_CHECK(cudaMemcpyAsync(d->on_edges, on, (size_t)units, cudaMemcpyHostToDevice,
                                   s->stream));
    if (d->n_tile > 0 && T > 0) {
        for (int h = 0; h < H; h++)  // row-major T1_h [T, kc] = Yq_h S_h
            cuda_sgemm(s, CUBLAS_OP_N, CUBLAS_OP_N, kc, T, kc, S + (size_t)h * kc * kc, kc,
                       Y + h * kc, Hk, 0.0f, d->T1 + h * kc, Hk);
        const sbm_tile_args sa = sample_args(d, s);
        const size_t sm = sbm_tile_smem<64>::bytes(kc);
        check_smem(sm, "sampling", 0, kc);
        CUDA_CHECK(cudaFuncSetAttribute(sbm_count_kernel<64>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
        dim3 grid((unsigned)((bt->n + 63) / 64), (unsigned)bt->B, (unsigned)H);
        sbm_count_kernel<64><<<grid, SBM_NTHREADS, sm, s->stream>>>(sa, d->count, NULL);
        CUDA_CHECK(cudaGetLastError());
    }
    if (nf > 0) {
        sbm_edge_args ea;
        ea.k = sample_args(d, s);
        ea.Y = Y;
        ea.S = S;
        ea.colsum = d->colsum;
        ea.units = units;
        sbm_edges_sample(s, &d->edges, ea, fu, fm, fv, nf, d->count);
    }
    unsigned long long *cnt = (unsigned long long *)xmalloc(sizeof(unsigned long long) * units);
    CUDA_CHECK(cudaMemcpyAsync(cnt, d->count, sizeof(unsigned long long) * units,
                               cudaMemcpyDeviceToHost, s->stream));
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    for (int h = 0; h < H; h++) edges[h] = 0;
    for (int u = 0; u < units; u++) {
        gs->g[u].nnz = (int)cnt[u];
        edges[u % H] += gs->g[u].nnz;
    }
    free(cnt);
    free(cs);
    free(Sh);
    free(on);
    free(fu);
    free(fm);
    free(fv);
}

int cuda_sbm_graph_csr(kctx *k, const sbm_graphs *gs, const kbatch *bt, int H, int u, int *rowptr,
                       int *col) {
    const sbm_dev *d = (const sbm_dev *)gs->dev;
    if (!d || gs->g[u].dense) return -1;
    sbm_edges_download(cuda_of(k), &d->edges, bt, H, u, rowptr, col);
    return 0;
}


namespace {
template <int DH, int TM> size_t tiles_smem(int kc) {
    size_t m = sbm_attn_smem<DH, 64, TM>::fwd(kc);
    m = std::max(m, sbm_bwd_smem<DH, TM>::q(kc));
    return std::max(m, sbm_bwd_smem<DH, TM>::kv(kc));
}
template <int DH> size_t tiles_smem_mode(int mode, int kc) {
    switch (mode) {
    case TM_TF32: return tiles_smem<DH, TM_TF32>(kc);
    case TM_BF16: return tiles_smem<DH, TM_BF16>(kc);
    default: return tiles_smem<DH, TM_SIMT>(kc);
    }
}
}  // namespace

size_t cuda_sbm_tiles_smem(const kctx *k, int dh, int kc) {
    const int mode = cuda_tile_mode(k);
    switch (dh) {
    case 16: return tiles_smem_mode<16>(mode, kc);
    case 32: return tiles_smem_mode<32>(mode, kc);
    case 64: return tiles_smem_mode<64>(mode, kc);
    default: return 0;
    }
}

size_t cuda_sbm_tiles_smem_limit(void) { return SBM_MAX_SMEM; }

void cuda_sbm_attn_fwd(kctx *k, float *out, sbm_graphs *gs, const float *qkv, const kbatch *bt,
                       int H, int dh, float p, kdrop d) {
    if (bt->T == 0) return;
    CHECK(gs->dev != NULL);  // sampled by cuda_sbm_sample
    cuda_state *s = cuda_of(k);
    sbm_dev *dv = (sbm_dev *)gs->dev;
    const tile_args a = cuda_attn_args(k, qkv, H, dh, p, d);
    const sbm_tile_args sa = sample_args(dv, s);
    if (dv->n_tile > 0) switch (dh) {
        case 16: launch_fwd<16>(k, a, sa, bt, out, dv->lse); break;
        case 32: launch_fwd<32>(k, a, sa, bt, out, dv->lse); break;
        case 64: launch_fwd<64>(k, a, sa, bt, out, dv->lse); break;
        default: tile_head_fatal(dh);
        }
    if (dv->n_edge > 0) {
        edge_dims_check(dh, dv->kc);
        sbm_edges_fwd(s, &dv->edges, a, dv->on_edges, out);
    }
}

void cuda_sbm_attn_bwd(kctx *k, float *dqkv, float *dY, float *dS, const float *dout,
                       const float *qkv, const float *out, const sbm_graphs *gs, const float *Y,
                       const float *S, const kbatch *bt, int H, int dh, int kc, float p, kdrop d,
                       float reg) {
    cuda_state *s = cuda_of(k);
    const int T = bt->T, Hk = H * kc;
    const size_t kk = (size_t)kc * kc;
    CUDA_CHECK(cudaMemsetAsync(dqkv, 0, sizeof(float) * (size_t)T * 3 * H * dh, s->stream));
    if (T == 0) {
        CUDA_CHECK(cudaMemsetAsync(dS, 0, sizeof(float) * H * kk, s->stream));
        return;
    }
    CHECK(gs->dev != NULL);
    const sbm_dev *dv = (const sbm_dev *)gs->dev;
    CHECK(dv->Y == Y && dv->S == S && dv->kc == kc);  // backward of the sampled layer
    const tile_args a = cuda_attn_args(k, qkv, H, dh, p, d);
    const sbm_tile_args sa = sample_args(dv, s);
    cuda_work_reserve(s, sizeof(float) * (size_t)T * H);
    float *Dbuf = (float *)s->dwork;
    const size_t warps = (size_t)T * H;
    rowdot_kernel<<<(unsigned)((warps + 3) / 4), 128, 0, s->stream>>>(a, dh, Dbuf, dout, out);
    CUDA_CHECK(cudaGetLastError());
    if (dv->n_tile > 0) switch (dh) {
        case 16: launch_bwd<16>(k, a, sa, dv, bt, dqkv, Dbuf, dout, reg); break;
        case 32: launch_bwd<32>(k, a, sa, dv, bt, dqkv, Dbuf, dout, reg); break;
        case 64: launch_bwd<64>(k, a, sa, dv, bt, dqkv, Dbuf, dout, reg); break;
        default: tile_head_fatal(dh);
        }
    if (dv->n_edge > 0) {
        sbm_dev *dm = (sbm_dev *)gs->dev;
        sbm_edges_bwd(s, &dm->edges, a, dv->on_edges, Y, kc, dqkv, dv->G1, dv->G2, Dbuf, dout,
                      reg);
    }
    float *dYq = dY, *dYk = dY + (size_t)T * Hk;
    for (int h = 0; h < H; h++) {
        const float *Sh = S + (size_t)h * kk;
        // Row-major dYq_h = GYk_h S_h^T, dYk_h = GTYq_h S_h, dS_h = Yq_h^T GYk_h.
        cuda_sgemm(s, CUBLAS_OP_T, CUBLAS_OP_N, kc, T, kc, Sh, kc, dv->G1 + h * kc, Hk, 0.0f,
                   dYq + h * kc, Hk);
        cuda_sgemm(s, CUBLAS_OP_N, CUBLAS_OP_N, kc, T, kc, Sh, kc, dv->G2 + h * kc, Hk, 0.0f,
                   dYk + h * kc, Hk);
        cuda_sgemm(s, CUBLAS_OP_N, CUBLAS_OP_T, kc, kc, T, dv->G1 + h * kc, Hk, Y + h * kc, Hk,
                   0.0f, dS + h * kk, kc);
    }
}
