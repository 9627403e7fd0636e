// checkpoints.c: checkpoint files of a run directory: naming, listing, pruning and resuming.
#define _POSIX_C_SOURCE 200809L
#include "launch/checkpoints.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/ckpt.h"
#include "io/config.h"
#include "kernels/common.h"
#include "launch/run.h"

void ckpts_path(char *out, size_t len, const char *dir, int64_t step) {
    snprintf(out, len, "%s/ckpt_%08lld.h5", dir, (long long)step);
}

static int cmp_desc(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

int ckpts_list(const char *dir, int64_t *steps, int max) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long long s;
        char tail[8];
        // Exactly ckpt_<digits>.h5: "%7s" catches ".h5.tmp" and other suffixes.
        if (sscanf(e->d_name, "ckpt_%lld%7s", &s, tail) == 2 && strcmp(tail, ".h5") == 0 &&
            s >= 0 && n < max)
            steps[n++] = s;
    }
    closedir(d);
    qsort(steps, (size_t)n, sizeof(int64_t), cmp_desc);
    return n;
}

int ckpts_save(const char *dir, const param_table *t, const float *params, const float *adam_m,
               const float *adam_v, int64_t step, uint64_t seed, const char *config_text,
               int keep, char *err) {
    char path[4200];
    ckpts_path(path, sizeof(path), dir, step);
    if (ckpt_save(path, t, params, adam_m, adam_v, step, seed, config_text, err)) return -1;
    enum { MAXCK = 4096 };
    int64_t *steps = xmalloc(sizeof(int64_t) * MAXCK);
    int n = ckpts_list(dir, steps, MAXCK);
    for (int i = keep; i < n; i++) {
        char old[4200];
        ckpts_path(old, sizeof(old), dir, steps[i]);
        if (unlink(old) && errno != ENOENT)
            fprintf(stderr, "sbmt: warning: cannot remove old checkpoint %s: %s\n", old,
                    strerror(errno));
    }
    free(steps);
    return 0;
}

// Names the first model setting that differs between two configurations, or returns NULL.
static const char *model_mismatch(const model_dims *a, const model_dims *b) {
    if (a->sbm != b->sbm) return "model.attention";
    if (a->dual != b->dual) return "data.dual";
    if (a->d_model != b->d_model) return "model.d_model";
    if (a->d_ff != b->d_ff) return "model.d_ff";
    if (a->heads != b->heads) return "model.heads";
    if (a->head_dim != b->head_dim) return "model.head_dim";
    if (a->layers != b->layers) return "model.layers";
    if (a->sbm && a->clusters != b->clusters) return "model.clusters";
    if (a->vocab != b->vocab) return "data.vocab_size";
    if (a->seq_len != b->seq_len) return "data.seq_len";
    if (a->classes != b->classes) return "data.num_classes";
    return NULL;
}

// 0: loaded; -1: unreadable or damaged file; -2: a checkpoint of another model.
static int load_one(const char *path, model *m, uint64_t seed, int64_t *step, int verbose,
                    char *err) {
    uint64_t ck_seed;
    char *text = NULL;
    if (ckpt_read_meta(path, step, &ck_seed, &text, err)) return -1;
    sbmt_config ck;
    config_defaults(&ck);
    int rc = config_load_string(&ck, text, path, err);
    free(text);
    if (rc) return -1;
    model_dims cd = run_model_dims(&ck);
    const char *key = model_mismatch(&cd, &m->dim);
    if (key)
        return sbmt_errf(err, "%s: a checkpoint of a different model (%s differs); use another "
                              "--out directory or the matching configuration", path, key) - 1;
    // Whole tensors into scratch buffers, then this rank's slices: a checkpoint of any layout
    // loads on any other, and a failed read leaves the model untouched.
    size_t nf = m->full.total;
    float *full = xmalloc(sizeof(float) * nf * 3);
    int lrc = ckpt_load(path, &m->full, full, full + nf, full + 2 * nf, err);
    if (lrc == 0) {
        const size_t np = m->nparams;
        float *local = xmalloc(sizeof(float) * np * 3);
        for (int i = 0; i < 3; i++) model_from_full(m, full + i * nf, local + i * np);
        model_set_state(m, local, local + np, local + 2 * np);
        free(local);
    }
    free(full);
    if (lrc) return -1;
    if (ck_seed != seed && verbose)
        fprintf(stderr,
                "sbmt: warning: %s was trained with train.seed = %llu, this run uses %llu: data "
                "order, dropout and graphs will not continue that run's streams\n",
                path, (unsigned long long)ck_seed, (unsigned long long)seed);
    return 0;
}

int ckpts_resume(const char *what, const char *dir, model *m, uint64_t seed, int64_t *step,
                 char *loaded_from, size_t len, int verbose, char *err) {
    *step = 0;
    if (loaded_from && len) loaded_from[0] = '\0';
    if (strcmp(what, "auto") != 0) {
        if (load_one(what, m, seed, step, verbose, err)) return -1;
        if (loaded_from) snprintf(loaded_from, len, "%s", what);
        return 0;
    }
    enum { MAXCK = 4096 };
    int64_t *steps = xmalloc(sizeof(int64_t) * MAXCK);
    int n = ckpts_list(dir, steps, MAXCK);
    for (int i = 0; i < n; i++) {
        char path[4200], e2[SBMT_ERR_LEN];
        ckpts_path(path, sizeof(path), dir, steps[i]);
        int rc = load_one(path, m, seed, step, verbose, e2);
        if (rc == 0) {
            if (loaded_from) snprintf(loaded_from, len, "%s", path);
            free(steps);
            return 0;
        }
        if (rc == -2) {  // never train over another model's checkpoints
            free(steps);
            return sbmt_errf(err, "%s", e2);
        }
        if (verbose) fprintf(stderr, "sbmt: warning: skipping checkpoint: %s\n", e2);
    }
    free(steps);
    // Nothing loadable: a fresh start (failed loads never touched the model).
    *step = 0;
    return 0;
}
