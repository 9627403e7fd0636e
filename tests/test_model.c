// test_model.c: whole-model checks: finite-difference gradients of every parameter (dropout
// off and on), exactness of packing (cutting trailing padding changes nothing), and that a
// sequence's loss does not depend on the rest of its batch.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/common.h"
#include "kernels/kernels.h"
#include "model/model.h"

enum { B = 3, N = 12 };
static const int32_t IDS[B * N] = {
    1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0,   // trailing padding
    3, 1, 0, 2, 7, 7, 1, 2, 3, 4, 5, 6,   // full length, interior padding
    6, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,   // short
};
static const int32_t LABELS[B] = {0, 2, 1};
static const uint32_t SAMPLE[B] = {11, 5, 42};

static int use_sbm;   // set per test: SBM attention instead of softmax
static int use_dual;  // set per test: dual encoder, sequences 2b and 2b+1 form example b
static sbm_sampler sampler = SBM_SAMPLER_FASTRG;
static int head_dim = 4;  // 8: the vectorised per-edge attention kernels (sbm_edges.h)

static model_dims small_dims(int cls) {
    model_dims d = {.vocab = 8, .seq_len = N, .d_model = 8, .d_ff = 12, .heads = 2,
                    .head_dim = head_dim, .layers = 2, .classes = 3, .cls = cls, .dual = use_dual, .dropout = 0.2f,
                    .attn_dropout = 0.25f,
                    .sbm = use_sbm, .clusters = 3, .edge_floor = 0.05f, .sparsity_weight = 0.01f,
                    .sampler = sampler};
    return d;
}

static double loss_of(model *m, kctx *k, const kbatch *bt, const int32_t *labels, int train) {
    return model_forward(m, k, bt, labels, train, 77, 3, NULL);
}

// Central differences on every parameter against the analytical gradient.
// Step and tolerance: the loss is a double sum of float32 activations, so each evaluation
// carries a relative rounding error of ~1e-7 (a few ulps through 2 layers); at |L| ~ 3 and
// h = 3e-4 that is ~1e-3 absolute noise on the difference quotient. The truncation error
// O(h^2 f''') limits larger steps: with weights scaled up 1.5x, h = 1e-3 already misses
// embedding gradients by ~8%, and h = 1e-4 drowns small ones in rounding noise.
// Hence h = 3e-4 and |a - n| <= 2e-3 + 2e-2 * max(|a|, |n|).
static void gradcheck(int train, int cls) {
    model_dims d = small_dims(cls);
    model m;
    kctx k;
    kctx_init(&k, KB_CPU, 1);
    model_init(&m, &k, &d, B, 1234);
    kbatch bt;
    batch_alloc(&bt, B, N);
    // Dual: the first two sequences form one example (one label); a third would be unpaired.
    batch_pack(&bt, IDS, use_dual ? 2 : B, N, SAMPLE, cls, d.vocab - 1);
    // Larger than default weights so every path carries a gradient well above the noise.
    for (size_t i = 0; i < m.nparams; i++) m.params[i] *= 1.5f;
    k_zero(&k, m.grads, m.nparams);
    loss_of(&m, &k, &bt, LABELS, train);
    // SBM: the graphs stay those of this forward, and the straight-through path (which finite
    // differences cannot see through a fixed graph) is checked in test_sbm.
    m.freeze_graphs = m.no_ste = use_sbm;
    model_backward(&m, &k, &bt, LABELS, train, 77, 3, 1.0f);
    const float h = 3e-4f;
    int bad = 0, checked = 0;
    double max_abs = 0.0;
    for (int e = 0; e < m.table.n; e++) {
        const param_entry *pe = &m.table.e[e];
        for (size_t j = 0; j < pe->numel; j++) {
            size_t i = pe->offset + j;
            float orig = m.params[i];
            m.params[i] = orig + h;
            double lp = loss_of(&m, &k, &bt, LABELS, train);
            m.params[i] = orig - h;
            double lm = loss_of(&m, &k, &bt, LABELS, train);
            m.params[i] = orig;
            double num = (lp - lm) / (2.0 * h), ana = m.grads[i];
            double tol = 2e-3 + 2e-2 * fmax(fabs(num), fabs(ana));
            if (fabs(num - ana) > tol) {
                if (bad < 10)
                    print_message("%s[%zu]: analytical %.6g numerical %.6g\n", pe->name, j, ana,
                                  num);
                bad++;
            }
            if (fabs(ana) > max_abs) max_abs = fabs(ana);
            checked++;
        }
    }
    print_message("gradcheck train=%d cls=%d: %d/%d parameters off, max |grad| %.3g\n", train, cls,
                  bad, checked, max_abs);
    assert_int_equal(bad, 0);
    assert_true(max_abs > 1e-2);  // not vacuous
    batch_free(&bt);
    model_free(&m);
}

static void test_gradcheck_eval(void **s) { (void)s; use_sbm = 0; gradcheck(0, 0); }
static void test_gradcheck_dropout(void **s) { (void)s; use_sbm = 0; gradcheck(1, 0); }
static void test_gradcheck_cls(void **s) { (void)s; use_sbm = 0; gradcheck(1, 1); }
static void test_gradcheck_sbm(void **s) { (void)s; use_sbm = 1; gradcheck(0, 0); use_sbm = 0; }
static void test_gradcheck_sbm_dropout(void **s) { (void)s; use_sbm = 1; gradcheck(1, 0); use_sbm = 0; }
// Dense-sampled units run attention in row blocks with GEMMs: the same checks apply.
static void test_gradcheck_dual(void **s) {
    (void)s;
    use_dual = 1;
    gradcheck(1, 0);
    use_sbm = 1;
    gradcheck(1, 0);
    use_sbm = use_dual = 0;
}
static void test_gradcheck_sbm_dense(void **s) {
    (void)s;
    use_sbm = 1;
    sampler = SBM_SAMPLER_DENSE;
    gradcheck(1, 0);
    sampler = SBM_SAMPLER_FASTRG;
    use_sbm = 0;
}

// Head size 8 takes the vectorised per-edge kernels (head size 4 above, the portable loops).
// Without dropout: with it, at this head size a few embedding entries sit within h of a kink
// (differences move by 10% between h = 1e-4 and 1e-3, both kernel variants alike); dropout
// through the vectorised kernels is checked per op in test_sbm.
static void test_gradcheck_sbm_simd(void **s) {
    (void)s;
    use_sbm = 1;
    head_dim = 8;
    gradcheck(0, 0);
    head_dim = 4;
    use_sbm = 0;
}

// Packing cuts each sequence after its last real token. Processing the full padded rows
// instead (as a dense implementation does) must give the same loss and gradients.
static void test_packing_exact(void **state) {
    (void)state;
    use_sbm = 0;
    model_dims d = small_dims(0);
    model m;
    kctx k;
    kctx_init(&k, KB_CPU, 1);
    model_init(&m, &k, &d, B, 99);
    kbatch packed, full;
    batch_alloc(&packed, B, N);
    batch_alloc(&full, B, N);
    batch_pack(&packed, IDS, B, N, SAMPLE, 0, 0);
    assert_true(packed.T < B * N);
    full.B = B;
    full.n = N;
    full.T = B * N;
    for (int b = 0; b < B; b++) {
        full.len[b] = N;
        full.off[b] = b * N;
        full.sample[b] = SAMPLE[b];
    }
    full.off[B] = B * N;
    for (int i = 0; i < B * N; i++) {
        full.ids[i] = IDS[i];
        full.mask[i] = IDS[i] != 0;
    }
    float *g1 = xmalloc(sizeof(float) * m.nparams);
    k_zero(&k, m.grads, m.nparams);
    double l1 = model_forward(&m, &k, &packed, LABELS, 1, 5, 1, NULL);
    model_backward(&m, &k, &packed, LABELS, 1, 5, 1, 1.0f);
    memcpy(g1, m.grads, sizeof(float) * m.nparams);
    k_zero(&k, m.grads, m.nparams);
    double l2 = model_forward(&m, &k, &full, LABELS, 1, 5, 1, NULL);
    model_backward(&m, &k, &full, LABELS, 1, 5, 1, 1.0f);
    assert_true(fabs(l1 - l2) < 1e-5 * fabs(l1));
    for (size_t i = 0; i < m.nparams; i++)
        if (fabs(g1[i] - m.grads[i]) > 1e-5 + 1e-4 * fabs(g1[i]))
            fail_msg("gradient %zu differs: packed %g full %g", i, g1[i], m.grads[i]);
    free(g1);
    batch_free(&packed);
    batch_free(&full);
    model_free(&m);
}

// The loss of a sequence (dropout included) is keyed by its sample index, not its batch slot.
static void test_batch_independence(void **state) {
    (void)state;
    use_sbm = 0;
    model_dims d = small_dims(0);
    model m;
    kctx k;
    kctx_init(&k, KB_CPU, 2);
    model_init(&m, &k, &d, B, 7);
    kbatch bt;
    batch_alloc(&bt, B, N);
    batch_pack(&bt, IDS, B, N, SAMPLE, 0, 0);
    double total = model_forward(&m, &k, &bt, LABELS, 1, 3, 9, NULL);
    double sum = 0.0;
    for (int b = B - 1; b >= 0; b--) {
        batch_pack(&bt, IDS + b * N, 1, N, SAMPLE + b, 0, 0);
        sum += model_forward(&m, &k, &bt, LABELS + b, 1, 3, 9, NULL);
    }
    assert_true(fabs(total - sum) < 1e-5 * fabs(total));
    // A different step draws different dropout masks.
    batch_pack(&bt, IDS, B, N, SAMPLE, 0, 0);
    double other = model_forward(&m, &k, &bt, LABELS, 1, 3, 10, NULL);
    assert_true(fabs(other - total) > 1e-6);
    batch_free(&bt);
    model_free(&m);
}

static void test_param_names(void **state) {
    (void)state;
    model_dims d = small_dims(0);
    model m;
    kctx k;
    kctx_init(&k, KB_CPU, 1);
    model_init(&m, &k, &d, 1, 1);
    const char *names[] = {"embed/tokens", "embed/positions", "layers/1/attn/wk/weight",
                           "layers/0/attn/wo/bias", "layers/1/ffn/fc2/weight", "final_ln/bias",
                           "head/fc2/weight"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        assert_true(param_table_find(&m.table, names[i]) >= 0);
    const param_entry *e = &m.table.e[param_table_find(&m.table, "layers/0/attn/wq/weight")];
    assert_int_equal(e->ndim, 2);
    assert_int_equal(e->shape[0], 8);  // H*d
    assert_int_equal(e->shape[1], 8);  // D
    e = &m.table.e[param_table_find(&m.table, "head/fc2/weight")];
    assert_int_equal(e->shape[0], 3);
    assert_int_equal(e->shape[1], 12);
    model_free(&m);
}

// Head parallelism: the slices of tp ranks, put back together, are exactly the tensors of a
// one-process model (a tp run starts where 1x1 does), and every slice is where the table says.
static void test_tp_slices(void **state) {
    (void)state;
    int saved = use_sbm;
    use_sbm = 1;
    {
        const int tp = 2;
        model_dims d = small_dims(0);
        model one, part[2];
        kctx k;
        kctx_init(&k, KB_CPU, 1);
        model_init(&one, &k, &d, 1, 42);
        size_t np = 0;
        float *gathered = NULL;
        for (int r = 0; r < tp; r++) {
            model_dims dr = d;
            dr.tp = tp;
            dr.tp_rank = r;
            model_init(&part[r], &k, &dr, 1, 42);
            assert_int_equal(part[r].heads_local, d.heads / tp);
            assert_int_equal(part[r].head0, r * d.heads / tp);
            np = part[r].nparams;
            if (!gathered) gathered = xmalloc(sizeof(float) * np * tp);
            memcpy(gathered + (size_t)r * np, part[r].params, sizeof(float) * np);
        }
        assert_true(np < one.nparams);  // split tensors are smaller, replicated ones whole
        assert_int_equal(part[0].full.total, one.nparams);
        float *full = xmalloc(sizeof(float) * one.nparams);
        memset(full, 0xff, sizeof(float) * one.nparams);
        model_to_full(&part[0], gathered, full);
        assert_memory_equal(full, one.params, sizeof(float) * one.nparams);
        // wo is split by columns: rank 1's first row is columns [H/2 d, H d) of the full row 0.
        int i = param_table_find(&part[1].table, "layers/0/attn/wo/weight");
        assert_true(i >= 0);
        const param_entry *e = &part[1].table.e[i];
        assert_int_equal(e->shard, 1);
        assert_int_equal(e->gshape[1], (int64_t)d.heads * d.head_dim);
        const param_entry *f = &one.table.e[i];
        assert_memory_equal(part[1].params + e->offset,
                            one.params + f->offset + e->shape[1], sizeof(float) * e->shape[1]);
        // And back: every rank's slices come out of the whole tensors unchanged.
        for (int r = 0; r < tp; r++) {
            float *back = xmalloc(sizeof(float) * np);
            model_from_full(&part[r], one.params, back);
            assert_memory_equal(back, part[r].params, sizeof(float) * np);
            free(back);
            model_free(&part[r]);
        }
        free(full);
        free(gathered);
        model_free(&one);
    }
    use_sbm = saved;
}

// A NaN anywhere in the parameters must reach the loss, never be swallowed by an op that takes
// a max or compares (ReLU, softmax maxima, the samplers' Poisson and Bernoulli draws).
static void nan_reaches_loss(int sbm, sbm_sampler smp) {
    int saved = use_sbm;
    sbm_sampler ssaved = sampler;
    use_sbm = sbm;
    sampler = smp;
    model_dims d = small_dims(0);
    kctx k;
    kctx_init(&k, KB_CPU, 1);
    model m;
    model_init(&m, &k, &d, B, 3);
    kbatch bt;
    batch_alloc(&bt, B, N);
    batch_pack(&bt, IDS, B, N, SAMPLE, 0, d.vocab - 1);
    const char *names[] = {"embed/positions", "embed/tokens", "layers/0/attn/wq/weight",
                           "layers/0/attn/wk/weight", "layers/1/attn/wv/weight",
                           "layers/0/ffn/fc1/weight", "head/fc1/weight", "head/fc2/bias",
                           "layers/1/attn/clusters", "layers/0/attn/proj1/weight"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        int e = param_table_find(&m.table, names[i]);
        if (e < 0) continue;  // clusters and phi exist only with SBM attention
        float *p = m.params + m.table.e[e].offset + m.table.e[e].numel / 2;
        float keep = *p;
        *p = NAN;
        for (int train = 0; train <= 1; train++) {
            double ce = model_forward(&m, &k, &bt, LABELS, train, 9, 1, NULL);
            double loss = ce / B + m.reg_loss;
            if (!isnan(loss))
                print_error("%s: NaN in %s gives loss %g (train %d)\n", sbm ? "sbm" : "softmax",
                            names[i], loss, train);
            assert_true(isnan(loss));
        }
        *p = keep;
    }
    model_free(&m);
    batch_free(&bt);
    use_sbm = saved;
    sampler = ssaved;
}
static void test_nan_softmax(void **s) { (void)s; nan_reaches_loss(0, SBM_SAMPLER_FASTRG); }
static void test_nan_sbm_fastrg(void **s) { (void)s; nan_reaches_loss(1, SBM_SAMPLER_FASTRG); }
static void test_nan_sbm_dense(void **s) { (void)s; nan_reaches_loss(1, SBM_SAMPLER_DENSE); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_param_names),
        cmocka_unit_test(test_tp_slices),
        cmocka_unit_test(test_nan_softmax),
        cmocka_unit_test(test_nan_sbm_fastrg),
        cmocka_unit_test(test_nan_sbm_dense),
        cmocka_unit_test(test_gradcheck_eval),
        cmocka_unit_test(test_gradcheck_dropout),
        cmocka_unit_test(test_gradcheck_cls),
        cmocka_unit_test(test_gradcheck_sbm),
        cmocka_unit_test(test_gradcheck_sbm_dropout),
        cmocka_unit_test(test_gradcheck_sbm_dense),
        cmocka_unit_test(test_gradcheck_sbm_simd),
        cmocka_unit_test(test_gradcheck_dual),
        cmocka_unit_test(test_packing_exact),
        cmocka_unit_test(test_batch_independence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
