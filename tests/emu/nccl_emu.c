/* nccl_emu.c: NCCL over MPI for the emulated build (see nccl.h). Test code: the pending
 * send/recv list of an open group is process state, as in NCCL. */
#define _POSIX_C_SOURCE 200809L
#include "nccl.h"

#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct emu_nccl_comm {
    MPI_Comm comm;
    int rank, size;
};

typedef struct {
    int send;
    void *buf;
    int count;
    MPI_Datatype type;
    int peer;
    MPI_Comm comm;
} emu_p2p;

static emu_p2p *pending;
static int npending, cap_pending, group_depth;

static MPI_Datatype mpi_type(ncclDataType_t t) {
    switch (t) {
    case ncclInt32: return MPI_INT32_T;
    case ncclUint8: return MPI_UINT8_T;
    case ncclInt64: return MPI_INT64_T;
    case ncclFloat32: return MPI_FLOAT;
    case ncclFloat64: return MPI_DOUBLE;
    }
    return MPI_DATATYPE_NULL;
}

static size_t type_size(ncclDataType_t t) {
    switch (t) {
    case ncclUint8: return 1;
    case ncclInt32:
    case ncclFloat32: return 4;
    default: return 8;
    }
}

const char *ncclGetErrorString(ncclResult_t r) {
    return r == ncclSuccess ? "no error (emulated NCCL)" : "error (emulated NCCL)";
}
const char *ncclGetLastError(ncclComm_t comm) {
    (void)comm;
    return "";
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    static uint64_t serial;
    memset(id, 0, sizeof(*id));
    uint64_t v[3] = {(uint64_t)getpid(), (uint64_t)time(NULL), ++serial};
    memcpy(id->internal, v, sizeof(v));
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int n, ncclUniqueId id, int rank) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a of the id: the split colour of its group
    for (size_t i = 0; i < sizeof(id.internal); i++) h = (h ^ (uint8_t)id.internal[i]) * 1099511628211ull;
    struct emu_nccl_comm *c = calloc(1, sizeof(*c));
    if (!c) return ncclSystemError;
    if (MPI_Comm_split(MPI_COMM_WORLD, (int)(h & 0x3fffffff), rank, &c->comm) != MPI_SUCCESS)
        return ncclSystemError;
    MPI_Comm_rank(c->comm, &c->rank);
    MPI_Comm_size(c->comm, &c->size);
    if (c->size != n || c->rank != rank) return ncclInvalidUsage;
    *comm = c;
    return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
    return MPI_Barrier(comm->comm) == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
}
ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    MPI_Comm_free(&comm->comm);
    free(comm);
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t t,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t s) {
    (void)s;
    MPI_Op mop = op == ncclMax ? MPI_MAX : op == ncclMin ? MPI_MIN : MPI_SUM;
    const void *src = send == recv ? MPI_IN_PLACE : send;
    if (MPI_Allreduce(src, recv, (int)count, mpi_type(t), mop, comm->comm) != MPI_SUCCESS)
        return ncclSystemError;
    if (op == ncclAvg) {
        for (size_t i = 0; i < count; i++) {
            if (t == ncclFloat32) ((float *)recv)[i] /= (float)comm->size;
            else if (t == ncclFloat64) ((double *)recv)[i] /= (double)comm->size;
            else return ncclInvalidArgument;
        }
    }
    return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t t, int root,
                           ncclComm_t comm, cudaStream_t s) {
    (void)s;
    if (comm->rank == root && send != recv) memmove(recv, send, count * type_size(t));
    return MPI_Bcast(recv, (int)count, mpi_type(t), root, comm->comm) == MPI_SUCCESS
               ? ncclSuccess
               : ncclSystemError;
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t count, ncclDataType_t t,
                           ncclComm_t comm, cudaStream_t s) {
    (void)s;
    return MPI_Allgather(send, (int)count, mpi_type(t), recv, (int)count, mpi_type(t),
                         comm->comm) == MPI_SUCCESS
               ? ncclSuccess
               : ncclSystemError;
}

static ncclResult_t p2p(int is_send, void *buf, size_t count, ncclDataType_t t, int peer,
                        ncclComm_t comm) {
    if (group_depth == 0) {
        int rc = is_send ? MPI_Send(buf, (int)count, mpi_type(t), peer, 77, comm->comm)
                         : MPI_Recv(buf, (int)count, mpi_type(t), peer, 77, comm->comm,
                                    MPI_STATUS_IGNORE);
        return rc == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
    }
    if (npending == cap_pending) {
        cap_pending = cap_pending ? 2 * cap_pending : 16;
        pending = realloc(pending, sizeof(emu_p2p) * (size_t)cap_pending);
        if (!pending) return ncclSystemError;
    }
    pending[npending++] = (emu_p2p){is_send, buf, (int)count, mpi_type(t), peer, comm->comm};
    return ncclSuccess;
}

ncclResult_t ncclSend(const void *send, size_t count, ncclDataType_t t, int peer, ncclComm_t comm,
                      cudaStream_t s) {
    (void)s;
    return p2p(1, (void *)send, count, t, peer, comm);
}
ncclResult_t ncclRecv(void *recv, size_t count, ncclDataType_t t, int peer, ncclComm_t comm,
                      cudaStream_t s) {
    (void)s;
    return p2p(0, recv, count, t, peer, comm);
}

ncclResult_t ncclGroupStart(void) {
    group_depth++;
    return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void) {
    if (group_depth <= 0) return ncclInvalidUsage;
    if (--group_depth > 0) return ncclSuccess;
    MPI_Request *req = malloc(sizeof(MPI_Request) * (size_t)(npending ? npending : 1));
    if (!req) return ncclSystemError;
    for (int i = 0; i < npending; i++) {
        emu_p2p *p = &pending[i];
        if (p->send) MPI_Isend(p->buf, p->count, p->type, p->peer, 77, p->comm, &req[i]);
        else MPI_Irecv(p->buf, p->count, p->type, p->peer, 77, p->comm, &req[i]);
    }
    int rc = MPI_Waitall(npending, req, MPI_STATUSES_IGNORE);
    free(req);
    npending = 0;
    return rc == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
}
