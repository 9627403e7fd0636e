// cuda_api.h: what the rest of sbmt sees of the CUDA backend (kernels/cuda/): opening and
// closing a context and the backend's ops table. C linkage; the implementations are CUDA C++.
#ifndef SBMT_CUDA_API_H
#define SBMT_CUDA_API_H

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

// Selects GPU local_rank mod the device count, creates the stream and the cuBLAS handle.
// -1 with a message when there is no usable device.
int cuda_ctx_open(kctx *k, int local_rank, char *err);
void cuda_ctx_close(kctx *k);
// The context's cudaStream_t.
void *cuda_ctx_stream(const kctx *k);
extern const kops kops_cuda;
// Shared memory the SBM tile kernels need per block for heads of dh (16, 32 or 64) and kc
// clusters in the context's precision (kctx.bf16, kctx.tf32), and the most a block may have:
// train and eval refuse a model that does not fit before any work.
size_t cuda_sbm_tiles_smem(const kctx *k, int dh, int kc);
size_t cuda_sbm_tiles_smem_limit(void);

#ifdef __cplusplus
}
#endif

#endif
