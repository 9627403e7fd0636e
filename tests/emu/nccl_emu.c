/* nccl_emu.c: NCCL over MPI for the emulated build (see nccl.h). Test code: the pending
 * send/recv list of an open group is process state, as in NCCL. A call first runs what its stream
 * has queued (cudaStreamSynchronize), exchanges over MPI at once into a staging buffer, and queues the
 * result's landing on its stream (emu_stream_land; see cuda_runtime_api.h). */
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
    void *buf;    // the caller's buffer
    void *stage;  // a receive's staging buffer (landed on `stream` after the exchange)
    size_t bytes;
    int count;
    MPI_Datatype type;
    int peer;
    MPI_Comm comm;
    cudaStream_t stream;
} emu_p2p;

static emu_p2p *pending;
static ncclResult_t group_flush(void);
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

// A staging buffer for a call's result (freed by the landing).
static void *staging(size_t bytes) { return malloc(bytes ? bytes : 1); }

// The end of a collective whose exchange into tmp returned mpi_rc: its buffers are watched until
// it completes and its result lands on s (cuda_runtime_api.h). send is NULL where the call reads
// no buffer of its own besides recv.
static ncclResult_t complete(int mpi_rc, cudaStream_t s, const void *send, size_t send_bytes,
                             void *recv, void *tmp, size_t bytes, const char *send_what,
                             const char *recv_what) {
    if (mpi_rc != MPI_SUCCESS) {
        free(tmp);
        return ncclSystemError;
    }
    if (send && send != recv) emu_stream_watch(s, send, send_bytes, send_what);
    emu_stream_watch(s, recv, bytes, recv_what);
    emu_stream_land(s, recv, tmp, bytes);
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t t,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t s) {
    if (op == ncclAvg && t != ncclFloat32 && t != ncclFloat64) return ncclInvalidArgument;
    cudaStreamSynchronize(s);  // the input as the stream leaves it
    MPI_Op mop = op == ncclMax ? MPI_MAX : op == ncclMin ? MPI_MIN : MPI_SUM;
    const size_t bytes = count * type_size(t);
    void *tmp = staging(bytes);
    if (!tmp) return ncclSystemError;
    int rc = MPI_Allreduce(send, tmp, (int)count, mpi_type(t), mop, comm->comm);
    if (rc == MPI_SUCCESS && op == ncclAvg)
        for (size_t i = 0; i < count; i++) {
            if (t == ncclFloat32) ((float *)tmp)[i] /= (float)comm->size;
            else ((double *)tmp)[i] /= (double)comm->size;
        }
    return complete(rc, s, send, bytes, recv, tmp, bytes, "ncclAllReduce's send buffer",
                    "ncclAllReduce's receive buffer");
}

ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t t, int root,
                           ncclComm_t comm, cudaStream_t s) {
    cudaStreamSynchronize(s);
    const size_t bytes = count * type_size(t);
    void *tmp = staging(bytes);
    if (!tmp) return ncclSystemError;
    const int me_root = comm->rank == root;
    if (me_root) memcpy(tmp, send, bytes);
    int rc = MPI_Bcast(tmp, (int)count, mpi_type(t), root, comm->comm);
    return complete(rc, s, me_root ? send : NULL, bytes, recv, tmp, bytes,
                    "ncclBroadcast's send buffer", "ncclBroadcast's buffer");
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t count, ncclDataType_t t,
                           ncclComm_t comm, cudaStream_t s) {
    cudaStreamSynchronize(s);
    const size_t part = count * type_size(t), bytes = part * (size_t)comm->size;
    void *tmp = staging(bytes);
    if (!tmp) return ncclSystemError;
    int rc = MPI_Allgather(send, (int)count, mpi_type(t), tmp, (int)count, mpi_type(t),
                           comm->comm);
    return complete(rc, s, send, part, recv, tmp, bytes, "ncclAllGather's send buffer",
                    "ncclAllGather's receive buffer");
}

static ncclResult_t p2p(int is_send, void *buf, size_t count, ncclDataType_t t, int peer,
                        ncclComm_t comm, cudaStream_t s) {
    cudaStreamSynchronize(s);
    if (npending == cap_pending) {
        cap_pending = cap_pending ? 2 * cap_pending : 16;
        pending = realloc(pending, sizeof(emu_p2p) * (size_t)cap_pending);
        if (!pending) return ncclSystemError;
    }
    emu_p2p p = {is_send, buf, NULL, count * type_size(t), (int)count, mpi_type(t), peer,
                 comm->comm, s};
    if (!is_send && !(p.stage = staging(p.bytes))) return ncclSystemError;
    pending[npending++] = p;
    // Outside a group a call is a group of its own.
    return group_depth == 0 ? group_flush() : ncclSuccess;
}

ncclResult_t ncclSend(const void *send, size_t count, ncclDataType_t t, int peer, ncclComm_t comm,
                      cudaStream_t s) {
    return p2p(1, (void *)send, count, t, peer, comm, s);
}
ncclResult_t ncclRecv(void *recv, size_t count, ncclDataType_t t, int peer, ncclComm_t comm,
                      cudaStream_t s) {
    return p2p(0, recv, count, t, peer, comm, s);
}

ncclResult_t ncclGroupStart(void) {
    group_depth++;
    return ncclSuccess;
}

// Posts the pending sends and receives together, waits for them, and lands the receives.
static ncclResult_t group_flush(void) {
    MPI_Request *req = malloc(sizeof(MPI_Request) * (size_t)(npending ? npending : 1));
    if (!req) return ncclSystemError;
    for (int i = 0; i < npending; i++) {
        emu_p2p *p = &pending[i];
        if (p->send) MPI_Isend(p->buf, p->count, p->type, p->peer, 77, p->comm, &req[i]);
        else MPI_Irecv(p->stage, p->count, p->type, p->peer, 77, p->comm, &req[i]);
    }
    int rc = MPI_Waitall(npending, req, MPI_STATUSES_IGNORE);
    free(req);
    for (int i = 0; i < npending; i++) {
        emu_p2p *p = &pending[i];
        emu_stream_watch(p->stream, p->buf, p->bytes,
                         p->send ? "ncclSend's buffer" : "ncclRecv's buffer");
        if (!p->send) emu_stream_land(p->stream, p->buf, p->stage, p->bytes);
    }
    npending = 0;
    return rc == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
}

ncclResult_t ncclGroupEnd(void) {
    if (group_depth <= 0) return ncclInvalidUsage;
    if (--group_depth > 0) return ncclSuccess;
    return group_flush();
}
