// test_dist.c: the communication layer (dist/) under MPI, run by ctest with 1, 2 and 4 ranks
// (test_dist_np1/2/4): dist_init, the dp x tp layouts and their refusal, every collective on
// every group and dtype against values computed by hand (dist_testlib.h), a large and an empty
// count, the non-blocking sum, barrier, dist_agree, dist_check, dist_checksum, and the NCCL
// backend (refused without NCCL or without a GPU; with GPUs, the same collectives on device
// buffers).
//
// Every rank runs the whole cmocka group; checks are collective (EXPECT_ALL), so a check that
// fails anywhere fails on every rank at the same point and no rank is left in a collective, and
// rank 0's cmocka report is the job's. Only rank 0 prints it (stdout): the other ranks' stdout
// goes to /dev/null unless SBMT_TEST_ALL_RANKS is set; every rank's stderr (the detail of a
// failed check, cmocka's failure lines) stays, prefixed with the rank by mpiexec --tag-output.
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dist/dist.h"
#include "dist_testlib.h"
#include "kernels/common.h"

static dist_ctx D;

// Every test starts from the default layout (dp = world, tp = 1).
static int reset_layout(void **state) {
    (void)state;
    char err[SBMT_ERR_LEN];
    CHECK(dist_layout(&D, 1, "tp", err) == 0);
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    return 0;
}

static void test_init(void **state) {
    (void)state;
    int size = 0, rank = -1;
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    EXPECT_ALL(D.initialized == 1 && D.started_mpi == 1, "initialized %d started_mpi %d",
               D.initialized, D.started_mpi);
    EXPECT_ALL(D.world == size && D.rank == rank, "world %d rank %d, MPI says %d %d", D.world,
               D.rank, size, rank);
    EXPECT_ALL(D.backend == DIST_BACKEND_MPI && D.nccl == NULL, "backend %d", (int)D.backend);
    EXPECT_ALL(D.dp == size && D.tp == 1 && D.dp_rank == rank && D.tp_rank == 0,
               "default layout dp %d tp %d dp_rank %d tp_rank %d", D.dp, D.tp, D.dp_rank,
               D.tp_rank);
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    EXPECT_ALL(strcmp(D.host, host) == 0, "host '%s', gethostname '%s'", D.host, host);
    // local rank and size, hosts: from every rank's host name, independently of the layer.
    char *all = xcalloc((size_t)size, 256);
    MPI_CHECK(MPI_Allgather(D.host, 256, MPI_CHAR, all, 256, MPI_CHAR, MPI_COMM_WORLD));
    int lrank = 0, lsize = 0, hosts = 0;
    for (int r = 0; r < size; r++) {
        const char *h = all + (size_t)r * 256;
        if (strcmp(h, D.host) == 0) {
            lsize++;
            if (r < rank) lrank++;
        }
        int first = 1;
        for (int q = 0; q < r && first; q++) first = strcmp(all + (size_t)q * 256, h) != 0;
        hosts += first;
    }
    free(all);
    EXPECT_ALL(D.local_rank == lrank && D.local_size == lsize && D.hosts == hosts,
               "local %d/%d hosts %d, want %d/%d %d", D.local_rank, D.local_size, D.hosts, lrank,
               lsize, hosts);
    EXPECT_ALL(dist_is_root(&D) == (rank == 0), "dist_is_root %d", dist_is_root(&D));
    EXPECT_ALL(dist_size(&D, DIST_WORLD) == size && dist_grank(&D, DIST_WORLD) == rank,
               "dist_size/grank world %d %d", dist_size(&D, DIST_WORLD),
               dist_grank(&D, DIST_WORLD));
}

// The members of group g, by group rank, as world ranks (through MPI directly).
static int *members(dist_group g, int *n) {
    MPI_CHECK(MPI_Comm_size(D.comm[g], n));
    int *m = xcalloc((size_t)*n, sizeof(int));
    MPI_CHECK(MPI_Allgather(&D.rank, 1, MPI_INT, m, 1, MPI_INT, D.comm[g]));
    return m;
}

static void check_layout(int tp) {
    int w = D.world;
    EXPECT_ALL(D.tp == tp && D.dp == w / tp, "tp %d dp %d, want %d %d", D.tp, D.dp, tp, w / tp);
    EXPECT_ALL(D.tp_rank == D.rank % tp && D.dp_rank == D.rank / tp &&
                   D.rank == D.dp_rank * tp + D.tp_rank,
               "rank %d: dp_rank %d tp_rank %d with tp %d", D.rank, D.dp_rank, D.tp_rank, tp);
    EXPECT_ALL(dist_size(&D, DIST_DP) == D.dp && dist_size(&D, DIST_TP) == D.tp &&
                   dist_grank(&D, DIST_DP) == D.dp_rank && dist_grank(&D, DIST_TP) == D.tp_rank,
               "dist_size/dist_grank disagree with the context");
    int ndp = 0, ntp = 0, rdp = -1, rtp = -1;
    int *mdp = members(DIST_DP, &ndp), *mtp = members(DIST_TP, &ntp);
    MPI_CHECK(MPI_Comm_rank(D.comm[DIST_DP], &rdp));
    MPI_CHECK(MPI_Comm_rank(D.comm[DIST_TP], &rtp));
    EXPECT_ALL(ndp == D.dp && ntp == D.tp && rdp == D.dp_rank && rtp == D.tp_rank,
               "communicators: dp %d (rank %d), tp %d (rank %d)", ndp, rdp, ntp, rtp);
    // dp group: the same tp_rank, ordered by dp_rank; tp group: consecutive ranks of one dp_rank.
    int ok = 1;
    for (int j = 0; j < ndp; j++) ok &= mdp[j] == j * tp + D.tp_rank;
    for (int j = 0; j < ntp; j++) ok &= mtp[j] == D.dp_rank * tp + j;
    EXPECT_ALL(ok, "group members wrong for tp %d (dp group starts %d, tp group starts %d)", tp,
               mdp[0], mtp[0]);
    free(mdp);
    free(mtp);
}

static void test_layout(void **state) {
    (void)state;
    const int tps[] = {1, 2, 3, 4, 8, 0, -2};
    for (size_t k = 0; k < sizeof(tps) / sizeof(tps[0]); k++) {
        int tp = tps[k], prev = D.tp;
        char err[SBMT_ERR_LEN] = "";
        int rc = dist_layout(&D, tp, "model.tp", err);
        if (tp >= 1 && D.world % tp == 0) {
            EXPECT_ALL(rc == 0, "dist_layout tp %d on %d ranks: %s", tp, D.world, err);
            check_layout(tp);
        } else {
            char num[32];
            snprintf(num, sizeof(num), "%d", tp);
            EXPECT_ALL(rc == -1 && strstr(err, "model.tp") && strstr(err, num),
                       "tp %d on %d ranks: rc %d, err '%s'", tp, D.world, rc, err);
            // refused: the previous layout stays, communicators included
            EXPECT_ALL(D.tp == prev, "layout changed by a refused tp %d", tp);
            check_layout(prev);
        }
    }
}

// Every collective on every group and dtype, for each tp that divides the world.
static void test_collectives(void **state) {
    (void)state;
    for (int tp = 1; tp <= 4; tp *= 2) {
        if (D.world % tp) continue;
        char err[SBMT_ERR_LEN];
        EXPECT_ALL(dist_layout(&D, tp, "tp", err) == 0, "%s", err);
        tcheck_all_groups(&D, &THOST, 1031);
    }
}

// Above a few million floats (many MPI segments), for sum and mean on the world and dp.
static void test_large_count(void **state) {
    (void)state;
    const size_t count = 5000011;
    float *b = xmalloc(count * sizeof(float));
    const dist_group gs[] = {DIST_WORLD, DIST_DP};
    for (int k = 0; k < 2; k++) {
        for (int op = DIST_SUM; op <= DIST_AVG; op += DIST_AVG) {
            int n = dist_size(&D, gs[k]), me = dist_grank(&D, gs[k]);
            tfill(b, DIST_F32, count, me + 1);
            dist_allreduce(&D, gs[k], b, count, DIST_F32, (dist_op)op);
            double got = 0, want = 0;
            long bad = tfirst_bad(b, DIST_F32, count, (dist_op)op, n, 0, &got, &want);
            EXPECT_ALL(bad < 0, "%s of %zu floats over %s: [%ld] = %g, want %g", TOP[op], count,
                       TGROUP[gs[k]], bad, got, want);
        }
    }
    // and the non-blocking sum of the same size
    int n = D.world;
    tfill(b, DIST_F32, count, D.rank + 1);
    dist_req r;
    memset(&r, 0, sizeof(r));
    dist_iallreduce_sum(&D, DIST_WORLD, b, count, &r);
    dist_wait(&r);
    double got = 0, want = 0;
    long bad = tfirst_bad(b, DIST_F32, count, DIST_SUM, n, 0, &got, &want);
    EXPECT_ALL(bad < 0, "iallreduce of %zu floats: [%ld] = %g, want %g", count, bad, got, want);
    free(b);
}

// Count 0 is a no-op everywhere (buffers untouched), whatever the group.
static void test_count_zero(void **state) {
    (void)state;
    for (int g = 0; g < DIST_NGROUPS; g++) {
        int n = dist_size(&D, (dist_group)g);
        float buf[4] = {1, 2, 3, 4}, recv[16], keep[16];
        for (int i = 0; i < 16; i++) recv[i] = keep[i] = -7.0f;
        dist_allreduce(&D, (dist_group)g, buf, 0, DIST_F32, DIST_SUM);
        dist_allreduce_mean(&D, (dist_group)g, buf, 0, DIST_F64);
        dist_bcast(&D, (dist_group)g, buf, 0, DIST_I32, n - 1);
        dist_gather(&D, (dist_group)g, buf, recv, 0, DIST_F32, 0);
        dist_scatter(&D, (dist_group)g, recv, buf, 0, DIST_F32, 0);
        dist_req r;
        memset(&r, 0, sizeof(r));
        dist_iallreduce_sum(&D, (dist_group)g, buf, 0, &r);
        int done = dist_test(&r);
        dist_wait(&r);
        EXPECT_ALL(done && buf[0] == 1 && buf[1] == 2 && buf[2] == 3 && buf[3] == 4 &&
                       memcmp(recv, keep, sizeof(recv)) == 0,
                   "count 0 over %s changed a buffer or left a request (done %d)", TGROUP[g], done);
    }
}

static void test_barrier(void **state) {
    (void)state;
    for (int tp = 1; tp <= 4; tp *= 2) {
        if (D.world % tp) continue;
        char err[SBMT_ERR_LEN];
        EXPECT_ALL(dist_layout(&D, tp, "tp", err) == 0, "%s", err);
        for (int g = 0; g < DIST_NGROUPS; g++) {
            int n = dist_size(&D, (dist_group)g), me = dist_grank(&D, (dist_group)g);
            MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));  // align
            // Group rank 0 arrives 0.3 s late: nobody in its group may leave before it arrives.
            if (me == 0 && n > 1) nanosleep(&(struct timespec){0, 300000000L}, NULL);
            double t0 = MPI_Wtime();
            dist_barrier(&D, (dist_group)g);
            double waited = MPI_Wtime() - t0;
            EXPECT_ALL(n == 1 || me == 0 || waited > 0.1,
                       "tp %d: barrier over %s returned after %.3f s, before group rank 0 arrived",
                       tp, TGROUP[g], waited);
        }
    }
}

static void test_agree(void **state) {
    (void)state;
    int w = D.world;
    int flags[4] = {D.rank == w - 1, D.rank, 0, D.rank == 0 ? 5 : 1};
    dist_agree(&D, flags, 4);
    EXPECT_ALL(flags[0] == 1 && flags[1] == w - 1 && flags[2] == 0 && flags[3] == 5,
               "dist_agree gave %d %d %d %d", flags[0], flags[1], flags[2], flags[3]);
    int none = 42;
    dist_agree(&D, &none, 0);  // n = 0: nothing to agree on, nothing touched
    EXPECT_ALL(none == 42, "dist_agree with n = 0 wrote %d", none);
}

// One dist_check round: ranks in `fails` (a bit mask) fail with "rank R failed".
static void check_round(unsigned fails, int want_first) {
    char err[SBMT_ERR_LEN];
    int failing = (fails >> D.rank) & 1;
    snprintf(err, sizeof(err), failing ? "rank %d failed" : "stale %d", D.rank);
    int rc = dist_check(&D, failing ? -1 : 0, err);
    if (want_first < 0) {
        EXPECT_ALL(rc == 0, "dist_check with no failure returned %d", rc);
        return;
    }
    char want[64] = "";
    if (D.rank == want_first) snprintf(want, sizeof(want), "rank %d failed", D.rank);
    EXPECT_ALL(rc == -1 && strcmp(err, want) == 0,
               "failing mask 0x%x: rc %d, err '%s', want '%s' (lowest failing rank %d)", fails, rc,
               err, want, want_first);
}

static void test_check(void **state) {
    (void)state;
    int w = D.world;
    unsigned all = (1u << w) - 1, odd = 0;
    for (int r = 1; r < w; r += 2) odd |= 1u << r;
    check_round(0, -1);
    check_round(all, 0);
    check_round(1u << (w - 1), w - 1);
    if (odd) check_round(odd, 1);  // (the same on every rank: depends on w only)
    // The message survives only on the lowest failing rank, the others' (failing or not) is empty.
    EXPECT_ALL(dist_check(&D, 0, NULL) == 0, "dist_check with err NULL");
    EXPECT_ALL(dist_check(&D, D.rank == w - 1 ? -1 : 0, NULL) == -1, "dist_check with err NULL");
}

static void test_checksum(void **state) {
    (void)state;
    enum { N = 4099 };
    unsigned char *a = xmalloc(N), *b = xmalloc(N);
    for (int i = 0; i < N; i++) a[i] = (unsigned char)(i * 131 + 7);
    memcpy(b, a, N);
    uint64_t h = dist_checksum(a, N);
    EXPECT_ALL(dist_checksum(b, N) == h && dist_checksum(a, N) == h,
               "dist_checksum not a function of the bytes");
    int same = 1;
    const int pos[] = {0, 1, N / 2, N - 2, N - 1};
    for (size_t k = 0; k < sizeof(pos) / sizeof(pos[0]); k++)
        for (int bit = 0; bit < 8; bit++) {
            b[pos[k]] ^= (unsigned char)(1u << bit);
            if (dist_checksum(b, N) == h) same = 0;
            b[pos[k]] ^= (unsigned char)(1u << bit);
        }
    EXPECT_ALL(same, "a one-bit change left dist_checksum unchanged");
    EXPECT_ALL(dist_checksum(a, N - 1) != h && dist_checksum(a, 0) != h,
               "a shorter buffer gave the same checksum");
    // The replica check: equal buffers on every rank agree, a flipped bit on the last rank shows.
    if (D.rank == D.world - 1 && D.world > 1) a[N / 3] ^= 0x10;
    uint64_t mine = dist_checksum(a, N), *all = xcalloc((size_t)D.world, sizeof(uint64_t));
    MPI_CHECK(MPI_Allgather(&mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD));
    int good = 1;
    for (int r = 0; r < D.world; r++)
        good &= (all[r] == h) == (r != D.world - 1 || D.world == 1);
    EXPECT_ALL(good, "replica checksums across ranks do not single out the flipped rank");
    free(all);
    free(a);
    free(b);
}

// ---- NCCL backend ----

static int have_gpu(char *why, size_t whylen) {
#ifdef SBMT_HAVE_NCCL
    return tcuda_devices(why, whylen) > 0;
#else
    snprintf(why, whylen, "this build has no NCCL");
    return 0;
#endif
}

// Without NCCL, or without a GPU, dist_nccl_init refuses with a message and leaves MPI on.
static void test_nccl_refused(void **state) {
    (void)state;
#ifdef SBMT_HAVE_NCCL
    EXPECT_ALL(dist_nccl_available() == 1, "dist_nccl_available in a build with NCCL");
#else
    EXPECT_ALL(dist_nccl_available() == 0, "dist_nccl_available in a build without NCCL");
#endif
    char why[256] = "";
    if (dist_nccl_available() && have_gpu(why, sizeof(why))) {
        print_message("[ SKIPPED  ] a GPU is present: the refusal without one is not testable\n");
        skip();
    }
    char err[SBMT_ERR_LEN] = "";
    int rc = dist_nccl_init(&D, NULL, err);
    const char *want = dist_nccl_available() ? "no CUDA device" : "no NCCL";
    // The build without NCCL refuses locally (every rank has its message); with NCCL the ranks
    // agree and only the lowest failing one (rank 0 here) keeps it.
    int keeps = !dist_nccl_available() || D.rank == 0;
    EXPECT_ALL(rc == -1 && (keeps ? strstr(err, want) != NULL : err[0] == '\0'),
               "dist_nccl_init: rc %d, err '%s' (want '%s'%s)", rc, err, want,
               keeps ? "" : ", or empty");
    EXPECT_ALL(D.backend == DIST_BACKEND_MPI && D.nccl == NULL, "backend %d after a refusal",
               (int)D.backend);
    dist_nccl_finalize(&D);  // nothing to finalize: a no-op
    // The MPI backend still works.
    double x = 1;
    dist_allreduce(&D, DIST_WORLD, &x, 1, DIST_F64, DIST_SUM);
    EXPECT_ALL(x == D.world, "allreduce after a refused dist_nccl_init: %g", x);
}

// With GPUs: one per rank (local rank mod device count); with fewer GPUs than node-local ranks
// the ranks sharing one are refused by name; else every collective on device buffers.
static void test_nccl_collectives(void **state) {
    (void)state;
    char why[256] = "";
    if (!have_gpu(why, sizeof(why))) {
        print_message("[ SKIPPED  ] NCCL collectives on device buffers: %s\n", why);
        skip();
    }
#ifdef SBMT_HAVE_NCCL
    int ndev = 0;
    TCUDA(cudaGetDeviceCount(&ndev));
    TCUDA(cudaSetDevice(D.local_rank % ndev));
    int shared = D.local_size > ndev;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &shared, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    for (int tp = 1; tp <= 4; tp *= 2) {
        if (D.world % tp) continue;
        char err[SBMT_ERR_LEN] = "";
        EXPECT_ALL(dist_layout(&D, tp, "tp", err) == 0, "%s", err);
        int rc = dist_nccl_init(&D, NULL, err);
        if (shared) {
            int msgs = err[0] != '\0';
            MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &msgs, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
            EXPECT_ALL(rc == -1 && msgs == 1 && (!err[0] || strstr(err, "share one GPU")),
                       "%d ranks on %d GPU(s): rc %d, %d messages, err '%s'", D.local_size, ndev,
                       rc, msgs, err);
            EXPECT_ALL(D.backend == DIST_BACKEND_MPI, "backend switched despite the refusal");
            return;
        }
        EXPECT_ALL(rc == 0 && D.backend == DIST_BACKEND_NCCL, "dist_nccl_init: %s", err);
        tcheck_all_groups(&D, &TDEVICE, 1031);
        tcheck_allreduce(&D, &TDEVICE, DIST_WORLD, 3000017);
        dist_nccl_finalize(&D);
        EXPECT_ALL(D.backend == DIST_BACKEND_MPI && D.nccl == NULL, "after dist_nccl_finalize");
    }
#endif
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    dist_init(&D, &argc, &argv);
    if (D.rank != 0 && !getenv("SBMT_TEST_ALL_RANKS")) CHECK(freopen("/dev/null", "w", stdout));
    char name[64];
    snprintf(name, sizeof(name), "dist (rank %d of %d)", D.rank, D.world);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_init, reset_layout),
        cmocka_unit_test_setup(test_layout, reset_layout),
        cmocka_unit_test_setup(test_collectives, reset_layout),
        cmocka_unit_test_setup(test_large_count, reset_layout),
        cmocka_unit_test_setup(test_count_zero, reset_layout),
        cmocka_unit_test_setup(test_barrier, reset_layout),
        cmocka_unit_test_setup(test_agree, reset_layout),
        cmocka_unit_test_setup(test_check, reset_layout),
        cmocka_unit_test_setup(test_checksum, reset_layout),
        cmocka_unit_test_setup(test_nccl_refused, reset_layout),
        cmocka_unit_test_setup(test_nccl_collectives, reset_layout),
    };
    int failed = cmocka_run_group_tests_name(name, tests, NULL, NULL);
    dist_finalize(&D);
    return failed ? 1 : 0;
}
