// dist_nccl.c: the NCCL backend of dist/ (device buffers; one communicator per group, created
// from an ncclUniqueId broadcast over the group's MPI communicator). Built with NCCL when CMake
// finds CUDA and NCCL (SBMT_HAVE_NCCL); otherwise dist_nccl_init reports that the build has none.
//
// Streams. Every blocking collective (allreduce, bcast, gather, scatter) is enqueued on the
// compute stream given to dist_nccl_init: it is ordered after the kernels already queued there
// and before those queued later, and it returns to the host as soon as it is enqueued (the host
// sees the result after a cudaStreamSynchronize of that stream, as for any kernel).
// dist_iallreduce_sum runs on a communication stream of its own: it records an event on the
// compute stream, makes the communication stream wait for it (so the sum reads the buffer as
// the compute stream left it at the call), enqueues the sum and records a completion event.
// dist_wait then makes the compute stream wait for that event (cudaStreamWaitEvent): it never
// blocks the host; work queued on the compute stream after dist_wait sees the summed buffer.
// dist_test queries the completion event: 1 once the sum has run (the request then ends, and
// dist_wait has nothing left to order), 0 before.
// dist_barrier stays an MPI barrier (host order, not stream order).
#include <stdio.h>

#include "dist/dist.h"
#include "dist/dist_nccl.h"

#ifndef SBMT_HAVE_NCCL

int dist_nccl_available(void) { return 0; }

int dist_nccl_init(dist_ctx *d, void *stream, char *err) {
    (void)d;
    (void)stream;
    return sbmt_errf(err, "this build of sbmt has no NCCL (configure with CUDA and NCCL found)");
}

void dist_nccl_finalize(dist_ctx *d) { (void)d; }

// Unreachable: the context never switches to NCCL in a build without it.
#define NO_NCCL sbmt_fatal(__FILE__, __LINE__, "NCCL collective called in a build without NCCL")
void dist_nccl_allreduce(dist_ctx *d, dist_group g, void *buf, size_t count, dist_dtype t,
                         dist_op op) { NO_NCCL; }
void dist_nccl_bcast(dist_ctx *d, dist_group g, void *buf, size_t count, dist_dtype t, int root) {
    NO_NCCL;
}
void dist_nccl_gather(dist_ctx *d, dist_group g, const void *send, void *recv, size_t count,
                      dist_dtype t, int root) { NO_NCCL; }
void dist_nccl_allgather(dist_ctx *d, dist_group g, const void *send, void *recv, size_t count,
                         dist_dtype t) { NO_NCCL; }
void dist_nccl_scatter(dist_ctx *d, dist_group g, const void *send, void *recv, size_t count,
                       dist_dtype t, int root) { NO_NCCL; }
void dist_nccl_iallreduce_sum(dist_ctx *d, dist_group g, float *buf, size_t count, dist_req *r) {
    NO_NCCL;
}
void dist_nccl_wait(dist_req *r) { NO_NCCL; }
int dist_nccl_test(dist_req *r) { NO_NCCL; }

#else  // SBMT_HAVE_NCCL

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

// Library failures leave the communicators unusable, so the whole job stops (as MPI_CHECK).
#define NCCL_CHECK(call)                                                                           \
    do {                                                                                           \
        ncclResult_t nccl_rc_ = (call);                                                            \
        if (nccl_rc_ != ncclSuccess)                                                               \
            nccl_fail(__FILE__, __LINE__, #call, ncclGetErrorString(nccl_rc_),                     \
                      ncclGetLastError(NULL));                                                     \
    } while (0)
#define CUDA_CHECK(call)                                                                           \
    do {                                                                                           \
        cudaError_t cuda_rc_ = (call);                                                             \
        if (cuda_rc_ != cudaSuccess)                                                               \
            nccl_fail(__FILE__, __LINE__, #call, cudaGetErrorString(cuda_rc_), NULL);              \
    } while (0)

static _Noreturn void nccl_fail(const char *file, int line, const char *expr, const char *msg,
                                const char *detail) {
    int rank = -1, inited = 0;
    MPI_Initialized(&inited);
    if (inited) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    fprintf(stderr, "sbmt: fatal: rank %d: %s:%d: %s failed: %s%s%s\n", rank, file, line, expr,
            msg, detail && detail[0] ? ": " : "", detail ? detail : "");
    fflush(stderr);
    if (inited) MPI_Abort(MPI_COMM_WORLD, 2);
    _exit(2);
}

typedef struct {
    ncclComm_t comm[DIST_NGROUPS];  // world, dp, tp
    cudaStream_t stream;            // the compute stream (NULL: the default stream)
    cudaStream_t comm_stream;       // dist_iallreduce_sum's stream (ours)
    cudaEvent_t ready;              // "compute stream reached the iallreduce call"
    int device;
    int tp;                         // the layout the communicators were made for
} nccl_state;

// What dist_req.event points to while an NCCL request is active.
typedef struct {
    cudaEvent_t done;
    cudaStream_t wait_on;  // the compute stream
} nccl_pending;

int dist_nccl_available(void) { return 1; }

static ncclDataType_t nccl_type(dist_dtype t) {
    switch (t) {
    case DIST_F32: return ncclFloat32;
    case DIST_F64: return ncclFloat64;
    case DIST_I32: return ncclInt32;
    case DIST_I64: return ncclInt64;
    case DIST_U8: return ncclUint8;
    }
    sbmt_fatal(__FILE__, __LINE__, "unknown dist dtype %d", (int)t);
}

static ncclRedOp_t nccl_op(dist_op op) {
    switch (op) {
    case DIST_SUM: return ncclSum;
    case DIST_MAX: return ncclMax;
    case DIST_MIN: return ncclMin;
    case DIST_AVG: return ncclAvg;
    }
    sbmt_fatal(__FILE__, __LINE__, "unknown dist op %d", (int)op);
}

// The state and communicator of a group; stops on a layout changed after dist_nccl_init (the
// communicators would address the old groups).
static nccl_state *state_of(dist_ctx *d, dist_group g, ncclComm_t *comm) {
    nccl_state *s = d->nccl;
    CHECK(s != NULL && d->backend == DIST_BACKEND_NCCL);
    if (s->tp != d->tp)
        sbmt_fatal(__FILE__, __LINE__,
                   "dist_layout changed tp from %d to %d after dist_nccl_init: call "
                   "dist_nccl_finalize before dist_layout and dist_nccl_init after it",
                   s->tp, d->tp);
    CHECK(g >= 0 && g < DIST_NGROUPS && s->comm[g] != NULL);
    *comm = s->comm[g];
    return s;
}

// One GPU per rank: every node-local rank reports its device; ranks sharing one are refused,
// named (NCCL would refuse too, with a less readable message). Returns the local result only.
typedef struct {
    int rank, device;
    unsigned char uuid[16];
    char bus[32];
} gpu_id;

static int check_one_gpu_per_rank(dist_ctx *d, int device, char *err) {
    gpu_id me;
    memset(&me, 0, sizeof(me));
    me.rank = d->rank;
    me.device = device;
    struct cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    memcpy(me.uuid, &prop.uuid, sizeof(me.uuid));
    if (cudaDeviceGetPCIBusId(me.bus, (int)sizeof(me.bus), device) != cudaSuccess)
        snprintf(me.bus, sizeof(me.bus), "?");
    MPI_Comm node;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL,
                                  &node));
    int n = 0;
    MPI_CHECK(MPI_Comm_size(node, &n));
    gpu_id *all = xcalloc((size_t)n, sizeof(gpu_id));
    MPI_CHECK(MPI_Allgather(&me, (int)sizeof(gpu_id), MPI_BYTE, all, (int)sizeof(gpu_id),
                            MPI_BYTE, node));
    MPI_CHECK(MPI_Comm_free(&node));
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        if (all[i].rank == me.rank || memcmp(all[i].uuid, me.uuid, sizeof(me.uuid)) != 0) continue;
        int a = all[i].rank < me.rank ? all[i].rank : me.rank;
        int b = all[i].rank < me.rank ? me.rank : all[i].rank;
        int da = all[i].rank < me.rank ? all[i].device : me.device;
        int db = all[i].rank < me.rank ? me.device : all[i].device;
        int count = 0;
        if (cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
        rc = sbmt_errf(err,
                       "ranks %d and %d on host %s share one GPU (CUDA device %d and %d, PCI %s): "
                       "NCCL needs one GPU per rank, and this node has %d ranks but %d visible "
                       "GPU(s) (the device is local rank mod device count; check "
                       "CUDA_VISIBLE_DEVICES and the ranks per node)",
                       a, b, d->host, da, db, me.bus, n, count);
    }
    free(all);
    return rc;
}

int dist_nccl_init(dist_ctx *d, void *stream, char *err) {
    CHECK(d->initialized);
    // Every rank takes the same branches below: each local condition goes through dist_check.
    if (d->backend == DIST_BACKEND_NCCL || d->nccl)
        return sbmt_errf(err, "dist_nccl_init: the NCCL backend is already initialised");
    int count = 0, device = -1, rc = 0;
    cudaError_t ce = cudaGetDeviceCount(&count);
    if (ce != cudaSuccess || count < 1)
        rc = sbmt_errf(err, "rank %d on host %s: no CUDA device for NCCL (%s)", d->rank, d->host,
                       ce != cudaSuccess ? cudaGetErrorString(ce) : "device count is 0");
    else if ((ce = cudaGetDevice(&device)) != cudaSuccess)
        rc = sbmt_errf(err, "rank %d on host %s: cudaGetDevice failed: %s", d->rank, d->host,
                       cudaGetErrorString(ce));
    if (dist_check(d, rc, err)) return -1;
    if (d->world > 1) {  // (a world of one may run without MPI at all)
        rc = check_one_gpu_per_rank(d, device, err);
        if (dist_check(d, rc, err)) return -1;
    }

    nccl_state *s = xcalloc(1, sizeof(*s));
    s->stream = (cudaStream_t)stream;
    s->device = device;
    s->tp = d->tp;
    // In the order world, dp, tp on every rank: each init is collective over its group only.
    // A group of one gets its communicator too (dist_mpi.c never calls it, the backend's own
    // tests do), without the broadcast.
    for (int g = 0; g < DIST_NGROUPS; g++) {
        int n = dist_size(d, (dist_group)g), r = dist_grank(d, (dist_group)g);
        ncclUniqueId id;
        memset(&id, 0, sizeof(id));
        if (r == 0) NCCL_CHECK(ncclGetUniqueId(&id));
        if (n > 1) MPI_CHECK(MPI_Bcast(&id, (int)sizeof(id), MPI_BYTE, 0, d->comm[g]));
        NCCL_CHECK(ncclCommInitRank(&s->comm[g], n, id, r));
    }
    CUDA_CHECK(cudaStreamCreateWithFlags(&s->comm_stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&s->ready, cudaEventDisableTiming));
    d->nccl = s;
    d->backend = DIST_BACKEND_NCCL;
    return 0;
}

void dist_nccl_finalize(dist_ctx *d) {
    nccl_state *s = d->nccl;
    if (!s) return;
    // Outstanding work first: the communicators must not go while a sum is in flight.
    CUDA_CHECK(cudaStreamSynchronize(s->comm_stream));
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    for (int g = 0; g < DIST_NGROUPS; g++) {
        if (!s->comm[g]) continue;
        NCCL_CHECK(ncclCommFinalize(s->comm[g]));
        NCCL_CHECK(ncclCommDestroy(s->comm[g]));
    }
    CUDA_CHECK(cudaEventDestroy(s->ready));
    CUDA_CHECK(cudaStreamDestroy(s->comm_stream));  // the compute stream is the caller's
    free(s);
    d->nccl = NULL;
    d->backend = DIST_BACKEND_MPI;
}

void dist_nccl_allreduce(dist_ctx *d, dist_group g, void *buf, size_t count, dist_dtype t,
                         dist_op op) {
    ncclComm_t comm;
    nccl_state *s = state_of(d, g, &comm);
    CHECK(op != DIST_AVG || t == DIST_F32 || t == DIST_F64);
    if (count == 0) return;
    NCCL_CHECK(ncclAllReduce(buf, buf, count, nccl_type(t), nccl_op(op), comm, s->stream));
}

void dist_nccl_bcast(dist_ctx *d, dist_group g, void *buf, size_t count, dist_dtype t, int root) {
    ncclComm_t comm;
    nccl_state *s = state_of(d, g, &comm);
    CHECK(root >= 0 && root < dist_size(d, g));
    if (count == 0) return;
    NCCL_CHECK(ncclBroadcast(buf, buf, count, nccl_type(t), root, comm, s->stream));
}

void dist_nccl_allgather(dist_ctx *d, dist_group g, const void *send, void *recv, size_t count,
                         dist_dtype t) {
    ncclComm_t comm;
    nccl_state *s = state_of(d, g, &comm);
    if (count == 0) return;
    NCCL_CHECK(ncclAllGather(send, recv, count, nccl_type(t), comm, s->stream));
}

void dist_nccl_gather(dist_ctx *d, dist_group g, const void *send, void *recv, size_t count,
                      dist_dtype t, int root) {
    ncclComm_t comm;
    nccl_state *s = state_of(d, g, &comm);
    int n = dist_size(d, g), me = dist_grank(d, g);
    CHECK(root >= 0 && root < n);
    if (count == 0) return;
    size_t bytes = count * dist_dtype_size(t);
    ncclDataType_t nt = nccl_type(t);
    NCCL_CHECK(ncclGroupStart());
    if (me == root) {
        CHECK(recv != NULL);
        for (int r = 0; r < n; r++)
            if (r != root) NCCL_CHECK(ncclRecv((char *)recv + (size_t)r * bytes, count, nt, r, comm,
                                               s->stream));
    } else {
        NCCL_CHECK(ncclSend(send, count, nt, root, comm, s->stream));
    }
    NCCL_CHECK(ncclGroupEnd());
    char *mine = me == root ? (char *)recv + (size_t)root * bytes : NULL;
    if (mine && mine != (const char *)send)
        CUDA_CHECK(cudaMemcpyAsync(mine, send, bytes, cudaMemcpyDefault, s->stream));
}

void dist_nccl_scatter(dist_ctx *d, dist_group g, const void *send, void *recv, size_t count,
                       dist_dtype t, int root) {
    ncclComm_t comm;
    nccl_state *s = state_of(d, g, &comm);
    int n = dist_size(d, g), me = dist_grank(d, g);
    CHECK(root >= 0 && root < n);
    if (count == 0) return;
    size_t bytes = count * dist_dtype_size(t);
    ncclDataType_t nt = nccl_type(t);
    NCCL_CHECK(ncclGroupStart());
    if (me == root) {
        CHECK(send != NULL);
        for (int r = 0; r < n; r++)
            if (r != root) NCCL_CHECK(ncclSend((const char *)send + (size_t)r * bytes, count, nt, r,
                                               comm, s->stream));
    } else {
        NCCL_CHECK(ncclRecv(recv, count, nt, root, comm, s->stream));
    }
    NCCL_CHECK(ncclGroupEnd());
    const char *mine = me == root ? (const char *)send + (size_t)root * bytes : NULL;
    if (mine && mine != (const char *)recv)
        CUDA_CHECK(cudaMemcpyAsync(recv, mine, bytes, cudaMemcpyDefault, s->stream));
}

void dist_nccl_iallreduce_sum(dist_ctx *d, dist_group g, float *buf, size_t count, dist_req *r) {
    ncclComm_t comm;
    nccl_state *s = state_of(d, g, &comm);
    nccl_pending *p = xcalloc(1, sizeof(*p));
    p->wait_on = s->stream;
    CUDA_CHECK(cudaEventCreateWithFlags(&p->done, cudaEventDisableTiming));
    // The wait captures the event as recorded now, so one `ready` event serves every request.
    CUDA_CHECK(cudaEventRecord(s->ready, s->stream));
    CUDA_CHECK(cudaStreamWaitEvent(s->comm_stream, s->ready, 0));
    NCCL_CHECK(ncclAllReduce(buf, buf, count, ncclFloat32, ncclSum, comm, s->comm_stream));
    CUDA_CHECK(cudaEventRecord(p->done, s->comm_stream));
    r->event = p;
    r->active = 2;
}

void dist_nccl_wait(dist_req *r) {
    nccl_pending *p = r->event;
    CHECK(r->active == 2 && p != NULL);
    CUDA_CHECK(cudaStreamWaitEvent(p->wait_on, p->done, 0));
    // Safe while the event is pending: CUDA releases it once it completes, and the wait above
    // has already captured it.
    CUDA_CHECK(cudaEventDestroy(p->done));
    free(p);
    r->event = NULL;
}

int dist_nccl_test(dist_req *r) {
    nccl_pending *p = r->event;
    CHECK(r->active == 2 && p != NULL);
    cudaError_t q = cudaEventQuery(p->done);
    if (q == cudaErrorNotReady) return 0;
    CUDA_CHECK(q);
    CUDA_CHECK(cudaEventDestroy(p->done));
    free(p);
    r->event = NULL;
    return 1;
}

#endif  // SBMT_HAVE_NCCL
