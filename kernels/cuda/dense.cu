// dense.cu: the CUDA backend's position-wise primitives: linear layers (cuBLAS, fp32), LayerNorm,
// GELU/ReLU, dropout with the CPU's Philox masks (kernels/dropout.h), embeddings, masking and
// pooling, the dual-encoder combine, cross-entropy, AdamW and reductions. Kernels read the
// batch from the context's device mirror (k_batch_upload); `bt` only gives host counts.
#include <math.h>

#include <cuda_bf16.h>

#include "kernels/cuda/cuda_ops.cuh"
#include "kernels/dropout.h"
#include "kernels/pointwise.h"

#define THREADS 256

static cudaStream_t stream_of(kctx *k) { return cuda_of(k)->stream; }

// ---------------------------------------------------------------- elementwise

__global__ void bias_add_kernel(float *x, const float *b, size_t n, int C) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] += b[i % C];
}

void cuda_bias_add(kctx *k, float *x, const float *b, int N, int C) {
    size_t n = (size_t)N * C;
    if (!n) return;
    bias_add_kernel<<<grid_for(n, THREADS), THREADS, 0, stream_of(k)>>>(x, b, n, C);
    CUDA_CHECK(cudaGetLastError());
}

__global__ void gelu_fwd_kernel(float *out, const float *in, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = pw_gelu(in[i]);
}

__global__ void gelu_bwd_kernel(float *din, const float *dout, const float *in, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        din[i] = dout[i] * pw_gelu_grad(in[i]);
}

__global__ void relu_fwd_kernel(float *out, const float *in, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = in[i] < 0.0f ? 0.0f : in[i];  // NaN passes through
}

__global__ void relu_bwd_kernel(float *din, const float *dout, const float *in, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        din[i] = in[i] > 0.0f ? dout[i] : 0.0f;
}

__global__ void add_kernel(float *y, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

__global__ void scale_kernel(float *x, size_t n, float s) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] *= s;
}

#define LAUNCH1D(kernel, n, ...)                                                                   \
    do {                                                                                           \
        if (n) {                                                                                   \
            kernel<<<grid_for(n, THREADS), THREADS, 0, stream_of(k)>>>(__VA_ARGS__);               \
            CUDA_CHECK(cudaGetLastError());                                                        \
        }                                                                                          \
    } while (0)

void cuda_gelu_fwd(kctx *k, float *out, const float *in, size_t n) {
    LAUNCH1D(gelu_fwd_kernel, n, out, in, n);
}
void cuda_gelu_bwd(kctx *k, float *din, const float *dout, const float *in, size_t n) {
    LAUNCH1D(gelu_bwd_kernel, n, din, dout, in, n);
}
void cuda_relu_fwd(kctx *k, float *out, const float *in, size_t n) {
    LAUNCH1D(relu_fwd_kernel, n, out, in, n);
}
void cuda_relu_bwd(kctx *k, float *din, const float *dout, const float *in, size_t n) {
    LAUNCH1D(relu_bwd_kernel, n, din, dout, in, n);
}
void cuda_add(kctx *k, float *y, const float *x, size_t n) { LAUNCH1D(add_kernel, n, y, x, n); }
void cuda_scale(kctx *k, float *x, size_t n, float s) { LAUNCH1D(scale_kernel, n, x, n, s); }

void cuda_zero(kctx *k, float *x, size_t n) {
    if (n) CUDA_CHECK(cudaMemsetAsync(x, 0, n * sizeof(float), stream_of(k)));
}

void cuda_copy2d(kctx *k, float *dst, int ld_dst, const float *src, int ld_src, int rows,
                 int cols) {
    if (!rows || !cols) return;
    CUDA_CHECK(cudaMemcpy2DAsync(dst, sizeof(float) * ld_dst, src, sizeof(float) * ld_src,
                                 sizeof(float) * cols, rows, cudaMemcpyDeviceToDevice,
                                 stream_of(k)));
}

__global__ void add2d_kernel(float *dst, int ld_dst, const float *src, int ld_src, int rows,
                             int cols) {
    size_t n = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / cols, c = i % cols;
        dst[r * ld_dst + c] += src[r * ld_src + c];
    }
}

void cuda_add2d(kctx *k, float *dst, int ld_dst, const float *src, int ld_src, int rows, int cols) {
    size_t n = (size_t)rows * cols;
    LAUNCH1D(add2d_kernel, n, dst, ld_dst, src, ld_src, rows, cols);
}

// ---------------------------------------------------------------- linear layers (cuBLAS)

// Row-major out[N, nout] = in[N, nin] W[nout, nin]^T is column-major out^T = W^T-as-stored x in^T.
__global__ void to_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

// Column-major C[m, n] = op(A) op(B) + beta C, A holding na and B nb elements: cublasSgemm in
// fp32; with kctx.bf16 both operands are first rounded to bfloat16 (round to nearest even) in
// the context's workspace and multiplied on the tensor cores with fp32 accumulation; with
// kctx.tf32 cuBLAS takes the fp32 operands to the tensor cores as tf32.
static void gemm(kctx *k, cublasOperation_t oa, cublasOperation_t ob, int m, int n, int kk,
                 const float *A, int lda, size_t na, const float *B, int ldb, size_t nb,
                 float beta, float *C, int ldc) {
    cuda_state *s = cuda_of(k);
    const float one = 1.0f;
    if (k->tf32 && !k->bf16) {
        CUBLAS_CHECK(cublasGemmEx(s->blas, oa, ob, m, n, kk, &one, A, CUDA_R_32F, lda, B,
                                  CUDA_R_32F, ldb, &beta, C, CUDA_R_32F, ldc,
                                  CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
        return;
    }
    if (!k->bf16) return cuda_sgemm(s, oa, ob, m, n, kk, A, lda, B, ldb, beta, C, ldc);
    const size_t pa = (na + 127) / 128 * 128;  // B's copy 256-byte aligned
    cuda_bwork_reserve(s, sizeof(__nv_bfloat16) * (pa + nb));
    __nv_bfloat16 *Ab = (__nv_bfloat16 *)s->bwork, *Bb = Ab + pa;
    to_bf16_kernel<<<grid_for(na, THREADS), THREADS, 0, s->stream>>>(Ab, A, na);
    to_bf16_kernel<<<grid_for(nb, THREADS), THREADS, 0, s->stream>>>(Bb, B, nb);
    CUDA_CHECK(cudaGetLastError());
    CUBLAS_CHECK(cublasGemmEx(s->blas, oa, ob, m, n, kk, &one, Ab, CUDA_R_16BF, lda, Bb,
                              CUDA_R_16BF, ldb, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
}

void cuda_linear_fwd(kctx *k, float *out, const float *in, const float *W, const float *b, int N,
                     int nin, int nout) {
    if (N <= 0) return;
    gemm(k, CUBLAS_OP_T, CUBLAS_OP_N, nout, N, nin, W, nin, (size_t)nout * nin, in, nin,
         (size_t)N * nin, 0.0f, out, nout);
    if (b) cuda_bias_add(k, out, b, N, nout);
}

// Column sums of dout [N, C] added to db [C]: one thread per column, rows in order.
__global__ void colsum_kernel(float *db, const float *dout, int N, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int r = 0; r < N; r++) s += dout[(size_t)r * C + c];
    db[c] += s;
}

void cuda_linear_bwd(kctx *k, float *din, float *dW, float *db, const float *dout, const float *in,
                     const float *W, int N, int nin, int nout, int accumulate) {
    if (N <= 0) return;
    const float beta = accumulate ? 1.0f : 0.0f;
    if (din)  // din[N, nin] = dout[N, nout] W[nout, nin]
        gemm(k, CUBLAS_OP_N, CUBLAS_OP_N, nin, N, nout, W, nin, (size_t)nout * nin, dout, nout,
             (size_t)N * nout, beta, din, nin);
    // dW[nout, nin] += dout^T in
    gemm(k, CUBLAS_OP_N, CUBLAS_OP_T, nin, nout, N, in, nin, (size_t)N * nin, dout, nout,
         (size_t)N * nout, 1.0f, dW, nin);
    if (db) {
        colsum_kernel<<<(nout + 127) / 128, 128, 0, stream_of(k)>>>(db, dout, N, nout);
        CUDA_CHECK(cudaGetLastError());
    }
}

// ---------------------------------------------------------------- LayerNorm

// Sum over a block of THREADS threads (power of two).
__device__ float block_sum(float v, float *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

__global__ void layernorm_fwd_kernel(float *out, float *mean, float *rstd, const float *in,
                                     const float *w, const float *b, int C) {
    __shared__ float sh[THREADS];
    const float *x = in + (size_t)blockIdx.x * C;
    float *y = out + (size_t)blockIdx.x * C;
    float s = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) s += x[c];
    float m = block_sum(s, sh) / (float)C;
    float v = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) v += (x[c] - m) * (x[c] - m);
    float var = block_sum(v, sh) / (float)C;
    float r = 1.0f / sqrtf(var + 1e-5f);
    for (int c = threadIdx.x; c < C; c += blockDim.x) y[c] = (x[c] - m) * r * w[c] + b[c];
    if (threadIdx.x == 0) {
        mean[blockIdx.x] = m;
        rstd[blockIdx.x] = r;
    }
}

void cuda_layernorm_fwd(kctx *k, float *out, float *mean, float *rstd, const float *in,
                        const float *w, const float *b, int N, int C) {
    if (N <= 0) return;
    layernorm_fwd_kernel<<<N, THREADS, 0, stream_of(k)>>>(out, mean, rstd, in, w, b, C);
    CUDA_CHECK(cudaGetLastError());
}

// din += per row (a block per row). dw, db come from layernorm_dwdb_kernel: no atomics, so a
// step's gradients are the same bits on every run (bit-exact resume on GPUs).
__global__ void layernorm_bwd_kernel(float *din, const float *dout, const float *in,
                                     const float *mean, const float *rstd, const float *w, int C) {
    __shared__ float sh[THREADS];
    const size_t row = blockIdx.x;
    const float *x = in + row * C, *g = dout + row * C;
    float *dx = din + row * C;
    const float m = mean[row], s = rstd[row];
    float sg = 0.0f, sgx = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float xh = (x[c] - m) * s, gw = g[c] * w[c];
        sg += gw;
        sgx += gw * xh;
    }
    sg = block_sum(sg, sh) / (float)C;
    sgx = block_sum(sgx, sh) / (float)C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float xh = (x[c] - m) * s;
        dx[c] += s * (g[c] * w[c] - sg - xh * sgx);
    }
}

// dw[c] += sum_r dout[r, c] xhat[r, c], db[c] += sum_r dout[r, c]: a thread per column, rows in
// order (as the CPU sums them, and as colsum_kernel does for linear biases).
__global__ void layernorm_dwdb_kernel(float *dw, float *db, const float *dout, const float *in,
                                      const float *mean, const float *rstd, int N, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float sw = 0.0f, sb = 0.0f;
    for (int r = 0; r < N; r++) {
        const float g = dout[(size_t)r * C + c];
        sw += g * ((in[(size_t)r * C + c] - mean[r]) * rstd[r]);
        sb += g;
    }
    dw[c] += sw;
    db[c] += sb;
}

void cuda_layernorm_bwd(kctx *k, float *din, float *dw, float *db, const float *dout,
                        const float *in, const float *mean, const float *rstd, const float *w,
                        int N, int C) {
    if (N <= 0) return;
    layernorm_bwd_kernel<<<N, THREADS, 0, stream_of(k)>>>(din, dout, in, mean, rstd, w, C);
    CUDA_CHECK(cudaGetLastError());
    layernorm_dwdb_kernel<<<(C + 127) / 128, 128, 0, stream_of(k)>>>(dw, db, dout, in, mean, rstd,
                                                                     N, C);
    CUDA_CHECK(cudaGetLastError());
}

// ---------------------------------------------------------------- dropout (CPU-identical masks)

// Element (row r, column c) of sequence b is element e = (r - off[b]) * C + c of b's stream.
__global__ void dropout_kernel(float *x, dbatch bt, int C, uint32_t thr, float scale,
                               kdrop d) {
    size_t n = (size_t)bt.T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int r = (int)(i / C), b = row_seq(bt, r);
        uint32_t e = (uint32_t)(r - bt.off[b]) * (uint32_t)C + (uint32_t)(i % C);
        rng_stream s = rng_make(d.seed, RNG_DROPOUT, d.step, d.layer, d.slot, bt.sample[b]);
        x[i] *= dropout_u16(rng_block(s, e >> 3), e) >= thr ? scale : 0.0f;
    }
}

void cuda_dropout(kctx *k, float *x, const kbatch *bt, int C, float p, kdrop d) {
    if (p <= 0.0f || bt->T == 0) return;
    cuda_state *s = cuda_of(k);
    size_t n = (size_t)bt->T * C;
    dropout_kernel<<<grid_for(n, THREADS), THREADS, 0, s->stream>>>(
        x, s->batch, C, dropout_threshold(p), 1.0f / (1.0f - p), d);
    CUDA_CHECK(cudaGetLastError());
}

// ---------------------------------------------------------------- embeddings

__global__ void embed_fwd_kernel(float *out, dbatch bt, const float *tok, const float *pos, int D) {
    size_t n = (size_t)bt.T * D;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int r = (int)(i / D), c = (int)(i % D), t = r - bt.off[row_seq(bt, r)];
        out[i] = tok[(size_t)bt.ids[r] * D + c] + pos[(size_t)t * D + c];
    }
}

// Without atomics (the same bits on every run): dpos[t] sums position t of every sequence in
// sequence order; dtok[id] sums the rows holding token id in row order, from the batch's rows
// grouped by id on the host (uid [nu] the ids present, uoff [nu + 1], urows [T]).
__global__ void embed_bwd_pos_kernel(float *dpos, const float *dout, dbatch bt, int D) {
    const size_t n = (size_t)bt.n * D;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const int t = (int)(i / D), c = (int)(i % D);
        float acc = 0.0f;
        int any = 0;
        for (int b = 0; b < bt.B; b++)
            if (t < bt.len[b]) {
                acc += dout[(size_t)(bt.off[b] + t) * D + c];
                any = 1;
            }
        if (any) dpos[i] += acc;
    }
}

__global__ void embed_bwd_tok_kernel(float *dtok, const float *dout, const int *uid,
                                     const int *uoff, const int *urows, int D) {
    const int u = blockIdx.x;
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
        float acc = 0.0f;
        for (int q = uoff[u]; q < uoff[u + 1]; q++) acc += dout[(size_t)urows[q] * D + c];
        dtok[(size_t)uid[u] * D + c] += acc;
    }
}

void cuda_embed_fwd(kctx *k, float *out, const kbatch *bt, const float *tok, const float *pos,
                    int D) {
    cuda_state *s = cuda_of(k);
    size_t n = (size_t)bt->T * D;
    LAUNCH1D(embed_fwd_kernel, n, out, s->batch, tok, pos, D);
}

void cuda_embed_bwd(kctx *k, float *dtok, float *dpos, const float *dout, const kbatch *bt, int D) {
    cuda_state *s = cuda_of(k);
    const int T = bt->T;
    if (T <= 0) return;
    const size_t npos = (size_t)bt->n * D;
    LAUNCH1D(embed_bwd_pos_kernel, npos, dpos, dout, s->batch, D);
    // Rows grouped by token id (a stable counting sort over the ids present).
    int maxid = 0;
    for (int r = 0; r < T; r++) maxid = bt->ids[r] > maxid ? bt->ids[r] : maxid;
    int *cnt = (int *)xcalloc((size_t)maxid + 2, sizeof(int));
    for (int r = 0; r < T; r++) cnt[bt->ids[r] + 1]++;
    // uid [T], uoff [T + 1], urows [T], at the same offsets in hwork and dwork.
    const size_t words = 3 * (size_t)T + 1;
    cuda_work_reserve(s, sizeof(int) * words);
    int *h = (int *)s->hwork, *uid = h, *uoff = h + T, *urows = h + 2 * (size_t)T + 1;
    int nu = 0;
    for (int id = 0; id <= maxid; id++)
        if (cnt[id + 1]) uid[nu++] = id;
    for (int id = 0; id <= maxid; id++) cnt[id + 1] += cnt[id];
    for (int u = 0; u < nu; u++) uoff[u] = cnt[uid[u]];
    uoff[nu] = T;
    for (int r = 0; r < T; r++) urows[cnt[bt->ids[r]]++] = r;
    free(cnt);
    int *d = (int *)s->dwork;
    CUDA_CHECK(cudaMemcpyAsync(d, h, sizeof(int) * words, cudaMemcpyHostToDevice, s->stream));
    embed_bwd_tok_kernel<<<nu, THREADS, 0, s->stream>>>(dtok, dout, d, d + T, d + 2 * (size_t)T + 1,
                                                        D);
    CUDA_CHECK(cudaGetLastError());
    // hwork is reused by the next call: the copy must have run.
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
}

// ---------------------------------------------------------------- masking and pooling

// One block per sequence, threads over D: rows masked in place, then pooled.
__global__ void mask_pool_fwd_kernel(float *pooled, float *x, dbatch bt, int D, int cls) {
    int b = blockIdx.x;
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
        float acc = 0.0f;
        for (int r = bt.off[b]; r < bt.off[b + 1]; r++) {
            float v = x[(size_t)r * D + c] * bt.mask[r];
            x[(size_t)r * D + c] = v;
            acc += v;
        }
        pooled[(size_t)b * D + c] = cls ? x[(size_t)bt.off[b] * D + c] : acc / (float)bt.n;
    }
}

__global__ void mask_pool_bwd_kernel(float *dx, const float *dpooled, dbatch bt, int D, int cls) {
    size_t n = (size_t)bt.T * D;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int r = (int)(i / D), c = (int)(i % D), b = row_seq(bt, r);
        float m = bt.mask[r];
        float f = cls ? (r == bt.off[b] ? m : 0.0f) : m / (float)bt.n;
        dx[i] = dpooled[(size_t)b * D + c] * f;
    }
}

void cuda_mask_pool_fwd(kctx *k, float *pooled, float *x, const kbatch *bt, int D, int cls) {
    if (bt->B == 0) return;
    cuda_state *s = cuda_of(k);
    mask_pool_fwd_kernel<<<bt->B, 128, 0, s->stream>>>(pooled, x, s->batch, D, cls);
    CUDA_CHECK(cudaGetLastError());
}

void cuda_mask_pool_bwd(kctx *k, float *dx, const float *dpooled, const kbatch *bt, int D,
                        int cls) {
    cuda_state *s = cuda_of(k);
    size_t n = (size_t)bt->T * D;
    LAUNCH1D(mask_pool_bwd_kernel, n, dx, dpooled, s->batch, D, cls);
}

__global__ void dual_fwd_kernel(float *out, const float *pooled, int B, int D) {
    size_t n = (size_t)B * D;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t b = i / D, c = i % D;
        float x0 = pooled[2 * b * D + c], x1 = pooled[(2 * b + 1) * D + c];
        float *o = out + 4 * b * D;
        o[c] = x0;
        o[D + c] = x1;
        o[2 * D + c] = x0 * x1;
        o[3 * D + c] = x0 - x1;
    }
}

__global__ void dual_bwd_kernel(float *dpooled, const float *dout, const float *pooled, int B,
                                int D) {
    size_t n = (size_t)B * D;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t b = i / D, c = i % D;
        float x0 = pooled[2 * b * D + c], x1 = pooled[(2 * b + 1) * D + c];
        const float *g = dout + 4 * b * D;
        dpooled[2 * b * D + c] = g[c] + g[2 * D + c] * x1 + g[3 * D + c];
        dpooled[(2 * b + 1) * D + c] = g[D + c] + g[2 * D + c] * x0 - g[3 * D + c];
    }
}

void cuda_dual_combine_fwd(kctx *k, float *out, const float *pooled, int B, int D) {
    size_t n = (size_t)B * D;
    LAUNCH1D(dual_fwd_kernel, n, out, pooled, B, D);
}

void cuda_dual_combine_bwd(kctx *k, float *dpooled, const float *dout, const float *pooled, int B,
                           int D) {
    size_t n = (size_t)B * D;
    LAUNCH1D(dual_bwd_kernel, n, dpooled, dout, pooled, B, D);
}

// ---------------------------------------------------------------- cross-entropy

// One thread per example (C is small): the CPU's formula, in double like it.
__global__ void xent_fwd_kernel(float *probs, double *loss, int *hit, const float *logits,
                                const int32_t *labels, int B, int C) {
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    loss[b] = pw_xent_row(probs + (size_t)b * C, logits + (size_t)b * C, C, labels[b], &hit[b]);
}

double cuda_xent_fwd(kctx *k, float *probs, const float *logits, const int32_t *labels, int B,
                     int C, int *correct) {
    if (B <= 0) return 0.0;
    cuda_state *s = cuda_of(k);
    // Workspace: labels [B] | losses [B] (double) | hits [B].
    size_t lb = sizeof(int32_t) * B, ll = sizeof(double) * B, lh = sizeof(int) * B;
    cuda_work_reserve(s, lb + ll + lh + 16);
    char *dw = (char *)s->dwork, *hw = (char *)s->hwork;
    CUDA_CHECK(cudaMemcpyAsync(dw, labels, lb, cudaMemcpyHostToDevice, s->stream));
    double *dloss = (double *)(dw + ((lb + 7) / 8) * 8);
    int *dhit = (int *)((char *)dloss + ll);
    xent_fwd_kernel<<<(B + 127) / 128, 128, 0, s->stream>>>(probs, dloss, dhit, logits,
                                                            (const int32_t *)dw, B, C);
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaMemcpyAsync(hw, dloss, ll + lh, cudaMemcpyDeviceToHost, s->stream));
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    const double *hl = (const double *)hw;
    const int *hh = (const int *)(hw + ll);
    double loss = 0.0;
    for (int b = 0; b < B; b++) {
        loss += hl[b];
        if (correct) *correct += hh[b];
    }
    return loss;
}

__global__ void xent_bwd_kernel(float *dlogits, const float *probs, const int32_t *labels, int B,
                                int C, float scale) {
    size_t n = (size_t)B * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dlogits[i] = (probs[i] - ((int)(i % C) == labels[i / C] ? 1.0f : 0.0f)) * scale;
}

void cuda_xent_bwd(kctx *k, float *dlogits, const float *probs, const int32_t *labels, int B,
                   int C, float scale) {
    if (B <= 0) return;
    cuda_state *s = cuda_of(k);
    size_t lb = sizeof(int32_t) * B;
    cuda_work_reserve(s, lb);
    CUDA_CHECK(cudaMemcpyAsync(s->dwork, labels, lb, cudaMemcpyHostToDevice, s->stream));
    size_t n = (size_t)B * C;
    LAUNCH1D(xent_bwd_kernel, n, dlogits, probs, (const int32_t *)s->dwork, B, C, scale);
}

// ---------------------------------------------------------------- optimizer and reductions

__global__ void adamw_kernel(float *param, const float *grad, float *m, float *v, size_t n,
                             float beta1, float beta2, float eps, float step, float sbc2,
                             float decay) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        pw_adamw(&param[i], grad[i], &m[i], &v[i], beta1, beta2, eps, step, sbc2, decay);
}

void cuda_adamw(kctx *k, float *param, const float *grad, float *m, float *v, size_t n, float lr,
                float beta1, float beta2, float eps, float wd, float bc1, float bc2) {
    LAUNCH1D(adamw_kernel, n, param, grad, m, v, n, beta1, beta2, eps, lr / bc1, sqrtf(bc2),
             1.0f - lr * wd);
}

// out[block] = the block's partial sum of squares.
__global__ void sumsq_kernel(double *out, const float *x, size_t n) {
    __shared__ double sh[THREADS];
    double s = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        s += (double)x[i] * x[i];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = sh[0];
}

double cuda_sumsq(kctx *k, const float *x, size_t n) {
    if (!n) return 0.0;
    cuda_state *s = cuda_of(k);
    // Block partials summed on the host in block order: the same bits on every run (the grid
    // depends on n alone).
    unsigned g = grid_for(n, THREADS);
    if (g > 1024) g = 1024;
    cuda_work_reserve(s, sizeof(double) * g);
    sumsq_kernel<<<g, THREADS, 0, s->stream>>>((double *)s->dwork, x, n);
    CUDA_CHECK(cudaGetLastError());
    double *part = (double *)s->hwork;
    CUDA_CHECK(cudaMemcpyAsync(part, s->dwork, sizeof(double) * g, cudaMemcpyDeviceToHost,
                               s->stream));
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    double r = 0.0;
    for (unsigned b = 0; b < g; b++) r += part[b];
    return r;
}
