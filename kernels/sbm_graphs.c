// sbm_graphs.c: the host side of a layer's sampled graphs that every backend shares: growing and
// freeing the per-unit records, the per-head statistics read from them, and the expected edge
// count of a unit (the figure the samplers and the density regulariser report).
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
