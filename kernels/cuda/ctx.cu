// ctx.cu: the CUDA backend's context (one GPU per rank: local rank mod the device count; its
// stream and cuBLAS handle), tensor memory, the batch's device arrays and the workspace.
#include <string.h>

#include "kernels/cuda/cuda_ops.cuh"

extern "C" int cuda_ctx_open(kctx *k, int local_rank, char *err) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0)
        return sbmt_errf(err, "no CUDA device is usable here (%s)",
                         e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    cuda_state *s = (cuda_state *)xcalloc(1, sizeof(cuda_state));
    s->device = (local_rank > 0 ? local_rank : 0) % count;
    CUDA_CHECK(cudaSetDevice(s->device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasCreate(&s->blas));
    CUBLAS_CHECK(cublasSetStream(s->blas, s->stream));
    // fp32 GEMMs stay fp32 (no TF32), so the backend matches the CPU within fp32 rounding.
    CUBLAS_CHECK(cublasSetMathMode(s->blas, CUBLAS_DEFAULT_MATH));
    k->backend = KB_CUDA;
    k->ops = &kops_cuda;
    k->nthreads = 1;
    k->simd = 1;
    k->device = s->device;
    k->impl = s;
    return 0;
}

void cuda_bwork_reserve(cuda_state *s, size_t bytes) {
    if (bytes <= s->cap_bwork) return;
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    cudaFree(s->bwork);
    s->cap_bwork = bytes + bytes / 2;
    CUDA_CHECK(cudaMalloc(&s->bwork, s->cap_bwork));
}

extern "C" void *cuda_ctx_stream(const kctx *k) { return (void *)((cuda_state *)k->impl)->stream; }

extern "C" void cuda_ctx_close(kctx *k) {
    cuda_state *s = cuda_of(k);
    if (!s) return;
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    cudaFree(s->len);
    cudaFree(s->off);
    cudaFree(s->ids);
    cudaFree(s->mask);
    cudaFree(s->sample);
    cudaFree(s->dwork);
    cudaFreeHost(s->hwork);
    cudaFree(s->bwork);
    cublasDestroy(s->blas);
    cudaStreamDestroy(s->stream);
    free(s);
    k->impl = NULL;
}

void cuda_work_reserve(cuda_state *s, size_t bytes) {
    if (bytes <= s->cap_work) return;
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    cudaFree(s->dwork);
    cudaFreeHost(s->hwork);
    s->cap_work = bytes * 2;
    CUDA_CHECK(cudaMalloc(&s->dwork, s->cap_work));
    CUDA_CHECK(cudaMallocHost(&s->hwork, s->cap_work));
}

void *cuda_alloc(kctx *k, size_t bytes) {
    cuda_state *s = cuda_of(k);
    void *p = NULL;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes ? bytes : 1, s->stream));
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    return p;
}

void cuda_free(kctx *k, void *p) {
    CUDA_CHECK(cudaStreamSynchronize(cuda_of(k)->stream));
    CUDA_CHECK(cudaFree(p));
}

// Host buffers may be freed as soon as these return: both synchronise the stream.
void cuda_upload(kctx *k, void *dst, const void *host, size_t bytes) {
    cuda_state *s = cuda_of(k);
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, s->stream));
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
}

void cuda_download(kctx *k, void *host, const void *src, size_t bytes) {
    cuda_state *s = cuda_of(k);
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, s->stream));
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
}

void cuda_copy(kctx *k, float *dst, const float *src, size_t n) {
    if (!n || dst == src) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice,
                               cuda_of(k)->stream));
}

void cuda_batch_upload(kctx *k, const kbatch *bt) {
    cuda_state *s = cuda_of(k);
    if ((size_t)bt->B + 1 > s->cap_seq || (size_t)bt->T > s->cap_tok) {
        CUDA_CHECK(cudaStreamSynchronize(s->stream));
        if ((size_t)bt->B + 1 > s->cap_seq) {
            s->cap_seq = 2 * ((size_t)bt->B + 1);
            cuda_grow(&s->len, s->cap_seq);
            cuda_grow(&s->off, s->cap_seq);
            cuda_grow(&s->sample, s->cap_seq);
        }
        if ((size_t)bt->T > s->cap_tok) {
            s->cap_tok = 2 * (size_t)bt->T;
            cuda_grow(&s->ids, s->cap_tok);
            cuda_grow(&s->mask, s->cap_tok);
        }
    }
    cudaStream_t st = s->stream;
    CUDA_CHECK(cudaMemcpyAsync(s->len, bt->len, sizeof(int) * bt->B, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(s->off, bt->off, sizeof(int) * (bt->B + 1), cudaMemcpyHostToDevice,
                               st));
    CUDA_CHECK(cudaMemcpyAsync(s->sample, bt->sample, sizeof(uint32_t) * bt->B,
                               cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(s->ids, bt->ids, sizeof(int32_t) * bt->T, cudaMemcpyHostToDevice,
                               st));
    CUDA_CHECK(cudaMemcpyAsync(s->mask, bt->mask, sizeof(float) * bt->T, cudaMemcpyHostToDevice,
                               st));
    // The host arrays are refilled by the next batch_pack: finish before returning.
    CUDA_CHECK(cudaStreamSynchronize(st));
    s->batch.B = bt->B;
    s->batch.n = bt->n;
    s->batch.T = bt->T;
    s->batch.len = s->len;
    s->batch.off = s->off;
    s->batch.ids = s->ids;
    s->batch.mask = s->mask;
    s->batch.sample = s->sample;
}
