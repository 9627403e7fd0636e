// dist.h: the communication layer of SPEC.md section 5. A run is world = dp x tp ranks; tp ranks
// are consecutive (so a tp group sits on one node) and split the attention heads, dp groups split
// the batch. Collectives take element counts and a dtype, never bytes, and address one of three
// groups (world, the rank's dp group, its tp group). Two backends sit behind the same calls: MPI
// (host buffers, the CPU backend) and NCCL (device buffers, communicators per group created from
// an ncclUniqueId broadcast over MPI; dist_nccl.c). Without mpirun a process is a world of one
// (MPI singleton), so the same code path and the unit tests run in one process.
//
// A NULL context is a world of one: every collective is then the identity (so model/ and the
// single-process tools run without MPI).
//
// Rule: every collective is called by every rank of its group, in the same order. Errors that
// only some ranks see (a failed read) are first agreed on with dist_agree, never acted on alone.
#ifndef SBMT_DIST_H
#define SBMT_DIST_H

#include <stddef.h>
#include <stdint.h>

#include <mpi.h>

#include "kernels/common.h"

typedef enum { DIST_F32 = 0, DIST_F64, DIST_I32, DIST_I64, DIST_U8 } dist_dtype;
typedef enum { DIST_WORLD = 0, DIST_DP = 1, DIST_TP = 2, DIST_NGROUPS = 3 } dist_group;
typedef enum { DIST_SUM = 0, DIST_MAX, DIST_MIN, DIST_AVG } dist_op;  // AVG: float types only
typedef enum { DIST_BACKEND_MPI = 0, DIST_BACKEND_NCCL = 1 } dist_backend;

typedef struct dist_ctx_s {
    int world, rank;      // MPI_COMM_WORLD
    int dp, dp_rank;      // data-parallel groups: rank = dp_rank * tp + tp_rank
    int tp, tp_rank;      // head-parallel group (consecutive ranks)
    int local_rank, local_size;  // ranks sharing this node (MPI_COMM_TYPE_SHARED)
    int hosts;            // distinct nodes
    char host[256];       // this rank's node name
    dist_backend backend;
    MPI_Comm comm[DIST_NGROUPS];  // world, dp, tp
    void *nccl;           // dist_nccl state when backend == NCCL (dist_nccl.c)
    int initialized;      // 1 after dist_init; dist_finalize finalizes MPI only if it started it
    int started_mpi;
    // Time spent in collectives (blocking calls and waits for non-blocking ones) and the
    // elements they moved since dist_init: the communication share of the progress line.
    double t_comm;
    double elems;
    int mpi;              // 0: a world of one without MPI (dist_init_launched outside mpirun/srun)
} dist_ctx;

// Reports an MPI error with file, line, the failing call and MPI's error string, then aborts
// the whole job (a library failure leaves the communicators unusable, so no rank may go on).
#define MPI_CHECK(call)                                                                            \
    do {                                                                                           \
        int mpi_rc_ = (call);                                                                      \
        if (mpi_rc_ != MPI_SUCCESS) dist_mpi_fail(__FILE__, __LINE__, #call, mpi_rc_);             \
    } while (0)
SBMT_NORETURN void dist_mpi_fail(const char *file, int line, const char *expr, int rc);

// MPI_Init_thread (FUNNELED: only the main thread calls MPI; OpenMP threads never do) unless
// MPI is already initialised, world size and rank, the node-local rank, and a layout of
// dp = world, tp = 1 until dist_layout is called.
void dist_init(dist_ctx *d, int *argc, char ***argv);
// As dist_init when the process was started by mpirun/mpiexec or srun (their environment
// variables are present, or SBMT_FORCE_MPI is set); otherwise a world of one without MPI, so a
// plain `sbmt train` needs no MPI runtime at all. Fails (-1, message) for one of several srun
// tasks started without an MPI plugin, which would otherwise each train alone.
int dist_init_launched(dist_ctx *d, int *argc, char ***argv, char *err);
// Splits the world into dp x tp (tp consecutive ranks per group). Returns -1 with a message
// naming `key` when world is not divisible by tp. Collective over the world.
int dist_layout(dist_ctx *d, int tp, const char *key, char *err);
// Frees the communicators (and NCCL's) and finalises MPI if dist_init started it.
void dist_finalize(dist_ctx *d);

// The size and rank of this process in a group.
int dist_size(const dist_ctx *d, dist_group g);
int dist_grank(const dist_ctx *d, dist_group g);

// ---- blocking collectives (host buffers on the MPI backend) ----
// In place: buf[count] = op over the group's ranks.
void dist_allreduce(dist_ctx *d, dist_group g, void *buf, size_t count, dist_dtype t, dist_op op);
// In place: the group's mean (float types only).
void dist_allreduce_mean(dist_ctx *d, dist_group g, void *buf, size_t count, dist_dtype t);
void dist_bcast(dist_ctx *d, dist_group g, void *buf, size_t count, dist_dtype t, int root);
// recv[size * count] on root (may be NULL elsewhere) = every rank's send[count], by group rank.
void dist_gather(dist_ctx *d, dist_group g, const void *send, void *recv, size_t count,
                 dist_dtype t, int root);
// recv[size * count] on every rank = every rank's send[count], by group rank.
void dist_allgather(dist_ctx *d, dist_group g, const void *send, void *recv, size_t count,
                    dist_dtype t);
// recv[count] on every rank = root's send[rank * count .. ] (send may be NULL off root).
void dist_scatter(dist_ctx *d, dist_group g, const void *send, void *recv, size_t count,
                  dist_dtype t, int root);
void dist_barrier(dist_ctx *d, dist_group g);

// ---- non-blocking all-reduce (gradient buckets overlapping backward) ----
typedef struct {
    MPI_Request req;
    int active;   // 0 done, 1 MPI request, 2 NCCL (completion event on the comm stream)
    void *event;  // NCCL: the pending completion (dist_nccl.c), freed by dist_wait
    struct dist_ctx_s *owner;  // the context whose t_comm the wait adds to
} dist_req;
// Starts an in-place sum over the group; buf must stay untouched until dist_wait.
void dist_iallreduce_sum(dist_ctx *d, dist_group g, float *buf, size_t count, dist_req *r);
// Lets MPI progress outstanding requests (Open MPI has no progress thread); returns 1 when done.
int dist_test(dist_req *r);
// MPI: blocks until the sum is in buf. NCCL: makes the compute stream wait for the sum (no host
// block); work queued on that stream afterwards sees it, the host after a stream synchronize.
void dist_wait(dist_req *r);

// ---- agreement on local conditions (errors, signals) ----
// Every rank passes its flags[n] (0/1 or any non-negative code); all get the maximum of each.
void dist_agree(dist_ctx *d, int *flags, int n);
// After a step that may have failed on some ranks only: returns 0 when no rank failed, else -1
// on every rank. The lowest failing rank keeps its message in err (printed by the caller); the
// others get an empty err, so a job prints each error once.
int dist_check(dist_ctx *d, int rc, char *err);
// The same over one group (e.g. the tp group, when only its ranks share a loop).
int dist_check_group(dist_ctx *d, dist_group g, int rc, char *err);
// 1 on the rank that prints progress and writes run files (world rank 0).
static inline int dist_is_root(const dist_ctx *d) { return !d || d->rank == 0; }

// FNV-1a over a buffer: the replica checksum compared across dp at every checkpoint.
uint64_t dist_checksum(const void *buf, size_t bytes);

// ---- NCCL backend (dist_nccl.c; built when CUDA and NCCL are found) ----
// 1 when this build has NCCL.
int dist_nccl_available(void);
// Creates one NCCL communicator per group (an ncclUniqueId broadcast over each MPI group) on
// the current CUDA device and switches the collectives above to device buffers and `stream`
// (a cudaStream_t, NULL for the default stream). Returns -1 with a message without NCCL.
int dist_nccl_init(dist_ctx *d, void *stream, char *err);
void dist_nccl_finalize(dist_ctx *d);
// A rank whose tensors live on a GPU needs two contexts over the same ranks and groups: `host`
// (MPI: statistics, rows, checkpoints, agreement) and `dev`, made here, whose collectives take
// device buffers (NCCL on `stream`: gradients, tp activations). dev shares host's MPI
// communicators and must be closed with dist_device_close before host is finalised. Collective
// over the world; -1 with a message (on every rank) when NCCL is missing or cannot start.
int dist_device_open(dist_ctx *dev, const dist_ctx *host, void *stream, char *err);
void dist_device_close(dist_ctx *dev);

#endif
