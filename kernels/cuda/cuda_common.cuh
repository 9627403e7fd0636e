// cuda_common.cuh: what the CUDA backend's files share: the context state behind kctx.impl
// (stream, cuBLAS handle, the batch's device arrays, a small host/device workspace), the check
// macros and launch helpers. Internal to kernels/cuda/.
#ifndef SBMT_CUDA_COMMON_CUH
#define SBMT_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>

extern "C" {
#include "kernels/common.h"
#include "kernels/cuda/cuda_api.h"
}
#include "kernels/cuda/dbatch.h"

#define CUDA_CHECK(call)                                                                           \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            sbmt_fatal(__FILE__, __LINE__, "%s failed: %s", #call, cudaGetErrorString(e_));        \
    } while (0)

#define CUBLAS_CHECK(call)                                                                         \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            sbmt_fatal(__FILE__, __LINE__, "%s failed: %s", #call, cublasGetStatusString(s_));     \
    } while (0)


struct cuda_state {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    // The batch's device arrays (k_batch_upload), grown on demand.
    int *len, *off;
    int32_t *ids;
    float *mask;
    uint32_t *sample;
    size_t cap_seq, cap_tok;
    dbatch batch;
    // Labels, per-row losses and hits, reduction results: grown on demand.
    void *dwork, *hwork;
    size_t cap_work;
    // bf16 copies of GEMM operands (kctx.bf16), grown on demand; reuse is stream-ordered.
    void *bwork;
    size_t cap_bwork;
};

static inline cuda_state *cuda_of(kctx *k) { return (cuda_state *)k->impl; }

// Room for `bytes` in both workspaces.
void cuda_work_reserve(cuda_state *s, size_t bytes);
// Room for `bytes` in the bf16 operand workspace.
void cuda_bwork_reserve(cuda_state *s, size_t bytes);

// *p replaced by a device buffer of n elements (contents not kept; the caller has made sure
// nothing still uses the old one).
template <class T> static inline void cuda_grow(T **p, size_t n) {
    cudaFree(*p);
    CUDA_CHECK(cudaMalloc((void **)p, sizeof(T) * (n ? n : 1)));
}

// Column-major C[m, n] = op(A) op(B) + beta C in fp32 on the context's cuBLAS handle.
static inline void cuda_sgemm(cuda_state *s, cublasOperation_t oa, cublasOperation_t ob, int m,
                              int n, int kk, const float *A, int lda, const float *B, int ldb,
                              float beta, float *C, int ldc) {
    const float one = 1.0f;
    CUBLAS_CHECK(cublasSgemm(s->blas, oa, ob, m, n, kk, &one, A, lda, B, ldb, &beta, C, ldc));
}

static inline unsigned grid_for(size_t n, unsigned threads) {
    size_t g = (n + threads - 1) / threads;
    return (unsigned)(g < 65535u * 32u ? (g ? g : 1) : 65535u * 32u);
}

// Row of the packed batch -> its sequence (binary search over off).
__device__ __forceinline__ int row_seq(const dbatch &b, int r) {
    int lo = 0, hi = b.B - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (b.off[mid] <= r)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

#endif
