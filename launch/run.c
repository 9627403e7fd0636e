// run.c: configuration/dataset reconciliation, batch loading and evaluation shared by commands.
#include "launch/run.h"

#include <string.h>

#include "kernels/common.h"

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

int run_load_batch(ds_file *ds, int split, const int64_t *rows, int count, const sbmt_config *cfg,
                   int32_t *ids_buf, int32_t *labels, kbatch *bt, char *err) {
    const int n = cfg->seq_len, S = ds->dual ? 2 * count : count;
    int32_t *ids1 = ds->dual ? ids_buf + (size_t)count * n : NULL;
    if (ds_read_rows(ds, split, rows, count, ids_buf, ids1, labels, err)) return -1;
    uint32_t *sample = xmalloc(sizeof(uint32_t) * (size_t)(S > 0 ? S : 1));
    const int32_t *packed = ids_buf;
    int32_t *inter = NULL;
    if (ds->dual) {
        // Documents 0 and 1 of row r become sequences 2i and 2i+1, keyed by 2r and 2r+1.
        inter = xmalloc(sizeof(int32_t) * (size_t)S * n);
        for (int i = 0; i < count; i++) {
            memcpy(inter + (size_t)(2 * i) * n, ids_buf + (size_t)i * n, sizeof(int32_t) * n);
            memcpy(inter + (size_t)(2 * i + 1) * n, ids1 + (size_t)i * n, sizeof(int32_t) * n);
            sample[2 * i] = (uint32_t)(2 * rows[i]);
            sample[2 * i + 1] = (uint32_t)(2 * rows[i] + 1);
        }
        packed = inter;
    } else {
        for (int i = 0; i < count; i++) sample[i] = (uint32_t)rows[i];
    }
    int cls = strcmp(cfg->pooling, "cls") == 0;
    batch_pack(bt, packed, S, n, sample, cls, cfg->vocab_size - 1);
    free(inter);
    free(sample);
    return 0;
}

int run_evaluate(model *m, kctx *k, ds_file *ds, int split, int64_t max_rows, const sbmt_config *cfg,
                 eval_result *res, char *err) {
    int64_t N = ds->rows[split];
    if (N < 0)
        return sbmt_errf(err, "%s: the dataset has no '%s' split", ds->path, split_names[split]);
    if (max_rows > 0 && max_rows < N) N = max_rows;
    int bs = m->max_batch, spe = ds->dual ? 2 : 1;  // sequences per example
    int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)bs * spe * cfg->seq_len);
    int32_t *labels = xmalloc(sizeof(int32_t) * (size_t)bs);
    int64_t *rows = xmalloc(sizeof(int64_t) * (size_t)bs);
    kbatch bt;
    batch_alloc(&bt, bs * spe, cfg->seq_len);
    double loss = 0.0, reg = 0.0;
    int correct = 0, batches = 0;
    int rc = 0;
    const int LH = m->dim.layers * m->dim.heads;
    int64_t *edges = xcalloc((size_t)LH, sizeof(int64_t));
    for (int64_t r0 = 0; r0 < N; r0 += bs) {
        int count = (int)(N - r0 < bs ? N - r0 : bs);
        for (int i = 0; i < count; i++) rows[i] = r0 + i;
        if (run_load_batch(ds, split, rows, count, cfg, ids, labels, &bt, err)) {
            rc = -1;
            break;
        }
        loss += model_forward(m, k, &bt, labels, 0, cfg->seed, 0, &correct);
        reg += m->reg_loss * count;
        for (int i = 0; i < LH; i++) edges[i] += m->edges[i];
        batches++;
    }
    res->rows = N;
    res->loss = N ? (loss + reg) / (double)N : 0.0;
    res->accuracy = N ? (double)correct / (double)N : 0.0;
    res->nd = m->dim.sbm ? LH : 0;
    for (int i = 0; i < res->nd && i < EVAL_MAX_DENS; i++)
        res->density[i] =
            N ? (double)edges[i] / ((double)N * spe * cfg->seq_len * cfg->seq_len) : 0.0;
    free(edges);
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
