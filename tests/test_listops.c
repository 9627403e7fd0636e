// test_listops.c: the ListOps generator (io/listops.c) checked through the dataset reader
// against an independent recursive-descent evaluator written here: labels, grammar (depth and
// argument counts), length bounds, padding, uniqueness across splits, determinism per seed and
// a non-degenerate label distribution; plus the evaluator's MED rule and malformed inputs.
#define _DEFAULT_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "io/dataset.h"
#include "io/listops.h"
#include "kernels/common.h"
#include "testdir.h"

static char path_a[512], path_b[512], path_c[512];

enum { N_TRAIN = 300, N_DEV = 50, N_TEST = 50, MIN_LEN = 10, MAX_LEN = 200, SEQ = 256 };

static listops_params small_params(uint64_t seed) {
    listops_params p = {N_TRAIN, N_DEV, N_TEST, MIN_LEN, MAX_LEN, SEQ, seed};
    return p;
}

static int setup(void **state) {
    (void)state;
    if (testdir_make("test_listops")) return -1;
    tpath(path_a, sizeof path_a, "a.h5");
    tpath(path_b, sizeof path_b, "b.h5");
    tpath(path_c, sizeof path_c, "c.h5");
    char err[SBMT_ERR_LEN];
    listops_params p = small_params(7), q = small_params(8);
    if (listops_generate(&p, path_a, 0, err) || listops_generate(&p, path_b, 0, err) ||
        listops_generate(&q, path_c, 0, err)) {
        fprintf(stderr, "generation failed: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return testdir_remove();
}

// ---------------------------------------------------------------------------------------------
// Independent evaluator: recursive descent over the symbol strings (not the generator's ids).

typedef struct {
    const int32_t *t;
    int n, pos, bad;
    int max_depth, min_args, max_args;
} parser;

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

static int parse_expr(parser *p, int depth) {
    if (p->bad || p->pos >= p->n) return p->bad = 1, -1;
    int id = p->t[p->pos++];
    if (id <= 0 || id >= LISTOPS_VOCAB) return p->bad = 1, -1;
    const char *sym = listops_symbols[id];
    if (depth > p->max_depth) p->max_depth = depth;
    if (sym[0] >= '0' && sym[0] <= '9' && sym[1] == 0) return sym[0] - '0';
    if (sym[0] != '[') return p->bad = 1, -1;
    int vals[64], k = 0;
    while (p->pos < p->n && strcmp(listops_symbols[p->t[p->pos]], "]") != 0) {
        if (k == 64) return p->bad = 1, -1;
        vals[k++] = parse_expr(p, depth + 1);
        if (p->bad) return -1;
    }
    if (p->pos >= p->n || k == 0) return p->bad = 1, -1;
    p->pos++;  // "]"
    if (k < p->min_args) p->min_args = k;
    if (k > p->max_args) p->max_args = k;
    if (strcmp(sym, "[MIN") == 0) {
        int m = vals[0];
        for (int i = 1; i < k; i++) m = vals[i] < m ? vals[i] : m;
        return m;
    }
    if (strcmp(sym, "[MAX") == 0) {
        int m = vals[0];
        for (int i = 1; i < k; i++) m = vals[i] > m ? vals[i] : m;
        return m;
    }
    if (strcmp(sym, "[SM") == 0) {
        long s = 0;
        for (int i = 0; i < k; i++) s += vals[i];
        return (int)(s % 10);
    }
    if (strcmp(sym, "[MED") == 0) {  // numpy.median then int()
        qsort(vals, (size_t)k, sizeof(int), cmp_int);
        double med = k % 2 ? (double)vals[k / 2] : 0.5 * ((double)vals[k / 2 - 1] + vals[k / 2]);
        return (int)med;
    }
    return p->bad = 1, -1;
}

// Evaluates a whole sequence of n tokens; -1 when malformed or with trailing tokens.
static int ref_eval(const int32_t *t, int n, parser *out) {
    parser p = {t, n, 0, 0, 0, 1000, 0};
    int v = parse_expr(&p, 1);
    if (p.bad || p.pos != n) v = -1;
    if (out) *out = p;
    return v;
}

// Token ids from symbol strings, e.g. ids_of("[MED 1 2 ]", out).
static int ids_of(const char *text, int32_t *out) {
    int n = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", text);
    for (char *save = NULL, *w = strtok_r(buf, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        int id = -1;
        for (int i = 1; i < LISTOPS_VOCAB; i++)
            if (strcmp(listops_symbols[i], w) == 0) id = i;
        assert_true(id > 0);
        out[n++] = id;
    }
    return n;
}

// ---------------------------------------------------------------------------------------------
// Reading a generated file

typedef struct {
    int64_t rows[SPLIT_COUNT];
    int32_t *ids[SPLIT_COUNT], *labels[SPLIT_COUNT];
    int seq_len;
} all_rows;

static void read_all(const char *path, all_rows *a) {
    char err[SBMT_ERR_LEN];
    ds_file ds;
    int rc = ds_open(&ds, path, err);
    if (rc) fail_msg("%s", err);
    assert_string_equal(ds.task, "listops");
    assert_int_equal(ds.vocab_size, LISTOPS_VOCAB);
    assert_int_equal(ds.num_classes, LISTOPS_CLASSES);
    assert_int_equal(ds.dual, 0);
    a->seq_len = ds.seq_len;
    for (int s = 0; s < SPLIT_COUNT; s++) {
        int64_t n = ds.rows[s];
        assert_true(n >= 0);
        a->rows[s] = n;
        a->ids[s] = malloc(sizeof(int32_t) * (size_t)(n ? n : 1) * (size_t)ds.seq_len);
        a->labels[s] = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
        int64_t *r = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
        for (int64_t i = 0; i < n; i++) r[i] = i;
        rc = ds_read_rows(&ds, s, r, (int)n, a->ids[s], NULL, a->labels[s], err);
        if (rc) fail_msg("%s", err);
        free(r);
    }
    ds_close(&ds);
}

static void free_all(all_rows *a) {
    for (int s = 0; s < SPLIT_COUNT; s++) {
        free(a->ids[s]);
        free(a->labels[s]);
    }
}

static int seq_length(const int32_t *row, int L) {
    int n = 0;
    while (n < L && row[n] != 0) n++;
    return n;
}

// ---------------------------------------------------------------------------------------------
// Tests

static void test_symbols(void **state) {
    (void)state;
    const char *want[LISTOPS_VOCAB] = {"<pad>", "[MIN", "[MAX", "[MED", "[SM", "0", "1", "2",
                                       "3",     "4",    "5",    "6",    "7",   "8", "9", "]"};
    for (int i = 0; i < LISTOPS_VOCAB; i++) assert_string_equal(listops_symbols[i], want[i]);
}

static void test_eval_rules(void **state) {
    (void)state;
    struct {
        const char *expr;
        int value;
    } cases[] = {
        {"7", 7},
        {"[MED 1 2 ]", 1},              // median 1.5 -> 1
        {"[MED 3 9 5 8 ]", 6},          // sorted 3 5 8 9: (5 + 8) / 2 = 6.5 -> 6
        {"[MED 0 9 ]", 4},              // 4.5 -> 4
        {"[MED 2 4 ]", 3},              // exact mean
        {"[MED 7 1 4 ]", 4},            // odd count: middle value
        {"[MIN 4 2 9 ]", 2},
        {"[MAX 4 2 9 ]", 9},
        {"[SM 9 9 5 ]", 3},             // 23 mod 10
        {"[SM 0 0 ]", 0},
        {"[MAX 1 [MIN 5 6 ] [SM 4 4 ] 3 ]", 8},
        {"[MED [MAX 1 8 ] [MIN 2 3 ] [SM 7 7 ] 0 ]", 3},  // 8 2 4 0 -> 0 2 4 8 -> 3
        {"[MIN [MAX [MED 1 2 3 4 ] 0 ] 5 ]", 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t ids[64] = {0};
        int n = ids_of(cases[i].expr, ids);
        assert_int_equal(ref_eval(ids, n, NULL), cases[i].value);
        assert_int_equal(listops_eval_ids(ids, n), cases[i].value);
        assert_int_equal(listops_eval_ids(ids, n + 5), cases[i].value);  // padding ignored
    }
    const char *bad[] = {"[MIN 1 2", "]", "1 2", "[SM ]", "[MAX 1 ] ]", "[MIN"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t ids[64] = {0};
        int n = ids_of(bad[i], ids);
        assert_int_equal(listops_eval_ids(ids, n), -1);
        assert_int_equal(ref_eval(ids, n, NULL), -1);
    }
    int32_t gap[8] = {1, 6, 0, 7, 15, 0, 0, 0};  // token after padding
    assert_int_equal(listops_eval_ids(gap, 8), -1);
    int32_t junk[3] = {1, 99, 15};
    assert_int_equal(listops_eval_ids(junk, 3), -1);
    int32_t empty[4] = {0, 0, 0, 0};
    assert_int_equal(listops_eval_ids(empty, 4), -1);
}

static void test_generated_rows(void **state) {
    (void)state;
    all_rows a;
    read_all(path_a, &a);
    assert_int_equal(a.seq_len, SEQ);
    assert_int_equal(a.rows[SPLIT_TRAIN], N_TRAIN);
    assert_int_equal(a.rows[SPLIT_DEV], N_DEV);
    assert_int_equal(a.rows[SPLIT_TEST], N_TEST);
    int hist[LISTOPS_CLASSES] = {0};
    int max_depth = 0, min_args = 1000, max_args = 0, total = 0, min_seen = 1 << 30, max_seen = 0;
    for (int s = 0; s < SPLIT_COUNT; s++) {
        for (int64_t r = 0; r < a.rows[s]; r++) {
            const int32_t *row = a.ids[s] + (size_t)r * SEQ;
            int n = seq_length(row, SEQ);
            for (int i = n; i < SEQ; i++)
                if (row[i] != 0) fail_msg("split %d row %lld: token after padding", s, (long long)r);
            if (!(n > MIN_LEN && n < MAX_LEN))
                fail_msg("split %d row %lld: length %d outside (%d, %d)", s, (long long)r, n,
                         MIN_LEN, MAX_LEN);
            parser p;
            int v = ref_eval(row, n, &p);
            if (v < 0) fail_msg("split %d row %lld: malformed expression", s, (long long)r);
            if (v != a.labels[s][r])
                fail_msg("split %d row %lld: label %d, expression value %d", s, (long long)r,
                         a.labels[s][r], v);
            assert_int_equal(listops_eval_ids(row, SEQ), v);
            if (p.max_depth > max_depth) max_depth = p.max_depth;
            if (p.min_args < min_args) min_args = p.min_args;
            if (p.max_args > max_args) max_args = p.max_args;
            if (n < min_seen) min_seen = n;
            if (n > max_seen) max_seen = n;
            hist[v]++;
            total++;
        }
    }
    // Grammar: depth <= 10, 2..10 arguments per operator, and both extremes get used.
    assert_true(max_depth <= 10);
    assert_true(max_depth >= 5);
    assert_int_equal(min_args, 2);
    assert_int_equal(max_args, 10);
    assert_true(max_seen > MAX_LEN / 2);
    assert_true(min_seen < MIN_LEN + 20);
    // Not degenerate: many classes occur and none dominates.
    int classes = 0, biggest = 0;
    for (int c = 0; c < LISTOPS_CLASSES; c++) {
        classes += hist[c] > 0;
        biggest = hist[c] > biggest ? hist[c] : biggest;
    }
    assert_true(classes >= 8);
    assert_true(biggest < total / 2);
    free_all(&a);
}

typedef struct {
    const int32_t *row;
    int n;
} seq_ref;

static int cmp_seq(const void *x, const void *y) {
    const seq_ref *a = x, *b = y;
    if (a->n != b->n) return a->n < b->n ? -1 : 1;
    return memcmp(a->row, b->row, sizeof(int32_t) * (size_t)a->n);
}

static void check_unique(const char *path) {
    all_rows a;
    read_all(path, &a);
    int L = a.seq_len;
    int total = (int)(a.rows[0] + a.rows[1] + a.rows[2]), k = 0;
    seq_ref *refs = malloc(sizeof(seq_ref) * (size_t)total);
    for (int s = 0; s < SPLIT_COUNT; s++)
        for (int64_t r = 0; r < a.rows[s]; r++) {
            refs[k].row = a.ids[s] + (size_t)r * L;
            refs[k].n = seq_length(refs[k].row, L);
            k++;
        }
    qsort(refs, (size_t)total, sizeof *refs, cmp_seq);
    for (int i = 1; i < total; i++) assert_int_not_equal(cmp_seq(&refs[i - 1], &refs[i]), 0);
    free(refs);
    free_all(&a);
}

static void test_no_duplicates(void **state) {
    (void)state;
    check_unique(path_a);
    // Lengths 4 and 5 only (4 * 10^2 + 4 * 10^3 distinct trees): 2000 draws would repeat many
    // times over without the duplicate filter.
    char err[SBMT_ERR_LEN], path[600];
    snprintf(path, sizeof path, "%s/short.h5", tmpdir);
    listops_params p = {1800, 100, 100, 3, 6, 8, 5};
    int rc = listops_generate(&p, path, 0, err);
    if (rc) fail_msg("%s", err);
    check_unique(path);
}

static int same_rows(const all_rows *x, const all_rows *y) {
    for (int s = 0; s < SPLIT_COUNT; s++) {
        if (x->rows[s] != y->rows[s]) return 0;
        size_t n = (size_t)x->rows[s];
        if (memcmp(x->ids[s], y->ids[s], sizeof(int32_t) * n * SEQ) ||
            memcmp(x->labels[s], y->labels[s], sizeof(int32_t) * n))
            return 0;
    }
    return 1;
}

static void test_determinism(void **state) {
    (void)state;
    all_rows a, b, c;
    read_all(path_a, &a);
    read_all(path_b, &b);
    read_all(path_c, &c);
    assert_true(same_rows(&a, &b));   // same seed: identical contents
    assert_false(same_rows(&a, &c));  // another seed: different trees
    int same = 0;
    for (int64_t r = 0; r < N_TRAIN; r++)
        same += memcmp(a.ids[0] + r * SEQ, c.ids[0] + r * SEQ, sizeof(int32_t) * SEQ) == 0;
    assert_true(same < N_TRAIN / 10);
    free_all(&a);
    free_all(&b);
    free_all(&c);
}

static void test_vocab_and_format(void **state) {
    (void)state;
    hid_t f = H5Fopen(path_a, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t d = H5Dopen2(f, "vocab", H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    char *v[LISTOPS_VOCAB];
    assert_true(H5Dread(d, st, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    for (int i = 0; i < LISTOPS_VOCAB; i++) assert_string_equal(v[i], listops_symbols[i]);
    hid_t sp = H5Dget_space(d);
    H5Dvlen_reclaim(st, sp, H5P_DEFAULT, v);
    H5Sclose(sp);
    H5Tclose(st);
    H5Dclose(d);
    d = H5Dopen2(f, "train/input_ids", H5P_DEFAULT);  // u8 on disk
    hid_t t = H5Dget_type(d);
    assert_int_equal(H5Tget_size(t), 1);
    H5Tclose(t);
    H5Dclose(d);
    H5Fclose(f);
}

static void test_bad_params(void **state) {
    (void)state;
    char err[SBMT_ERR_LEN], path[600];
    snprintf(path, sizeof path, "%s/bad.h5", tmpdir);
    listops_params p = small_params(1);
    p.seq_len = MAX_LEN - 2;
    assert_int_equal(listops_generate(&p, path, 0, err), -1);
    assert_non_null(strstr(err, "seq_len"));
    p = small_params(1);
    p.min_len = 50, p.max_len = 51;
    assert_int_equal(listops_generate(&p, path, 0, err), -1);
    assert_non_null(strstr(err, "min_len"));
    p = small_params(1);
    p.train = -1;
    assert_int_equal(listops_generate(&p, path, 0, err), -1);
    // Only 10 distinct one-token trees exist: asking for more must fail, not loop forever.
    p = (listops_params){20, 0, 0, 0, 2, 4, 3};
    assert_int_equal(listops_generate(&p, path, 0, err), -1);
    assert_non_null(strstr(err, "distinct"));
    FILE *f = fopen(path, "rb");
    assert_null(f);  // nothing left behind under the final name
    // Exactly the 10 digits is possible.
    p.train = 10;
    int rc = listops_generate(&p, path, 0, err);
    if (rc) fail_msg("%s", err);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_symbols),        cmocka_unit_test(test_eval_rules),
        cmocka_unit_test(test_generated_rows), cmocka_unit_test(test_no_duplicates),
        cmocka_unit_test(test_determinism),    cmocka_unit_test(test_vocab_and_format),
        cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
