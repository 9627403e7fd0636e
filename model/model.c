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
// three projections run as one GEMM; the checkpoint names do not depend on this order.
static void build_table(model *m) {
    const model_dims *d = &m->dim;
    param_table *t = &m->table;
    int64_t D = d->d_model, Dh = d->d_ff, HD = (int64_t)d->heads * d->head_dim;
    char name[PARAM_NAME_LEN];
    param_table_init(t);
    m->tok = add(t, "embed/tokens", 2, d->vocab, D, 0, 0);
    m->pos = add(t, "embed/positions", 2, d->seq_len, D, 0, 0);
    m->lo = xcalloc((size_t)d->layers, sizeof(layer_offsets));
    for (int l = 0; l < d->layers; l++) {
        layer_offsets *o = &m->lo[l];
#define NAME(fmt) (snprintf(name, sizeof(name), "layers/%d/" fmt, l), name)
        o->ln1_w = add(t, NAME("ln1/weight"), 1, D, 0, 0, 0);
        o->ln1_b = add(t, NAME("ln1/bias"), 1, D, 0, 0, 0);
        o->wqkv = add(t, NAME("attn/wq/weight"), 2, HD, D, 0, 1);
        add(t, NAME("attn/wk/weight"), 2, HD, D, 0, 1);
        add(t, NAME("attn/wv/weight"), 2, HD, D, 0, 1);
        o->bqkv = add(t, NAME("attn/wq/bias"), 1, HD, 0, 0, 0);
        add(t, NAME("attn/wk/bias"), 1, HD, 0, 0, 0);
        add(t, NAME("attn/wv/bias"), 1, HD, 0, 0, 0);
        o->wo = add(t, NAME("attn/wo/weight"), 2, D, HD, 0, 1);
        o->bo = add(t, NAME("attn/wo/bias"), 1, D, 0, 0, 0);
        o->ln2_w = add(t, NAME("ln2/weight"), 1, D, 0, 0, 0);
        o->ln2_b = add(t, NAME("ln2/bias"), 1, D, 0, 0, 0);
        o->fc1_w = add(t, NAME("ffn/fc1/weight"), 2, Dh, D, 0, 1);
        o->fc1_b = add(t, NAME("ffn/fc1/bias"), 1, Dh, 0, 0, 0);
        o->fc2_w = add(t, NAME("ffn/fc2/weight"), 2, D, Dh, 0, 1);
        o->fc2_b = add(t, NAME("ffn/fc2/bias"), 1, D, 0, 0, 0);
#undef NAME
    }
    m->lnf_w = add(t, "final_ln/weight", 1, D, 0, 0, 0);
    m->lnf_b = add(t, "final_ln/bias", 1, D, 0, 0, 0);
    m->head1_w = add(t, "head/fc1/weight", 2, Dh, D, 0, 1);
    m->head1_b = add(t, "head/fc1/bias", 1, Dh, 0, 0, 0);
    m->head2_w = add(t, "head/fc2/weight", 2, d->classes, Dh, 0, 1);
    m->head2_b = add(t, "head/fc2/bias", 1, d->classes, 0, 0, 0);
    m->nparams = t->total;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

// PyTorch defaults: Linear weight and bias ~ U(+-1/sqrt(fan_in)) (kaiming_uniform(a=sqrt(5))),
// LayerNorm 1/0, embeddings N(0, 0.02^2). Entry i draws from its own Philox stream.
static void init_params(model *m, uint64_t seed) {
    for (int i = 0; i < m->table.n; i++) {
        const param_entry *e = &m->table.e[i];
        float *p = m->params + e->offset;
        rng_stream s = rng_make(seed, RNG_INIT, 0, 0, 0, (uint32_t)i);
        int is_ln = strstr(e->name, "ln1/") || strstr(e->name, "ln2/") || strstr(e->name, "final_ln/");
        if (is_ln) {
            float v = ends_with(e->name, "weight") ? 1.0f : 0.0f;
            for (size_t j = 0; j < e->numel; j++) p[j] = v;
        } else if (strncmp(e->name, "embed/", 6) == 0) {
            for (size_t j = 0; j < e->numel; j += 2) {
                philox4x32 r = rng_block(s, (uint32_t)(j / 2));
                double u1 = rng_u01_open(r.v[0]), u2 = rng_u01_open(r.v[1]);
                double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
                p[j] = (float)(0.02 * rad * cos(th));
                if (j + 1 < e->numel) p[j + 1] = (float)(0.02 * rad * sin(th));
            }
        } else {
            // fan_in = in of the weight [out, in]; a bias follows its weight in the table
            // (the wq/wk/wv biases follow wv, whose fan_in is the same D).
            int64_t fan_in = 1;
            for (int j = i; j >= 0; j--)
                if (m->table.e[j].ndim == 2) {
                    fan_in = m->table.e[j].shape[1];
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

void model_init(model *m, const model_dims *dim, int max_batch, uint64_t seed) {
    memset(m, 0, sizeof(*m));
    m->dim = *dim;
    build_table(m);
    size_t np = m->nparams;
    m->params = xcalloc(np, sizeof(float));
    m->grads = xcalloc(np, sizeof(float));
    m->adam_m = xcalloc(np, sizeof(float));
    m->adam_v = xcalloc(np, sizeof(float));
    init_params(m, seed);

    const int D = dim->d_model, Dh = dim->d_ff, HD = dim->heads * dim->head_dim, H = dim->heads;
    const int C = dim->classes;
    size_t T = (size_t)max_batch * dim->seq_len;
    m->max_batch = max_batch;
    m->max_tokens = (int)T;
    m->la = xcalloc((size_t)dim->layers, sizeof(layer_acts));
    for (int l = 0; l < dim->layers; l++) {
        layer_acts *a = &m->la[l];
        a->res_in = xmalloc(T * D * sizeof(float));
        a->ln1 = xmalloc(T * D * sizeof(float));
        a->ln1_mean = xmalloc(T * sizeof(float));
        a->ln1_rstd = xmalloc(T * sizeof(float));
        a->qkv = xmalloc(T * 3 * HD * sizeof(float));
        a->att = xmalloc(T * HD * sizeof(float));
        a->lse = xmalloc(T * H * sizeof(float));
        a->res_mid = xmalloc(T * D * sizeof(float));
        a->ln2 = xmalloc(T * D * sizeof(float));
        a->ln2_mean = xmalloc(T * sizeof(float));
        a->ln2_rstd = xmalloc(T * sizeof(float));
        a->ffn_pre = xmalloc(T * Dh * sizeof(float));
        a->ffn_act = xmalloc(T * Dh * sizeof(float));
    }
    size_t B = (size_t)max_batch;
    m->res_out = xmalloc(T * D * sizeof(float));
    m->lnf = xmalloc(T * D * sizeof(float));
    m->lnf_mean = xmalloc(T * sizeof(float));
    m->lnf_rstd = xmalloc(T * sizeof(float));
    m->pooled = xmalloc(B * D * sizeof(float));
    m->head_pre = xmalloc(B * Dh * sizeof(float));
    m->head_act = xmalloc(B * Dh * sizeof(float));
    m->logits = xmalloc(B * C * sizeof(float));
    m->probs = xmalloc(B * C * sizeof(float));
    m->d_res = xmalloc(T * D * sizeof(float));
    m->d_tmp = xmalloc(T * D * sizeof(float));
    m->d_ln = xmalloc(T * D * sizeof(float));
    m->d_qkv = xmalloc(T * 3 * HD * sizeof(float));
    m->d_att = xmalloc(T * HD * sizeof(float));
    m->d_ffn = xmalloc(T * Dh * sizeof(float));
    m->d_pooled = xmalloc(B * D * sizeof(float));
    m->d_head = xmalloc(B * Dh * sizeof(float));
    m->d_logits = xmalloc(B * C * sizeof(float));
    m->tmp = xmalloc(T * D * sizeof(float));
}

void model_free(model *m) {
    for (int l = 0; l < m->dim.layers; l++) {
        layer_acts *a = &m->la[l];
        float *bufs[] = {a->res_in, a->ln1, a->ln1_mean, a->ln1_rstd, a->qkv, a->att, a->lse,
                         a->res_mid, a->ln2, a->ln2_mean, a->ln2_rstd, a->ffn_pre, a->ffn_act};
        for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) free(bufs[i]);
    }
    float *bufs[] = {m->params, m->grads, m->adam_m, m->adam_v, m->res_out, m->lnf, m->lnf_mean,
                     m->lnf_rstd, m->pooled, m->head_pre, m->head_act, m->logits, m->probs,
                     m->d_res, m->d_tmp, m->d_ln, m->d_qkv, m->d_att, m->d_ffn, m->d_pooled,
                     m->d_head, m->d_logits, m->tmp};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) free(bufs[i]);
    free(m->la);
    free(m->lo);
    param_table_free(&m->table);
    memset(m, 0, sizeof(*m));
}

static kdrop drop_key(uint64_t seed, uint32_t step, int layer, uint32_t slot) {
    kdrop d = {seed, step, (uint32_t)layer, slot};
    return d;
}

double model_forward(model *m, kctx *k, const kbatch *bt, const int32_t *labels, int train,
                     uint64_t seed, uint32_t step, int *correct) {
    const model_dims *d = &m->dim;
    const int T = bt->T, B = bt->B, D = d->d_model, Dh = d->d_ff, H = d->heads, dh = d->head_dim;
    const int HD = H * dh;
    const float p = train ? d->dropout : 0.0f, pa = train ? d->attn_dropout : 0.0f;
    const float *P = m->params;
    CHECK(B <= m->max_batch && T <= m->max_tokens);

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
        k_attn_softmax_fwd(k, a->att, a->lse, a->qkv, bt, H, dh, pa, drop_key(seed, step, l, 0));
        k_linear_fwd(k, m->tmp, a->att, P + o->wo, P + o->bo, T, HD, D);
        k_dropout(k, m->tmp, bt, D, p, drop_key(seed, step, l, KSLOT_ATTN_OUT));
        memcpy(a->res_mid, a->res_in, sizeof(float) * (size_t)T * D);
        k_add(k, a->res_mid, m->tmp, (size_t)T * D);
        k_layernorm_fwd(k, a->ln2, a->ln2_mean, a->ln2_rstd, a->res_mid, P + o->ln2_w,
                        P + o->ln2_b, T, D);
        k_linear_fwd(k, a->ffn_pre, a->ln2, P + o->fc1_w, P + o->fc1_b, T, D, Dh);
        k_gelu_fwd(k, a->ffn_act, a->ffn_pre, (size_t)T * Dh);
        k_dropout(k, a->ffn_act, bt, Dh, p, drop_key(seed, step, l, KSLOT_FFN_HID));
        k_linear_fwd(k, m->tmp, a->ffn_act, P + o->fc2_w, P + o->fc2_b, T, Dh, D);
        k_dropout(k, m->tmp, bt, D, p, drop_key(seed, step, l, KSLOT_FFN_OUT));
        memcpy(next, a->res_mid, sizeof(float) * (size_t)T * D);
        k_add(k, next, m->tmp, (size_t)T * D);
    }
    k_layernorm_fwd(k, m->lnf, m->lnf_mean, m->lnf_rstd, m->res_out, P + m->lnf_w, P + m->lnf_b,
                    T, D);
    k_mask_pool_fwd(k, m->pooled, m->lnf, bt, D, d->cls);
    k_linear_fwd(k, m->head_pre, m->pooled, P + m->head1_w, P + m->head1_b, B, D, Dh);
    k_relu_fwd(k, m->head_act, m->head_pre, (size_t)B * Dh);
    k_linear_fwd(k, m->logits, m->head_act, P + m->head2_w, P + m->head2_b, B, Dh, d->classes);
    return k_xent_fwd(k, m->probs, m->logits, labels, B, d->classes, correct);
}

void model_backward(model *m, kctx *k, const kbatch *bt, const int32_t *labels, int train,
                    uint64_t seed, uint32_t step, float loss_scale) {
    const model_dims *d = &m->dim;
    const int T = bt->T, B = bt->B, D = d->d_model, Dh = d->d_ff, H = d->heads, dh = d->head_dim;
    const int HD = H * dh, C = d->classes;
    const float p = train ? d->dropout : 0.0f, pa = train ? d->attn_dropout : 0.0f;
    const float *P = m->params;
    float *G = m->grads;

    k_xent_bwd(k, m->d_logits, m->probs, labels, B, C, loss_scale);
    k_linear_bwd(k, m->d_head, G + m->head2_w, G + m->head2_b, m->d_logits, m->head_act,
                 P + m->head2_w, B, Dh, C, 0);
    k_relu_bwd(k, m->d_head, m->d_head, m->head_pre, (size_t)B * Dh);
    k_linear_bwd(k, m->d_pooled, G + m->head1_w, G + m->head1_b, m->d_head, m->pooled,
                 P + m->head1_w, B, D, Dh, 0);
    k_mask_pool_bwd(k, m->d_ln, m->d_pooled, bt, D, d->cls);
    k_zero(k, m->d_res, (size_t)T * D);
    k_layernorm_bwd(k, m->d_res, G + m->lnf_w, G + m->lnf_b, m->d_ln, m->res_out, m->lnf_mean,
                    m->lnf_rstd, P + m->lnf_w, T, D);
    for (int l = d->layers - 1; l >= 0; l--) {
        const layer_offsets *o = &m->lo[l];
        layer_acts *a = &m->la[l];
        // FFN branch: d_res is the gradient w.r.t. the layer output = res_mid + ffn(res_mid).
        memcpy(m->d_tmp, m->d_res, sizeof(float) * (size_t)T * D);
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
        memcpy(m->d_tmp, m->d_res, sizeof(float) * (size_t)T * D);
        k_dropout(k, m->d_tmp, bt, D, p, drop_key(seed, step, l, KSLOT_ATTN_OUT));
        k_linear_bwd(k, m->d_att, G + o->wo, G + o->bo, m->d_tmp, a->att, P + o->wo, T, HD, D, 0);
        k_attn_softmax_bwd(k, m->d_qkv, m->d_att, a->qkv, a->att, a->lse, bt, H, dh, pa,
                           drop_key(seed, step, l, 0));
        k_linear_bwd(k, m->d_ln, G + o->wqkv, G + o->bqkv, m->d_qkv, a->ln1, P + o->wqkv, T, D,
                     3 * HD, 0);
        k_layernorm_bwd(k, m->d_res, G + o->ln1_w, G + o->ln1_b, m->d_ln, a->res_in, a->ln1_mean,
                        a->ln1_rstd, P + o->ln1_w, T, D);
    }
    k_dropout(k, m->d_res, bt, D, p, drop_key(seed, step, 0, KSLOT_EMBED));
    k_embed_bwd(k, G + m->tok, G + m->pos, m->d_res, bt, D);
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
