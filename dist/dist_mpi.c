// dist_mpi.c: initialisation, the dp x tp layout and the MPI backend of every collective (the
// NCCL backend takes over the data-moving calls when dist_nccl_init switched the context).
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
#include "dist/dist_nccl.h"

void dist_mpi_fail(const char *file, int line, const char *expr, int rc) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof(msg), "code %d", rc);
    fprintf(stderr, "sbmt: fatal: %s:%d: %s failed: %s\n", file, line, expr, msg);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 2);
    _exit(2);
}

static MPI_Datatype mpi_type(dist_dtype t) {
    switch (t) {
    case DIST_F32: return MPI_FLOAT;
    case DIST_F64: return MPI_DOUBLE;
    case DIST_I32: return MPI_INT32_T;
    case DIST_I64: return MPI_INT64_T;
    case DIST_U8: return MPI_UINT8_T;
    }
    return MPI_BYTE;
}

size_t dist_dtype_size(dist_dtype t) {
    switch (t) {
    case DIST_F32: case DIST_I32: return 4;
    case DIST_F64: case DIST_I64: return 8;
    case DIST_U8: return 1;
    }
    return 1;
}

static MPI_Op mpi_op(dist_op op) { return op == DIST_MAX ? MPI_MAX : op == DIST_MIN ? MPI_MIN : MPI_SUM; }

// MPI counts are int: larger buffers go in chunks (each chunk is its own collective, called in
// the same order everywhere).
#define DIST_CHUNK ((size_t)1 << 30)

void dist_init(dist_ctx *d, int *argc, char ***argv) {
    memset(d, 0, sizeof(*d));
    int inited = 0, provided = 0;
    MPI_CHECK(MPI_Initialized(&inited));
    if (!inited) {
        MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
        d->started_mpi = 1;
    }
    // Errors come back as codes, so MPI_CHECK can name the call before the job is aborted.
    MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &d->world));
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &d->rank));
    MPI_Comm node;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL,
                                  &node));
    MPI_CHECK(MPI_Comm_rank(node, &d->local_rank));
    MPI_CHECK(MPI_Comm_size(node, &d->local_size));
    MPI_CHECK(MPI_Comm_free(&node));
    int is_leader = d->local_rank == 0;
    MPI_CHECK(MPI_Allreduce(&is_leader, &d->hosts, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    if (gethostname(d->host, sizeof(d->host) - 1)) snprintf(d->host, sizeof(d->host), "?");
    d->backend = DIST_BACKEND_MPI;
    d->initialized = 1;
    d->mpi = 1;
    d->comm[DIST_WORLD] = MPI_COMM_WORLD;
    d->comm[DIST_DP] = d->comm[DIST_TP] = MPI_COMM_NULL;
    char err[SBMT_ERR_LEN];
    CHECK(dist_layout(d, 1, "tp", err) == 0);
}

// Launchers that start MPI ranks leave one of these in the environment.
static int launched_by_mpi(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE",
                          "MPI_LOCALNRANKS", "SBMT_FORCE_MPI"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

int dist_init_launched(dist_ctx *d, int *argc, char ***argv, char *err) {
    if (launched_by_mpi()) {
        dist_init(d, argc, argv);
        return 0;
    }
    memset(d, 0, sizeof(*d));
    // srun without an MPI plugin starts independent processes that would all train alone and
    // write the same run directory: refuse rather than fork the run.
    const char *tasks = getenv("SLURM_STEP_NUM_TASKS");
    if (tasks && atoi(tasks) > 1)
        return sbmt_errf(err, "started by srun as one of %s tasks but without MPI (no PMIx/PMI "
                              "in the environment): use srun --mpi=pmix", tasks);
    d->world = d->dp = d->tp = d->local_size = d->hosts = 1;
    if (gethostname(d->host, sizeof(d->host) - 1)) snprintf(d->host, sizeof(d->host), "?");
    for (int g = 0; g < DIST_NGROUPS; g++) d->comm[g] = MPI_COMM_NULL;
    d->initialized = 1;
    return 0;
}

int dist_layout(dist_ctx *d, int tp, const char *key, char *err) {
    if (tp < 1 || d->world % tp != 0)
        return sbmt_errf(err, "%s = %d does not divide the %d ranks of the job (world = dp x tp)",
                         key, tp, d->world);
    if (!d->mpi) return 0;  // a world of one without MPI
    for (int g = DIST_DP; g <= DIST_TP; g++)
        if (d->comm[g] != MPI_COMM_NULL) MPI_CHECK(MPI_Comm_free(&d->comm[g]));
    d->tp = tp;
    d->dp = d->world / tp;
    d->tp_rank = d->rank % tp;
    d->dp_rank = d->rank / tp;
    // dp group: the ranks with the same tp_rank; tp group: the same dp_rank.
    MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, d->tp_rank, d->dp_rank, &d->comm[DIST_DP]));
    MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, d->dp_rank, d->tp_rank, &d->comm[DIST_TP]));
    for (int g = DIST_DP; g <= DIST_TP; g++)
        MPI_CHECK(MPI_Comm_set_errhandler(d->comm[g], MPI_ERRORS_RETURN));
    return 0;
}

void dist_finalize(dist_ctx *d) {
    if (!d->initialized) return;
    if (d->nccl) dist_nccl_finalize(d);
    d->initialized = 0;
    if (!d->mpi) return;
    for (int g = DIST_DP; g <= DIST_TP; g++)
        if (d->comm[g] != MPI_COMM_NULL) MPI_Comm_free(&d->comm[g]);
    if (d->started_mpi) MPI_Finalize();
}

int dist_device_open(dist_ctx *dev, const dist_ctx *host, void *stream, char *err) {
    *dev = *host;
    dev->nccl = NULL;
    dev->backend = DIST_BACKEND_MPI;
    dev->started_mpi = 0;  // finalising MPI stays host's business
    dev->t_comm = dev->elems = 0.0;
    if (dist_nccl_init(dev, stream, err)) {
        dev->initialized = 0;
        return -1;
    }
    return 0;
}

void dist_device_close(dist_ctx *dev) {
    if (dev->initialized && dev->nccl) dist_nccl_finalize(dev);
    dev->initialized = 0;
}

int dist_size(const dist_ctx *d, dist_group g) {
    if (!d) return 1;
    return g == DIST_WORLD ? d->world : g == DIST_DP ? d->dp : d->tp;
}

int dist_grank(const dist_ctx *d, dist_group g) {
    if (!d) return 0;
    return g == DIST_WORLD ? d->rank : g == DIST_DP ? d->dp_rank : d->tp_rank;
}

void dist_allreduce(dist_ctx *d, dist_group g, void *buf, size_t count, dist_dtype t, dist_op op) {
    int n = dist_size(d, g);
    CHECK(op != DIST_AVG || t == DIST_F32 || t == DIST_F64);
    if (n == 1 || count == 0) return;
    if (d->backend == DIST_BACKEND_NCCL) {
        dist_nccl_allreduce(d, g, buf, count, t, op);
        return;
    }
    size_t es = dist_dtype_size(t);
    double t0 = sbmt_now();
    for (size_t o = 0; o < count; o += DIST_CHUNK) {
        int c = (int)(count - o < DIST_CHUNK ? count - o : DIST_CHUNK);
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + o * es, c, mpi_type(t), mpi_op(op),
                                d->comm[g]));
    }
    d->t_comm += sbmt_now() - t0;
    d->elems += (double)count;
    if (op == DIST_AVG) {
        if (t == DIST_F32)
            for (size_t i = 0; i < count; i++) ((float *)buf)[i] /= (float)n;
        else
            for (size_t i = 0; i < count; i++) ((double *)buf)[i] /= (double)n;
    }
}

void dist_allreduce_mean(dist_ctx *d, dist_group g, void *buf, size_t count, dist_dtype t) {
    dist_allreduce(d, g, buf, count, t, DIST_AVG);
}

void dist_bcast(dist_ctx *d, dist_group g, void *buf, size_t count, dist_dtype t, int root) {
    if (dist_size(d, g) == 1 || count == 0) return;
    if (d->backend == DIST_BACKEND_NCCL) {
        dist_nccl_bcast(d, g, buf, count, t, root);
        return;
    }
    size_t es = dist_dtype_size(t);
    double t0 = sbmt_now();
    for (size_t o = 0; o < count; o += DIST_CHUNK) {
        int c = (int)(count - o < DIST_CHUNK ? count - o : DIST_CHUNK);
        MPI_CHECK(MPI_Bcast((char *)buf + o * es, c, mpi_type(t), root, d->comm[g]));
    }
    d->t_comm += sbmt_now() - t0;
    d->elems += (double)count;
}

void dist_gather(dist_ctx *d, dist_group g, const void *send, void *recv, size_t count,
                 dist_dtype t, int root) {
    size_t es = dist_dtype_size(t);
    // Device buffers go to NCCL whatever the group size (a host memcpy cannot read them).
    if (d && d->backend == DIST_BACKEND_NCCL) {
        dist_nccl_gather(d, g, send, recv, count, t, root);
        return;
    }
    if (dist_size(d, g) == 1) {
        if (count && recv != send) memcpy(recv, send, count * es);
        return;
    }
    CHECK(count <= DIST_CHUNK);
    MPI_CHECK(MPI_Gather(send, (int)count, mpi_type(t), recv, (int)count, mpi_type(t), root,
                         d->comm[g]));
}

void dist_allgather(dist_ctx *d, dist_group g, const void *send, void *recv, size_t count,
                    dist_dtype t) {
    size_t es = dist_dtype_size(t);
    if (d && d->backend == DIST_BACKEND_NCCL) {
        dist_nccl_allgather(d, g, send, recv, count, t);
        return;
    }
    if (dist_size(d, g) == 1) {
        if (count && recv != send) memcpy(recv, send, count * es);
        return;
    }
    CHECK(count <= DIST_CHUNK);
    double t0 = sbmt_now();
    MPI_CHECK(MPI_Allgather(send, (int)count, mpi_type(t), recv, (int)count, mpi_type(t),
                            d->comm[g]));
    d->t_comm += sbmt_now() - t0;
    d->elems += (double)count * dist_size(d, g);
}

void dist_scatter(dist_ctx *d, dist_group g, const void *send, void *recv, size_t count,
                  dist_dtype t, int root) {
    size_t es = dist_dtype_size(t);
    // Device buffers go to NCCL whatever the group size (a host memcpy cannot read them).
    if (d && d->backend == DIST_BACKEND_NCCL) {
        dist_nccl_scatter(d, g, send, recv, count, t, root);
        return;
    }
    if (dist_size(d, g) == 1) {
        if (count && recv != send) memcpy(recv, send, count * es);
        return;
    }
    CHECK(count <= DIST_CHUNK);
    MPI_CHECK(MPI_Scatter(send, (int)count, mpi_type(t), recv, (int)count, mpi_type(t), root,
                          d->comm[g]));
}

void dist_barrier(dist_ctx *d, dist_group g) {
    if (dist_size(d, g) == 1) return;
    MPI_CHECK(MPI_Barrier(d->comm[g]));
}

void dist_iallreduce_sum(dist_ctx *d, dist_group g, float *buf, size_t count, dist_req *r) {
    r->active = 0;
    r->req = MPI_REQUEST_NULL;
    r->owner = d;
    if (dist_size(d, g) == 1 || count == 0) return;
    if (d->backend == DIST_BACKEND_NCCL) {
        dist_nccl_iallreduce_sum(d, g, buf, count, r);
        return;
    }
    CHECK(count <= DIST_CHUNK);
    MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM, d->comm[g],
                             &r->req));
    r->active = 1;
    r->owner = d;
    d->elems += (double)count;
}

int dist_test(dist_req *r) {
    if (!r->active) return 1;
    if (r->active == 2) {  // NCCL: the sum's completion event on the communication stream
        int done = dist_nccl_test(r);
        if (done) r->active = 0;
        return done;
    }
    int done = 0;
    MPI_CHECK(MPI_Test(&r->req, &done, MPI_STATUS_IGNORE));
    if (done) r->active = 0;
    return done;
}

void dist_wait(dist_req *r) {
    if (!r->active) return;
    double t0 = sbmt_now();
    if (r->active == 2) {
        dist_nccl_wait(r);
    } else {
        MPI_CHECK(MPI_Wait(&r->req, MPI_STATUS_IGNORE));
    }
    if (r->owner) r->owner->t_comm += sbmt_now() - t0;
    r->active = 0;
}

void dist_agree(dist_ctx *d, int *flags, int n) {
    if (!d || d->world == 1 || n == 0) return;
    // Control flags are host values whatever the backend.
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, flags, n, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
}

int dist_check_group(dist_ctx *d, dist_group g, int rc, char *err) {
    int n = dist_size(d, g), me = dist_grank(d, g);
    if (n == 1) return rc ? -1 : 0;
    int mine = rc ? me : n, first = n;
    MPI_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, d->comm[g]));
    if (first == n) return 0;
    if (first != me && err) err[0] = '\0';
    return -1;
}

int dist_check(dist_ctx *d, int rc, char *err) { return dist_check_group(d, DIST_WORLD, rc, err); }

uint64_t dist_checksum(const void *buf, size_t bytes) {
    const unsigned char *p = buf;
    uint64_t h = 14695981039346656037ULL;  // FNV-1a 64-bit offset basis
    for (size_t i = 0; i < bytes; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}
