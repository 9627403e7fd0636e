// bench_util.h: what the backend benchmarks share: device buffers of reproducible random
// values, a stream synchronisation (a one-float download) for timing, and option parsing of
// integer options ("--name N") plus words a benchmark takes as its own.
#ifndef SBMT_BENCH_UTIL_H
#define SBMT_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/kernels.h"
#include "model/model.h"

static inline uint32_t bench_lcg(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

// n floats uniform in [-1, 1) on k.
static inline float *bench_dev_random(kctx *k, size_t n, uint32_t seed) {
    float *h = xmalloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) h[i] = ((float)bench_lcg(&seed) / 16777216.0f - 0.5f) * 2.0f;
    float *d = k_alloc(k, sizeof(float) * n);
    k_upload(k, d, h, sizeof(float) * n);
    free(h);
    return d;
}

static inline void bench_sync(kctx *k, const float *d) {
    float x;
    k_download(k, &x, d, sizeof(float));  // synchronises the stream
}

// B sequences of n valid tokens (samples 0..B-1), packed into bt (free with batch_free).
static inline void bench_full_batch(kbatch *bt, int B, int n) {
    batch_alloc(bt, B, n);
    int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)B * n);
    uint32_t *samples = xmalloc(sizeof(uint32_t) * B);
    for (int i = 0; i < B * n; i++) ids[i] = 1 + i % 15;
    for (int b = 0; b < B; b++) samples[b] = (uint32_t)b;
    batch_pack(bt, ids, B, n, samples, 0, 0);
    free(ids);
    free(samples);
}

typedef struct {
    const char *name;  // "--dh"
    int *value;
} bench_int_opt;

// --precision fp32|tf32|bf16 (train.precision's values): how many arguments it took (0: not
// this option), the choice in *prec.
static inline int bench_precision_word(const char *arg, const char *next, const char **prec) {
    if (strcmp(arg, "--precision") || !next ||
        (strcmp(next, "fp32") && strcmp(next, "tf32") && strcmp(next, "bf16")))
        return 0;
    *prec = next;
    return 2;
}

// Sets a CUDA context's precision flags as train does for train.precision.
static inline void bench_set_precision(kctx *k, const char *prec) {
    k->bf16 = !strcmp(prec, "bf16");
    k->tf32 = !strcmp(prec, "tf32");
}

// Parses argv: integer options from opts, anything else through word(arg, next, ctx), which
// returns how many arguments it took (0: unknown). 0 on success; 2 with a message otherwise.
static inline int bench_parse(int argc, char **argv, const char *prog, const bench_int_opt *opts,
                              int nopts, int (*word)(const char *arg, const char *next, void *ctx),
                              void *ctx) {
    for (int i = 1; i < argc; i++) {
        int took = 0;
        for (int o = 0; o < nopts && !took; o++)
            if (!strcmp(argv[i], opts[o].name) && i + 1 < argc) {
                *opts[o].value = atoi(argv[i + 1]);
                took = 2;
            }
        if (!took && word) took = word(argv[i], i + 1 < argc ? argv[i + 1] : NULL, ctx);
        if (!took) {
            fprintf(stderr, "%s: unknown option '%s'\n", prog, argv[i]);
            return 2;
        }
        i += took - 1;
    }
    return 0;
}

#endif
