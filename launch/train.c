// train.c: `sbmt train`: configuration, data (generated when none is given), the training loop
// with progress and metrics, periodic dev evaluation, final test evaluation and the final model.
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/ckpt.h"
#include "io/config.h"
#include "io/dataset.h"
#include "io/listops.h"
#include "kernels/common.h"
#include "kernels/philox.h"
#include "launch/checkpoints.h"
#include "launch/cli.h"
#include "launch/run.h"
#include "model/optim.h"

#include <signal.h>
#include <unistd.h>

// Set by SIGTERM/SIGINT (Slurm preemption, Ctrl-C): the loop checkpoints and stops. The only
// state outside the run context, as a signal handler can reach nothing else.
static volatile sig_atomic_t stop_signal;
static void on_stop_signal(int sig) {
    stop_signal = sig;
    signal(sig, SIG_DFL);  // a second Ctrl-C stops at once
}

// After resuming at `step`, drops the metrics lines of steps past it (written by the run that
// was interrupted), so the file reads as one uninterrupted run. Rewritten atomically.
static int metrics_truncate(const char *path, int64_t step, char *err) {
    FILE *in = fopen(path, "r");
    if (!in) return 0;  // no metrics yet
    char tmp[4300];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *out = fopen(tmp, "w");
    if (!out) {
        fclose(in);
        return sbmt_errf(err, "%s: cannot write: %s", tmp, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, in) > 0) {
        const char *p = strstr(line, "\"step\":");
        if (p && atoll(p + 7) > step) continue;
        fputs(line, out);
    }
    free(line);
    fclose(in);
    if (fclose(out) || rename(tmp, path)) {
        remove(tmp);
        return sbmt_errf(err, "%s: cannot rewrite: %s", path, strerror(errno));
    }
    return 0;
}

// Everything one training run owns (the single mutable context of the program).
typedef struct {
    sbmt_config cfg;
    char out_dir[4096];
    const char *resume;     // NULL, "auto" or a checkpoint path
    ds_file ds;
    kctx k;
    model m;
    kbatch bt;
    int32_t *ids, *labels;  // [B, n], [B]
    int64_t *rows;          // [B]
    int64_t *perm;          // [N] training order of the current epoch
    int64_t perm_epoch;
    double *dens_acc;       // [L*H] densities summed since the last progress line
    FILE *metrics;
} train_run;

static int mkdir_p(const char *path, char *err) {
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) && errno != EEXIST)
                return sbmt_errf(err, "%s: cannot create directory: %s", buf, strerror(errno));
            *p = '/';
        }
    if (mkdir(buf, 0755) && errno != EEXIST)
        return sbmt_errf(err, "%s: cannot create directory: %s", buf, strerror(errno));
    return 0;
}

typedef struct {
    uint64_t key;
    int64_t idx;
} sort_key;

static int cmp_key(const void *a, const void *b) {
    const sort_key *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

// The permutation of epoch e: rows sorted by a Philox key of (seed, e, row), so the order is a
// pure function of the seed and the epoch (any rank, any resume point computes the same).
static void epoch_order(train_run *r, int64_t epoch) {
    int64_t N = r->ds.rows[SPLIT_TRAIN];
    sort_key *keys = xmalloc(sizeof(sort_key) * (size_t)N);
    for (int64_t i = 0; i < N; i++) {
        rng_stream s = rng_make(r->cfg.seed, RNG_DATA_ORDER, (uint32_t)epoch, 0, 0, (uint32_t)i);
        philox4x32 b = rng_block(s, 0);
        keys[i].key = ((uint64_t)b.v[0] << 32) | b.v[1];
        keys[i].idx = i;
    }
    qsort(keys, (size_t)N, sizeof(sort_key), cmp_key);
    for (int64_t i = 0; i < N; i++) r->perm[i] = keys[i].idx;
    free(keys);
    r->perm_epoch = epoch;
}

static void batch_rows(train_run *r, int step) {
    int64_t N = r->ds.rows[SPLIT_TRAIN], B = r->cfg.batch_size;
    for (int64_t i = 0; i < B; i++) {
        int64_t g = (int64_t)step * B + i;
        int64_t epoch = g / N;
        if (epoch != r->perm_epoch) epoch_order(r, epoch);
        r->rows[i] = r->perm[g % N];
    }
}

// Data file for a configuration without data.path: generated once, named by its parameters.
static int ensure_generated(train_run *r, char *path, size_t len, char *err) {
    const sbmt_config *c = &r->cfg;
    if (mkdir_p("data", err)) return -1;
    snprintf(path, len, "data/listops_%d_%d_%d_len%d-%d_n%d_seed%llu.h5", c->gen_train, c->gen_dev,
             c->gen_test, c->gen_min_len, c->gen_max_len, c->seq_len, (unsigned long long)c->seed);
    struct stat st;
    if (stat(path, &st) == 0) return 0;
    listops_params p = {c->gen_train, c->gen_dev, c->gen_test, c->gen_min_len, c->gen_max_len,
                        c->seq_len, c->seed};
    fprintf(stderr, "sbmt: generating ListOps (%d/%d/%d rows, lengths %d..%d) into %s\n",
            c->gen_train, c->gen_dev, c->gen_test, c->gen_min_len, c->gen_max_len, path);
    double t0 = sbmt_now();
    // The writer goes through a temporary name, so an interrupted run leaves no partial file.
    if (listops_generate(&p, path, 1, err)) return -1;
    fprintf(stderr, "sbmt: generated %s in %.1f s\n", path, sbmt_now() - t0);
    return 0;
}

static void fmt_eta(double s, char *buf, size_t len) {
    if (s < 0 || !isfinite(s)) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, len, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else
        snprintf(buf, len, "%ldm%02lds", t / 60, t % 60);
}

static int evaluate_and_log(train_run *r, int split, int64_t max_rows, int step, char *err) {
    eval_result res;
    double t0 = sbmt_now();
    if (run_evaluate(&r->m, &r->k, &r->ds, split, max_rows, &r->cfg, &res, err)) return -1;
    double dmean = 0.0;
    for (int i = 0; i < res.nd; i++) dmean += res.density[i] / res.nd;
    char dens[64] = "";
    if (res.nd) snprintf(dens, sizeof(dens), " | density %.4f", dmean);
    printf("%s step %d | loss %.4f | accuracy %.4f%s | %lld rows in %.1f s\n", split_names[split],
           step, res.loss, res.accuracy, dens, (long long)res.rows, sbmt_now() - t0);
    fflush(stdout);
    fprintf(r->metrics, "{\"split\":\"%s\",\"step\":%d,\"loss\":%.6f,\"accuracy\":%.6f,\"rows\":%lld",
            split_names[split], step, res.loss, res.accuracy, (long long)res.rows);
    if (res.nd) {
        fputc(',', r->metrics);
        run_json_density(r->metrics, res.density, r->cfg.layers, r->cfg.heads);
    }
    fputs("}\n", r->metrics);
    fflush(r->metrics);
    return 0;
}

static int train_main(train_run *r, char *err) {
    sbmt_config *c = &r->cfg;
    char gen_path[CFG_STR];
    if (!c->path[0]) {
        if (ensure_generated(r, gen_path, sizeof(gen_path), err)) return -1;
        snprintf(c->path, sizeof(c->path), "%s", gen_path);
    }
    if (ds_open(&r->ds, c->path, err)) return -1;
    if (run_resolve_config(c, &r->ds, err)) return -1;
    if (r->ds.rows[SPLIT_TRAIN] <= 0)
        return sbmt_errf(err, "%s: the dataset has no training rows", c->path);
    if (mkdir_p(r->out_dir, err)) return -1;

    model_dims dims = run_model_dims(c);
    const int B = c->batch_size, n = c->seq_len;
    const int spe = c->dual ? 2 : 1;  // sequences per example
    model_init(&r->m, &dims, B, c->seed);
    r->m.reg_batch = B * spe;
    batch_alloc(&r->bt, B * spe, n);
    r->ids = xmalloc(sizeof(int32_t) * (size_t)B * spe * n);
    r->labels = xmalloc(sizeof(int32_t) * (size_t)B);
    r->rows = xmalloc(sizeof(int64_t) * (size_t)B);
    r->perm = xmalloc(sizeof(int64_t) * (size_t)r->ds.rows[SPLIT_TRAIN]);
    r->perm_epoch = -1;
    printf("sbmt train: %s, %zu parameters, attention %s, %d threads, data %s (%lld train rows), "
           "out %s\n",
           c->task, r->m.nparams, c->attention, r->k.nthreads, c->path,
           (long long)r->ds.rows[SPLIT_TRAIN], r->out_dir);
    int64_t start = 0;
    if (r->resume) {
        char from[4200];
        double t0 = sbmt_now();
        if (ckpts_resume(r->resume, r->out_dir, &r->m, c->seed, &start, from, sizeof(from), err))
            return -1;
        if (start > c->steps)
            return sbmt_errf(err, "%s: checkpoint at step %lld is past train.steps = %d", from,
                             (long long)start, c->steps);
        if (from[0])
            printf("resumed from %s at step %lld (loaded in %.3f s)\n", from, (long long)start,
                   sbmt_now() - t0);
        else
            printf("no checkpoint in %s: starting from step 0\n", r->out_dir);
    }
    char mpath[4200];
    snprintf(mpath, sizeof(mpath), "%s/metrics.jsonl", r->out_dir);
    if (r->resume && metrics_truncate(mpath, start, err)) return -1;
    r->metrics = fopen(mpath, "a");
    if (!r->metrics) return sbmt_errf(err, "%s: cannot open for writing: %s", mpath, strerror(errno));
    char *config_text = config_to_string(c);
    fflush(stdout);

    onecycle sched = {c->lr, c->steps, c->warmup, c->cycle_momentum, c->beta1};
    double t_start = sbmt_now(), t_log = t_start, loss_acc = 0.0, flops_acc = 0.0;
    int correct_acc = 0, rows_acc = 0, steps_acc = 0;
    const int LH = c->layers * c->heads;
    double *dens_acc = r->dens_acc = xcalloc((size_t)LH, sizeof(double));
    signal(SIGTERM, on_stop_signal);
    signal(SIGINT, on_stop_signal);
    // A file-size limit must fail the write (EFBIG, reported) rather than kill the process.
    signal(SIGXFSZ, SIG_IGN);
    int rc = 0;
    for (int step = (int)start; step < c->steps; step++) {
        batch_rows(r, step);
        if (run_load_batch(&r->ds, SPLIT_TRAIN, r->rows, B, c, r->ids, r->labels, &r->bt, err)) {
            rc = -1;
            break;
        }
        k_zero(&r->k, r->m.grads, r->m.nparams);
        int correct = 0;
        double loss = model_forward(&r->m, &r->k, &r->bt, r->labels, 1, c->seed, (uint32_t)step,
                                    &correct);
        model_backward(&r->m, &r->k, &r->bt, r->labels, 1, c->seed, (uint32_t)step,
                       1.0f / (float)B);
        if (!isfinite(loss)) {
            rc = sbmt_errf(err, "step %d: loss is %g; lower train.lr or set train.grad_clip",
                           step + 1, loss);
            break;
        }
        optim_clip(&r->k, &r->m, c->grad_clip);
        float lr, beta1;
        onecycle_at(&sched, step, &lr, &beta1);
        optim_adamw(&r->k, &r->m, step + 1, lr, beta1, c->beta2, c->adam_eps, c->weight_decay);
        loss_acc += loss + r->m.reg_loss * B;
        flops_acc += model_step_flops(&r->m, &r->bt);
        for (int i = 0; i < LH; i++) dens_acc[i] += r->m.density[i];
        correct_acc += correct;
        rows_acc += B;
        steps_acc++;
        int done = step + 1;
        if (done % c->log_every == 0 || done == c->steps) {
            double now = sbmt_now();
            double tps = (double)steps_acc * B * spe * n / (now - t_log);
            double eta = (now - t_start) / (done - start) * (c->steps - done);
            char etab[32];
            fmt_eta(eta, etab, sizeof(etab));
            char dens[64] = "";
            double dmean = 0.0;
            for (int i = 0; i < LH; i++) dmean += dens_acc[i] / steps_acc / LH;
            if (r->m.dim.sbm) snprintf(dens, sizeof(dens), " | density %.4f", dmean);
            printf("step %d/%d | loss %.4f | acc %.3f%s | lr %.3e | %.0f tok/s | ETA %s\n", done,
                   c->steps, loss_acc / rows_acc, (double)correct_acc / rows_acc, dens, lr, tps,
                   etab);
            fflush(stdout);
            fprintf(r->metrics,
                    "{\"split\":\"train\",\"step\":%d,\"loss\":%.6f,\"accuracy\":%.6f,\"lr\":%.6e,"
                    "\"tokens_per_s\":%.1f,\"model_gflop_per_s\":%.3f,\"elapsed_s\":%.3f",
                    done, loss_acc / rows_acc, (double)correct_acc / rows_acc, lr, tps,
                    1e-9 * flops_acc / (now - t_log), now - t_start);
            if (r->m.dim.sbm) {
                for (int i = 0; i < LH; i++) dens_acc[i] /= steps_acc;
                fputc(',', r->metrics);
                run_json_density(r->metrics, dens_acc, c->layers, c->heads);
            }
            fputs("}\n", r->metrics);
            fflush(r->metrics);
            for (int i = 0; i < LH; i++) dens_acc[i] = 0.0;
            loss_acc = flops_acc = 0.0;
            correct_acc = rows_acc = steps_acc = 0;
            t_log = sbmt_now();
        }
        if (c->eval_every > 0 && done % c->eval_every == 0 && done != c->steps &&
            r->ds.rows[SPLIT_DEV] > 0) {
            int64_t max_rows = c->eval_batches > 0 ? (int64_t)c->eval_batches * B : 0;
            if (evaluate_and_log(r, SPLIT_DEV, max_rows, done, err)) {
                rc = -1;
                break;
            }
            t_log = sbmt_now();
        }
        if (c->checkpoint_every > 0 && done % c->checkpoint_every == 0 && done != c->steps) {
            double t0 = sbmt_now();
            if (ckpts_save(r->out_dir, &r->m, done, c->seed, config_text, c->keep_checkpoints,
                           err)) {
                rc = -1;
                break;
            }
            if (done % c->log_every == 0)
                printf("checkpoint step %d written in %.3f s\n", done, sbmt_now() - t0);
            t_log = sbmt_now();
        }
        if (stop_signal && done != c->steps) {
            if (c->checkpoint_every == 0 || done % c->checkpoint_every != 0)
                rc = ckpts_save(r->out_dir, &r->m, done, c->seed, config_text,
                                c->keep_checkpoints, err);
            if (rc == 0) {
                printf("stopped by signal %d at step %d; resume with --resume auto\n",
                       (int)stop_signal, done);
                rc = sbmt_errf(err, "interrupted at step %d (checkpoint written)", done);
            }
            break;
        }
    }
    if (rc) {
        free(config_text);
        return rc;
    }
    if (r->ds.rows[SPLIT_DEV] > 0 && evaluate_and_log(r, SPLIT_DEV, 0, c->steps, err)) return -1;
    if (r->ds.rows[SPLIT_TEST] > 0 && evaluate_and_log(r, SPLIT_TEST, 0, c->steps, err)) return -1;

    // The end-of-run checkpoint, and final.h5 as a second name for it (a hard link, or a copy
    // where the filesystem has none).
    char fpath[4200], cpath[4200], tpath[4300];
    snprintf(fpath, sizeof(fpath), "%s/final.h5", r->out_dir);
    ckpts_path(cpath, sizeof(cpath), r->out_dir, c->steps);
    double t_ck = sbmt_now();
    rc = ckpts_save(r->out_dir, &r->m, c->steps, c->seed, config_text, c->keep_checkpoints, err);
    t_ck = sbmt_now() - t_ck;
    if (rc == 0) {
        snprintf(tpath, sizeof(tpath), "%s.tmp", fpath);
        unlink(tpath);
        if (link(cpath, tpath) == 0 && rename(tpath, fpath) == 0)
            rc = 0;
        else
            rc = ckpt_save(fpath, &r->m.table, r->m.params, r->m.adam_m, r->m.adam_v, c->steps,
                           c->seed, config_text, err);
    }
    free(config_text);
    if (rc) return -1;
    printf("wrote %s (checkpoint written in %.3f s; %.1f s total)\n", fpath, t_ck,
           sbmt_now() - t_start);
    return 0;
}

static void train_run_free(train_run *r) {
    if (r->metrics) fclose(r->metrics);
    if (r->m.params) model_free(&r->m);
    if (r->bt.len) batch_free(&r->bt);
    free(r->ids);
    free(r->labels);
    free(r->rows);
    free(r->perm);
    free(r->dens_acc);
    if (r->ds.file > 0) ds_close(&r->ds);
}

int cli_train(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return cli_help("train");
    static train_run run;  // large and zero-initialised; the one run context of the process
    train_run *r = &run;
    char err[SBMT_ERR_LEN];
    config_defaults(&r->cfg);
    const char *config_path = NULL, *data = NULL, *out = NULL;
    int threads = 0;
    // Pass 1: the config file; pass 2: overrides, so --set wins whatever the order.
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (!strcmp(a, "--config") && has_val) config_path = argv[++i];
        else if (!strcmp(a, "--data") && has_val) data = argv[++i];
        else if (!strcmp(a, "--out") && has_val) out = argv[++i];
        else if (!strcmp(a, "--resume") && has_val) r->resume = argv[++i];
        else if (!strcmp(a, "--threads") && has_val) {
            int64_t v;
            if (cli_parse_int("sbmt train", a, argv[++i], 1, 1024, &v)) return 1;
            threads = (int)v;
        } else if (!strcmp(a, "--set") && has_val) i++;
        else {
            fprintf(stderr, "sbmt train: unknown or incomplete option '%s' (see sbmt help train)\n", a);
            return 1;
        }
    }
    if (config_path && config_load_file(&r->cfg, config_path, err)) goto fail;
    // Every option takes one value (checked above), so options sit at even indices.
    for (int i = 0; i + 1 < argc; i += 2)
        if (!strcmp(argv[i], "--set") && config_set(&r->cfg, argv[i + 1], err)) goto fail;
    if (data) {
        if (strlen(data) >= sizeof(r->cfg.path)) {
            sbmt_errf(err, "--data: path longer than %zu characters", sizeof(r->cfg.path) - 1);
            goto fail;
        }
        strcpy(r->cfg.path, data);
    }
    if (config_validate(&r->cfg, err)) goto fail;
    if (out)
        snprintf(r->out_dir, sizeof(r->out_dir), "%.4000s", out);
    else
        snprintf(r->out_dir, sizeof(r->out_dir), "runs/%.31s", r->cfg.task);
    kctx_init(&r->k, KB_CPU, threads);
    if (train_main(r, err)) goto fail;
    train_run_free(r);
    return 0;
fail:
    fprintf(stderr, "sbmt train: error: %s\n", err);
    train_run_free(r);
    return 1;
}
