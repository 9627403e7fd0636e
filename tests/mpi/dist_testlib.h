// dist_testlib.h: what the MPI tests of dist/ (test_dist.c, test_dist_nccl.c) share.
//
// Checks are collective. Under MPI a check that fails on one rank only must fail on every rank,
// or the others would go on into the next collective and hang; EXPECT_ALL therefore reduces the
// outcome over the world (every rank evaluates the same checks in the same order), prints the
// detail on the ranks where it failed and fails the cmocka test on all of them together.
//
// Values are computed by hand: element i of group rank r holds (r + 1) * c_i with c_i a small
// pattern value of the dtype (halves for floats, a multiple of 2^40 for int64), so every sum,
// maximum, minimum and mean over up to 4 ranks is exact and known in closed form.
//
// Buffers go through a tbuf_ops table, so the same checks run on host buffers (MPI backend) and
// device buffers (NCCL backend). Header-only; the including file includes cmocka.h first.
#ifndef SBMT_TESTS_DIST_TESTLIB_H
#define SBMT_TESTS_DIST_TESTLIB_H

#ifndef CMOCKA_H_
#error "include cmocka.h (after setjmp.h, stdarg.h, stddef.h, stdint.h) before dist_testlib.h"
#endif

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "dist/dist_nccl.h"  // dist_dtype_size

#ifdef SBMT_HAVE_NCCL
#include <cuda_runtime_api.h>
#endif

static const char *const TDTYPE[] = {"f32", "f64", "i32", "i64", "u8"};
static const char *const TOP[] = {"sum", "max", "min", "avg"};
static const char *const TGROUP[] = {"world", "dp", "tp"};

// 1 when ok holds on every rank of the world.
static inline int all_ranks(int ok) {
    int v = ok ? 1 : 0;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    return v;
}

static inline int world_rank(void) {
    int r = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

// One line (one write, so ranks' lines do not interleave): "rank R: file:line: cond: detail".
static inline void texpect_report(const char *file, int line, const char *cond, const char *fmt,
                                  ...) SBMT_PRINTF(4, 5);
static inline void texpect_report(const char *file, int line, const char *cond, const char *fmt,
                                  ...) {
    char msg[2048];
    int k = snprintf(msg, sizeof(msg), "rank %d: %s:%d: %s: ", world_rank(), file, line, cond);
    if (k < 0 || k >= (int)sizeof(msg) - 2) k = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + k, sizeof(msg) - (size_t)k - 1, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", msg);
    fflush(stderr);
}

// Collective check with a printf-style detail printed by the ranks where cond is false.
#define EXPECT_ALL(cond, ...)                                                                      \
    do {                                                                                           \
        int ok_ = !!(cond);                                                                        \
        if (!ok_) texpect_report(__FILE__, __LINE__, #cond, __VA_ARGS__);                          \
        if (!all_ranks(ok_)) fail_msg("%s: false on at least one rank (see above)", #cond);       \
    } while (0)

// ---- pattern values ----

static inline double tpat(dist_dtype t, size_t i) {
    int k = (int)(i % 7);
    switch (t) {
    case DIST_F32: case DIST_F64: return (k - 3) * 0.5;
    case DIST_I32: return (k - 3) * 100000.0;
    case DIST_I64: return (k - 3) * 1099511627776.0;  // 2^40: needs all 64 bits
    case DIST_U8: return k + 1;
    }
    return 0;
}

static inline void tset(void *buf, dist_dtype t, size_t i, double v) {
    switch (t) {
    case DIST_F32: ((float *)buf)[i] = (float)v; break;
    case DIST_F64: ((double *)buf)[i] = v; break;
    case DIST_I32: ((int32_t *)buf)[i] = (int32_t)v; break;
    case DIST_I64: ((int64_t *)buf)[i] = (int64_t)v; break;
    case DIST_U8: ((uint8_t *)buf)[i] = (uint8_t)v; break;
    }
}

static inline double tget(const void *buf, dist_dtype t, size_t i) {
    switch (t) {
    case DIST_F32: return ((const float *)buf)[i];
    case DIST_F64: return ((const double *)buf)[i];
    case DIST_I32: return ((const int32_t *)buf)[i];
    case DIST_I64: return (double)((const int64_t *)buf)[i];
    case DIST_U8: return ((const uint8_t *)buf)[i];
    }
    return 0;
}

// buf[i] = mult * c_i
static inline void tfill(void *buf, dist_dtype t, size_t count, double mult) {
    for (size_t i = 0; i < count; i++) tset(buf, t, i, mult * tpat(t, i));
}

// op over n ranks holding (r + 1) * c, r = 0..n-1.
static inline double texpect(dist_op op, double c, int n) {
    switch (op) {
    case DIST_SUM: return c * n * (n + 1) / 2.0;
    case DIST_MAX: return c >= 0 ? c * n : c;
    case DIST_MIN: return c >= 0 ? c : c * n;
    case DIST_AVG: return c * (n + 1) / 2.0;
    }
    return 0;
}

// Index of the first element of buf[count] != mult * c_i (op over n ranks when n > 0), or -1.
static inline long tfirst_bad(const void *buf, dist_dtype t, size_t count, dist_op op, int n,
                              double mult, double *got, double *want) {
    for (size_t i = 0; i < count; i++) {
        double w = n > 0 ? texpect(op, tpat(t, i), n) : mult * tpat(t, i);
        double g = tget(buf, t, i);
        if (g != w) {
            *got = g;
            *want = w;
            return (long)i;
        }
    }
    return -1;
}

// ---- host or device buffers ----

typedef struct {
    const char *name;
    void *(*alloc)(size_t bytes);
    void (*release)(void *p);
    void (*put)(void *dst, const void *host, size_t bytes);  // returns when copied
    void (*get)(void *host, const void *src, size_t bytes);  // after all queued work on src
    int polls;  // dist_test reports completion (MPI), or only dist_wait does (NCCL)
} tbuf_ops;

static inline void *thost_alloc(size_t bytes) { return malloc(bytes ? bytes : 1); }
static inline void thost_free(void *p) { free(p); }
static inline void thost_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
}
static const tbuf_ops THOST = {"host", thost_alloc, thost_free, thost_copy, thost_copy, 1};

#ifdef SBMT_HAVE_NCCL
#define TCUDA(call)                                                                                \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "rank %d: %s:%d: %s: %s\n", world_rank(), __FILE__, __LINE__, #call, \
                    cudaGetErrorString(e_));                                                       \
            MPI_Abort(MPI_COMM_WORLD, 3);                                                          \
        }                                                                                          \
    } while (0)
// The compute stream of these tests is the legacy default stream (dist_nccl_init(d, NULL, ..)):
// cudaMemcpy is ordered after everything queued on it.
static inline void *tdev_alloc(size_t bytes) {
    void *p = NULL;
    TCUDA(cudaMalloc(&p, bytes ? bytes : 1));
    return p;
}
static inline void tdev_free(void *p) { TCUDA(cudaFree(p)); }
static inline void tdev_put(void *dst, const void *src, size_t bytes) {
    if (bytes) TCUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
static inline void tdev_get(void *dst, const void *src, size_t bytes) {
    if (bytes) TCUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
    TCUDA(cudaDeviceSynchronize());
}
static const tbuf_ops TDEVICE = {"device", tdev_alloc, tdev_free, tdev_put, tdev_get, 0};

// Number of CUDA devices, 0 when there are none or no driver; agreed over the world (minimum).
static inline int tcuda_devices(char *why, size_t whylen) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(why, whylen, "%s", cudaGetErrorString(e));
        n = 0;
    } else if (n == 0) {
        snprintf(why, whylen, "no CUDA device");
    }
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &n, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    if (n == 0 && !why[0]) snprintf(why, whylen, "no CUDA device on some rank");
    return n;
}
#endif

// ---- the collectives of the current layout, on every group and dtype ----

// allreduce (every op; avg for float types only) and allreduce_mean over group g.
static inline void tcheck_allreduce(dist_ctx *d, const tbuf_ops *m, dist_group g, size_t count) {
    int n = dist_size(d, g), me = dist_grank(d, g);
    for (int t = 0; t <= DIST_U8; t++) {
        size_t bytes = count * dist_dtype_size((dist_dtype)t);
        void *h = thost_alloc(bytes), *b = m->alloc(bytes);
        for (int op = 0; op <= DIST_AVG + 1; op++) {  // DIST_AVG + 1: dist_allreduce_mean
            int isavg = op >= DIST_AVG;
            if (isavg && t != DIST_F32 && t != DIST_F64) continue;
            tfill(h, (dist_dtype)t, count, me + 1);
            m->put(b, h, bytes);
            if (op == DIST_AVG + 1)
                dist_allreduce_mean(d, g, b, count, (dist_dtype)t);
            else
                dist_allreduce(d, g, b, count, (dist_dtype)t, (dist_op)op);
            m->get(h, b, bytes);
            double got = 0, want = 0;
            long bad = tfirst_bad(h, (dist_dtype)t, count, isavg ? DIST_AVG : (dist_op)op, n, 0,
                                  &got, &want);
            EXPECT_ALL(bad < 0,
                       "%s allreduce %s %s over %s (%d ranks, count %zu): [%ld] = %g, want %g",
                       m->name, op == DIST_AVG + 1 ? "mean" : TOP[op], TDTYPE[t], TGROUP[g], n,
                       count, bad, got, want);
        }
        m->release(b);
        free(h);
    }
}

// bcast from the last group rank (non-zero when the group has more than one rank).
static inline void tcheck_bcast(dist_ctx *d, const tbuf_ops *m, dist_group g, size_t count) {
    int n = dist_size(d, g), me = dist_grank(d, g), root = n - 1;
    for (int t = 0; t <= DIST_U8; t++) {
        size_t bytes = count * dist_dtype_size((dist_dtype)t);
        void *h = thost_alloc(bytes), *b = m->alloc(bytes);
        if (me == root)
            tfill(h, (dist_dtype)t, count, root + 1);
        else
            memset(h, 0xA5, bytes);
        m->put(b, h, bytes);
        dist_bcast(d, g, b, count, (dist_dtype)t, root);
        m->get(h, b, bytes);
        double got = 0, want = 0;
        long bad = tfirst_bad(h, (dist_dtype)t, count, DIST_SUM, 0, root + 1, &got, &want);
        EXPECT_ALL(bad < 0, "%s bcast %s over %s from root %d (count %zu): [%ld] = %g, want %g",
                   m->name, TDTYPE[t], TGROUP[g], root, count, bad, got, want);
        m->release(b);
        free(h);
    }
}

// gather to the last group rank: recv[j * count + i] = (j + 1) * c_i there.
static inline void tcheck_gather(dist_ctx *d, const tbuf_ops *m, dist_group g, size_t count) {
    int n = dist_size(d, g), me = dist_grank(d, g), root = n - 1;
    for (int t = 0; t <= DIST_U8; t++) {
        size_t es = dist_dtype_size((dist_dtype)t), bytes = count * es;
        void *h = thost_alloc(bytes * (size_t)n), *s = m->alloc(bytes);
        void *r = me == root ? m->alloc(bytes * (size_t)n) : NULL;
        tfill(h, (dist_dtype)t, count, me + 1);
        m->put(s, h, bytes);
        if (r) {
            memset(h, 0xA5, bytes * (size_t)n);
            m->put(r, h, bytes * (size_t)n);
        }
        dist_gather(d, g, s, r, count, (dist_dtype)t, root);
        long bad = -1;
        int badj = -1;
        double got = 0, want = 0;
        if (r) {
            m->get(h, r, bytes * (size_t)n);
            for (int j = 0; j < n && bad < 0; j++) {
                bad = tfirst_bad((char *)h + (size_t)j * bytes, (dist_dtype)t, count, DIST_SUM, 0,
                                 j + 1, &got, &want);
                badj = j;
            }
        }
        EXPECT_ALL(bad < 0,
                   "%s gather %s over %s to root %d (count %zu): block %d [%ld] = %g, want %g",
                   m->name, TDTYPE[t], TGROUP[g], root, count, badj, bad, got, want);
        if (r) m->release(r);
        m->release(s);
        free(h);
    }
}

// allgather: on every rank recv[j * count + i] = (j + 1) * c_i.
static inline void tcheck_allgather(dist_ctx *d, const tbuf_ops *m, dist_group g, size_t count) {
    int n = dist_size(d, g), me = dist_grank(d, g);
    for (int t = 0; t <= DIST_U8; t++) {
        size_t es = dist_dtype_size((dist_dtype)t), bytes = count * es;
        void *h = thost_alloc(bytes * (size_t)n), *s = m->alloc(bytes);
        void *r = m->alloc(bytes * (size_t)n);
        tfill(h, (dist_dtype)t, count, me + 1);
        m->put(s, h, bytes);
        memset(h, 0xA5, bytes * (size_t)n);
        m->put(r, h, bytes * (size_t)n);
        dist_allgather(d, g, s, r, count, (dist_dtype)t);
        long bad = -1;
        int badj = -1;
        double got = 0, want = 0;
        m->get(h, r, bytes * (size_t)n);
        for (int j = 0; j < n && bad < 0; j++) {
            bad = tfirst_bad((char *)h + (size_t)j * bytes, (dist_dtype)t, count, DIST_SUM, 0,
                             j + 1, &got, &want);
            badj = j;
        }
        EXPECT_ALL(bad < 0, "%s allgather %s over %s (count %zu): block %d [%ld] = %g, want %g",
                   m->name, TDTYPE[t], TGROUP[g], count, badj, bad, got, want);
        m->release(r);
        m->release(s);
        free(h);
    }
}

// scatter from group rank n / 2: rank j receives root's block j = (j + 1) * c_i.
static inline void tcheck_scatter(dist_ctx *d, const tbuf_ops *m, dist_group g, size_t count) {
    int n = dist_size(d, g), me = dist_grank(d, g), root = n / 2;
    for (int t = 0; t <= DIST_U8; t++) {
        size_t es = dist_dtype_size((dist_dtype)t), bytes = count * es;
        void *h = thost_alloc(bytes * (size_t)n), *r = m->alloc(bytes);
        void *s = me == root ? m->alloc(bytes * (size_t)n) : NULL;
        if (s) {
            for (int j = 0; j < n; j++)
                tfill((char *)h + (size_t)j * bytes, (dist_dtype)t, count, j + 1);
            m->put(s, h, bytes * (size_t)n);
        }
        memset(h, 0xA5, bytes);
        m->put(r, h, bytes);
        dist_scatter(d, g, s, r, count, (dist_dtype)t, root);
        m->get(h, r, bytes);
        double got = 0, want = 0;
        long bad = tfirst_bad(h, (dist_dtype)t, count, DIST_SUM, 0, me + 1, &got, &want);
        EXPECT_ALL(bad < 0, "%s scatter %s over %s from root %d (count %zu): [%ld] = %g, want %g",
                   m->name, TDTYPE[t], TGROUP[g], root, count, bad, got, want);
        if (s) m->release(s);
        m->release(r);
        free(h);
    }
}

// dist_iallreduce_sum (polled with dist_test where the backend can report completion) then
// dist_wait gives the blocking sum bit for bit; three buckets in flight at once, waited in
// reverse order, each give their own sum.
static inline void tcheck_iallreduce(dist_ctx *d, const tbuf_ops *m, dist_group g, size_t count) {
    int n = dist_size(d, g), me = dist_grank(d, g);
    size_t bytes = count * sizeof(float);
    float *h = thost_alloc(bytes), *hb = thost_alloc(bytes);
    float *a = m->alloc(bytes), *b = m->alloc(bytes);
    tfill(h, DIST_F32, count, me + 1);
    m->put(a, h, bytes);
    m->put(b, h, bytes);
    dist_req req;
    memset(&req, 0, sizeof(req));
    dist_iallreduce_sum(d, g, a, count, &req);
    long polls = 0;
    int done = 0;
    if (m->polls) {
        double t0 = MPI_Wtime();
        while (!(done = dist_test(&req)) && MPI_Wtime() - t0 < 60) polls++;
    }
    EXPECT_ALL(!m->polls || done,
               "%s iallreduce over %s: dist_test never reported completion (%ld polls)", m->name,
               TGROUP[g], polls);
    EXPECT_ALL(!done || dist_test(&req) == 1, "%s iallreduce over %s: dist_test after completion",
               m->name, TGROUP[g]);
    dist_wait(&req);
    EXPECT_ALL(req.active == 0, "%s iallreduce over %s: active = %d after dist_wait", m->name,
               TGROUP[g], req.active);
    dist_wait(&req);  // a second wait is a no-op
    dist_allreduce(d, g, b, count, DIST_F32, DIST_SUM);
    m->get(h, a, bytes);
    m->get(hb, b, bytes);
    double got = 0, want = 0;
    long bad = tfirst_bad(h, DIST_F32, count, DIST_SUM, n, 0, &got, &want);
    EXPECT_ALL(bad < 0, "%s iallreduce over %s (%d ranks): [%ld] = %g, want %g", m->name,
               TGROUP[g], n, bad, got, want);
    EXPECT_ALL(memcmp(h, hb, bytes) == 0, "%s iallreduce over %s differs from dist_allreduce",
               m->name, TGROUP[g]);

    enum { NB = 3 };
    float *bk[NB];
    dist_req rq[NB];
    for (int k = 0; k < NB; k++) {
        bk[k] = m->alloc(bytes);
        tfill(h, DIST_F32, count, (me + 1) * (k + 1));
        m->put(bk[k], h, bytes);
        memset(&rq[k], 0, sizeof(rq[k]));
        dist_iallreduce_sum(d, g, bk[k], count, &rq[k]);
    }
    int ok = 1;
    for (int k = NB - 1; k >= 0; k--) {
        dist_wait(&rq[k]);
        m->get(h, bk[k], bytes);
        for (size_t i = 0; i < count && ok; i++)
            ok = h[i] == (float)(texpect(DIST_SUM, tpat(DIST_F32, i), n) * (k + 1));
        m->release(bk[k]);
    }
    EXPECT_ALL(ok, "%s: %d buckets in flight over %s: a bucket got another's sum", m->name, NB,
               TGROUP[g]);
    m->release(a);
    m->release(b);
    free(h);
    free(hb);
}

// Every collective on every group of the current layout.
static inline void tcheck_all_groups(dist_ctx *d, const tbuf_ops *m, size_t count) {
    for (int g = 0; g < DIST_NGROUPS; g++) {
        tcheck_allreduce(d, m, (dist_group)g, count);
        tcheck_bcast(d, m, (dist_group)g, count);
        tcheck_gather(d, m, (dist_group)g, count);
        tcheck_allgather(d, m, (dist_group)g, count);
        tcheck_scatter(d, m, (dist_group)g, count);
        tcheck_iallreduce(d, m, (dist_group)g, count);
    }
}

#endif
