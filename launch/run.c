// run.c: configuration/dataset reconciliation, batch loading and evaluation shared by commands.
#include "launch/run.h"

#include <string.h>

#include "kernels/common.h"
#ifdef SBMT_HAVE_CUDA_BACKEND
#include "kernels/cuda/cuda_api.h"
#endif

int run_resolve_config(sbmt_config *cfg, const ds_file *ds, char *err) {
    if (cfg->dual && !ds->dual)
        return sbmt_errf(err, "%s: the model is a dual encoder (data.dual) but the dataset has "
                              "single sequences", ds->path);
    if (cfg->seq_len != ds->seq_len)
        return sbmt_errf(err, "%s: seq_len is %d but the configuration has data.seq_len = %d",
                         ds->path, ds->seq_len, cfg->seq_len);
    // A larger embedding table than the data uses is allowed (the LRA ListOps reference uses 32).
    if (cfg->vocab_size && cfg->vocab_size < ds->vocab_size)
        return sbmt_errf(err,
                         "%s: vocab_size is %d, more than the configuration's data.vocab_size = %d",
                         ds->path, ds->vocab_size, cfg->vocab_size);
    if (cfg->num_classes && cfg->num_classes != ds->num_classes)
        return sbmt_errf(err,
                         "%s: num_classes is %d but the configuration has data.num_classes = %d",
                         ds->path, ds->num_classes, cfg->num_classes);
    cfg->dual = ds->dual;
    if (!cfg->vocab_size) cfg->vocab_size = ds->vocab_size;
    cfg->num_classes = ds->num_classes;
    if (strcmp(cfg->pooling, "cls") == 0 && cfg->vocab_size < 3)
        return sbmt_errf(err, "model.pooling = cls needs a CLS token id (vocab_size - 1 = %d)",
                         cfg->vocab_size - 1);
    return 0;
}

model_dims run_model_dims(const sbmt_config *cfg) {
    model_dims d;
    memset(&d, 0, sizeof(d));
    d.vocab = cfg->vocab_size;
    d.seq_len = cfg->seq_len;
    d.d_model = cfg->d_model;
    d.d_ff = cfg->d_ff;
    d.heads = cfg->heads;
    d.head_dim = cfg->head_dim;
    d.layers = cfg->layers;
    d.classes = cfg->num_classes;
    d.cls = strcmp(cfg->pooling, "cls") == 0;
    d.dual = cfg->dual;
    d.dropout = cfg->dropout;
    d.attn_dropout = cfg->attn_dropout;
    d.sbm = strcmp(cfg->attention, "sbm") == 0;
    d.clusters = cfg->clusters;
    d.edge_floor = cfg->edge_floor;
    d.sparsity_weight = cfg->sparsity_weight;
    d.sampler = !strcmp(cfg->sampler, "fastrg")  ? SBM_SAMPLER_FASTRG
                : !strcmp(cfg->sampler, "dense") ? SBM_SAMPLER_DENSE
                                                 : SBM_SAMPLER_AUTO;
    return d;
}

int run_check_cuda_sbm(const sbmt_config *cfg, const kctx *k, char *err) {
    if (k->backend != KB_CUDA || strcmp(cfg->attention, "sbm")) return 0;
    // Dense-sampled heads run in the tile kernels (heads of 16, 32, 64); fastRG-sampled ones on
    // the edge path (any head size and cluster count up to 256). auto may route a unit to
    // either, so it needs both.
    const int dh = cfg->head_dim, kc = cfg->clusters, fastrg = !strcmp(cfg->sampler, "fastrg");
    if (!fastrg && dh != 16 && dh != 32 && dh != 64)
        return sbmt_errf(err, "model.head_dim = %d: SBM attention on the cuda backend with "
                              "model.sampler = %s takes heads of 16, 32 or 64 (model.sampler = "
                              "fastrg takes any up to 256)", dh, cfg->sampler);
    if (dh > 256)
        return sbmt_errf(err, "model.head_dim = %d: SBM attention on the cuda backend takes heads "
                              "of at most 256", dh);
    if (strcmp(cfg->sampler, "dense") && kc > 256)
        return sbmt_errf(err, "model.clusters = %d: the cuda backend's fastRG edge path takes at "
                              "most 256 clusters", kc);
#ifdef SBMT_HAVE_CUDA_BACKEND
    if (!fastrg) {
        const size_t need = cuda_sbm_tiles_smem(k, dh, kc), lim = cuda_sbm_tiles_smem_limit();
        if (need > lim)
            return sbmt_errf(err, "model.clusters = %d with model.head_dim = %d: the cuda "
                                  "backend's SBM tile kernels (model.sampler = %s) would need "
                                  "%zu KB of shared memory per block%s, more than a GPU's %zu KB "
                                  "(use fewer clusters, or model.sampler = fastrg)",
                             kc, dh, cfg->sampler, need / 1024,
                             k->bf16 ? " in bf16" : k->tf32 ? " in tf32" : "", lim / 1024);
    }
#endif
    if (strcmp(cfg->sampler, "dense") && cfg->seq_len >= (1 << 20))
        return sbmt_errf(err, "data.seq_len = %d: the cuda backend's fastRG edge path takes "
                              "sequences shorter than %d (model.sampler = dense has no such "
                              "limit)", cfg->seq_len, 1 << 20);
    return 0;
}

int run_read_rows(ds_file *ds, int split, const int64_t *rows, int count, const sbmt_config *cfg,
                  int32_t *ids_buf, int32_t *labels, char *err) {
    int32_t *ids1 = ds->dual ? ids_buf + (size_t)count * cfg->seq_len : NULL;
    return ds_read_rows(ds, split, rows, count, ids_buf, ids1, labels, err);
}

void run_pack_rows(const int32_t *ids_buf, int total, int first, int count, const int64_t *rows,
                   const sbmt_config *cfg, kbatch *bt) {
    const int n = cfg->seq_len, S = cfg->dual ? 2 * count : count;
    uint32_t *sample = xmalloc(sizeof(uint32_t) * (size_t)(S > 0 ? S : 1));
    const int32_t *packed = ids_buf + (size_t)first * n;
    int32_t *inter = NULL;
    if (cfg->dual) {
        // Documents 0 and 1 of row r become sequences 2i and 2i+1, keyed by 2r and 2r+1.
        const int32_t *ids1 = ids_buf + (size_t)total * n;
        inter = xmalloc(sizeof(int32_t) * (size_t)S * n);
        for (int i = 0; i < count; i++) {
            memcpy(inter + (size_t)(2 * i) * n, ids_buf + (size_t)(first + i) * n,
                   sizeof(int32_t) * n);
            memcpy(inter + (size_t)(2 * i + 1) * n, ids1 + (size_t)(first + i) * n,
                   sizeof(int32_t) * n);
            sample[2 * i] = (uint32_t)(2 * rows[first + i]);
            sample[2 * i + 1] = (uint32_t)(2 * rows[first + i] + 1);
        }
        packed = inter;
    } else {
        for (int i = 0; i < count; i++) sample[i] = (uint32_t)rows[first + i];
    }
    int cls = strcmp(cfg->pooling, "cls") == 0;
    batch_pack(bt, packed, S, n, sample, cls, cfg->vocab_size - 1);
    free(inter);
    free(sample);
}

int run_share_rows(dist_ctx *dist, ds_file *ds, int split, const int64_t *rows, int count,
                   const sbmt_config *cfg, int32_t *ids_buf, int32_t *labels, char *err) {
    int rc = 0;
    if (dist_grank(dist, DIST_TP) == 0)
        rc = run_read_rows(ds, split, rows, count, cfg, ids_buf, labels, err);
    if (dist_check_group(dist, DIST_TP, rc, err)) return -1;
    size_t nid = (size_t)count * cfg->seq_len * (cfg->dual ? 2 : 1);
    dist_bcast(dist, DIST_TP, ids_buf, nid, DIST_I32, 0);
    dist_bcast(dist, DIST_TP, labels, (size_t)count, DIST_I32, 0);
    return 0;
}

int run_evaluate(model *m, kctx *k, dist_ctx *dist, ds_file *ds, int split, int64_t max_rows,
                 const sbmt_config *cfg, eval_result *res, char *err) {
    int64_t N = ds->rows[split];
    if (N < 0)
        return sbmt_errf(err, "%s: the dataset has no '%s' split", ds->path, split_names[split]);
    if (N == 0)  // an accuracy of 0 rows would read as a result
        return sbmt_errf(err, "%s: the '%s' split has 0 rows: nothing to evaluate", ds->path,
                         split_names[split]);
    if (max_rows > 0 && max_rows < N) N = max_rows;
    // dp rank j evaluates rows [N j / dp, N (j+1) / dp); its tp group shares them.
    const int dp = dist_size(dist, DIST_DP), j = dist_grank(dist, DIST_DP);
    const int64_t lo = N * j / dp, hi = N * (j + 1) / dp;
    int bs = m->max_batch, spe = ds->dual ? 2 : 1;  // sequences per example
    int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)bs * spe * cfg->seq_len);
    int32_t *labels = xmalloc(sizeof(int32_t) * (size_t)bs);
    int64_t *rows = xmalloc(sizeof(int64_t) * (size_t)bs);
    kbatch bt;
    batch_alloc(&bt, bs * spe, cfg->seq_len);
    int rc = 0;
    const int LH = m->dim.layers * m->dim.heads;
    // [0] cross-entropy sum, [1] correct, [2..] edges per (layer, head): summed over the world,
    // with the first two from tp rank 0 only (tp ranks compute the same logits).
    double *acc = xcalloc((size_t)LH + 2, sizeof(double));
    const int count_ce = dist_grank(dist, DIST_TP) == 0;
    for (int64_t r0 = lo; r0 < hi; r0 += bs) {
        int count = (int)(hi - r0 < bs ? hi - r0 : bs);
        for (int i = 0; i < count; i++) rows[i] = r0 + i;
        if (run_share_rows(dist, ds, split, rows, count, cfg, ids, labels, err)) {
            rc = -1;
            break;
        }
        run_pack_rows(ids, count, 0, count, rows, cfg, &bt);
        int correct = 0;
        double ce = model_forward(m, k, &bt, labels, 0, cfg->seed, 0, &correct);
        if (count_ce) {
            acc[0] += ce;
            acc[1] += correct;
        }
        for (int i = 0; i < LH; i++) acc[2 + i] += (double)m->edges[i];
    }
    if (dist_check(dist, rc, err)) rc = -1;
    if (rc == 0) dist_allreduce(dist, DIST_WORLD, acc, (size_t)LH + 2, DIST_F64, DIST_SUM);
    res->rows = N;
    res->nd = m->dim.sbm ? LH : 0;
    double reg = 0.0;
    for (int i = 0; i < res->nd && i < EVAL_MAX_DENS; i++) {
        res->density[i] = N ? acc[2 + i] / ((double)N * spe * cfg->seq_len * cfg->seq_len) : 0.0;
        reg += res->density[i] / res->nd;
    }
    // The loss a training step reports: mean cross-entropy plus the density regulariser.
    res->loss = N ? acc[0] / (double)N + m->dim.sparsity_weight * reg : 0.0;
    res->accuracy = N ? acc[1] / (double)N : 0.0;
    free(acc);
    batch_free(&bt);
    free(ids);
    free(labels);
    free(rows);
    return rc;
}

void run_json_density(FILE *f, const double *dens, int layers, int heads) {
    double mean = 0.0;
    fputs("\"density\":[", f);
    for (int l = 0; l < layers; l++) {
        fputs(l ? ",[" : "[", f);
        for (int h = 0; h < heads; h++) {
            fprintf(f, "%s%.6g", h ? "," : "", dens[l * heads + h]);
            mean += dens[l * heads + h];
        }
        fputc(']', f);
    }
    fprintf(f, "],\"density_mean\":%.6g", mean / (layers * heads));
}
