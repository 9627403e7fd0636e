// test_import_text.c: the LRA release converters of io/import_text.c (ListOps, IMDb text, AAN
// retrieval) on small inputs written in the real formats: ids, labels, padding, truncation,
// splits, dual, and the error messages (file and line named) for malformed input; plus the
// `sbmt data import-*` CLI when SBMT_BIN is set.
#define _DEFAULT_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/dataset.h"
#include "io/import_text.h"
#include "io/listops.h"
#include "kernels/common.h"
#include "testdir.h"

static int setup(void **state) {
    (void)state;
    return testdir_make("test_import_text");
}

static int teardown(void **state) {
    (void)state;
    return testdir_remove();
}

// tmpdir/name (static rotating buffers so several can be live at once).
static const char *tp(const char *name) {
    static char bufs[8][512];
    static int k;
    char *b = bufs[k++ & 7];
    snprintf(b, sizeof bufs[0], "%s/%s", tmpdir, name);
    return b;
}

static void mkdirs(const char *rel) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", tmpdir, rel);
    for (char *s = p + strlen(tmpdir) + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            mkdir(p, 0755);
            *s = '/';
        }
    mkdir(p, 0755);
}

static void put(const char *rel, const char *content) {
    FILE *f = fopen(tp(rel), "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, strlen(content), f), strlen(content));
    assert_int_equal(fclose(f), 0);
}

static int exists(const char *p) { return access(p, F_OK) == 0; }

static void assert_contains(const char *hay, const char *needle) {
    if (!strstr(hay, needle)) fail_msg("'%s' does not contain '%s'", hay, needle);
}

// Reads all rows of one split; returns malloc'd arrays (ids1 only for dual files).
static void read_split(ds_file *ds, int split, int32_t **ids, int32_t **ids1, int32_t **labels) {
    int64_t n = ds->rows[split];
    assert_true(n > 0);
    int64_t *rows = xmalloc(sizeof(int64_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) rows[i] = i;
    *ids = xmalloc(sizeof(int32_t) * (size_t)(n * ds->seq_len));
    *ids1 = ds->dual ? xmalloc(sizeof(int32_t) * (size_t)(n * ds->seq_len)) : NULL;
    *labels = xmalloc(sizeof(int32_t) * (size_t)n);
    char err[SBMT_ERR_LEN];
    if (ds_read_rows(ds, split, rows, (int)n, *ids, *ids1, *labels, err)) fail_msg("%s", err);
    free(rows);
}

static void assert_ids(const int32_t *got, const int32_t *want, int nwant, int L) {
    for (int i = 0; i < L; i++) {
        int32_t w = i < nwant ? want[i] : 0;
        if (got[i] != w) fail_msg("position %d: id %d, expected %d", i, got[i], w);
    }
}

// Byte-level expectation: s[i] + 1, then padding.
static void assert_bytes(const int32_t *got, const char *s, int L) {
    int n = (int)strlen(s);
    for (int i = 0; i < L; i++) {
        int32_t w = i < n ? (int32_t)(unsigned char)s[i] + 1 : 0;
        if (got[i] != w) fail_msg("position %d: id %d, expected %d ('%s')", i, got[i], w, s);
    }
}

// ---------------------------------------------------------------------------------------------
// ListOps

// [MAX 2 9 [MIN 4 7 ] 0 ] = 9 ; [SM 3 4 ] = 7 ; [MED 1 5 8 ] = 5 ; [MIN 6 2 ] = 2 ; 4 = 4
static const char *LO_A = "( ( [MAX 2 9 ( [MIN 4 7 ] ) 0 ] ) )";
static const int32_t LO_A_IDS[] = {2, 7, 14, 1, 9, 12, 15, 5, 15};

static void write_listops(const char *d, const char *train, const char *val, const char *test) {
    char p[256];
    mkdirs(d);
    snprintf(p, sizeof p, "%s/basic_train.tsv", d);
    if (train) put(p, train);
    snprintf(p, sizeof p, "%s/basic_val.tsv", d);
    if (val) put(p, val);
    snprintf(p, sizeof p, "%s/basic_test.tsv", d);
    if (test) put(p, test);
}

static void test_listops_convert(void **state) {
    (void)state;
    char train[512];
    snprintf(train, sizeof train,
             "Source\tTarget\n%s\t9\n( [SM 3 4 ] )\t7\r\n\n[MED 1 5 8 ]\t5\n", LO_A);
    write_listops("lo", train, "Source\tTarget\n( [MIN 6 2 ] )\t2\n",
                  "Source\tTarget\n4\t4\n( [MAX 2 9 ( [MIN 4 7 ] ) 0 ] )\t9");  // no final \n
    char err[SBMT_ERR_LEN];
    lra_import_opts o = {16, 0, 0, 0};
    lra_import_stats st;
    if (lra_import_listops(tp("lo"), tp("lo.h5"), &o, &st, err)) fail_msg("%s", err);
    assert_int_equal(st.rows[0], 3);
    assert_int_equal(st.rows[1], 1);
    assert_int_equal(st.rows[2], 2);
    assert_int_equal(st.max_len, 9);
    assert_int_equal(st.truncated[0] + st.truncated[1] + st.truncated[2], 0);

    ds_file ds;
    if (ds_open(&ds, tp("lo.h5"), err)) fail_msg("%s", err);
    assert_string_equal(ds.task, "listops");
    assert_int_equal(ds.vocab_size, 16);
    assert_int_equal(ds.num_classes, 10);
    assert_int_equal(ds.seq_len, 16);
    assert_int_equal(ds.dual, 0);
    assert_int_equal(ds.rows[SPLIT_TRAIN], 3);
    assert_int_equal(ds.rows[SPLIT_DEV], 1);
    assert_int_equal(ds.rows[SPLIT_TEST], 2);
    assert_true(H5Lexists(ds.file, "vocab", H5P_DEFAULT) > 0);

    int32_t *ids, *ids1, *labels;
    read_split(&ds, SPLIT_TRAIN, &ids, &ids1, &labels);
    assert_null(ids1);
    assert_ids(ids, LO_A_IDS, 9, 16);
    const int32_t b[] = {4, 8, 9, 15};
    assert_ids(ids + 16, b, 4, 16);
    const int32_t c[] = {3, 6, 10, 13, 15};
    assert_ids(ids + 32, c, 5, 16);
    assert_int_equal(labels[0], 9);
    assert_int_equal(labels[1], 7);
    assert_int_equal(labels[2], 5);
    for (int r = 0; r < 3; r++) assert_int_equal(listops_eval_ids(ids + 16 * r, 16), labels[r]);
    free(ids);
    free(labels);

    read_split(&ds, SPLIT_DEV, &ids, &ids1, &labels);
    const int32_t d[] = {1, 11, 7, 15};
    assert_ids(ids, d, 4, 16);
    assert_int_equal(labels[0], 2);
    free(ids);
    free(labels);

    read_split(&ds, SPLIT_TEST, &ids, &ids1, &labels);
    const int32_t e[] = {9};
    assert_ids(ids, e, 1, 16);
    assert_ids(ids + 16, LO_A_IDS, 9, 16);
    assert_int_equal(labels[0], 4);
    assert_int_equal(labels[1], 9);
    free(ids);
    free(labels);
    ds_close(&ds);

    // The directory above (lra_release/) works too: listops-1000/ is found.
    mkdirs("rel");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", tp("lo"), tp("rel/listops-1000"));
    assert_int_equal(system(cmd), 0);
    if (lra_import_listops(tp("rel"), tp("rel.h5"), &o, &st, err)) fail_msg("%s", err);
    assert_int_equal(st.rows[0], 3);
}

// Runs a ListOps conversion expected to fail; asserts on the message and that no output exists.
static void lo_fail(const char *dir, int seq_len, int truncate, const char *want1,
                    const char *want2) {
    char err[SBMT_ERR_LEN] = "";
    lra_import_opts o = {seq_len, truncate, 0, 0};
    lra_import_stats st;
    assert_int_equal(lra_import_listops(tp(dir), tp("bad.h5"), &o, &st, err), -1);
    assert_contains(err, want1);
    if (want2) assert_contains(err, want2);
    assert_false(exists(tp("bad.h5")));
    assert_false(exists(tp("bad.h5.tmp")));
}

static void test_listops_errors(void **state) {
    (void)state;
    const char *ok = "Source\tTarget\n[MAX 1 2 ]\t2\n";
    // Unknown symbol in the val file, line 3.
    write_listops("e1", ok, "Source\tTarget\n[MAX 1 2 ]\t2\n( [MAX 1 [FOO 2 ] )\t2\n", ok);
    lo_fail("e1", 16, 0, "e1/basic_val.tsv:3:", "unknown symbol '[FOO'");
    // Wrong column count (3 columns) in test, line 2.
    write_listops("e2", ok, ok, "Source\tTarget\n[MAX 1 2 ]\t2\textra\n");
    lo_fail("e2", 16, 0, "e2/basic_test.tsv:2:", "found 3");
    // Only one column, train line 3.
    write_listops("e3", "Source\tTarget\n[MAX 1 2 ]\t2\n[MAX 1 2 ]\n", ok, ok);
    lo_fail("e3", 16, 0, "e3/basic_train.tsv:3:", "found 1");
    // Bad label.
    write_listops("e4", "Source\tTarget\n[MAX 1 2 ]\t12\n", ok, ok);
    lo_fail("e4", 16, 0, "e4/basic_train.tsv:2:", "label '12'");
    // Too long for seq_len 4 without --truncate (5 tokens, parentheses not counted).
    write_listops("e5", ok, ok, "Source\tTarget\n( [SM 1 2 3 ] )\t6\n");
    lo_fail("e5", 4, 0, "e5/basic_test.tsv:2:", "5 tokens, more than seq_len 4");
    // ... and with truncate it converts, cut and counted.
    {
        char err[SBMT_ERR_LEN];
        lra_import_opts o = {4, 1, 0, 0};
        lra_import_stats st;
        if (lra_import_listops(tp("e5"), tp("e5.h5"), &o, &st, err)) fail_msg("%s", err);
        assert_int_equal(st.truncated[SPLIT_TEST], 1);
        assert_int_equal(st.truncated[SPLIT_TRAIN], 0);
        assert_int_equal(st.max_len, 5);
        ds_file ds;
        if (ds_open(&ds, tp("e5.h5"), err)) fail_msg("%s", err);
        int32_t *ids, *ids1, *labels;
        read_split(&ds, SPLIT_TEST, &ids, &ids1, &labels);
        const int32_t want[] = {4, 6, 7, 8};
        assert_ids(ids, want, 4, 4);
        assert_int_equal(labels[0], 6);
        free(ids);
        free(labels);
        ds_close(&ds);
    }
    // Missing file.
    write_listops("e6", ok, ok, NULL);
    lo_fail("e6", 16, 0, "e6/basic_test.tsv", "cannot open");
    // Missing directory.
    lo_fail("nonexistent", 16, 0, "nonexistent", "cannot open input directory");
    // A directory without the files.
    mkdirs("e7");
    lo_fail("e7", 16, 0, "e7", "basic_train.tsv");
    // A header-only split.
    write_listops("e8", ok, "Source\tTarget\n", ok);
    lo_fail("e8", 16, 0, "e8/basic_val.tsv", "no data rows");
}

static void test_listops_line(void **state) {
    (void)state;
    int32_t ids[8], label = -1;
    int64_t n = 0;
    char err[SBMT_ERR_LEN];
    char h[] = "Source\tTarget";
    assert_int_equal(lra_listops_line(h, "f", 1, 8, 0, ids, &label, &n, err), 0);
    char h2[] = "Source\tTarget";  // not on line 1: a bad label
    assert_int_equal(lra_listops_line(h2, "f", 7, 8, 0, ids, &label, &n, err), -1);
    assert_contains(err, "f:7:");
    char blank[] = "  ";
    assert_int_equal(lra_listops_line(blank, "f", 2, 8, 0, ids, &label, &n, err), 0);
    char l[] = "[MIN 3 ]\tx";
    assert_int_equal(lra_listops_line(l, "f", 2, 8, 0, ids, &label, &n, err), -1);
    assert_contains(err, "f:2:");
    char m[] = "( [MIN 3 ] )\t 3 ";
    assert_int_equal(lra_listops_line(m, "f", 2, 8, 0, ids, &label, &n, err), 1);
    assert_int_equal(label, 3);
    assert_int_equal(n, 3);
    const int32_t want[] = {1, 8, 15};
    assert_ids(ids, want, 3, 8);
    char e[] = "( )\t3";
    assert_int_equal(lra_listops_line(e, "f", 4, 8, 0, ids, &label, &n, err), -1);
    assert_contains(err, "f:4: empty expression");
}

// ---------------------------------------------------------------------------------------------
// Text (aclImdb)

static void write_imdb(const char *root) {
    static const char *const dirs[] = {"train/pos", "train/neg", "test/pos", "test/neg",
                                       "train/unsup"};
    char p[512];
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", root, dirs[i]);
        mkdirs(p);
    }
#define PUT(rel, s)                                                                                \
    do {                                                                                           \
        snprintf(p, sizeof p, "%s/%s", root, rel);                                                 \
        put(p, s);                                                                                 \
    } while (0)
    PUT("train/neg/10_1.txt", "Awful.");
    PUT("train/neg/0_2.txt", "Bad film, truly bad.");  // 20 bytes: cut at seq_len 12
    PUT("train/pos/1_7.txt", "Caf\xc3\xa9 ok");
    PUT("train/pos/0_9.txt", "Great!");
    PUT("train/unsup/0_0.txt", "ignored");
    PUT("train/urls_pos.txt", "http://ignored");
    PUT("train/pos/notes.md", "ignored");
    PUT("test/neg/0_3.txt", "Meh");
    PUT("test/pos/0_8.txt", "Loved it");
    PUT("test/pos/3_10.txt", "");  // empty: all padding
#undef PUT
}

static void test_text_convert(void **state) {
    (void)state;
    write_imdb("imdb/aclImdb");
    char err[SBMT_ERR_LEN];
    lra_import_opts o = {12, 0, 0, 0};
    lra_import_stats st;
    // The directory above aclImdb/ is accepted too.
    if (lra_import_text(tp("imdb"), tp("text.h5"), &o, &st, err)) fail_msg("%s", err);
    assert_int_equal(st.rows[SPLIT_TRAIN], 4);
    assert_int_equal(st.rows[SPLIT_DEV], 3);
    assert_int_equal(st.rows[SPLIT_TEST], 3);
    assert_int_equal(st.truncated[SPLIT_TRAIN], 1);
    assert_int_equal(st.truncated[SPLIT_DEV], 0);
    assert_int_equal(st.max_len, 20);

    ds_file ds;
    if (ds_open(&ds, tp("text.h5"), err)) fail_msg("%s", err);
    assert_string_equal(ds.task, "text");
    assert_int_equal(ds.vocab_size, 257);
    assert_int_equal(ds.num_classes, 2);
    assert_int_equal(ds.seq_len, 12);
    assert_int_equal(ds.dual, 0);
    int32_t *ids, *ids1, *labels;
    read_split(&ds, SPLIT_TRAIN, &ids, &ids1, &labels);
    // neg first (sorted: 0_2 < 10_1), then pos (0_9 < 1_7).
    assert_bytes(ids, "Bad film, tr", 12);
    assert_bytes(ids + 12, "Awful.", 12);
    assert_bytes(ids + 24, "Great!", 12);
    assert_bytes(ids + 36, "Caf\xc3\xa9 ok", 12);
    assert_int_equal(ids[36 + 3], 0xc3 + 1);
    const int32_t lab[] = {0, 0, 1, 1};
    for (int i = 0; i < 4; i++) assert_int_equal(labels[i], lab[i]);
    free(ids);
    free(labels);
    for (int s = SPLIT_DEV; s <= SPLIT_TEST; s++) {  // dev is a copy of test
        read_split(&ds, s, &ids, &ids1, &labels);
        assert_bytes(ids, "Meh", 12);
        assert_bytes(ids + 12, "Loved it", 12);
        assert_bytes(ids + 24, "", 12);
        assert_int_equal(labels[0], 0);
        assert_int_equal(labels[1], 1);
        assert_int_equal(labels[2], 1);
        free(ids);
        free(labels);
    }
    ds_close(&ds);

    // --dev-from-train 2: 2 of the 4 train reviews move to dev, deterministically.
    o.dev_from_train = 2;
    int32_t first[2][24];
    for (int rep = 0; rep < 2; rep++) {
        const char *out = rep ? tp("text_d2b.h5") : tp("text_d2.h5");
        if (lra_import_text(tp("imdb/aclImdb"), out, &o, &st, err)) fail_msg("%s", err);
        assert_int_equal(st.rows[SPLIT_TRAIN], 2);
        assert_int_equal(st.rows[SPLIT_DEV], 2);
        assert_int_equal(st.rows[SPLIT_TEST], 3);
        if (ds_open(&ds, out, err)) fail_msg("%s", err);
        int32_t *a, *b, *la, *lb, *unused;
        read_split(&ds, SPLIT_TRAIN, &a, &unused, &la);
        read_split(&ds, SPLIT_DEV, &b, &unused, &lb);
        // Together they are the 4 train reviews (first bytes B, A, G, C), each once.
        int seen = 0;
        for (int r = 0; r < 4; r++) {
            int32_t c0 = r < 2 ? a[12 * r] : b[12 * (r - 2)];
            int32_t l = r < 2 ? la[r] : lb[r - 2];
            const char *firsts = "BAGC";
            const char *hit = strchr(firsts, c0 - 1);
            assert_non_null(hit);
            assert_int_equal(l, (int)(hit - firsts) >= 2);
            seen |= 1 << (hit - firsts);
        }
        assert_int_equal(seen, 15);
        if (rep == 0) {
            memcpy(first[0], a, sizeof first[0]);
            memcpy(first[1], b, sizeof first[1]);
        } else {
            assert_memory_equal(first[0], a, sizeof first[0]);
            assert_memory_equal(first[1], b, sizeof first[1]);
        }
        free(a);
        free(b);
        free(la);
        free(lb);
        ds_close(&ds);
    }
    o.dev_from_train = 4;  // would leave no training reviews
    assert_int_equal(lra_import_text(tp("imdb"), tp("bad.h5"), &o, &st, err), -1);
    assert_contains(err, "leaves no training reviews");
}

static void test_text_errors(void **state) {
    (void)state;
    char err[SBMT_ERR_LEN];
    lra_import_opts o = {12, 0, 0, 0};
    lra_import_stats st;
    assert_int_equal(lra_import_text(tp("no_such_dir"), tp("bad.h5"), &o, &st, err), -1);
    assert_contains(err, "no_such_dir");
    // Missing test/neg.
    write_imdb("t1");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tp("t1/test/neg"));
    assert_int_equal(system(cmd), 0);
    assert_int_equal(lra_import_text(tp("t1"), tp("bad.h5"), &o, &st, err), -1);
    assert_contains(err, "t1/test/neg");
    // A review that cannot be read (a dangling link named *.txt).
    write_imdb("t2");
    assert_int_equal(symlink(tp("t2/nowhere"), tp("t2/train/pos/5_8.txt")), 0);
    assert_int_equal(lra_import_text(tp("t2"), tp("bad.h5"), &o, &st, err), -1);
    assert_contains(err, "t2/train/pos/5_8.txt");
    // An empty class directory.
    write_imdb("t3");
    snprintf(cmd, sizeof cmd, "rm -f '%s'/*.txt", tp("t3/test/pos"));
    assert_int_equal(system(cmd), 0);
    assert_int_equal(lra_import_text(tp("t3"), tp("bad.h5"), &o, &st, err), -1);
    assert_contains(err, "t3/test/pos: no *.txt");
    assert_false(exists(tp("bad.h5")));
    assert_false(exists(tp("bad.h5.tmp")));
}

// ---------------------------------------------------------------------------------------------
// Retrieval (AAN)

static void write_aan(const char *d, const char *train, const char *eval, const char *test) {
    char p[256];
    mkdirs(d);
    snprintf(p, sizeof p, "%s/new_aan_pairs.train.tsv", d);
    if (train) put(p, train);
    snprintf(p, sizeof p, "%s/new_aan_pairs.eval.tsv", d);
    if (eval) put(p, eval);
    snprintf(p, sizeof p, "%s/new_aan_pairs.test.tsv", d);
    if (test) put(p, test);
}

static void test_retrieval_convert(void **state) {
    (void)state;
    write_aan("aan",
              "1.0\tP01-1001\tP02-2002\tfirst text\tsecond\n"
              "0\tA\tB\ta much longer text\t\n"
              "0.0\tC\tD\tx y\t\xe2\x82\xac!\r\n",
              "1\tE\tF\teval one\teval two\n", "0\tG\tH\tt\tu\n1\tI\tJ\tv\tw");
    char err[SBMT_ERR_LEN];
    lra_import_opts o = {10, 0, 0, 0};
    lra_import_stats st;
    if (lra_import_retrieval(tp("aan"), tp("aan.h5"), &o, &st, err)) fail_msg("%s", err);
    assert_int_equal(st.rows[SPLIT_TRAIN], 3);
    assert_int_equal(st.rows[SPLIT_DEV], 1);
    assert_int_equal(st.rows[SPLIT_TEST], 2);
    assert_int_equal(st.truncated[SPLIT_TRAIN], 1);
    assert_int_equal(st.max_len, 18);
    ds_file ds;
    if (ds_open(&ds, tp("aan.h5"), err)) fail_msg("%s", err);
    assert_string_equal(ds.task, "retrieval");
    assert_int_equal(ds.vocab_size, 257);
    assert_int_equal(ds.num_classes, 2);
    assert_int_equal(ds.dual, 1);
    assert_int_equal(ds.seq_len, 10);
    int32_t *ids, *ids1, *labels;
    read_split(&ds, SPLIT_TRAIN, &ids, &ids1, &labels);
    assert_non_null(ids1);
    assert_bytes(ids, "first text", 10);
    assert_bytes(ids1, "second", 10);
    assert_bytes(ids + 10, "a much lon", 10);
    assert_bytes(ids1 + 10, "", 10);
    assert_bytes(ids + 20, "x y", 10);
    assert_bytes(ids1 + 20, "\xe2\x82\xac!", 10);
    assert_int_equal(labels[0], 1);
    assert_int_equal(labels[1], 0);
    assert_int_equal(labels[2], 0);
    free(ids);
    free(ids1);
    free(labels);
    read_split(&ds, SPLIT_DEV, &ids, &ids1, &labels);
    assert_bytes(ids, "eval one", 10);
    assert_bytes(ids1, "eval two", 10);
    assert_int_equal(labels[0], 1);
    free(ids);
    free(ids1);
    free(labels);
    read_split(&ds, SPLIT_TEST, &ids, &ids1, &labels);
    assert_bytes(ids + 10, "v", 10);
    assert_bytes(ids1 + 10, "w", 10);
    assert_int_equal(labels[1], 1);
    free(ids);
    free(ids1);
    free(labels);
    ds_close(&ds);

    // More rows than one write block (LRA_IMPORT_BLOCK), default seq_len.
    {
        size_t n = 600, cap = n * 64;
        char *big = xmalloc(cap), *p = big;
        for (size_t i = 0; i < n; i++)
            p += snprintf(p, cap - (size_t)(p - big), "%zu\ta\tb\trow %zu\ttext\n", i % 2, i);
        write_aan("aan_big", big, "1\ta\tb\tc\td\n", "0\ta\tb\tc\td\n");
        free(big);
        lra_import_opts d = {0, 0, 0, 0};
        if (lra_import_retrieval(tp("aan_big"), tp("big.h5"), &d, &st, err)) fail_msg("%s", err);
        if (ds_open(&ds, tp("big.h5"), err)) fail_msg("%s", err);
        assert_int_equal(ds.seq_len, LRA_RETRIEVAL_SEQ_LEN);
        assert_int_equal(ds.rows[SPLIT_TRAIN], 600);
        int64_t rows[2] = {599, 300};
        int32_t *bi = xmalloc(sizeof(int32_t) * 2 * LRA_RETRIEVAL_SEQ_LEN);
        int32_t *bi1 = xmalloc(sizeof(int32_t) * 2 * LRA_RETRIEVAL_SEQ_LEN);
        int32_t bl[2];
        if (ds_read_rows(&ds, SPLIT_TRAIN, rows, 2, bi, bi1, bl, err)) fail_msg("%s", err);
        assert_bytes(bi, "row 599", LRA_RETRIEVAL_SEQ_LEN);
        assert_bytes(bi + LRA_RETRIEVAL_SEQ_LEN, "row 300", LRA_RETRIEVAL_SEQ_LEN);
        assert_bytes(bi1, "text", LRA_RETRIEVAL_SEQ_LEN);
        assert_int_equal(bl[0], 1);
        assert_int_equal(bl[1], 0);
        free(bi);
        free(bi1);
        ds_close(&ds);
    }
}

static void test_retrieval_errors(void **state) {
    (void)state;
    const char *ok = "1\ta\tb\tc\td\n";
    char err[SBMT_ERR_LEN];
    lra_import_opts o = {8, 0, 0, 0};
    lra_import_stats st;
    write_aan("r1", ok, "1\ta\tb\tc\td\n0\ta\tb\tc\n", ok);
    assert_int_equal(lra_import_retrieval(tp("r1"), tp("bad.h5"), &o, &st, err), -1);
    assert_contains(err, "r1/new_aan_pairs.eval.tsv:2:");
    assert_contains(err, "found 4");
    write_aan("r2", "1\ta\tb\tc\td\n0\ta\tb\tc\td\n2\ta\tb\tc\td\n", ok, ok);
    assert_int_equal(lra_import_retrieval(tp("r2"), tp("bad.h5"), &o, &st, err), -1);
    assert_contains(err, "r2/new_aan_pairs.train.tsv:3:");
    assert_contains(err, "label '2' is not 0 or 1");
    write_aan("r3", ok, ok, "0.5\ta\tb\tc\td\n");
    assert_int_equal(lra_import_retrieval(tp("r3"), tp("bad.h5"), &o, &st, err), -1);
    assert_contains(err, "r3/new_aan_pairs.test.tsv:1:");
    write_aan("r4", ok, NULL, ok);
    assert_int_equal(lra_import_retrieval(tp("r4"), tp("bad.h5"), &o, &st, err), -1);
    assert_contains(err, "r4/new_aan_pairs.eval.tsv: cannot open");
    assert_false(exists(tp("bad.h5")));
    assert_false(exists(tp("bad.h5.tmp")));
}

// ---------------------------------------------------------------------------------------------
// CLI

static int run_cli(const char *args, char **out) {
    const char *bin = getenv("SBMT_BIN");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' data %s 2>&1", bin, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, len = 0, got;
    char *buf = xmalloc(cap);
    while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) len += got;
    buf[len] = '\0';
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void **state) {
    (void)state;
    if (!getenv("SBMT_BIN")) skip();
    char args[1024], *out;
    write_listops("cli", "Source\tTarget\n( [MAX 1 2 ] )\t2\n[SM 9 9 ]\t8\n",
                  "Source\tTarget\n7\t7\n", "Source\tTarget\n[MIN 3 4 ]\t3\n");
    snprintf(args, sizeof args, "import-listops --in '%s' --out '%s' --seq-len 8 --quiet",
             tp("cli"), tp("cli.h5"));
    int rc = run_cli(args, &out);
    if (rc) fail_msg("rc %d: %s", rc, out);
    assert_contains(out, "train/dev/test 2/1/1 rows");
    free(out);
    ds_file ds;
    char err[SBMT_ERR_LEN];
    if (ds_open(&ds, tp("cli.h5"), err)) fail_msg("%s", err);
    assert_int_equal(ds.seq_len, 8);
    ds_close(&ds);

    write_listops("cli_bad", "Source\tTarget\n( [MAX 1 2 ] )\t2\n[SM 9 X ]\t8\n",
                  "Source\tTarget\n7\t7\n", "Source\tTarget\n[MIN 3 4 ]\t3\n");
    snprintf(args, sizeof args, "import-listops --in '%s' --out '%s'", tp("cli_bad"),
             tp("cli_bad.h5"));
    assert_int_not_equal(run_cli(args, &out), 0);
    assert_contains(out, "cli_bad/basic_train.tsv:3:");
    assert_contains(out, "unknown symbol 'X'");
    free(out);
    assert_false(exists(tp("cli_bad.h5")));

    write_aan("cli_aan", "1\ta\tb\tc\td\n", "0\ta\tb\tcc\tdd\n", "1\ta\tb\tc\td\n");
    snprintf(args, sizeof args, "import-retrieval --in '%s' --out '%s' --seq-len 4 --quiet",
             tp("cli_aan"), tp("cli_aan.h5"));
    rc = run_cli(args, &out);
    if (rc) fail_msg("rc %d: %s", rc, out);
    free(out);

    assert_int_equal(run_cli("import-text --out x.h5", &out), 1);
    assert_contains(out, "--in DIR is required");
    free(out);
    assert_int_equal(run_cli("import-retrieval --in d --out x.h5 --truncate", &out), 1);
    assert_contains(out, "--truncate");
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listops_convert),   cmocka_unit_test(test_listops_errors),
        cmocka_unit_test(test_listops_line),      cmocka_unit_test(test_text_convert),
        cmocka_unit_test(test_text_errors),       cmocka_unit_test(test_retrieval_convert),
        cmocka_unit_test(test_retrieval_errors),  cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
