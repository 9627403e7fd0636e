// sbm_graphs.c: the host side of a layer's sampled graphs that every backend shares: growing and
// freeing the per-unit records, the per-head statistics read from them, and the expected edge
// count of a unit (the figure the samplers and the density regulariser report), and fastRG's
// Poisson edge count (drawn on the host by every backend: one draw per unit, and the host
// needs it anyway to size the edge arrays).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/sbm.h"

void sbm_graphs_free(sbm_graphs *gs) {
    for (int u = 0; u < gs->units_cap; u++) {
        free(gs->g[u].rowptr);
        free(gs->g[u].col);
        free(gs->g[u].a);
        free(gs->g[u].keep);
    }
    free(gs->g);
    if (gs->dev && gs->dev_free) gs->dev_free(gs->dev);
    memset(gs, 0, sizeof(*gs));
}

void sbm_graphs_reserve(sbm_graphs *gs, int units) {
    if (gs->units_cap < units) {
        gs->g = realloc(gs->g, sizeof(sbm_graph) * (size_t)units);
        CHECK(gs->g != NULL);
        memset(gs->g + gs->units_cap, 0, sizeof(sbm_graph) * (size_t)(units - gs->units_cap));
        gs->units_cap = units;
    }
    gs->units = units;
}

void sbm_graph_stats_host(kctx *k, const sbm_graphs *gs, int H, int64_t *edges,
                          double *expected) {
    (void)k;
    for (int h = 0; h < H; h++) {
        if (edges) edges[h] = 0;
        if (expected) expected[h] = 0.0;
    }
    for (int u = 0; u < gs->units; u++) {
        if (edges) edges[u % H] += gs->g[u].nnz;
        if (expected) expected[u % H] += gs->g[u].expected;
    }
}

double sbm_expected_edges(const double *cq, const double *ck, const float *Sh, int kc, float eps,
                          double valid) {
    double lam = 0.0;
    for (int a = 0; a < kc; a++) {
        double row = 0.0;
        for (int c = 0; c < kc; c++) row += Sh[(size_t)a * kc + c] * ck[c];
        lam += cq[a] * row;
    }
    return lam + (double)eps * valid * valid;
}

// Uniform doubles in [0, 1) with 53 bits from a stream, consumed in order.
typedef struct {
    rng_stream s;
    uint32_t block;
    philox4x32 cur;
    int half;
} u01_seq;

static double u01_next(u01_seq *q) {
    if (q->half == 0) q->cur = rng_block(q->s, q->block++);
    uint32_t hi = q->cur.v[2 * q->half], lo = q->cur.v[2 * q->half + 1];
    q->half ^= 1;
    return (double)(((uint64_t)hi << 21) ^ (lo >> 11)) * (1.0 / 9007199254740992.0);
}

// Poisson(lambda): inversion below 10, Hormann's PTRS transformed rejection above.
static int64_t poisson(u01_seq *q, double lam) {
    // NaN or infinite rates (non-finite memberships) draw nothing rather than loop: the model
    // turns a non-finite expected count into a NaN loss (model_forward).
    if (!(lam > 0.0) || !isfinite(lam)) return 0;
    if (lam < 10.0) {
        double p = exp(-lam), F = p, u = u01_next(q);
        int64_t x = 0;
        while (u > F && x < 1000) {
            x++;
            p *= lam / (double)x;
            F += p;
        }
        return x;
    }
    double slam = sqrt(lam), loglam = log(lam);
    double b = 0.931 + 2.53 * slam, a = -0.059 + 0.02483 * b;
    double invalpha = 1.1239 + 1.1328 / (b - 3.4), vr = 0.9277 - 3.6224 / (b - 2.0);
    for (;;) {
        double U = u01_next(q) - 0.5, V = u01_next(q);
        double us = 0.5 - fabs(U);
        double kk = floor((2.0 * a / us + b) * U + lam + 0.43);
        if (us >= 0.07 && V <= vr) return (int64_t)kk;
        if (kk < 0.0 || (us < 0.013 && V > us)) continue;
        if (log(V) + log(invalpha) - log(a / (us * us) + b) <= -lam + kk * loglam - lgamma(kk + 1.0))
            return (int64_t)kk;
    }
}


int64_t sbm_fastrg_count(rng_stream count_stream, double lam) {
    u01_seq q = {count_stream, 0, {{0, 0, 0, 0}}, 0};
    int64_t m = poisson(&q, lam);
    return m > INT32_MAX / 2 ? INT32_MAX / 2 : m;  // far beyond any L^2 of interest
}
