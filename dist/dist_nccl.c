// dist_nccl.c: the NCCL backend of dist/ (device buffers; one communicator per group, created
// from an ncclUniqueId broadcast over the group's MPI communicator). Built with NCCL when CMake
// finds CUDA and NCCL (SBMT_HAVE_NCCL); otherwise dist_nccl_init reports that the build has none.
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
void dist_nccl_scatter(dist_ctx *d, dist_group g, const void *send, void *recv, size_t count,
                       dist_dtype t, int root) { NO_NCCL; }
void dist_nccl_iallreduce_sum(dist_ctx *d, dist_group g, float *buf, size_t count, dist_req *r) {
    NO_NCCL;
}
void dist_nccl_wait(dist_req *r) { NO_NCCL; }

#endif
