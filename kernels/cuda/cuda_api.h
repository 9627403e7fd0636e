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

#ifdef __cplusplus
}
#endif

#endif
