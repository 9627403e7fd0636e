/* cuda_runtime_api.h (emulated, C and C++): the CUDA runtime calls of the CUDA backend
 * (kernels/cuda/, through tests/emu/cuda_runtime.h) and of dist/dist_nccl.c, on host memory,
 * for the emulated build (tests/emu/). Implemented in cuda_runtime_api.cc.
 *
 * Devices. One per process, whose UUID is the process's, so ranks look like they hold separate
 * GPUs; SBMT_EMU_SHARED_GPU=1 gives every process the same UUID (two ranks on one GPU, which
 * dist_nccl_init must refuse). Allocations are poisoned with 0xFF bytes (NaN), as device memory
 * holds garbage.
 *
 * Streams run as a GPU may run them, not in host order: work queued on a stream (kernels,
 * copies, memsets, cuBLAS and CUB calls) runs only when something waits for it
 * (cudaStreamSynchronize, cudaDeviceSynchronize, cudaEventSynchronize, a cudaStreamWaitEvent
 * whose stream reaches that point, cudaFree, a synchronous copy, a copy into pageable memory,
 * or an NCCL call, which synchronises its stream first; cudaEventQuery runs one op per pending
 * query). So a host read of pinned memory before the
 * stream that fills it is synchronised sees the old bytes, a pinned buffer refilled before its
 * upload ran uploads the new ones, and a stream that should wait for another's event and does
 * not runs before that stream's work: each shows as a wrong value in the tests. Copies follow
 * CUDA's rules: from pageable memory the bytes are taken at the call, into pageable memory the
 * call returns when the copy is done; pinned memory (cudaMallocHost) is read and written when
 * the copy runs. NCCL calls read their input at the call and write their output when their stream
 * gets there (emu_stream_land below). SBMT_EMU_STREAMS=eager runs everything at once instead (host order, for
 * telling an ordering bug from another). Streams must be non-blocking
 * (cudaStreamNonBlocking): the legacy default stream's implicit synchronisation with blocking
 * streams is not emulated. */
#ifndef SBMT_EMU_CUDA_RUNTIME_API_H
#define SBMT_EMU_CUDA_RUNTIME_API_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorNotReady = 600
} cudaError_t;
typedef enum {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
} cudaMemcpyKind;
typedef struct emu_stream *cudaStream_t;
typedef struct emu_event *cudaEvent_t;
typedef struct {
    char bytes[16];
} cudaUUID_t;
struct cudaDeviceProp {
    char name[256];
    cudaUUID_t uuid;
};
#define cudaStreamNonBlocking 0x01
#define cudaEventDisableTiming 0x02

const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device);
cudaError_t cudaDeviceGetPCIBusId(char *bus, int len, int device);
cudaError_t cudaDeviceSynchronize(void);

cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t bytes);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemset(void *p, int v, size_t bytes);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s);
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemsetAsync(void *p, int v, size_t bytes, cudaStream_t s);

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventDestroy(cudaEvent_t e);

/* Emulator only, for the NCCL emulation (nccl_emu.c): a collective synchronises its stream (runs
 * everything queued on it), exchanges its data over MPI at once (deferring the exchange could
 * block one rank in MPI inside a later synchronisation while another waits elsewhere, where
 * GPUs would not), and lands the result with emu_stream_land: a copy of `bytes` from `staged`
 * (malloc'd; freed after) into dst, queued on s. So the result appears when the stream gets
 * there, and work on another stream that does not wait for it sees the old bytes. */
void emu_stream_land(cudaStream_t s, void *dst, void *staged, size_t bytes);
/* Emulator only: a buffer a collective reads or writes must not change from its call until it
 * completes (other work touching it then races with the collective on a GPU). Takes a copy of
 * [p, p + bytes) now and queues on s a comparison, which reports `what` and aborts if it
 * changed. Queued before the landing, it runs when the collective would complete. */
void emu_stream_watch(cudaStream_t s, const void *p, size_t bytes, const char *what);
/* Emulator only: the error the next cudaGetLastError returns (a refused launch). */
void emu_set_last_error(cudaError_t e);

#ifdef __cplusplus
}
#endif

#endif
