// test_dist_nccl.c: the NCCL backend of dist/ on device buffers (ctest test_dist_nccl, one
// process, an MPI singleton; also runs under mpiexec with any number of ranks that each have a
// GPU). Exits 77 (skipped) when the build has no NCCL or no rank sees a GPU. Built against the
// emulated runtime and NCCL of tests/emu/ it is test_dist_nccl_emu, two ranks under mpiexec.
//
// With one rank the public collectives never reach NCCL (a group of one is the identity), so
// the backend's entry points (dist_nccl.h) are also called directly: every op and dtype, bcast,
// gather, scatter, and the stream order of the non-blocking sum on a stream of the test's own.
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dist/dist.h"
#include "dist/dist_nccl.h"
#include "dist_testlib.h"
#include "kernels/common.h"

#ifndef SBMT_HAVE_NCCL

int main(void) {
    printf("test_dist_nccl: SKIPPED: this build has no NCCL "
           "(configure with CUDA and NCCL found)\n");
    return 77;
}

#else

static dist_ctx D;

static int nccl_up(void **state) {
    (void)state;
    char err[SBMT_ERR_LEN] = "";
    int rc = dist_nccl_init(&D, NULL, err);
    if (rc) fprintf(stderr, "rank %d: dist_nccl_init: %s\n", D.rank, err);
    return rc;
}

static int nccl_down(void **state) {
    (void)state;
    dist_nccl_finalize(&D);
    return D.backend == DIST_BACKEND_MPI ? 0 : -1;
}

// The public calls on device buffers (the real NCCL collectives with more than one rank).
static void test_public(void **state) {
    (void)state;
    EXPECT_ALL(D.backend == DIST_BACKEND_NCCL && D.nccl != NULL, "backend %d", (int)D.backend);
    tcheck_all_groups(&D, &TDEVICE, 1031);
    tcheck_allreduce(&D, &TDEVICE, DIST_WORLD, 3000017);
}

// The backend's own entry points, on every group (communicators of one rank included).
static void test_entry_points(void **state) {
    (void)state;
    const size_t count = 4097;
    for (int g = 0; g < DIST_NGROUPS; g++) {
        int n = dist_size(&D, (dist_group)g), me = dist_grank(&D, (dist_group)g);
        for (int t = 0; t <= DIST_U8; t++) {
            size_t bytes = count * dist_dtype_size((dist_dtype)t);
            void *h = thost_alloc(bytes * (size_t)n), *b = tdev_alloc(bytes * (size_t)n);
            void *s = tdev_alloc(bytes * (size_t)n);
            double got = 0, want = 0;
            long bad;
            for (int op = 0; op <= DIST_AVG; op++) {
                if (op == DIST_AVG && t != DIST_F32 && t != DIST_F64) continue;
                tfill(h, (dist_dtype)t, count, me + 1);
                tdev_put(b, h, bytes);
                dist_nccl_allreduce(&D, (dist_group)g, b, count, (dist_dtype)t, (dist_op)op);
                tdev_get(h, b, bytes);
                bad = tfirst_bad(h, (dist_dtype)t, count, (dist_op)op, n, 0, &got, &want);
                EXPECT_ALL(bad < 0, "dist_nccl_allreduce %s %s over %s: [%ld] = %g, want %g",
                           TOP[op], TDTYPE[t], TGROUP[g], bad, got, want);
            }
            int root = n - 1;
            if (me == root) tfill(h, (dist_dtype)t, count, root + 1);
            else memset(h, 0xA5, bytes);
            tdev_put(b, h, bytes);
            dist_nccl_bcast(&D, (dist_group)g, b, count, (dist_dtype)t, root);
            tdev_get(h, b, bytes);
            bad = tfirst_bad(h, (dist_dtype)t, count, DIST_SUM, 0, root + 1, &got, &want);
            EXPECT_ALL(bad < 0, "dist_nccl_bcast %s over %s: [%ld] = %g, want %g", TDTYPE[t],
                       TGROUP[g], bad, got, want);
            // gather into b on root, then scatter it back out of b into s
            tfill(h, (dist_dtype)t, count, me + 1);
            tdev_put(s, h, bytes);
            memset(h, 0xA5, bytes * (size_t)n);
            tdev_put(b, h, bytes * (size_t)n);
            dist_nccl_gather(&D, (dist_group)g, s, me == root ? b : NULL, count, (dist_dtype)t,
                             root);
            bad = -1;
            if (me == root) {
                tdev_get(h, b, bytes * (size_t)n);
                for (int j = 0; j < n && bad < 0; j++)
                    bad = tfirst_bad((char *)h + (size_t)j * bytes, (dist_dtype)t, count, DIST_SUM,
                                     0, j + 1, &got, &want);
            }
            EXPECT_ALL(bad < 0, "dist_nccl_gather %s over %s: [%ld] = %g, want %g", TDTYPE[t],
                       TGROUP[g], bad, got, want);
            memset(h, 0xA5, bytes);
            tdev_put(s, h, bytes);
            dist_nccl_scatter(&D, (dist_group)g, me == root ? b : NULL, s, count, (dist_dtype)t,
                              root);
            tdev_get(h, s, bytes);
            bad = tfirst_bad(h, (dist_dtype)t, count, DIST_SUM, 0, me + 1, &got, &want);
            EXPECT_ALL(bad < 0, "dist_nccl_scatter %s over %s: [%ld] = %g, want %g", TDTYPE[t],
                       TGROUP[g], bad, got, want);
            tdev_free(s);
            tdev_free(b);
            free(h);
        }
    }
}

// dist_nccl_iallreduce_sum on a compute stream of the test's own: the sum sees what the stream
// wrote before the call (an async copy in), and work queued after dist_test and dist_wait sees
// the sum (an async copy out), with no host synchronisation in between. (In the emulated build
// the streams do not run in host order, so a missing event wait shows here.)
static void test_stream_order(void **state) {
    (void)state;
    char err[SBMT_ERR_LEN] = "";
    dist_nccl_finalize(&D);
    cudaStream_t st;
    TCUDA(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    EXPECT_ALL(dist_nccl_init(&D, st, err) == 0, "dist_nccl_init with a stream: %s", err);
    const size_t count = (size_t)1 << 22;
    int n = D.world;
    float *hin = NULL, *hout = NULL, *dv = NULL;
    TCUDA(cudaMallocHost((void **)&hin, count * sizeof(float)));
    TCUDA(cudaMallocHost((void **)&hout, count * sizeof(float)));
    TCUDA(cudaMalloc((void **)&dv, count * sizeof(float)));
    TCUDA(cudaMemset(dv, 0, count * sizeof(float)));
    TCUDA(cudaDeviceSynchronize());
    tfill(hin, DIST_F32, count, D.rank + 1);
    memset(hout, 0, count * sizeof(float));
    dist_req r;
    memset(&r, 0, sizeof(r));
    TCUDA(cudaMemcpyAsync(dv, hin, count * sizeof(float), cudaMemcpyHostToDevice, st));
    dist_nccl_iallreduce_sum(&D, DIST_WORLD, dv, count, &r);
    EXPECT_ALL(r.active == 2 && r.event != NULL,
               "request after dist_nccl_iallreduce_sum: active %d", r.active);
    // dist_test may find the sum done or not yet; done ends the request (dist_wait then has
    // nothing to order), so the copy below sees the sum only if it really had run.
    int done = dist_test(&r);
    EXPECT_ALL(done == 0 ? r.active == 2 && r.event != NULL : r.active == 0 && r.event == NULL,
               "request after dist_test answered %d: active %d", done, r.active);
    dist_wait(&r);
    EXPECT_ALL(r.active == 0 && r.event == NULL, "request after dist_wait: active %d", r.active);
    TCUDA(cudaMemcpyAsync(hout, dv, count * sizeof(float), cudaMemcpyDeviceToHost, st));
    TCUDA(cudaStreamSynchronize(st));
    double got = 0, want = 0;
    long bad = tfirst_bad(hout, DIST_F32, count, DIST_SUM, n, 0, &got, &want);
    EXPECT_ALL(bad < 0, "stream-ordered iallreduce: [%ld] = %g, want %g", bad, got, want);
    TCUDA(cudaFree(dv));
    TCUDA(cudaFreeHost(hin));
    TCUDA(cudaFreeHost(hout));
    dist_nccl_finalize(&D);
    TCUDA(cudaStreamDestroy(st));
    EXPECT_ALL(dist_nccl_init(&D, NULL, err) == 0, "dist_nccl_init again: %s", err);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    // Before MPI: a machine without a GPU skips without starting MPI at all.
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        printf("test_dist_nccl: SKIPPED: no GPU (%s)\n",
               e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0");
        return 77;
    }
    dist_init(&D, &argc, &argv);
    char why[256] = "";
    if (tcuda_devices(why, sizeof(why)) == 0) {  // some other rank has none
        if (D.rank == 0) printf("test_dist_nccl: SKIPPED: %s\n", why);
        dist_finalize(&D);
        return 77;
    }
    TCUDA(cudaSetDevice(D.local_rank % ndev));
    char name[64];
    snprintf(name, sizeof(name), "dist_nccl (rank %d of %d)", D.rank, D.world);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_public),
        cmocka_unit_test(test_entry_points),
        cmocka_unit_test(test_stream_order),
    };
    int failed = cmocka_run_group_tests_name(name, tests, nccl_up, nccl_down);
    dist_finalize(&D);
    return failed ? 1 : 0;
}

#endif
