/* nccl.h (emulated, C): the NCCL calls of dist/dist_nccl.c over MPI on host memory, so its
 * communicators, collectives and the trainer's device collectives run in the emulated build
 * (tests/emu/) under mpirun. A communicator is an MPI communicator split from the world by the
 * unique id (every rank initialises the groups in the same order, as dist_nccl_init does);
 * send/recv between ncclGroupStart and ncclGroupEnd are posted together at the end. Each call
 * reads its input when called (after its stream's queued work) and writes its output when its
 * stream gets there (cuda_runtime_api.h). Implemented in nccl_emu.c. */
#ifndef SBMT_EMU_NCCL_H
#define SBMT_EMU_NCCL_H

#include <stddef.h>

#include "cuda_runtime_api.h"

typedef enum {
    ncclSuccess = 0,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5
} ncclResult_t;
typedef enum { ncclInt32 = 2, ncclUint8 = 1, ncclInt64 = 4, ncclFloat32 = 7, ncclFloat64 = 8 } ncclDataType_t;
typedef enum { ncclSum = 0, ncclMax = 2, ncclMin = 3, ncclAvg = 4 } ncclRedOp_t;
typedef struct {
    char internal[128];
} ncclUniqueId;
typedef struct emu_nccl_comm *ncclComm_t;

const char *ncclGetErrorString(ncclResult_t r);
const char *ncclGetLastError(ncclComm_t comm);
ncclResult_t ncclGetUniqueId(ncclUniqueId *id);
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int n, ncclUniqueId id, int rank);
ncclResult_t ncclCommFinalize(ncclComm_t comm);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t t,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t s);
ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t t, int root,
                           ncclComm_t comm, cudaStream_t s);
ncclResult_t ncclAllGather(const void *send, void *recv, size_t count, ncclDataType_t t,
                           ncclComm_t comm, cudaStream_t s);
ncclResult_t ncclSend(const void *send, size_t count, ncclDataType_t t, int peer, ncclComm_t comm,
                      cudaStream_t s);
ncclResult_t ncclRecv(void *recv, size_t count, ncclDataType_t t, int peer, ncclComm_t comm,
                      cudaStream_t s);
ncclResult_t ncclGroupStart(void);
ncclResult_t ncclGroupEnd(void);

#endif
