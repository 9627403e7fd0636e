// sbm_members.cu: the CUDA backend of the SBM block matrices S_h = softmax over all k*k entries
// of C_h C_h^T and of the memberships Y = mask * sigmoid(phi C_h^T) (SPEC.md section 2), forward
// and backward: the products on cuBLAS in fp32 (the edge probabilities they feed decide the
// sampled graphs, so train.precision = bf16 leaves them alone), softmax, sigmoid and the
// block-matrix gradient in kernels. Row-major tensors are column-major transposes to cuBLAS.
#include <math.h>

#include "kernels/cuda/cuda_ops.cuh"

#define SBM_THREADS 256

namespace {

// Sum and maximum over a block of SBM_THREADS threads.
__device__ double block_sum_d(double v, double *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = SBM_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

__device__ float block_max_f(float v, float *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = SBM_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + s]);
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

// In place, one block per head: S_h = softmax of its kk entries (max-shifted, sum in double).
__global__ void blocks_softmax_kernel(float *S, size_t kk) {
    __shared__ double shd[SBM_THREADS];
    __shared__ float shf[SBM_THREADS];
    float *Sh = S + blockIdx.x * kk;
    float mx = -INFINITY;
    for (size_t i = threadIdx.x; i < kk; i += SBM_THREADS) mx = fmaxf(mx, Sh[i]);
    mx = block_max_f(mx, shf);
    double sum = 0.0;
    for (size_t i = threadIdx.x; i < kk; i += SBM_THREADS) {
        float e = expf(Sh[i] - mx);
        Sh[i] = e;
        sum += e;
    }
    const float inv = (float)(1.0 / block_sum_d(sum, shd));
    for (size_t i = threadIdx.x; i < kk; i += SBM_THREADS) Sh[i] *= inv;
}

// dM_h = S_h * (dS_h - sum(S_h * dS_h)), one block per head.
__global__ void blocks_dm_kernel(float *dM, const float *S, const float *dS, size_t kk) {
    __shared__ double shd[SBM_THREADS];
    const size_t o = blockIdx.x * kk;
    double dot = 0.0;
    for (size_t i = threadIdx.x; i < kk; i += SBM_THREADS) dot += (double)S[o + i] * dS[o + i];
    const float d = (float)block_sum_d(dot, shd);
    for (size_t i = threadIdx.x; i < kk; i += SBM_THREADS) dM[o + i] = S[o + i] * (dS[o + i] - d);
}

// Y = mask(r % T) * sigmoid(Y) over rows x Hk.
__global__ void members_act_kernel(float *Y, const float *mask, int T, size_t rows, int Hk) {
    const size_t n = rows * (size_t)Hk;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / (size_t)Hk;
        Y[i] = mask[r % (size_t)T] == 0.0f ? 0.0f : 1.0f / (1.0f + expf(-Y[i]));
    }
}

// dY *= Y (1 - Y): the gradient through the sigmoid (padded rows have Y = 0, so dZ = 0).
__global__ void members_dz_kernel(float *dY, const float *Y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dY[i] *= Y[i] * (1.0f - Y[i]);
}

}  // namespace

void cuda_sbm_blocks_fwd(kctx *k, float *S, const float *C, int H, int kc, int d) {
    const size_t kk = (size_t)kc * kc;
    // M_h = C_h C_h^T is symmetric, so its column-major result is the row-major one.
    for (int h = 0; h < H; h++)
        cuda_sgemm(cuda_of(k), CUBLAS_OP_T, CUBLAS_OP_N, kc, kc, d, C + (size_t)h * kc * d, d,
                   C + (size_t)h * kc * d, d, 0.0f, S + h * kk, kc);
    blocks_softmax_kernel<<<H, SBM_THREADS, 0, cuda_of(k)->stream>>>(S, kk);
    CUDA_CHECK(cudaGetLastError());
}

void cuda_sbm_blocks_bwd(kctx *k, float *dC, const float *dS, const float *S, const float *C,
                         int H, int kc, int d) {
    cuda_state *s = cuda_of(k);
    const size_t kk = (size_t)kc * kc;
    cuda_work_reserve(s, sizeof(float) * kk * H);
    float *dM = (float *)s->dwork;
    blocks_dm_kernel<<<H, SBM_THREADS, 0, s->stream>>>(dM, S, dS, kk);
    CUDA_CHECK(cudaGetLastError());
    // Row-major dC_h += (dM + dM^T) C_h, i.e. column-major dC_h^T += C_h^T dM^T + C_h^T dM.
    for (int h = 0; h < H; h++) {
        const float *Ch = C + (size_t)h * kc * d;
        float *dCh = dC + (size_t)h * kc * d;
        cuda_sgemm(s, CUBLAS_OP_N, CUBLAS_OP_T, d, kc, kc, Ch, d, dM + h * kk, kc, 1.0f, dCh, d);
        cuda_sgemm(s, CUBLAS_OP_N, CUBLAS_OP_N, d, kc, kc, Ch, d, dM + h * kk, kc, 1.0f, dCh, d);
    }
}

void cuda_sbm_members_fwd(kctx *k, float *Y, const float *phi, const float *C, const kbatch *bt,
                          int rows, int H, int kc, int d) {
    if (rows <= 0) return;
    cuda_state *s = cuda_of(k);
    const int Hk = H * kc, Hd = H * d;
    // Row-major Y_h [rows, kc] (ld Hk) = phi_h [rows, d] (ld Hd) C_h^T.
    for (int h = 0; h < H; h++)
        cuda_sgemm(s, CUBLAS_OP_T, CUBLAS_OP_N, kc, rows, d, C + (size_t)h * kc * d, d,
                   phi + h * d, Hd, 0.0f, Y + h * kc, Hk);
    const size_t n = (size_t)rows * Hk;
    members_act_kernel<<<grid_for(n, SBM_THREADS), SBM_THREADS, 0, s->stream>>>(
        Y, s->batch.mask, bt->T, (size_t)rows, Hk);
    CUDA_CHECK(cudaGetLastError());
}

void cuda_sbm_members_bwd(kctx *k, float *dphi, float *dC, float *dY, const float *Y,
                          const float *phi, const float *C, int rows, int H, int kc, int d) {
    if (rows <= 0) return;
    cuda_state *s = cuda_of(k);
    const int Hk = H * kc, Hd = H * d;
    const size_t n = (size_t)rows * Hk;
    members_dz_kernel<<<grid_for(n, SBM_THREADS), SBM_THREADS, 0, s->stream>>>(dY, Y, n);
    CUDA_CHECK(cudaGetLastError());
    for (int h = 0; h < H; h++) {
        const float *Ch = C + (size_t)h * kc * d;
        // dphi_h [rows, d] = dZ_h [rows, kc] C_h, overwritten.
        cuda_sgemm(s, CUBLAS_OP_N, CUBLAS_OP_N, d, rows, kc, Ch, d, dY + h * kc, Hk, 0.0f,
                   dphi + h * d, Hd);
        // dC_h [kc, d] += dZ_h^T phi_h.
        cuda_sgemm(s, CUBLAS_OP_N, CUBLAS_OP_T, d, kc, rows, phi + h * d, Hd, dY + h * kc, Hk,
                   1.0f, dC + (size_t)h * kc * d, d);
    }
}
