// dist_nccl.h: what dist_mpi.c calls of the NCCL backend when dist_ctx.backend is NCCL (device
// buffers, the stream given to dist_nccl_init). Internal to dist/.
#ifndef SBMT_DIST_NCCL_H
#define SBMT_DIST_NCCL_H

#include "dist/dist.h"

void dist_nccl_allreduce(dist_ctx *d, dist_group g, void *buf, size_t count, dist_dtype t,
                         dist_op op);
void dist_nccl_bcast(dist_ctx *d, dist_group g, void *buf, size_t count, dist_dtype t, int root);
void dist_nccl_gather(dist_ctx *d, dist_group g, const void *send, void *recv, size_t count,
                      dist_dtype t, int root);
void dist_nccl_allgather(dist_ctx *d, dist_group g, const void *send, void *recv, size_t count,
                         dist_dtype t);
void dist_nccl_scatter(dist_ctx *d, dist_group g, const void *send, void *recv, size_t count,
                       dist_dtype t, int root);
// Enqueues the sum on the communication stream; dist_wait synchronises it.
void dist_nccl_iallreduce_sum(dist_ctx *d, dist_group g, float *buf, size_t count, dist_req *r);
void dist_nccl_wait(dist_req *r);
// 1 (and the request released) when the sum has completed on the device, else 0.
int dist_nccl_test(dist_req *r);
// Element size of a dtype (shared with dist_mpi.c).
size_t dist_dtype_size(dist_dtype t);

#endif
