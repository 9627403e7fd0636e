// bench_comm.c: the cost of the collectives a training step makes, alone, on this host's MPI:
// blocking all-reduce, non-blocking all-reduce (started, polled, waited) and all-gather over
// the world, for element counts from a few floats to tens of MB, with the payload sizes of the
// reference listops model marked (its gradient, its tp activation all-reduce, its balance
// all-gather). Run: mpirun -n 2 build/bench_comm [reps]. Prints median microseconds and the
// bus bandwidth 2 (p-1)/p x bytes / time of an all-reduce (NCCL's convention).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return v[n / 2];
}

int main(int argc, char **argv) {
    dist_ctx d;
    dist_init(&d, &argc, &argv);
    int reps = argc > 1 ? atoi(argv[1]) : 50;
    if (reps < 3) reps = 3;
    // 230 410 floats: the reference listops model's gradient (configs/listops.ini, sbm);
    // 4 x 2048 x 64: one tp all-reduce of the attention output at 4 sequences of n = 2048;
    // 8 x 2048 ints: one balance all-gather contribution at 4 examples per rank (dual: 2x).
    const size_t counts[] = {1, 64, 4096, 65536, 230410, 524288, 4194304};
    const char *what[] = {"", "", "", "", "<- reference model gradient", "<- tp all-reduce, 4 x 2048 tokens",
                          ""};
    const int nc = (int)(sizeof(counts) / sizeof(counts[0]));
    float *buf = xmalloc(sizeof(float) * counts[nc - 1] * (size_t)d.world);
    float *out = xmalloc(sizeof(float) * counts[nc - 1] * (size_t)d.world);
    double *t = xmalloc(sizeof(double) * (size_t)reps);
    if (d.rank == 0)
        printf("world %d on %d host(s): median of %d repetitions\n%10s %12s %12s %12s %12s %10s\n",
               d.world, d.hosts, reps, "floats", "MB", "allreduce us", "iallreduce us",
               "allgather us", "bus GB/s");
    for (int c = 0; c < nc; c++) {
        size_t n = counts[c];
        for (size_t i = 0; i < n; i++) buf[i] = (float)(i % 7);
        double med[3];
        for (int kind = 0; kind < 3; kind++) {
            for (int r = 0; r < reps; r++) {
                dist_barrier(&d, DIST_WORLD);
                double t0 = sbmt_now();
                if (kind == 0) {
                    dist_allreduce(&d, DIST_WORLD, buf, n, DIST_F32, DIST_SUM);
                } else if (kind == 1) {
                    dist_req q;
                    dist_iallreduce_sum(&d, DIST_WORLD, buf, n, &q);
                    dist_test(&q);
                    dist_wait(&q);
                } else {
                    dist_allgather(&d, DIST_WORLD, buf, out, n, DIST_F32);
                }
                t[r] = sbmt_now() - t0;
            }
            // The slowest rank's time is the step's.
            double m = median(t, reps);
            dist_allreduce(&d, DIST_WORLD, &m, 1, DIST_F64, DIST_MAX);
            med[kind] = m;
        }
        double bytes = 4.0 * (double)n;
        double bus = d.world > 1 ? 2.0 * (d.world - 1) / d.world * bytes / med[0] * 1e-9 : 0.0;
        if (d.rank == 0)
            printf("%10zu %12.3f %12.1f %12.1f %12.1f %10.2f %s\n", n, bytes * 1e-6, med[0] * 1e6,
                   med[1] * 1e6, med[2] * 1e6, bus, what[c]);
    }
    free(buf);
    free(out);
    free(t);
    dist_finalize(&d);
    return 0;
}
