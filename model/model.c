// model.c: parameter table, initialisation, forward and backward of the encoder classifier.
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/philox.h"

static size_t add(param_table *t, const char *name, int ndim, int64_t a, int64_t b, int64_t c,
                  int decay) {
    int64_t shape[3] = {a, b, c};
    return param_table_add(t, name, ndim, shape, decay);
}

// Builds the table in an order that keeps wq | wk | wv (and their biases) adjacent, so the
// three projections run as one GEMM; the checkpoint names do not depend on this order. With
// tp > 1 the entries are this rank's slices (its heads' rows of wq/wk/wv and their biases and
// clusters, its heads' columns of wo); the order, and so entry i's init stream, is the same
// for every layout. Offsets are recorded in m only when `record` is set.
static void build_table(model *m, param_table *t, int tp, int record) {
    const model_dims *d = &m->dim;
    int64_t D = d->d_model, Dh = d->d_ff, HD = (int64_t)(d->heads / tp) * d->head_dim;
    char name[PARAM_NAME_LEN];
    layer_offsets scratch;
    param_table_init(t);
    size_t tok = add(t, "embed/tokens", 2, d->vocab, D, 0, 0);
    size_t pos = add(t, "embed/positions", 2, d->seq_len, D, 0, 0);
    if (record) {
        m->tok = tok;
        m->pos = pos;
        m->lo = xcalloc((size_t)d->layers, sizeof(layer_offsets));
    }
    for (int l = 0; l < d->layers; l++) {
        layer_offsets *o = record ? &m->lo[l] : &scratch;
#define NAME(fmt) (snprintf(name, sizeof(name), "layers/%d/" fmt, l), name)
        o->ln1_w = add(t, NAME("ln1/weight"), 1, D, 0, 0, 0);
        o->ln1_b = add(t, NAME("ln1/bias"), 1, D, 0, 0, 0);
        o->wqkv = add(t, NAME("attn/wq/weight"), 2, HD, D, 0, 1);
        param_table_shard(t, 0, tp);
        add(t, NAME("attn/wk/weight"), 2, HD, D, 0, 1);
        param_table_shard(t, 0, tp);
        add(t, NAME("attn/wv/weight"), 2, HD, D, 0, 1);
        param_table_shard(t, 0, tp);
        o->bqkv = add(t, NAME("attn/wq/bias"), 1, HD, 0, 0, 0);
        param_table_shard(t, 0, tp);
        add(t, NAME("attn/wk/bias"), 1, HD, 0, 0, 0);
        param_table_shard(t, 0, tp);
        add(t, NAME("attn/wv/bias"), 1, HD, 0, 0, 0);
        param_table_shard(t, 0, tp);
        o->wo = add(t, NAME("attn/wo/weight"), 2, D, HD, 0, 1);
        param_table_shard(t, 1, tp);
        o->bo = add(t, NAME("attn/wo/bias"), 1, D, 0, 0, 0);
        o->ln2_w = add(t, NAME("ln2/weight"), 1, D, 0, 0, 0);
        o->ln2_b = add(t, NAME("ln2/bias"), 1, D, 0, 0, 0);
        o->fc1_w = add(t, NAME("ffn/fc1/weight"), 2, Dh, D, 0, 1);
        o->fc1_b = add(t, NAME("ffn/fc1/bias"), 1, Dh, 0, 0, 0);
        o->fc2_w = add(t, NAME("ffn/fc2/weight"), 2, D, Dh, 0, 1);
        o->fc2_b = add(t, NAME("ffn/fc2/bias"), 1, D, 0, 0, 0);
        if (d->sbm) {
            int64_t dh = d->head_dim;
            o->clusters = add(t, NAME("attn/clusters"), 3, d->heads / tp, d->clusters, dh, 1);
            param_table_shard(t, 0, tp);
            // phi is last in the layer, so its tp-summed gradient is one contiguous range.
            o->p1_w = add(t, NAME("attn/proj1/weight"), 2, dh, dh, 0, 1);
            param_table_tp_sum(t);
            o->p1_b = add(t, NAME("attn/proj1/bias"), 1, dh, 0, 0, 0);
            param_table_tp_sum(t);
            o->p2_w = add(t, NAME("attn/proj2/weight"), 2, dh, dh, 0, 1);
            param_table_tp_sum(t);
            o->p2_b = add(t, NAME("attn/proj2/bias"), 1, dh, 0, 0, 0);
            param_table_tp_sum(t);
        }
#undef NAME
    }
    size_t lnf_w = add(t, "final_ln/weight", 1, D, 0, 0, 0);
    size_t lnf_b = add(t, "final_ln/bias", 1, D, 0, 0, 0);
    size_t h1w = add(t, "head/fc1/weight", 2, Dh, d->dual ? 4 * D : D, 0, 1);
    size_t h1b = add(t, "head/fc1/bias", 1, Dh, 0, 0, 0);
    size_t h2w = add(t, "head/fc2/weight", 2, d->classes, Dh, 0, 1);
    size_t h2b = add(t, "head/fc2/bias", 1, d->classes, 0, 0, 0);
    if (record) {
        m->lnf_w = lnf_w;
        m->lnf_b = lnf_b;
        m->head1_w = h1w;
        m->head1_b = h1b;
        m->head2_w = h2w;
        m->head2_b = h2b;
        m->nparams = t->total;
    }
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

// PyTorch defaults: Linear weight and bias ~ U(+-1/sqrt(fan_in)) (kaiming_uniform(a=sqrt(5))),
// LayerNorm 1/0, embeddings N(0, 0.02^2). Entry i draws from its own Philox stream. Runs on the
// logical (whole-tensor) table, so every layout starts from the parameters of a 1x1 run.
static void init_params(const param_table *t, float *params, uint64_t seed) {
    for (int i = 0; i < t->n; i++) {
        const param_entry *e = &t->e[i];
        float *p = params + e->offset;
        rng_stream s = rng_make(seed, RNG_INIT, 0, 0, 0, (uint32_t)i);
        int is_ln = strstr(e->name, "ln1/") || strstr(e->name, "ln2/") || strstr(e->name, "final_ln/");
        if (is_ln) {
            float v = ends_with(e->name, "weight") ? 1.0f : 0.0f;
            for (size_t j = 0; j < e->numel; j++) p[j] = v;
        } else if (strncmp(e->name, "embed/", 6) == 0 || e->ndim == 3) {
            // Embeddings N(0, 0.02^2); clusters [H, k, d] kaiming normal, std sqrt(2 / (k d)).
            double std = e->ndim == 3 ? sqrt(2.0 / (double)(e->shape[1] * e->shape[2])) : 0.02;
            for (size_t j = 0; j < e->numel; j += 2) {
                philox4x32 r = rng_block(s, (uint32_t)(j / 2));
                double u1 = rng_u01_open(r.v[0]), u2 = rng_u01_open(r.v[1]);
                double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
                p[j] = (float)(std * rad * cos(th));
                if (j + 1 < e->numel) p[j + 1] = (float)(std * rad * sin(th));
            }
        } else {
            // fan_in = in of the weight [out, in]; a bias follows its weight in the table
            // (the wq/wk/wv biases follow wv, whose fan_in is the same D).
            int64_t fan_in = 1;
            for (int j = i; j >= 0; j--)
                if (t->e[j].ndim == 2) {
                    fan_in = t->e[j].shape[1];
                    break;
                }
            float bound = 1.0f / sqrtf((float)fan_in);
            for (size_t j = 0; j < e->numel; j++) {
                philox4x32 r = rng_block(s, (uint32_t)(j / 4));
                p[j] = (2.0f * rng_u01(r.v[j % 4]) - 1.0f) * bound;
            }
        }
    }
}

// Copies entry e between a logical tensor and this rank's slice of it (to_full: slice -> full).
static void slice_copy(const param_entry *e, int tp, int tp_rank, float *full, float *local,
                       int to_full) {
    size_t n = e->numel;
    if (e->shard < 0 || tp == 1) {
        if (to_full)
            memcpy(full, local, n * sizeof(float));
        else
            memcpy(local, full, n * sizeof(float));
        return;
    }
    // The split dimension has `inner` contiguous floats per index below it and `outer` blocks.
    size_t outer = 1, inner = 1;
    for (int i = 0; i < e->shard; i++) outer *= (size_t)e->shape[i];
    for (int i = e->shard; i < e->ndim; i++) inner *= (size_t)e->shape[i];
    for (size_t o = 0; o < outer; o++) {
        float *f = full + o * inner * tp + (size_t)tp_rank * inner;
        float *l = local + o * inner;
        if (to_full)
            memcpy(f, l, inner * sizeof(float));
        else
            memcpy(l, f, inner * sizeof(float));
    }
}

void model_from_full(model *m, const float *full, float *local) {
    for (int i = 0; i < m->table.n; i++)
        slice_copy(&m->table.e[i], m->tp, m->tp_rank, (float *)full + m->full.e[i].offset,
                   local + m->table.e[i].offset, 0);
}

void model_to_full(const model *m, const float *gathered, float *full) {
    for (int r = 0; r < m->tp; r++)
        for (int i = 0; i < m->table.n; i++) {
            const param_entry *e = &m->table.e[i];
            if (e->shard < 0 && r > 0) continue;  // replicated: tp rank 0's copy
            slice_copy(e, m->tp, r, full + m->full.e[i].offset,
                       (float *)gathered + (size_t)r * m->nparams + e->offset, 1);
        }
}

static void init_local(model *m, uint64_t seed) {
    float *full = xmalloc(sizeof(float) * m->full.total);
    float *local = xmalloc(sizeof(float) * m->nparams);
    init_params(&m->full, full, seed);
    model_from_full(m, full, local);
    k_upload(m->k, m->params, local, sizeof(float) * m->nparams);
    free(local);
    free(full);
}

// The activation and scratch buffers: one backend allocation carved into tensors (as llm.c
// does), described here once. Each slot starts on a 64-byte boundary.
typedef struct {
    float **ptr;
    size_t n;  // floats
} arena_slot;

typedef struct {
    arena_slot *s;
    int n, cap;
} arena_plan;

static void plan(arena_plan *a, float **ptr, size_t n) {
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 64;
        a->s = realloc(a->s, sizeof(arena_slot) * (size_t)a->cap);
        CHECK(a->s != NULL);
    }
    a->s[a->n].ptr = ptr;
    a->s[a->n].n = n;
    a->n++;
}

static size_t arena_round(size_t n) { return (n + 15) / 16 * 16; }

void model_init(model *m, kctx *k, const model_dims *dim, int max_batch, uint64_t seed) {
    memset(m, 0, sizeof(*m));
    m->k = k;
    m->dim = *dim;
    m->tp = dim->tp > 1 ? dim->tp : 1;
    m->tp_rank = m->tp > 1 ? dim->tp_rank : 0;
    CHECK(dim->heads % m->tp == 0 && m->tp_rank >= 0 && m->tp_rank < m->tp);
    m->heads_local = dim->heads / m->tp;
    m->head0 = m->tp_rank * m->heads_local;
    build_table(m, &m->table, m->tp, 1);
    build_table(m, &m->full, 1, 0);
    size_t np = m->nparams;
    // Parameters, gradients and both moments: one allocation, four [nparams] buffers.
    m->params = k_alloc(k, sizeof(float) * arena_round(np) * 4);
    m->grads = m->params + arena_round(np);
    m->adam_m = m->grads + arena_round(np);
    m->adam_v = m->adam_m + arena_round(np);
    init_local(m, seed);

    // Activations hold this rank's heads only.
    const size_t D = dim->d_model, Dh = dim->d_ff, H = m->heads_local, HD = H * dim->head_dim;
    const size_t C = dim->classes, kc = dim->clusters;
    const size_t S = (size_t)max_batch * (dim->dual ? 2 : 1);  // sequences
    const size_t T = S * dim->seq_len, B = (size_t)max_batch;
    m->max_batch = max_batch;
    m->max_tokens = (int)T;
    m->la = xcalloc((size_t)dim->layers, sizeof(layer_acts));
    arena_plan ap = {0};
    for (int l = 0; l < dim->layers; l++) {
        layer_acts *a = &m->la[l];
        plan(&ap, &a->res_in, T * D);
        plan(&ap, &a->ln1, T * D);
        plan(&ap, &a->ln1_mean, T);
        plan(&ap, &a->ln1_rstd, T);
        plan(&ap, &a->qkv, T * 3 * HD);
        plan(&ap, &a->att, T * HD);
        plan(&ap, &a->lse, T * H);
        plan(&ap, &a->res_mid, T * D);
        plan(&ap, &a->ln2, T * D);
        plan(&ap, &a->ln2_mean, T);
        plan(&ap, &a->ln2_rstd, T);
        plan(&ap, &a->ffn_pre, T * Dh);
        plan(&ap, &a->ffn_act, T * Dh);
        if (dim->sbm) {
            plan(&ap, &a->qk, 2 * T * HD);
            plan(&ap, &a->phi_pre, 2 * T * HD);
            plan(&ap, &a->phi_hid, 2 * T * HD);
            plan(&ap, &a->phi, 2 * T * HD);
            plan(&ap, &a->Y, 2 * T * H * kc);
            plan(&ap, &a->S, H * kc * kc);
        }
    }
    if (dim->sbm) {
        plan(&ap, &m->d_qk, 2 * T * HD);
        plan(&ap, &m->d_phi, 2 * T * HD);
        plan(&ap, &m->d_phi_hid, 2 * T * HD);
        plan(&ap, &m->d_Y, 2 * T * H * kc);
        plan(&ap, &m->d_S, H * kc * kc);
    }
    plan(&ap, &m->res_out, T * D);
    plan(&ap, &m->lnf, T * D);
    plan(&ap, &m->lnf_mean, T);
    plan(&ap, &m->lnf_rstd, T);
    plan(&ap, &m->pooled, S * D);
    plan(&ap, &m->head_in, B * 4 * D);
    plan(&ap, &m->head_pre, B * Dh);
    plan(&ap, &m->head_act, B * Dh);
    plan(&ap, &m->logits, B * C);
    plan(&ap, &m->probs, B * C);
    plan(&ap, &m->d_res, T * D);
    plan(&ap, &m->d_tmp, T * D);
    plan(&ap, &m->d_ln, T * D);
    plan(&ap, &m->d_qkv, T * 3 * HD);
    plan(&ap, &m->d_att, T * HD);
    plan(&ap, &m->d_ffn, T * Dh);
    plan(&ap, &m->d_pooled, S * D);
    plan(&ap, &m->d_head_in, B * 4 * D);
    plan(&ap, &m->d_head, B * Dh);
    plan(&ap, &m->d_logits, B * C);
    plan(&ap, &m->tmp, T * D);
    size_t total = 0;
    for (int i = 0; i < ap.n; i++) total += arena_round(ap.s[i].n);
    m->arena = k_alloc(k, sizeof(float) * total);
    m->arena_floats = total;
    float *p = m->arena;
    for (int i = 0; i < ap.n; i++) {
        *ap.s[i].ptr = p;
        p += arena_round(ap.s[i].n);
    }
    free(ap.s);
    // Host-side statistics.
    m->edges = xcalloc((size_t)dim->layers * dim->heads, sizeof(int64_t));
    m->expected = xcalloc((size_t)dim->layers * dim->heads, sizeof(double));
    m->density = xcalloc((size_t)dim->layers * dim->heads, sizeof(float));
}

void model_free(model *m) {
    for (int l = 0; l < m->dim.layers; l++) sbm_graphs_free(&m->la[l].graphs);
    k_free(m->k, m->params);
    k_free(m->k, m->arena);
    free(m->la);
    free(m->lo);
    free(m->edges);
    free(m->expected);
    free(m->density);
    param_table_free(&m->table);
    param_table_free(&m->full);
    memset(m, 0, sizeof(*m));
}

void model_set_state(model *m, const float *params, const float *adam_m, const float *adam_v) {
    const size_t bytes = sizeof(float) * m->nparams;
    if (params) k_upload(m->k, m->params, params, bytes);
    if (adam_m) k_upload(m->k, m->adam_m, adam_m, bytes);
    if (adam_v) k_upload(m->k, m->adam_v, adam_v, bytes);
}

void model_get_state(const model *m, float *params, float *adam_m, float *adam_v) {
    const size_t bytes = sizeof(float) * m->nparams;
    if (params) k_download(m->k, params, m->params, bytes);
    if (adam_m) k_download(m->k, adam_m, m->adam_m, bytes);
    if (adam_v) k_download(m->k, adam_v, m->adam_v, bytes);
}

static kdrop drop_key(uint64_t seed, uint32_t step, int layer, uint32_t slot) {
    kdrop d = {seed, step, (uint32_t)layer, slot};
    return d;
}

// SBM attention of layer l (SPEC.md section 2): phi on Q and K (one pass over [2T*H, d]),
// block matrices, memberships, graph sampling, sparse attention.
static void sbm_forward(model *m, kctx *k, int l, const kbatch *bt, uint64_t seed, uint32_t step,
                        float pa) {
    const model_dims *d = &m->dim;
    const layer_offsets *o = &m->lo[l];
    layer_acts *a = &m->la[l];
    const float *P = m->params;
    const int T = bt->T, H = m->heads_local, dh = d->head_dim, HD = H * dh, kc = d->clusters;
    k_copy2d(k, a->qk, HD, a->qkv, 3 * HD, T, HD);
    k_copy2d(k, a->qk + (size_t)T * HD, HD, a->qkv + HD, 3 * HD, T, HD);
    k_linear_fwd(k, a->phi_pre, a->qk, P + o->p1_w, P + o->p1_b, 2 * T * H, dh, dh);
    k_relu_fwd(k, a->phi_hid, a->phi_pre, (size_t)2 * T * HD);
    k_linear_fwd(k, a->phi, a->phi_hid, P + o->p2_w, P + o->p2_b, 2 * T * H, dh, dh);
    k_sbm_blocks_fwd(k, a->S, P + o->clusters, H, kc, dh);
    k_sbm_members_fwd(k, a->Y, a->phi, P + o->clusters, bt, 2 * T, H, kc, dh);
    // Statistics sit at the heads' global positions [L, heads]; other ranks' heads stay 0.
    int64_t *edges = m->edges + (size_t)l * d->heads + m->head0;
    if (!m->freeze_graphs)
        k_sbm_sample(k, &a->graphs, a->Y, a->S, bt, H, kc, d->edge_floor, d->sampler, seed, step,
                     (uint32_t)l, (uint32_t)m->head0, edges);
    k_sbm_graph_stats(k, &a->graphs, H, edges, m->expected + (size_t)l * d->heads + m->head0);
    k_sbm_attn_fwd(k, a->att, &a->graphs, a->qkv, bt, H, dh, pa,
                   drop_key(seed, step, l, (uint32_t)m->head0));
}

static void sbm_backward(model *m, kctx *k, int l, const kbatch *bt, uint64_t seed, uint32_t step,
                         float pa) {
    const model_dims *d = &m->dim;
    const layer_offsets *o = &m->lo[l];
    layer_acts *a = &m->la[l];
    const float *P = m->params;
    float *G = m->grads;
    const int T = bt->T, H = m->heads_local, dh = d->head_dim, HD = H * dh, kc = d->clusters;
    // d(sparsity_weight * mean_{l,h} edges / (B n^2)) / dA_ij, added to every sampled edge: the
    // mean runs over all heads of the model and the global batch, whatever this rank holds.
    double nb = (double)(m->reg_batch ? m->reg_batch : bt->B) * bt->n * bt->n;
    float reg = (float)(d->sparsity_weight / ((double)d->layers * d->heads * nb));
    k_sbm_attn_bwd(k, m->d_qkv, m->d_Y, m->d_S, m->d_att, a->qkv, a->att, &a->graphs, a->Y, a->S,
                   bt, H, dh, kc, pa, drop_key(seed, step, l, (uint32_t)m->head0), reg);
    if (m->no_ste) {
        k_zero(k, m->d_Y, (size_t)2 * T * H * kc);
        k_zero(k, m->d_S, (size_t)H * kc * kc);
    }
    k_sbm_blocks_bwd(k, G + o->clusters, m->d_S, a->S, P + o->clusters, H, kc, dh);
    k_sbm_members_bwd(k, m->d_phi, G + o->clusters, m->d_Y, a->Y, a->phi, P + o->clusters, 2 * T,
                      H, kc, dh);
    k_linear_bwd(k, m->d_phi_hid, G + o->p2_w, G + o->p2_b, m->d_phi, a->phi_hid, P + o->p2_w,
                 2 * T * H, dh, dh, 0);
    k_relu_bwd(k, m->d_phi_hid, m->d_phi_hid, a->phi_pre, (size_t)2 * T * HD);
    k_linear_bwd(k, m->d_qk, G + o->p1_w, G + o->p1_b, m->d_phi_hid, a->qk, P + o->p1_w,
                 2 * T * H, dh, dh, 0);
    k_add2d(k, m->d_qkv, 3 * HD, m->d_qk, HD, T, HD);
    k_add2d(k, m->d_qkv + HD, 3 * HD, m->d_qk + (size_t)T * HD, HD, T, HD);
}

double model_forward(model *m, kctx *k, const kbatch *bt, const int32_t *labels, int train,
                     uint64_t seed, uint32_t step, int *correct) {
    const model_dims *d = &m->dim;
    const int T = bt->T, B = bt->B, D = d->d_model, Dh = d->d_ff, H = m->heads_local;
    const int dh = d->head_dim, HD = H * dh;
    const float p = train ? d->dropout : 0.0f, pa = train ? d->attn_dropout : 0.0f;
    const float *P = m->params;
    CHECK(T <= m->max_tokens && (!d->dual || B % 2 == 0));
    k_batch_upload(k, bt);
    memset(m->edges, 0, sizeof(int64_t) * (size_t)d->layers * d->heads);
    memset(m->expected, 0, sizeof(double) * (size_t)d->layers * d->heads);
    const int NB = d->dual ? B / 2 : B;  // examples
    CHECK(NB <= m->max_batch);

    float *x = d->layers ? m->la[0].res_in : m->res_out;
    k_embed_fwd(k, x, bt, P + m->tok, P + m->pos, D);
    k_dropout(k, x, bt, D, p, drop_key(seed, step, 0, KSLOT_EMBED));
    for (int l = 0; l < d->layers; l++) {
        const layer_offsets *o = &m->lo[l];
        layer_acts *a = &m->la[l];
        float *next = l + 1 < d->layers ? m->la[l + 1].res_in : m->res_out;
        k_layernorm_fwd(k, a->ln1, a->ln1_mean, a->ln1_rstd, a->res_in, P + o->ln1_w,
                        P + o->ln1_b, T, D);
        k_linear_fwd(k, a->qkv, a->ln1, P + o->wqkv, P + o->bqkv, T, D, 3 * HD);
        if (d->sbm)
            sbm_forward(m, k, l, bt, seed, step, pa);
        else
            k_attn_softmax_fwd(k, a->att, a->lse, a->qkv, bt, H, dh, pa,
                               drop_key(seed, step, l, (uint32_t)m->head0));
        if (m->tp > 1) {
            // Row-split wo: each rank's heads give a partial sum; the bias is added once, after.
            k_linear_fwd(k, m->tmp, a->att, P + o->wo, NULL, T, HD, D);
            dist_allreduce(m->dist, DIST_TP, m->tmp, (size_t)T * D, DIST_F32, DIST_SUM);
            k_bias_add(k, m->tmp, P + o->bo, T, D);
        } else {
            k_linear_fwd(k, m->tmp, a->att, P + o->wo, P + o->bo, T, HD, D);
        }
        k_dropout(k, m->tmp, bt, D, p, drop_key(seed, step, l, KSLOT_ATTN_OUT));
        k_copy(k, a->res_mid, a->res_in, (size_t)T * D);
        k_add(k, a->res_mid, m->tmp, (size_t)T * D);
        k_layernorm_fwd(k, a->ln2, a->ln2_mean, a->ln2_rstd, a->res_mid, P + o->ln2_w,
                        P + o->ln2_b, T, D);
        k_linear_fwd(k, a->ffn_pre, a->ln2, P + o->fc1_w, P + o->fc1_b, T, D, Dh);
        k_gelu_fwd(k, a->ffn_act, a->ffn_pre, (size_t)T * Dh);
        k_dropout(k, a->ffn_act, bt, Dh, p, drop_key(seed, step, l, KSLOT_FFN_HID));
        k_linear_fwd(k, m->tmp, a->ffn_act, P + o->fc2_w, P + o->fc2_b, T, Dh, D);
        k_dropout(k, m->tmp, bt, D, p, drop_key(seed, step, l, KSLOT_FFN_OUT));
        k_copy(k, next, a->res_mid, (size_t)T * D);
        k_add(k, next, m->tmp, (size_t)T * D);
    }
    m->reg_loss = 0.0;
    if (d->sbm) {
        // This rank's part: heads of other tp ranks and other dp ranks' samples count 0 here;
        // the trainer sums edges over the world and recomputes (model_sbm_stats).
        double nb = (double)(m->reg_batch ? m->reg_batch : B) * bt->n * bt->n;
        m->reg_loss = model_sbm_stats(m, m->edges, nb, m->density);
        // Non-finite memberships sample no edges (the samplers cannot draw from them): the
        // loss says so instead of training on empty graphs.
        for (int i = 0; i < d->layers * d->heads; i++)
            if (!isfinite(m->expected[i])) m->reg_loss = NAN;
    }
    k_layernorm_fwd(k, m->lnf, m->lnf_mean, m->lnf_rstd, m->res_out, P + m->lnf_w, P + m->lnf_b,
                    T, D);
    k_mask_pool_fwd(k, m->pooled, m->lnf, bt, D, d->cls);
    const float *hin = m->pooled;
    int Din = D;
    if (d->dual) {
        k_dual_combine_fwd(k, m->head_in, m->pooled, NB, D);
        hin = m->head_in;
        Din = 4 * D;
    }
    k_linear_fwd(k, m->head_pre, hin, P + m->head1_w, P + m->head1_b, NB, Din, Dh);
    k_relu_fwd(k, m->head_act, m->head_pre, (size_t)NB * Dh);
    k_linear_fwd(k, m->logits, m->head_act, P + m->head2_w, P + m->head2_b, NB, Dh, d->classes);
    return k_xent_fwd(k, m->probs, m->logits, labels, NB, d->classes, correct);
}

void model_backward(model *m, kctx *k, const kbatch *bt, const int32_t *labels, int train,
                    uint64_t seed, uint32_t step, float loss_scale) {
    const model_dims *d = &m->dim;
    const int T = bt->T, B = bt->B, D = d->d_model, Dh = d->d_ff, H = m->heads_local;
    const int dh = d->head_dim, HD = H * dh, C = d->classes;
    const float p = train ? d->dropout : 0.0f, pa = train ? d->attn_dropout : 0.0f;
    const float *P = m->params;
    float *G = m->grads;

    const int NB = d->dual ? B / 2 : B;
    k_xent_bwd(k, m->d_logits, m->probs, labels, NB, C, loss_scale);
    k_linear_bwd(k, m->d_head, G + m->head2_w, G + m->head2_b, m->d_logits, m->head_act,
                 P + m->head2_w, NB, Dh, C, 0);
    k_relu_bwd(k, m->d_head, m->d_head, m->head_pre, (size_t)NB * Dh);
    if (d->dual) {
        k_linear_bwd(k, m->d_head_in, G + m->head1_w, G + m->head1_b, m->d_head, m->head_in,
                     P + m->head1_w, NB, 4 * D, Dh, 0);
        k_dual_combine_bwd(k, m->d_pooled, m->d_head_in, m->pooled, NB, D);
    } else {
        k_linear_bwd(k, m->d_pooled, G + m->head1_w, G + m->head1_b, m->d_head, m->pooled,
                     P + m->head1_w, B, D, Dh, 0);
    }
    k_mask_pool_bwd(k, m->d_ln, m->d_pooled, bt, D, d->cls);
    k_zero(k, m->d_res, (size_t)T * D);
    k_layernorm_bwd(k, m->d_res, G + m->lnf_w, G + m->lnf_b, m->d_ln, m->res_out, m->lnf_mean,
                    m->lnf_rstd, P + m->lnf_w, T, D);
    if (m->grad_ready) m->grad_ready(m->grad_ctx, d->layers + 1);
    for (int l = d->layers - 1; l >= 0; l--) {
        const layer_offsets *o = &m->lo[l];
        layer_acts *a = &m->la[l];
        // FFN branch: d_res is the gradient w.r.t. the layer output = res_mid + ffn(res_mid).
        k_copy(k, m->d_tmp, m->d_res, (size_t)T * D);
        k_dropout(k, m->d_tmp, bt, D, p, drop_key(seed, step, l, KSLOT_FFN_OUT));
        k_linear_bwd(k, m->d_ffn, G + o->fc2_w, G + o->fc2_b, m->d_tmp, a->ffn_act, P + o->fc2_w,
                     T, Dh, D, 0);
        k_dropout(k, m->d_ffn, bt, Dh, p, drop_key(seed, step, l, KSLOT_FFN_HID));
        k_gelu_bwd(k, m->d_ffn, m->d_ffn, a->ffn_pre, (size_t)T * Dh);
        k_linear_bwd(k, m->d_ln, G + o->fc1_w, G + o->fc1_b, m->d_ffn, a->ln2, P + o->fc1_w, T, D,
                     Dh, 0);
        k_layernorm_bwd(k, m->d_res, G + o->ln2_w, G + o->ln2_b, m->d_ln, a->res_mid, a->ln2_mean,
                        a->ln2_rstd, P + o->ln2_w, T, D);
        // Attention branch: d_res is now the gradient w.r.t. res_mid = res_in + attn(res_in).
        k_copy(k, m->d_tmp, m->d_res, (size_t)T * D);
        k_dropout(k, m->d_tmp, bt, D, p, drop_key(seed, step, l, KSLOT_ATTN_OUT));
        k_linear_bwd(k, m->d_att, G + o->wo, G + o->bo, m->d_tmp, a->att, P + o->wo, T, HD, D, 0);
        if (d->sbm)
            sbm_backward(m, k, l, bt, seed, step, pa);
        else
            k_attn_softmax_bwd(k, m->d_qkv, m->d_att, a->qkv, a->att, a->lse, bt, H, dh, pa,
                               drop_key(seed, step, l, (uint32_t)m->head0));
        k_linear_bwd(k, m->d_ln, G + o->wqkv, G + o->bqkv, m->d_qkv, a->ln1, P + o->wqkv, T, D,
                     3 * HD, 0);
        // Column-split wq/wk/wv: the input gradient is the sum of every rank's heads.
        if (m->tp > 1) dist_allreduce(m->dist, DIST_TP, m->d_ln, (size_t)T * D, DIST_F32, DIST_SUM);
        k_layernorm_bwd(k, m->d_res, G + o->ln1_w, G + o->ln1_b, m->d_ln, a->res_in, a->ln1_mean,
                        a->ln1_rstd, P + o->ln1_w, T, D);
        if (m->grad_ready) m->grad_ready(m->grad_ctx, l + 1);
    }
    k_dropout(k, m->d_res, bt, D, p, drop_key(seed, step, 0, KSLOT_EMBED));
    k_embed_bwd(k, G + m->tok, G + m->pos, m->d_res, bt, D);
    if (m->grad_ready) m->grad_ready(m->grad_ctx, 0);
}

void model_bucket_range(const model *m, int bucket, size_t *begin, size_t *end) {
    const int L = m->dim.layers;
    CHECK(bucket >= 0 && bucket <= L + 1);
    if (bucket == 0) {
        *begin = m->tok;
        *end = L ? m->lo[0].ln1_w : m->lnf_w;
    } else if (bucket <= L) {
        *begin = m->lo[bucket - 1].ln1_w;
        *end = bucket < L ? m->lo[bucket].ln1_w : m->lnf_w;
    } else {
        *begin = m->lnf_w;
        *end = m->nparams;
    }
}

double model_sbm_stats(const model *m, const int64_t *edges, double nb, float *density) {
    const int LH = m->dim.layers * m->dim.heads;
    double mean = 0.0;
    for (int i = 0; i < LH; i++) {
        density[i] = (float)(edges[i] / nb);
        mean += density[i];
    }
    return m->dim.sparsity_weight * mean / LH;
}

double model_step_flops(const model *m, const kbatch *bt) {
    const model_dims *d = &m->dim;
    const double D = d->d_model, Dh = d->d_ff, H = m->heads_local, dh = d->head_dim, HD = H * dh;
    const double kc = d->clusters, T = bt->T;
    double per_token = 2.0 * (D * 3 * HD + HD * D + D * Dh + Dh * D);
    if (d->sbm) per_token += 2.0 * H * 4.0 * dh * dh + 2.0 * 2.0 * H * dh * kc;
    double f = 3.0 * per_token * T * d->layers;
    for (int l = 0; l < d->layers; l++) {
        if (d->sbm) {
            // Every (sequence, head) unit has its sequence's rows: T rows per head.
            for (int h = 0; h < d->heads; h++)
                f += (12.0 * dh + 4.0 * kc) * (double)m->edges[(size_t)l * d->heads + h];
            f += 6.0 * T * H * kc * kc;
        } else {
            for (int b = 0; b < bt->B; b++) f += 12.0 * (double)bt->len[b] * bt->len[b] * dh * H;
        }
    }
    return f;
}

void batch_alloc(kbatch *bt, int max_batch, int n) {
    memset(bt, 0, sizeof(*bt));
    bt->len = xmalloc(sizeof(int) * (size_t)max_batch);
    bt->off = xmalloc(sizeof(int) * ((size_t)max_batch + 1));
    bt->ids = xmalloc(sizeof(int32_t) * (size_t)max_batch * n);
    bt->mask = xmalloc(sizeof(float) * (size_t)max_batch * n);
    bt->sample = xmalloc(sizeof(uint32_t) * (size_t)max_batch);
}

void batch_free(kbatch *bt) {
    free(bt->len);
    free(bt->off);
    free(bt->ids);
    free(bt->mask);
    free(bt->sample);
    memset(bt, 0, sizeof(*bt));
}

void batch_pack(kbatch *bt, const int32_t *ids, int B, int n, const uint32_t *sample, int cls,
                int cls_id) {
    bt->B = B;
    bt->n = n;
    int T = 0;
    for (int b = 0; b < B; b++) {
        const int32_t *row = ids + (size_t)b * n;
        bt->off[b] = T;
        bt->sample[b] = sample[b];
        int shift = cls ? 1 : 0;
        int last = 0;  // rows kept: through the last non-padding token (at least one)
        for (int t = 0; t < n - shift; t++)
            if (row[t] != 0) last = t + shift + 1;
        if (cls && last < 1) last = 1;
        if (last < 1) last = 1;
        for (int t = 0; t < last; t++) {
            int32_t id = cls ? (t == 0 ? cls_id : row[t - 1]) : row[t];
            bt->ids[T + t] = id;
            bt->mask[T + t] = id != 0 ? 1.0f : 0.0f;
        }
        bt->len[b] = last;
        T += last;
    }
    bt->off[B] = T;
    bt->T = T;
}
