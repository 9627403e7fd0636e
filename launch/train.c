// train.c: `sbmt train`: configuration, data (generated when none is given), the training loop
// with progress and metrics, periodic dev evaluation, final test evaluation and the final model.
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <omp.h>

#include "dist/dist.h"
#include "io/ckpt.h"
#include "io/config.h"
#include "io/dataset.h"
#include "io/listops.h"
#include "io/report.h"
#include "io/tbevents.h"
#include "kernels/backend.h"
#include "kernels/common.h"
#include "kernels/philox.h"
#include "launch/checkpoints.h"
#include "launch/cli.h"
#include "launch/run.h"
#include "launch/rundir.h"
#include "model/optim.h"

#include <signal.h>
#include <unistd.h>

// Set by SIGTERM/SIGINT/SIGUSR1 (Slurm preemption or time limit, Ctrl-C): at the next step
// boundary all ranks agree on it, checkpoint and stop. The only
// state outside the run context, as a signal handler can reach nothing else.
static volatile sig_atomic_t stop_signal;
static void on_stop_signal(int sig) {
    stop_signal = sig;
    // A second Ctrl-C stops at once; a repeated SIGTERM/SIGUSR1 (scancel --full, a launcher
    // passing the signal on) must not kill a rank before it has checkpointed.
    if (sig == SIGINT) signal(sig, SIG_DFL);
}

// After resuming at `step`, drops the metrics lines of steps past it (written by the run that
// was interrupted), so the file reads as one uninterrupted run, and a last line a killed
// process left without its newline (appending after it would fuse two records). Rewritten
// atomically.
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
    ssize_t len;
    while ((len = getline(&line, &cap, in)) > 0) {
        if (line[len - 1] != '\n') continue;  // torn: only the last line can be
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
    int overwrite;          // --overwrite: a fresh run may replace an earlier one in out_dir
    dist_ctx dist;          // world = dp x tp ranks (a world of one outside mpirun/srun)
    dist_ctx ddist;         // CUDA with world > 1: the same groups over NCCL (device buffers)
    dist_ctx *gd;           // collectives on tensors: &ddist when it is open, else &dist
    int buckets;            // gradient buckets overlap backward (dist.grad_buckets, see main)
    ds_file ds;
    kctx k;
    model m;
    kbatch bt;
    int B, Bl, mb, spe;     // global batch, per-rank batch, micro-batch (examples), seqs/example
    int32_t *ids, *labels;  // [Bl * spe, n], [Bl]: this rank's examples of the step
    int64_t *myrows;        // [Bl] their rows (key every random draw of an example)
    int64_t *rows;          // [B] the step's rows (the global batch, the same on every rank)
    int32_t *read_ids, *read_labels;  // [Bl * spe, n], [Bl]: the rows this rank read (balance)
    int32_t *all_ids, *all_labels;    // [B * spe, n], [B]: the dp group's reads (balance)
    int64_t *perm;          // [N] training order of the current epoch
    int64_t perm_epoch;
    double *dens_acc;       // [L*H] densities summed since the last progress line
    int64_t *edges_log;     // [L*H] sampled edges (global batch) since the last progress line
    double *stats;          // [3 + L*H] per-step sums reduced over the world (see train_step)
    int64_t *edges_acc;     // [L*H] edges of this rank's micro-batches
    float *full;            // [3 * full.total] rank 0: whole tensors for a checkpoint
    float *gathered;        // [tp * nparams] tp root: the tp group's slices
    float *state;           // [3 * nparams] host copy of parameters and moments (checkpoints)
    dist_req *reqs;         // [2 (L + 2)] gradient buckets in flight
    int nreqs;
    double t_grad_sync;     // time backward's end waited for the gradient all-reduce
    FILE *metrics;
    tb_writer tb;           // rank 0, train.tensorboard: the same scalars as metrics.jsonl
    char (*tb_tags)[40];    // [L*H] "density/layer<i>/head<j>"
    tb_scalar *tb_vals;     // [8 + L*H] one event's scalars
    FILE *trace;            // SBMT_TRACE_ROWS: rows this rank read (data-sharding test)
    char *config_text;
    int in_main;            // errors from here on were agreed on by dist_check
    int interrupted;        // stopped by a signal, checkpoint written
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

// Hands one event to TensorBoard. A failed write (disk full) must not stop training: it is
// reported once and the event stream ends there; metrics.jsonl still has everything.
static void tb_log(train_run *r, int step, int n) {
    char err[SBMT_ERR_LEN];
    if (!r->tb.f || tb_write(&r->tb, step, r->tb_vals, n, err) == 0) return;
    fprintf(stderr, "sbmt train: warning: %s; no more TensorBoard events this run\n", err);
    tb_close(&r->tb);
}

static int evaluate_and_log(train_run *r, int split, int64_t max_rows, int step, char *err) {
    eval_result res;
    double t0 = sbmt_now();
    if (run_evaluate(&r->m, &r->k, &r->dist, &r->ds, split, max_rows, &r->cfg, &res, err))
        return -1;
    if (!dist_is_root(&r->dist)) return 0;
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
    char tags[3][32];
    const char *what[3] = {"loss", "accuracy", "density_mean"};
    double val[3] = {res.loss, res.accuracy, dmean};
    for (int i = 0; i < 3; i++) {
        snprintf(tags[i], sizeof(tags[i]), "%s/%s", split_names[split], what[i]);
        r->tb_vals[i] = (tb_scalar){tags[i], val[i]};
    }
    tb_log(r, step, res.nd ? 3 : 2);
    // The report page follows the evaluations. A failure (a damaged line an older run left in
    // metrics.jsonl, a full disk) is reported and training goes on: the page is a view of the
    // metrics, which are intact.
    char mpath[4200], spath[4200], e2[SBMT_ERR_LEN];
    snprintf(mpath, sizeof(mpath), "%s/metrics.jsonl", r->out_dir);
    snprintf(spath, sizeof(spath), "%s/report.svg", r->out_dir);
    if (report_svg_write(mpath, spath, e2))
        fprintf(stderr, "sbmt train: warning: %s/report.svg not refreshed: %s\n", r->out_dir, e2);
    return 0;
}

// ---- gradients: dp all-reduce in buckets while backward runs ----

// Gradients are sums over the global batch (loss scale 1 / B on every rank), so the dp
// reduction is a sum. phi (the last range of each SBM layer) is replicated over tp but each tp
// rank computes its part from its own heads: its sum runs over the whole world.
static void bucket_split(const train_run *r, int b, size_t *b0, size_t *split, size_t *b1) {
    model_bucket_range(&r->m, b, b0, b1);
    *split = *b1;
    if (r->m.dim.sbm && b >= 1 && b <= r->m.dim.layers) *split = r->m.lo[b - 1].p1_w;
}

static void on_bucket(void *ctx, int b) {
    train_run *r = ctx;
    size_t b0, split, b1;
    bucket_split(r, b, &b0, &split, &b1);
    float *G = r->m.grads;
    if (r->dist.dp > 1 && split > b0)
        dist_iallreduce_sum(r->gd, DIST_DP, G + b0, split - b0, &r->reqs[r->nreqs++]);
    if (r->dist.world > 1 && b1 > split)
        dist_iallreduce_sum(r->gd, DIST_WORLD, G + split, b1 - split, &r->reqs[r->nreqs++]);
    // Open MPI progresses requests only inside MPI calls: poke the earlier ones.
    for (int i = 0; i < r->nreqs; i++) dist_test(&r->reqs[i]);
}

// After backward: waits for the buckets, or (grad_buckets = false) reduces everything now in
// one all-reduce over dp, the tp sums of phi first.
static void finish_grads(train_run *r) {
    double t0 = sbmt_now();
    if (r->buckets) {
        for (int i = 0; i < r->nreqs; i++) dist_wait(&r->reqs[i]);
        r->nreqs = 0;
        r->t_grad_sync += sbmt_now() - t0;
        return;
    }
    if (r->m.dim.sbm && r->dist.tp > 1)
        for (int b = 1; b <= r->m.dim.layers; b++) {
            size_t b0, split, b1;
            bucket_split(r, b, &b0, &split, &b1);
            dist_allreduce(r->gd, DIST_TP, r->m.grads + split, b1 - split, DIST_F32, DIST_SUM);
        }
    dist_allreduce(r->gd, DIST_DP, r->m.grads, r->m.nparams, DIST_F32, DIST_SUM);
    r->t_grad_sync += sbmt_now() - t0;
}

// Global gradient norm counting each logical parameter once: slices of split tensors add up
// over tp, replicated tensors (identical on every tp rank after the reductions) count on tp
// rank 0 only; dp replicas are identical. Scales the gradients when clip > 0 and it is exceeded.
static double clip_grads(train_run *r, float clip) {
    double ss = 0.0;
    if (r->dist.tp == 1) {
        ss = k_sumsq(&r->k, r->m.grads, r->m.nparams);
    } else {
        for (int i = 0; i < r->m.table.n; i++) {
            const param_entry *e = &r->m.table.e[i];
            if (e->shard >= 0 || r->dist.tp_rank == 0)
                ss += k_sumsq(&r->k, r->m.grads + e->offset, e->numel);
        }
        dist_allreduce(&r->dist, DIST_TP, &ss, 1, DIST_F64, DIST_SUM);
    }
    double norm = sqrt(ss);
    if (clip > 0.0f && norm > clip)
        k_scale(&r->k, r->m.grads, r->m.nparams, (float)(clip / (norm + 1e-6)));
    return norm;
}

// ---- checkpoints on any layout ----

// The dp replicas of a tensor slice must be bit-identical (and the tp copies of replicated
// tensors): compared by checksum at every save, a divergence is an error, not a silent fork.
static int check_replicas(train_run *r, int step, char *err) {
    const model *m = &r->m;
    const size_t np = m->nparams;
    const float *params = r->state, *adam_m = r->state + np, *adam_v = r->state + 2 * np;
    uint64_t a = dist_checksum(params, sizeof(float) * np);
    a ^= dist_checksum(adam_m, sizeof(float) * np) * 31;
    a ^= dist_checksum(adam_v, sizeof(float) * np) * 131;
    uint64_t b = 0;
    for (int i = 0; i < m->table.n; i++)
        if (m->table.e[i].shard < 0)
            b = b * 1099511628211ULL ^
                dist_checksum(params + m->table.e[i].offset, sizeof(float) * m->table.e[i].numel);
    // [0] this rank's slices and moments (equal across dp), [1] its replicated tensors (equal
    // across tp too): equal when their minimum and maximum over the group are.
    int64_t mn[2] = {(int64_t)a, (int64_t)b}, mx[2] = {(int64_t)a, (int64_t)b};
    dist_allreduce(&r->dist, DIST_DP, mn, 1, DIST_I64, DIST_MIN);
    dist_allreduce(&r->dist, DIST_DP, mx, 1, DIST_I64, DIST_MAX);
    dist_allreduce(&r->dist, DIST_TP, mn + 1, 1, DIST_I64, DIST_MIN);
    dist_allreduce(&r->dist, DIST_TP, mx + 1, 1, DIST_I64, DIST_MAX);
    int bad = (mn[0] != mx[0]) | ((mn[1] != mx[1]) << 1);
    dist_agree(&r->dist, &bad, 1);
    if (!bad) return 0;
    return sbmt_errf(err, "step %d: the model replicas diverged (%s differ by checksum); no "
                          "checkpoint written, resume from the previous one",
                     step, bad & 1 ? "dp replicas" : "the tp copies of replicated tensors");
}

// Collective: gathers the tp slices into whole tensors on rank 0, which writes
// DIR/ckpt_<step>.h5 under the commit protocol; other ranks never write into the run directory.
static int save_checkpoint(train_run *r, int step, char *err) {
    const size_t np = r->m.nparams;
    model_get_state(&r->m, r->state, r->state + np, r->state + 2 * np);
    // Test hook: one rank's copy drifts by one ulp, as a silent fork would (test_dist_train).
    const char *perturb = getenv("SBMT_TEST_PERTURB_RANK");
    if (perturb && atoi(perturb) == r->dist.rank) r->state[0] = nextafterf(r->state[0], INFINITY);
    int rc = check_replicas(r, step, err);
    if (rc == 0 && r->dist.dp_rank == 0) {
        const size_t nf = r->m.full.total;
        for (int i = 0; i < 3; i++) {
            dist_gather(&r->dist, DIST_TP, r->state + i * np, r->gathered, np, DIST_F32, 0);
            if (dist_is_root(&r->dist)) model_to_full(&r->m, r->gathered, r->full + i * nf);
        }
        if (dist_is_root(&r->dist))
            rc = ckpts_save(r->out_dir, &r->m.full, r->full, r->full + nf, r->full + 2 * nf, step,
                            r->cfg.seed, r->config_text, r->cfg.keep_checkpoints, err);
    }
    return dist_check(&r->dist, rc, err);
}

// ---- one training step ----

// Forward and backward of this rank's examples in micro-batches, the gradient all-reduce, and
// the step's statistics summed over the world into r->stats: [0] cross-entropy sum, [1]
// correct, [2] model FLOPs, [3..] sampled edges per (layer, head).
static void train_step(train_run *r, int step) {
    const sbmt_config *c = &r->cfg;
    const int LH = c->layers * c->heads, tp0 = r->dist.tp_rank == 0;
    double ce = 0.0, flops = 0.0;
    int correct = 0;
    memset(r->edges_acc, 0, sizeof(int64_t) * (size_t)LH);
    k_zero(&r->k, r->m.grads, r->m.nparams);
    for (int first = 0; first < r->Bl; first += r->mb) {
        int count = r->Bl - first < r->mb ? r->Bl - first : r->mb;
        const int last = first + count >= r->Bl;
        run_pack_rows(r->ids, r->Bl, first, count, r->myrows, c, &r->bt);
        r->m.grad_ready = last && r->buckets && r->dist.world > 1 ? on_bucket : NULL;
        ce += model_forward(&r->m, &r->k, &r->bt, r->labels + first, 1, c->seed, (uint32_t)step,
                            &correct);
        model_backward(&r->m, &r->k, &r->bt, r->labels + first, 1, c->seed, (uint32_t)step,
                       1.0f / (float)r->B);
        for (int i = 0; i < LH; i++) r->edges_acc[i] += r->m.edges[i];
        flops += model_step_flops(&r->m, &r->bt);
    }
    r->m.grad_ready = NULL;
    finish_grads(r);
    // tp ranks compute the same logits: their loss and hits count once.
    r->stats[0] = tp0 ? ce : 0.0;
    r->stats[1] = tp0 ? correct : 0.0;
    r->stats[2] = flops;
    for (int i = 0; i < LH; i++) r->stats[3 + i] = (double)r->edges_acc[i];
    dist_allreduce(&r->dist, DIST_WORLD, r->stats, (size_t)LH + 3, DIST_F64, DIST_SUM);
    if (r->m.dim.sbm) {
        double nb = (double)r->B * r->spe * c->seq_len * c->seq_len;
        for (int i = 0; i < LH; i++) r->edges_acc[i] = (int64_t)r->stats[3 + i];
        r->m.reg_loss = model_sbm_stats(&r->m, r->edges_acc, nb, r->m.density);
    }
}

// The rows a step reads on this rank, appended to the SBMT_TRACE_ROWS file (tests).
static void trace_rows(train_run *r, int step) {
    if (!r->trace || r->dist.tp_rank != 0) return;
    const int64_t *mine = r->rows + (size_t)r->dist.dp_rank * r->Bl;
    for (int i = 0; i < r->Bl; i++) fprintf(r->trace, "%d %lld\n", step, (long long)mine[i]);
    fflush(r->trace);
}

// Sequence length of example i of a buffer of `total` examples laid out by run_read_rows
// (last non-padding position + 1; both documents of a dual example).
static int64_t example_tokens(const int32_t *ids, int total, int i, const sbmt_config *c) {
    int64_t t = 0;
    for (int doc = 0; doc < (c->dual ? 2 : 1); doc++) {
        const int32_t *row = ids + ((size_t)doc * total + i) * c->seq_len;
        int last = 0;
        for (int p = 0; p < c->seq_len; p++)
            if (row[p] != 0) last = p + 1;
        t += last;
    }
    return t;
}

typedef struct {
    int64_t tokens;
    int idx;
} example_cost;

static int cmp_cost(const void *a, const void *b) {
    const example_cost *x = a, *y = b;
    if (x->tokens != y->tokens) return x->tokens > y->tokens ? -1 : 1;
    return x->idx - y->idx;
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

// Every dp rank read its contiguous share of the global batch; packed sequences make the work
// follow their lengths, so the ranks swap examples until each computes about the same number
// of tokens: the dp group's reads are gathered, sorted by length and dealt out in snake order
// (equal counts per rank). A deterministic function of the batch, so every layout computes the
// same step (examples are keyed by their rows, not by where they run). tp rank 0 only; its tp
// group gets the result by broadcast.
static void balance_examples(train_run *r) {
    const sbmt_config *c = &r->cfg;
    const int dp = r->dist.dp, Bl = r->Bl, B = r->B, n = c->seq_len, docs = c->dual ? 2 : 1;
    const size_t per = (size_t)Bl * docs * n;
    dist_allgather(&r->dist, DIST_DP, r->read_ids, r->all_ids, per, DIST_I32);
    dist_allgather(&r->dist, DIST_DP, r->read_labels, r->all_labels, (size_t)Bl, DIST_I32);
    example_cost *ec = xmalloc(sizeof(example_cost) * (size_t)B);
    for (int g = 0; g < B; g++) {
        ec[g].tokens = example_tokens(r->all_ids + (size_t)(g / Bl) * per, Bl, g % Bl, c);
        ec[g].idx = g;
    }
    qsort(ec, (size_t)B, sizeof(example_cost), cmp_cost);
    int *mine = xmalloc(sizeof(int) * (size_t)Bl), k = 0;
    for (int i = 0; i < B; i++) {
        int round = i / dp, pos = i % dp;
        int owner = round % 2 ? dp - 1 - pos : pos;
        if (owner == r->dist.dp_rank) mine[k++] = ec[i].idx;
    }
    CHECK(k == Bl);
    qsort(mine, (size_t)Bl, sizeof(int), cmp_int);
    for (int i = 0; i < Bl; i++) {
        int g = mine[i], src = g / Bl, j = g % Bl;
        for (int doc = 0; doc < docs; doc++)
            memcpy(r->ids + ((size_t)doc * Bl + i) * n,
                   r->all_ids + (size_t)src * per + ((size_t)doc * Bl + j) * n,
                   sizeof(int32_t) * (size_t)n);
        r->labels[i] = r->all_labels[g];
        r->myrows[i] = r->rows[g];
    }
    free(mine);
    free(ec);
}

// Reads this rank's rows of the step (tp rank 0; hyperslabs of its share of the global batch),
// agrees on read errors, rebalances over dp, and shares the examples with the tp group.
static int load_step(train_run *r, int step, char *err) {
    const sbmt_config *c = &r->cfg;
    dist_ctx *D = &r->dist;
    const int balance = c->balance && D->dp > 1;
    const int64_t *share = r->rows + (size_t)D->dp_rank * r->Bl;
    int rc = 0;
    if (D->tp_rank == 0)
        rc = run_read_rows(&r->ds, SPLIT_TRAIN, share, r->Bl, c, balance ? r->read_ids : r->ids,
                           balance ? r->read_labels : r->labels, err);
    if (dist_check(D, rc, err)) return -1;
    trace_rows(r, step);
    if (balance && D->tp_rank == 0) {
        balance_examples(r);
    } else if (!balance) {
        memcpy(r->myrows, share, sizeof(int64_t) * (size_t)r->Bl);
    }
    dist_bcast(D, DIST_TP, r->ids, (size_t)r->Bl * r->spe * c->seq_len, DIST_I32, 0);
    dist_bcast(D, DIST_TP, r->labels, (size_t)r->Bl, DIST_I32, 0);
    dist_bcast(D, DIST_TP, r->myrows, (size_t)r->Bl, DIST_I64, 0);
    return 0;
}

// A layout that cannot work is refused before any work, naming the key (all ranks agree,
// as every rank computes the same).
static int check_layout(train_run *r, char *err) {
    const sbmt_config *c = &r->cfg;
    const dist_ctx *d = &r->dist;
    if (c->heads % c->tp)
        return sbmt_errf(err, "dist.tp = %d does not divide model.heads = %d", c->tp, c->heads);
    if (c->batch_size % d->dp)
        return sbmt_errf(err, "train.batch_size = %d does not split over dp = %d ranks (world %d "
                              "/ dist.tp %d); use a multiple of %d",
                         c->batch_size, d->dp, d->world, d->tp, d->dp);
    if (c->batch_size / d->dp < 1)
        return sbmt_errf(err, "train.batch_size = %d gives 0 examples per dp rank", c->batch_size);
    if (c->micro_batch > c->batch_size / d->dp)
        return sbmt_errf(err, "train.micro_batch = %d is larger than the per-rank batch %d "
                              "(train.batch_size / dp)", c->micro_batch, c->batch_size / d->dp);
    return 0;
}

static int train_main(train_run *r, char *err) {
    sbmt_config *c = &r->cfg;
    dist_ctx *D = &r->dist;
    const int root = dist_is_root(D);
    char gen_path[CFG_STR];
    if (dist_check(D, dist_layout(D, c->tp, "dist.tp", err), err)) return -1;
    if (r->k.backend == KB_CUDA && D->world > 1) {
        // Gradients and tp activations live on the GPU: their collectives go through NCCL
        // communicators of the layout's groups (so only once the layout is set), on the compute
        // stream; everything on the host stays on MPI.
        char e2[SBMT_ERR_LEN];
        if (dist_device_open(&r->ddist, D, kctx_stream(&r->k), e2))
            return sbmt_errf(err, "train.backend = cuda: %.900s", e2);
        r->gd = &r->ddist;
    }
    if (dist_check(D, check_layout(r, err), err)) return -1;
    if (!c->path[0]) {
        int rc = root ? ensure_generated(r, gen_path, sizeof(gen_path), err) : 0;
        if (dist_check(D, rc, err)) return -1;
        if (!root) ensure_generated(r, gen_path, sizeof(gen_path), err);  // names it: it exists
        snprintf(c->path, sizeof(c->path), "%s", gen_path);
    }
    int rc = ds_open(&r->ds, c->path, err);
    if (rc == 0) rc = run_resolve_config(c, &r->ds, err);
    if (rc == 0 && r->ds.rows[SPLIT_TRAIN] <= 0)
        rc = sbmt_errf(err, "%s: the dataset has no training rows", c->path);
    for (int sp = SPLIT_DEV; rc == 0 && sp <= SPLIT_TEST; sp++)
        if (r->ds.rows[sp] == 0)  // present but empty: its evaluation would report nothing
            rc = sbmt_errf(err, "%s: the '%s' split has 0 rows (train evaluates it); add rows or "
                                "leave the split out", c->path, split_names[sp]);
    if (dist_check(D, rc, err)) return -1;
    if (dist_check(D, root ? mkdir_p(r->out_dir, err) : 0, err)) return -1;
    if (!r->resume) {
        char found[1024];
        rc = 0;
        if (root && rundir_describe(r->out_dir, found, sizeof(found))) {
            if (r->overwrite) {
                rc = rundir_clear(r->out_dir, err);
                if (rc == 0)
                    printf("--overwrite: removed the earlier run in %s (%s)\n", r->out_dir, found);
            } else {
                rc = sbmt_errf(err, "--out %s holds an earlier run (%s): continue it with --resume "
                               "auto, train into another --out, or pass --overwrite to replace it",
                               r->out_dir, found);
            }
        }
        if (dist_check(D, rc, err)) return -1;
    }

    // On GPUs with tp > 1, backward's tp all-reduces (compute stream, tp communicator) would
    // run beside the bucket sums (communication stream, dp communicator): two NCCL
    // communicators in flight at once can deadlock, so gradients are reduced after backward.
    r->buckets = c->grad_buckets && !(r->gd != D && D->tp > 1);
    model_dims dims = run_model_dims(c);
    dims.tp = D->tp;
    dims.tp_rank = D->tp_rank;
    r->B = c->batch_size;
    r->Bl = r->B / D->dp;
    r->mb = c->micro_batch > 0 ? c->micro_batch : r->Bl;
    r->spe = c->dual ? 2 : 1;  // sequences per example
    const int n = c->seq_len, spe = r->spe, LH = c->layers * c->heads;
    model_init(&r->m, &r->k, &dims, r->mb, c->seed);
    r->m.dist = r->gd;
    r->m.grad_ctx = r;
    r->m.reg_batch = r->B * spe;
    batch_alloc(&r->bt, r->mb * spe, n);
    r->ids = xmalloc(sizeof(int32_t) * (size_t)r->Bl * spe * n);
    r->labels = xmalloc(sizeof(int32_t) * (size_t)r->Bl);
    r->rows = xmalloc(sizeof(int64_t) * (size_t)r->B);
    r->myrows = xmalloc(sizeof(int64_t) * (size_t)r->Bl);
    if (c->balance && D->dp > 1 && D->tp_rank == 0) {
        r->read_ids = xmalloc(sizeof(int32_t) * (size_t)r->Bl * spe * n);
        r->read_labels = xmalloc(sizeof(int32_t) * (size_t)r->Bl);
        r->all_ids = xmalloc(sizeof(int32_t) * (size_t)r->B * spe * n);
        r->all_labels = xmalloc(sizeof(int32_t) * (size_t)r->B);
    }
    r->perm = xmalloc(sizeof(int64_t) * (size_t)r->ds.rows[SPLIT_TRAIN]);
    r->perm_epoch = -1;
    r->stats = xcalloc((size_t)LH + 3, sizeof(double));
    r->edges_acc = xcalloc((size_t)LH, sizeof(int64_t));
    r->reqs = xcalloc(2 * ((size_t)c->layers + 2), sizeof(dist_req));
    if (D->dp_rank == 0) r->gathered = xmalloc(sizeof(float) * r->m.nparams * D->tp);
    r->state = xmalloc(sizeof(float) * r->m.nparams * 3);
    if (root) r->full = xmalloc(sizeof(float) * r->m.full.total * 3);
    const char *trace = getenv("SBMT_TRACE_ROWS");
    if (trace && *trace) {
        char tp[4200];
        snprintf(tp, sizeof(tp), "%s.%d", trace, D->rank);
        r->trace = fopen(tp, "w");
    }
    if (root) {
        printf("layout: world %d = dp %d x tp %d | %d host%s, %d rank%s on %s | %d thread%s per "
               "rank | batch %d = dp %d x %d per rank (micro-batch %d)\n",
               D->world, D->dp, D->tp, D->hosts, D->hosts == 1 ? "" : "s", D->local_size,
               D->local_size == 1 ? "" : "s", D->host, r->k.nthreads,
               r->k.nthreads == 1 ? "" : "s", r->B, D->dp, r->Bl, r->mb);
        if (r->gd != D)
            printf("layout: tensors on GPU %d, collectives on them over NCCL%s\n", r->k.device,
                   c->grad_buckets && !r->buckets ? "; gradients reduced after backward (tp > 1)"
                                                   : "");
        printf("sbmt train: %s, %zu parameters, attention %s, %d threads, data %s (%lld train "
               "rows), out %s\n",
               c->task, r->m.full.total, c->attention, r->k.nthreads, c->path,
               (long long)r->ds.rows[SPLIT_TRAIN], r->out_dir);
    }
    int64_t start = 0;
    if (r->resume) {
        char from[4200];
        double t0 = sbmt_now();
        rc = ckpts_resume(r->resume, r->out_dir, &r->m, c->seed, &start, from, sizeof(from), root,
                          err);
        if (rc == 0 && start > c->steps)
            rc = sbmt_errf(err, "%s: checkpoint at step %lld is past train.steps = %d", from,
                           (long long)start, c->steps);
        if (dist_check(D, rc, err)) return -1;
        // Every rank read the same directory; a rank that saw another file would fork the run.
        int64_t lo = start, hi = start;
        dist_allreduce(D, DIST_WORLD, &lo, 1, DIST_I64, DIST_MIN);
        dist_allreduce(D, DIST_WORLD, &hi, 1, DIST_I64, DIST_MAX);
        if (lo != hi)
            return sbmt_errf(root ? err : NULL, "ranks resumed from different steps (%lld..%lld): "
                             "is %s on a filesystem all nodes share?", (long long)lo,
                             (long long)hi, r->out_dir);
        if (root && from[0])
            printf("resumed from %s at step %lld (loaded in %.3f s)\n", from, (long long)start,
                   sbmt_now() - t0);
        else if (root)
            printf("no checkpoint in %s: starting from step 0\n", r->out_dir);
    }
    char mpath[4200];
    snprintf(mpath, sizeof(mpath), "%s/metrics.jsonl", r->out_dir);
    rc = 0;
    if (root && r->resume) rc = metrics_truncate(mpath, start, err);
    if (root && rc == 0) {
        r->metrics = fopen(mpath, "a");
        if (!r->metrics) rc = sbmt_errf(err, "%s: cannot open for writing: %s", mpath, strerror(errno));
    }
    r->tb_tags = xcalloc((size_t)LH, sizeof(*r->tb_tags));
    r->tb_vals = xcalloc((size_t)LH + 8, sizeof(tb_scalar));
    for (int i = 0; i < LH; i++)
        snprintf(r->tb_tags[i], sizeof(r->tb_tags[i]), "density/layer%d/head%d", i / c->heads,
                 i % c->heads);
    if (root && rc == 0 && c->tensorboard)
        rc = tb_open(&r->tb, r->out_dir, r->resume != NULL, start, err);
    if (dist_check(D, rc, err)) return -1;
    r->config_text = config_to_string(c);
    fflush(stdout);

    onecycle sched = {c->lr, c->steps, c->warmup, c->cycle_momentum, c->beta1};
    double t_start = sbmt_now(), t_log = t_start, loss_acc = 0.0, flops_acc = 0.0;
    double comm_log = 0.0, elems_log = 0.0, grad_log = 0.0;
    int correct_acc = 0, rows_acc = 0, steps_acc = 0;
    double *dens_acc = r->dens_acc = xcalloc((size_t)LH, sizeof(double));
    int64_t *edges_log = r->edges_log = xcalloc((size_t)LH, sizeof(int64_t));
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;  // MPI and file calls continue; the flag is read between steps
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    // A file-size limit must fail the write (EFBIG, reported) rather than kill the process.
    signal(SIGXFSZ, SIG_IGN);
    rc = 0;
    int saved_at = -1;
    for (int step = (int)start; step < c->steps; step++) {
        batch_rows(r, step);
        double comm0 = D->t_comm + r->ddist.t_comm, elems0 = D->elems + r->ddist.elems;
        double grad0 = r->t_grad_sync;
        if (load_step(r, step, err)) {
            rc = -1;
            break;
        }
        train_step(r, step);
        const double loss = r->stats[0] / r->B + r->m.reg_loss;
        if (!isfinite(loss)) {  // the same value on every rank
            rc = sbmt_errf(root ? err : NULL,
                           "step %d: loss is %g; lower train.lr or set train.grad_clip", step + 1,
                           loss);
            break;
        }
        // Test hook: a non-finite gradient that the loss does not show (test_train).
        const char *nan_step = getenv("SBMT_TEST_NAN_GRAD_STEP");
        if (nan_step && atoi(nan_step) == step + 1) {
            float nanv = NAN;
            k_upload(&r->k, r->m.grads + r->m.nparams / 2, &nanv, sizeof(float));
        }
        const double gnorm = clip_grads(r, c->grad_clip);
        if (!isfinite(gnorm)) {  // the same norm on every rank; stop before the update
            rc = sbmt_errf(root ? err : NULL,
                           "step %d: the gradient norm is %g (loss %g): not applied; lower "
                           "train.lr or set train.grad_clip, and resume from the last checkpoint",
                           step + 1, gnorm, loss);
            break;
        }
        comm_log += D->t_comm + r->ddist.t_comm - comm0;
        elems_log += D->elems + r->ddist.elems - elems0;
        grad_log += r->t_grad_sync - grad0;
        float lr, beta1;
        onecycle_at(&sched, step, &lr, &beta1);
        optim_adamw(&r->k, &r->m, step + 1, lr, beta1, c->beta2, c->adam_eps, c->weight_decay);
        loss_acc += loss * r->B;
        flops_acc += r->stats[2];
        for (int i = 0; i < LH; i++) {
            dens_acc[i] += r->m.density[i];
            edges_log[i] += r->edges_acc[i];
        }
        correct_acc += (int)r->stats[1];
        rows_acc += r->B;
        steps_acc++;
        int done = step + 1;
        if (root && (done % c->log_every == 0 || done == c->steps)) {
            double now = sbmt_now();
            double tps = (double)steps_acc * r->B * spe * n / (now - t_log);
            double eta = (now - t_start) / (done - start) * (c->steps - done);
            char etab[32];
            fmt_eta(eta, etab, sizeof(etab));
            char dens[64] = "", comm[48] = "";
            double dmean = 0.0;
            for (int i = 0; i < LH; i++) dmean += dens_acc[i] / steps_acc / LH;
            if (r->m.dim.sbm) snprintf(dens, sizeof(dens), " | density %.4f", dmean);
            if (D->world > 1)
                snprintf(comm, sizeof(comm), " | comm %.0f%%", 100.0 * comm_log / (now - t_log));
            printf("step %d/%d | loss %.4f | acc %.3f%s | lr %.3e | %.0f tok/s%s | ETA %s\n", done,
                   c->steps, loss_acc / rows_acc, (double)correct_acc / rows_acc, dens, lr, tps,
                   comm, etab);
            fflush(stdout);
            fprintf(r->metrics,
                    "{\"split\":\"train\",\"step\":%d,\"loss\":%.6f,\"accuracy\":%.6f,\"lr\":%.6e,"
                    "\"tokens_per_s\":%.1f,\"model_gflop_per_s\":%.3f,\"elapsed_s\":%.3f",
                    done, loss_acc / rows_acc, (double)correct_acc / rows_acc, lr, tps,
                    1e-9 * flops_acc / (now - t_log), now - t_start);
            if (D->world > 1)
                fprintf(r->metrics,
                        ",\"world\":%d,\"dp\":%d,\"tp\":%d,\"comm_fraction\":%.4f,"
                        "\"comm_mb_per_step\":%.3f,\"grad_sync_ms_per_step\":%.3f",
                        D->world, D->dp, D->tp, comm_log / (now - t_log),
                        4e-6 * elems_log / steps_acc, 1e3 * grad_log / steps_acc);
            if (r->m.dim.sbm) {
                for (int i = 0; i < LH; i++) dens_acc[i] /= steps_acc;
                fputc(',', r->metrics);
                run_json_density(r->metrics, dens_acc, c->layers, c->heads);
                fputs(",\"edges\":[", r->metrics);
                for (int i = 0; i < LH; i++)
                    fprintf(r->metrics, "%s%s%lld%s", i % c->heads ? "," : i ? ",[" : "[", "",
                            (long long)edges_log[i], i % c->heads == c->heads - 1 ? "]" : "");
                fputc(']', r->metrics);
            }
            fputs("}\n", r->metrics);
            fflush(r->metrics);
            tb_scalar *tv = r->tb_vals;
            int nt = 0;
            tv[nt++] = (tb_scalar){"train/loss", loss_acc / rows_acc};
            tv[nt++] = (tb_scalar){"train/accuracy", (double)correct_acc / rows_acc};
            tv[nt++] = (tb_scalar){"train/lr", lr};
            tv[nt++] = (tb_scalar){"train/tokens_per_s", tps};
            if (D->world > 1) tv[nt++] = (tb_scalar){"train/comm_fraction", comm_log / (now - t_log)};
            if (r->m.dim.sbm) {
                tv[nt++] = (tb_scalar){"density/mean", dmean};
                for (int i = 0; i < LH; i++) tv[nt++] = (tb_scalar){r->tb_tags[i], dens_acc[i]};
            }
            tb_log(r, done, nt);
        }
        if (done % c->log_every == 0 || done == c->steps) {
            for (int i = 0; i < LH; i++) dens_acc[i] = 0.0, edges_log[i] = 0;
            loss_acc = flops_acc = comm_log = elems_log = grad_log = 0.0;
            correct_acc = rows_acc = steps_acc = 0;
            t_log = sbmt_now();
        }
        if (c->eval_every > 0 && done % c->eval_every == 0 && done != c->steps &&
            r->ds.rows[SPLIT_DEV] > 0) {
            int64_t max_rows = c->eval_batches > 0 ? (int64_t)c->eval_batches * r->B : 0;
            if (evaluate_and_log(r, SPLIT_DEV, max_rows, done, err)) {
                rc = -1;
                break;
            }
            t_log = sbmt_now();
        }
        if (c->checkpoint_every > 0 && done % c->checkpoint_every == 0 && done != c->steps) {
            double t0 = sbmt_now();
            if (save_checkpoint(r, done, err)) {
                rc = -1;
                break;
            }
            saved_at = done;
            if (root && done % c->log_every == 0)
                printf("checkpoint step %d written in %.3f s\n", done, sbmt_now() - t0);
            t_log = sbmt_now();
        }
        // A signal on any rank stops every rank here, at the same step: one checkpoint, then
        // exit status SBMT_EXIT_INTERRUPTED (the handler itself only sets the flag).
        int sig = (int)stop_signal;
        dist_agree(D, &sig, 1);
        if (sig && done != c->steps) {
            // From here the job is stopping: more signals (srun --kill-on-bad-exit sends SIGTERM
            // to the ranks still writing once a first one exits 75) change nothing.
            signal(SIGTERM, SIG_IGN);
            signal(SIGINT, SIG_IGN);
            signal(SIGUSR1, SIG_IGN);
            if (saved_at != done) rc = save_checkpoint(r, done, err);
            if (rc == 0) {
                if (root)
                    printf("stopped by signal %d at step %d; resume with --resume auto\n", sig,
                           done);
                rc = sbmt_errf(root ? err : NULL, "interrupted at step %d (checkpoint written)",
                               done);
                if (!root && err) err[0] = '\0';
                r->interrupted = 1;
            }
            break;
        }
    }
    if (rc) return rc;
    if (r->ds.rows[SPLIT_DEV] > 0 && evaluate_and_log(r, SPLIT_DEV, 0, c->steps, err)) return -1;
    if (r->ds.rows[SPLIT_TEST] > 0 && evaluate_and_log(r, SPLIT_TEST, 0, c->steps, err)) return -1;

    // The end-of-run checkpoint, and final.h5 as a second name for it (a hard link, or a copy
    // where the filesystem has none).
    double t_ck = sbmt_now();
    if (save_checkpoint(r, c->steps, err)) return -1;
    t_ck = sbmt_now() - t_ck;
    rc = 0;
    if (root) {
        char fpath[4200], cpath[4200], tpath[4300];
        snprintf(fpath, sizeof(fpath), "%s/final.h5", r->out_dir);
        ckpts_path(cpath, sizeof(cpath), r->out_dir, c->steps);
        snprintf(tpath, sizeof(tpath), "%s.tmp", fpath);
        unlink(tpath);
        if (!(link(cpath, tpath) == 0 && rename(tpath, fpath) == 0)) {
            const size_t nf = r->m.full.total;
            rc = ckpt_save(fpath, &r->m.full, r->full, r->full + nf, r->full + 2 * nf, c->steps,
                           c->seed, r->config_text, err);
        }
        if (rc == 0)
            printf("wrote %s (checkpoint written in %.3f s; %.1f s total)\n", fpath, t_ck,
                   sbmt_now() - t_start);
    }
    return dist_check(D, rc, err);
}

static void train_run_free(train_run *r) {
    dist_device_close(&r->ddist);  // before the stream its collectives run on goes
    if (r->metrics) fclose(r->metrics);
    tb_close(&r->tb);
    free(r->tb_tags);
    free(r->tb_vals);
    if (r->trace) fclose(r->trace);
    if (r->m.params) model_free(&r->m);
    if (r->k.ops) kctx_close(&r->k);
    if (r->bt.len) batch_free(&r->bt);
    free(r->ids);
    free(r->labels);
    free(r->rows);
    free(r->myrows);
    free(r->read_ids);
    free(r->read_labels);
    free(r->all_ids);
    free(r->all_labels);
    free(r->perm);
    free(r->dens_acc);
    free(r->edges_log);
    free(r->stats);
    free(r->edges_acc);
    free(r->reqs);
    free(r->gathered);
    free(r->state);
    free(r->full);
    free(r->config_text);
    if (r->ds.file > 0) ds_close(&r->ds);
}

// Threads per rank when --threads is not given: OMP_NUM_THREADS, else the node's cores shared
// by its ranks.
static int default_threads(const dist_ctx *d) {
    if (getenv("OMP_NUM_THREADS")) return 0;  // kctx_init takes OpenMP's value
    int cores = omp_get_num_procs();
    int t = cores / (d->local_size > 0 ? d->local_size : 1);
    return t > 0 ? t : 1;
}

int cli_train(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return cli_help("train");
    static train_run run;  // large and zero-initialised; the one run context of the process
    train_run *r = &run;
    char err[SBMT_ERR_LEN] = "";
    if (dist_init_launched(&r->dist, NULL, NULL, err)) {
        const char *task = getenv("SLURM_PROCID");  // the tasks cannot agree: task 0 prints
        if (!task || !strcmp(task, "0")) fprintf(stderr, "sbmt train: error: %s\n", err);
        return 1;
    }
    const int root = dist_is_root(&r->dist);
    config_defaults(&r->cfg);
    const char *config_path = NULL, *data = NULL, *out = NULL;
    int threads = 0, rc = 0;
    // Pass 1: the config file; pass 2: overrides, so --set wins whatever the order. Every rank
    // parses the same arguments, so every rank reaches the same verdict; rank 0 prints it.
    for (int i = 0; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (!strcmp(a, "--config") && has_val) config_path = argv[++i];
        else if (!strcmp(a, "--data") && has_val) data = argv[++i];
        else if (!strcmp(a, "--out") && has_val) out = argv[++i];
        else if (!strcmp(a, "--resume") && has_val) r->resume = argv[++i];
        else if (!strcmp(a, "--overwrite")) r->overwrite = 1;
        else if (!strcmp(a, "--threads") && has_val) {
            int64_t v;
            if (cli_parse_int(root ? "sbmt train" : NULL, a, argv[++i], 1, 1024, &v)) rc = 1;
            threads = (int)v;
        } else if (!strcmp(a, "--set") && has_val) i++;
        else {
            if (root)
                fprintf(stderr, "sbmt train: unknown or incomplete option '%s' (see sbmt help "
                                "train)\n", a);
            rc = 1;
        }
    }
    if (rc) {
        dist_finalize(&r->dist);
        return 1;
    }
    if (config_path && config_load_file(&r->cfg, config_path, err)) goto fail;
    // Every option but --overwrite takes one value (checked above).
    for (int i = 0; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--overwrite")) continue;
        if (!strcmp(argv[i], "--set") && config_set(&r->cfg, argv[i + 1], err)) goto fail;
        i++;  // the option's value
    }
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
    char e2[SBMT_ERR_LEN];
    if (kctx_open(&r->k, strcmp(r->cfg.backend, "cuda") ? KB_CPU : KB_CUDA,
                  threads ? threads : default_threads(&r->dist), r->dist.local_rank, e2)) {
        sbmt_errf(err, "train.backend = %s: %.900s", r->cfg.backend, e2);
        goto fail;
    }
    r->k.bf16 = !strcmp(r->cfg.precision, "bf16");
    r->k.tf32 = !strcmp(r->cfg.precision, "tf32");
    if ((r->k.bf16 || r->k.tf32) && r->k.backend != KB_CUDA) {
        sbmt_errf(err, "train.precision = %s needs train.backend = cuda (the CPU backend "
                       "computes in fp32)", r->cfg.precision);
        goto fail;
    }
    r->gd = &r->dist;
    if (r->k.backend == KB_CUDA && r->dist.world > 1) {
        // (The NCCL context itself is opened once the layout is known: train_main.)
        if (!dist_nccl_available()) {
            sbmt_errf(err, "train.backend = cuda with %d ranks needs NCCL, and this build has "
                           "none (configure where NCCL is found, or run one rank)", r->dist.world);
            goto fail;
        }
    }
    const char *missing = kctx_missing_op(&r->k, strcmp(r->cfg.attention, "sbm") == 0);
    if (missing) {  // refused, never a silent fallback to another backend
        sbmt_errf(err, "train.backend = %s: this backend has no %s kernel yet (model.attention = "
                       "%s); use train.backend = cpu", r->cfg.backend, missing, r->cfg.attention);
        goto fail;
    }
    if (run_check_cuda_sbm(&r->cfg, &r->k, err)) goto fail;
    r->in_main = 1;
    if (train_main(r, err)) goto fail;
    train_run_free(r);
    dist_finalize(&r->dist);
    return 0;
fail:
    // The same configuration error reaches every rank: rank 0 prints it. Errors seen by one
    // rank only were agreed on (dist_check) and kept in that rank's err alone.
    if (err[0] && (root || r->in_main)) fprintf(stderr, "sbmt train: error: %s\n", err);
    rc = r->interrupted ? SBMT_EXIT_INTERRUPTED : 1;
    train_run_free(r);
    dist_finalize(&r->dist);
    return rc;
}
