// test_dataset.c: the HDF5 dataset writer and reader (io/dataset.c): round trips (single and
// dual, u8 and u16 on-disk ids), streaming writes, unsorted/repeated row reads, and rejection of
// malformed files built with the raw HDF5 API, asserting on the error text.
#define _DEFAULT_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/dataset.h"
#include "kernels/common.h"
#include "testdir.h"

static int setup(void **state) {
    (void)state;
    return testdir_make("test_dataset");
}

static int teardown(void **state) {
    (void)state;
    return testdir_remove();
}


static int file_exists(const char *p) { return access(p, F_OK) == 0; }

// Deterministic fill values for row r, column c of a split.
static int32_t tok_value(int split, int64_t r, int c, int vocab) {
    return (int32_t)(((uint64_t)(split + 1) * 7919u + (uint64_t)r * 131u + (uint64_t)c * 17u) %
                     (uint64_t)vocab);
}
static int32_t tok1_value(int split, int64_t r, int c, int vocab) {
    return (int32_t)(((uint64_t)(split + 3) * 104729u + (uint64_t)r * 37u + (uint64_t)c * 5u) %
                     (uint64_t)vocab);
}
static int32_t lab_value(int split, int64_t r, int classes) {
    return (int32_t)(((uint64_t)r * 3u + (uint64_t)split) % (uint64_t)classes);
}

static void fill_split(int split, int64_t rows, int L, int vocab, int classes, int32_t *ids,
                       int32_t *ids1, int32_t *labels) {
    for (int64_t r = 0; r < rows; r++) {
        for (int c = 0; c < L; c++) {
            ids[r * L + c] = tok_value(split, r, c, vocab);
            if (ids1) ids1[r * L + c] = tok1_value(split, r, c, vocab);
        }
        labels[r] = lab_value(split, r, classes);
    }
}

// Writes a file with the given splits (rows[s] < 0: absent) through the writer API.
static void write_file(const char *path, int vocab, int classes, int L, int dual,
                       const int64_t rows[SPLIT_COUNT]) {
    char err[SBMT_ERR_LEN];
    ds_writer w;
    const char **voc = malloc(sizeof(char *) * (size_t)vocab);
    char(*names)[16] = malloc(16 * (size_t)vocab);
    for (int i = 0; i < vocab; i++) {
        snprintf(names[i], 16, "sym%d", i);
        voc[i] = names[i];
    }
    assert_int_equal(ds_writer_create(&w, path, "unit", vocab, classes, L, dual, voc, err), 0);
    for (int s = 0; s < SPLIT_COUNT; s++) {
        if (rows[s] < 0) continue;
        size_t n = (size_t)(rows[s] > 0 ? rows[s] : 1);
        int32_t *ids = malloc(sizeof(int32_t) * n * (size_t)L);
        int32_t *ids1 = dual ? malloc(sizeof(int32_t) * n * (size_t)L) : NULL;
        int32_t *lab = malloc(sizeof(int32_t) * n);
        fill_split(s, rows[s], L, vocab, classes, ids, ids1, lab);
        int rc = ds_writer_split(&w, s, rows[s], ids, ids1, lab, err);
        if (rc) fprintf(stderr, "%s\n", err);
        assert_int_equal(rc, 0);
        free(ids);
        free(ids1);
        free(lab);
    }
    int rc = ds_writer_close(&w, err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    free(voc);
    free(names);
}

// Reads the given rows and checks them against the fill pattern.
static void check_rows(ds_file *ds, int split, const int64_t *rows, int count) {
    char err[SBMT_ERR_LEN];
    int L = ds->seq_len;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)count * (size_t)L);
    int32_t *ids1 = malloc(sizeof(int32_t) * (size_t)count * (size_t)L);
    int32_t *lab = malloc(sizeof(int32_t) * (size_t)count);
    int rc = ds_read_rows(ds, split, rows, count, ids, ds->dual ? ids1 : NULL, lab, err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    for (int i = 0; i < count; i++) {
        for (int c = 0; c < L; c++) {
            assert_int_equal(ids[(size_t)i * L + c], tok_value(split, rows[i], c, ds->vocab_size));
            if (ds->dual)
                assert_int_equal(ids1[(size_t)i * L + c],
                                 tok1_value(split, rows[i], c, ds->vocab_size));
        }
        assert_int_equal(lab[i], lab_value(split, rows[i], ds->num_classes));
    }
    free(ids);
    free(ids1);
    free(lab);
}

// On-disk element size of a dataset.
static size_t disk_elem_size(const char *path, const char *obj) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t d = H5Dopen2(f, obj, H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t t = H5Dget_type(d);
    size_t n = H5Tget_size(t);
    assert_int_equal(H5Tget_sign(t), H5T_SGN_NONE);
    H5Tclose(t);
    H5Dclose(d);
    H5Fclose(f);
    return n;
}

static void test_split_names(void **state) {
    (void)state;
    assert_int_equal(split_from_name("train"), SPLIT_TRAIN);
    assert_int_equal(split_from_name("dev"), SPLIT_DEV);
    assert_int_equal(split_from_name("val"), SPLIT_DEV);
    assert_int_equal(split_from_name("validation"), SPLIT_DEV);
    assert_int_equal(split_from_name("test"), SPLIT_TEST);
    assert_int_equal(split_from_name("bogus"), -1);
    assert_string_equal(split_names[SPLIT_DEV], "dev");
}

static void test_roundtrip_u8(void **state) {
    (void)state;
    char path[512], err[SBMT_ERR_LEN];
    tpath(path, sizeof path, "rt_u8.h5");
    const int64_t rows[SPLIT_COUNT] = {300, 10, -1};
    write_file(path, 16, 10, 40, 0, rows);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_false(file_exists(tmp));  // renamed into place
    ds_file ds;
    int rc = ds_open(&ds, path, err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    assert_string_equal(ds.task, "unit");
    assert_int_equal(ds.vocab_size, 16);
    assert_int_equal(ds.num_classes, 10);
    assert_int_equal(ds.seq_len, 40);
    assert_int_equal(ds.dual, 0);
    assert_int_equal(ds.rows[SPLIT_TRAIN], 300);
    assert_int_equal(ds.rows[SPLIT_DEV], 10);
    assert_int_equal(ds.rows[SPLIT_TEST], -1);
    int64_t all[300];
    for (int i = 0; i < 300; i++) all[i] = i;
    check_rows(&ds, SPLIT_TRAIN, all, 300);
    check_rows(&ds, SPLIT_DEV, all, 10);
    const int64_t unsorted[] = {257, 3, 299, 3, 0, 42, 43, 44, 128, 127, 1, 299};
    check_rows(&ds, SPLIT_TRAIN, unsorted, (int)(sizeof unsorted / sizeof unsorted[0]));
    const int64_t one[] = {7};
    check_rows(&ds, SPLIT_DEV, one, 1);
    assert_int_equal(ds_read_rows(&ds, SPLIT_TRAIN, all, 0, NULL, NULL, NULL, err), 0);

    // Absent split, out-of-range rows, bad split id.
    int32_t ids[40], lab[1];
    assert_int_equal(ds_read_rows(&ds, SPLIT_TEST, all, 1, ids, NULL, lab, err), -1);
    assert_non_null(strstr(err, "/test"));
    assert_non_null(strstr(err, path));
    const int64_t bad[] = {10};
    assert_int_equal(ds_read_rows(&ds, SPLIT_DEV, bad, 1, ids, NULL, lab, err), -1);
    assert_non_null(strstr(err, "row 10"));
    const int64_t neg[] = {-1};
    assert_int_equal(ds_read_rows(&ds, SPLIT_DEV, neg, 1, ids, NULL, lab, err), -1);
    assert_int_equal(ds_read_rows(&ds, 5, all, 1, ids, NULL, lab, err), -1);
    ds_close(&ds);
    ds_close(&ds);  // idempotent

    assert_int_equal(disk_elem_size(path, "/train/input_ids"), 1);
    assert_int_equal(disk_elem_size(path, "/train/labels"), 1);
}

static void test_roundtrip_dual_u16(void **state) {
    (void)state;
    char path[512], err[SBMT_ERR_LEN];
    tpath(path, sizeof path, "rt_dual.h5");
    const int64_t rows[SPLIT_COUNT] = {150, -1, 33};
    write_file(path, 512, 3, 9, 1, rows);
    ds_file ds;
    int rc = ds_open(&ds, path, err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(ds.dual, 1);
    assert_int_equal(ds.vocab_size, 512);
    assert_int_equal(ds.rows[SPLIT_DEV], -1);
    const int64_t unsorted[] = {149, 0, 77, 76, 75, 12, 100, 0};
    check_rows(&ds, SPLIT_TRAIN, unsorted, 8);
    const int64_t t[] = {32, 31, 5};
    check_rows(&ds, SPLIT_TEST, t, 3);
    // A dual file needs the second buffer.
    int32_t ids[9], lab[1];
    assert_int_equal(ds_read_rows(&ds, SPLIT_TEST, t, 1, ids, NULL, lab, err), -1);
    assert_non_null(strstr(err, "input_ids_1"));
    ds_close(&ds);
    assert_int_equal(disk_elem_size(path, "/train/input_ids"), 2);
    assert_int_equal(disk_elem_size(path, "/train/input_ids_1"), 2);

    // The /vocab strings read back.
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "vocab", H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    char *v[512];
    assert_true(H5Dread(d, st, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    assert_string_equal(v[0], "sym0");
    assert_string_equal(v[511], "sym511");
    hid_t sp = H5Dget_space(d);
    H5Dvlen_reclaim(st, sp, H5P_DEFAULT, v);
    H5Sclose(sp);
    H5Tclose(st);
    H5Dclose(d);
    H5Fclose(f);
}

// Many scattered rows (a large union of hyperslabs) against a shuffled order.
static void test_many_random_rows(void **state) {
    (void)state;
    char path[512], err[SBMT_ERR_LEN];
    tpath(path, sizeof path, "many.h5");
    const int64_t rows[SPLIT_COUNT] = {6000, -1, -1};
    write_file(path, 300, 7, 12, 0, rows);
    ds_file ds;
    assert_int_equal(ds_open(&ds, path, err), 0);
    enum { K = 3000 };
    int64_t *r = malloc(sizeof(int64_t) * K);
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < K; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        r[i] = (int64_t)(x % 6000);
    }
    double t0 = sbmt_now();
    check_rows(&ds, SPLIT_TRAIN, r, K);
    double dt = sbmt_now() - t0;
    assert_true(dt < 10.0);
    free(r);
    ds_close(&ds);
}

static void test_streaming_writer(void **state) {
    (void)state;
    char path[512], err[SBMT_ERR_LEN];
    tpath(path, sizeof path, "stream.h5");
    const int L = 6, N = 1000;
    int32_t *ids = malloc(sizeof(int32_t) * N * L), *lab = malloc(sizeof(int32_t) * N);
    fill_split(SPLIT_TRAIN, N, L, 16, 10, ids, NULL, lab);
    ds_writer w;
    assert_int_equal(ds_writer_create(&w, path, "unit", 16, 10, L, 0, NULL, err), 0);
    assert_int_equal(ds_writer_attr_str(&w, "generator", "unit test", err), 0);
    assert_int_equal(ds_writer_split_begin(&w, SPLIT_TRAIN, N, err), 0);
    for (int r0 = 0; r0 < N; r0 += 77) {  // blocks not aligned to chunks
        int n = N - r0 < 77 ? N - r0 : 77;
        assert_int_equal(ds_writer_split_rows(&w, n, ids + (size_t)r0 * L, NULL, lab + r0, err), 0);
    }
    assert_int_equal(ds_writer_split_end(&w, err), 0);
    assert_int_equal(ds_writer_close(&w, err), 0);
    ds_file ds;
    assert_int_equal(ds_open(&ds, path, err), 0);
    int64_t rr[] = {999, 0, 500, 76, 77, 78};
    check_rows(&ds, SPLIT_TRAIN, rr, 6);
    ds_close(&ds);

    // Too few rows: _end fails, close discards the file (nothing under the final name).
    tpath(path, sizeof path, "short.h5");
    assert_int_equal(ds_writer_create(&w, path, "unit", 16, 10, L, 0, NULL, err), 0);
    assert_int_equal(ds_writer_split_begin(&w, SPLIT_DEV, 10, err), 0);
    assert_int_equal(ds_writer_split_rows(&w, 4, ids, NULL, lab, err), 0);
    assert_int_equal(ds_writer_split_rows(&w, 7, ids, NULL, lab, err), -1);
    assert_non_null(strstr(err, "exceeds"));
    assert_int_equal(ds_writer_split_end(&w, err), -1);
    assert_non_null(strstr(err, "4 of 10"));
    assert_int_equal(ds_writer_close(&w, err), -1);
    assert_false(file_exists(path));
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_false(file_exists(tmp));

    // Out-of-range token and label values are refused, naming the row.
    tpath(path, sizeof path, "badval.h5");
    assert_int_equal(ds_writer_create(&w, path, "unit", 16, 10, L, 0, NULL, err), 0);
    assert_int_equal(ds_writer_split_begin(&w, SPLIT_TRAIN, 10, err), 0);
    assert_int_equal(ds_writer_split_rows(&w, 5, ids, NULL, lab, err), 0);
    ids[2 * L + 3] = 16;
    assert_int_equal(ds_writer_split_rows(&w, 5, ids, NULL, lab, err), -1);
    assert_non_null(strstr(err, "row 7"));
    assert_non_null(strstr(err, "/train/input_ids"));
    ids[2 * L + 3] = 1;
    lab[4] = 10;
    assert_int_equal(ds_writer_split_rows(&w, 5, ids, NULL, lab, err), -1);
    assert_non_null(strstr(err, "row 9"));
    assert_non_null(strstr(err, "/train/labels"));
    ds_writer_close(&w, err);
    assert_false(file_exists(path));

    // Unwritable location and invalid parameters.
    assert_int_equal(ds_writer_create(&w, "/nonexistent_dir_sbmt/x.h5", "unit", 16, 10, L, 0,
                                      NULL, err),
                     -1);
    assert_non_null(strstr(err, "/nonexistent_dir_sbmt/x.h5"));
    assert_int_equal(ds_writer_create(&w, path, "unit", 0, 10, L, 0, NULL, err), -1);
    assert_non_null(strstr(err, "vocab_size"));
    free(ids);
    free(lab);
}

// ---------------------------------------------------------------------------------------------
// Malformed files written with the raw HDF5 API

typedef struct {
    const char *format;      // sbmt_format value (NULL: omit)
    int version;
    const char *omit_attr;   // root attribute to leave out
    int vocab_size;
    int dual;
    int no_splits;
    int ids_rank;            // 2 normally
    int ids_cols;            // second dimension (seq_len normally)
    int ids_float;           // write input_ids as float32
    int omit_labels, omit_ids1;
    int labels_rows;         // rows of labels (N normally)
    int bad_token_row;       // row whose token 3 is set to vocab_size (-1: none)
    int neg_token_row;       // row whose token 0 is set to -1 (-1: none)
    int bad_label_row;       // row whose label is set to num_classes (-1: none)
} raw_spec;

enum { RAW_N = 20, RAW_L = 8, RAW_CLASSES = 10 };

static raw_spec raw_default(void) {
    raw_spec s = {"dataset", 1, NULL, 16, 0, 0, 2, RAW_L, 0, 0, 0, RAW_N, -1, -1, -1};
    return s;
}

static void raw_str_attr(hid_t obj, const char *name, const char *value) {
    // Fixed-length, space-padded: the reader must accept these as well as variable-length ones.
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(value) + 3);
    H5Tset_strpad(t, H5T_STR_SPACEPAD);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    char buf[128];
    memset(buf, ' ', sizeof buf);
    memcpy(buf, value, strlen(value));
    assert_true(H5Awrite(a, t, buf) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
}

static void raw_int_attr(hid_t obj, const char *name, long long v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_STD_U64BE, sp, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Awrite(a, H5T_NATIVE_LLONG, &v) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
}

static void raw_dataset(hid_t grp, const char *name, hid_t ftype, hid_t mtype, int rank,
                        const hsize_t *dims, const void *data) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(grp, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(d >= 0);
    assert_true(H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
}

static void write_raw(const char *path, const raw_spec *s) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    if (s->format) raw_str_attr(f, "sbmt_format", s->format);
    struct {
        const char *name;
        long long v;
    } ints[] = {{"sbmt_version", s->version}, {"vocab_size", s->vocab_size},
                {"num_classes", RAW_CLASSES}, {"seq_len", RAW_L}, {"dual", s->dual}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (!s->omit_attr || strcmp(s->omit_attr, ints[i].name) != 0)
            raw_int_attr(f, ints[i].name, ints[i].v);
    if (!s->omit_attr || strcmp(s->omit_attr, "task") != 0) raw_str_attr(f, "task", "raw");
    if (!s->no_splits) {
        hid_t g = H5Gcreate2(f, "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        size_t n = (size_t)RAW_N * (size_t)s->ids_cols * 2;
        int64_t *ids = calloc(n, sizeof(int64_t));
        float *fids = calloc(n, sizeof(float));
        for (size_t i = 0; i < n; i++) ids[i] = (int64_t)(i % (size_t)s->vocab_size);
        if (s->bad_token_row >= 0) ids[(size_t)s->bad_token_row * s->ids_cols + 3] = s->vocab_size;
        if (s->neg_token_row >= 0) ids[(size_t)s->neg_token_row * s->ids_cols] = -1;
        for (size_t i = 0; i < n; i++) fids[i] = (float)ids[i];
        hsize_t dims[3] = {RAW_N, (hsize_t)s->ids_cols, 2};
        if (s->ids_float)
            raw_dataset(g, "input_ids", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, s->ids_rank, dims, fids);
        else  // a signed, big-endian, 64-bit type: readers convert any integer type
            raw_dataset(g, "input_ids", H5T_STD_I64BE, H5T_NATIVE_INT64, s->ids_rank, dims, ids);
        if (s->dual && !s->omit_ids1)
            raw_dataset(g, "input_ids_1", H5T_STD_I64BE, H5T_NATIVE_INT64, s->ids_rank, dims, ids);
        if (!s->omit_labels) {
            int32_t lab[64];
            for (int i = 0; i < 64; i++) lab[i] = i % RAW_CLASSES;
            if (s->bad_label_row >= 0) lab[s->bad_label_row] = RAW_CLASSES;
            hsize_t ld = (hsize_t)s->labels_rows;
            raw_dataset(g, "labels", H5T_STD_I16LE, H5T_NATIVE_INT32, 1, &ld, lab);
        }
        free(ids);
        free(fids);
        H5Gclose(g);
    }
    H5Fclose(f);
}

// Expects ds_open to fail with a message containing the path and each of the given fragments.
static void expect_open_error(const char *path, ...) {
    char err[SBMT_ERR_LEN] = "";
    ds_file ds;
    int rc = ds_open(&ds, path, err);
    if (rc == 0) ds_close(&ds);
    assert_int_equal(rc, -1);
    if (getenv("SBMT_TEST_VERBOSE")) fprintf(stderr, "  expected error: %s\n", err);
    if (!strstr(err, path)) fail_msg("error lacks the path: %s", err);
    va_list ap;
    va_start(ap, path);
    for (const char *frag; (frag = va_arg(ap, const char *)) != NULL;)
        if (!strstr(err, frag)) fail_msg("error lacks '%s': %s", frag, err);
    va_end(ap);
}

// Expects ds_open to succeed and reading all rows to fail naming each fragment.
static void expect_read_error(const char *path, ...) {
    char err[SBMT_ERR_LEN] = "";
    ds_file ds;
    int rc = ds_open(&ds, path, err);
    if (rc) fail_msg("open failed: %s", err);
    int64_t rows[RAW_N];
    int32_t ids[RAW_N * RAW_L], ids1[RAW_N * RAW_L], lab[RAW_N];
    for (int i = 0; i < RAW_N; i++) rows[i] = RAW_N - 1 - i;  // unsorted path
    assert_int_equal(ds_read_rows(&ds, SPLIT_TRAIN, rows, RAW_N, ids, ids1, lab, err), -1);
    if (getenv("SBMT_TEST_VERBOSE")) fprintf(stderr, "  expected error: %s\n", err);
    if (!strstr(err, path)) fail_msg("error lacks the path: %s", err);
    va_list ap;
    va_start(ap, path);
    for (const char *frag; (frag = va_arg(ap, const char *)) != NULL;)
        if (!strstr(err, frag)) fail_msg("error lacks '%s': %s", frag, err);
    va_end(ap);
    for (int i = 0; i < RAW_N; i++) rows[i] = i;  // sorted path
    assert_int_equal(ds_read_rows(&ds, SPLIT_TRAIN, rows, RAW_N, ids, ids1, lab, err), -1);
    ds_close(&ds);
}

static void test_raw_valid(void **state) {
    (void)state;
    char path[512], err[SBMT_ERR_LEN];
    tpath(path, sizeof path, "raw_ok.h5");
    raw_spec s = raw_default();
    write_raw(path, &s);
    ds_file ds;
    int rc = ds_open(&ds, path, err);
    if (rc) fail_msg("%s", err);
    assert_string_equal(ds.task, "raw");
    assert_int_equal(ds.rows[SPLIT_TRAIN], RAW_N);
    assert_int_equal(ds.rows[SPLIT_DEV], -1);
    int64_t rows[] = {19, 2};
    int32_t ids[2 * RAW_L], lab[2];
    assert_int_equal(ds_read_rows(&ds, SPLIT_TRAIN, rows, 2, ids, NULL, lab, err), 0);
    for (int c = 0; c < RAW_L; c++) {
        assert_int_equal(ids[c], (19 * RAW_L + c) % 16);
        assert_int_equal(ids[RAW_L + c], (2 * RAW_L + c) % 16);
    }
    assert_int_equal(lab[0], 19 % RAW_CLASSES);
    assert_int_equal(lab[1], 2);
    ds_close(&ds);
}

static void test_reject_malformed(void **state) {
    (void)state;
    char path[512];
    raw_spec s;

    tpath(path, sizeof path, "no_labels.h5");
    s = raw_default(), s.omit_labels = 1, write_raw(path, &s);
    expect_open_error(path, "/train/labels", "missing", NULL);

    tpath(path, sizeof path, "no_ids1.h5");
    s = raw_default(), s.dual = 1, s.omit_ids1 = 1, write_raw(path, &s);
    expect_open_error(path, "/train/input_ids_1", "missing", NULL);

    tpath(path, sizeof path, "rank3.h5");
    s = raw_default(), s.ids_rank = 3, write_raw(path, &s);
    expect_open_error(path, "/train/input_ids", "rank 3", NULL);

    tpath(path, sizeof path, "rank1.h5");
    s = raw_default(), s.ids_rank = 1, write_raw(path, &s);
    expect_open_error(path, "/train/input_ids", "rank 1", NULL);

    tpath(path, sizeof path, "seqlen.h5");
    s = raw_default(), s.ids_cols = RAW_L + 1, write_raw(path, &s);
    expect_open_error(path, "/train/input_ids", "[20, 9]", "seq_len = 8", NULL);

    tpath(path, sizeof path, "labels_rows.h5");
    s = raw_default(), s.labels_rows = RAW_N - 1, write_raw(path, &s);
    expect_open_error(path, "/train/labels", "19 rows", NULL);

    tpath(path, sizeof path, "float_ids.h5");
    s = raw_default(), s.ids_float = 1, write_raw(path, &s);
    expect_open_error(path, "/train/input_ids", "floating point", "integer", NULL);

    tpath(path, sizeof path, "format.h5");
    s = raw_default(), s.format = "checkpoint", write_raw(path, &s);
    expect_open_error(path, "sbmt_format", "'checkpoint'", "'dataset'", NULL);

    tpath(path, sizeof path, "no_format.h5");
    s = raw_default(), s.format = NULL, write_raw(path, &s);
    expect_open_error(path, "sbmt_format", "missing", NULL);

    tpath(path, sizeof path, "version.h5");
    s = raw_default(), s.version = 2, write_raw(path, &s);
    expect_open_error(path, "sbmt_version", "2", NULL);

    const char *attrs[] = {"vocab_size", "num_classes", "seq_len", "dual", "task", "sbmt_version"};
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++) {
        tpath(path, sizeof path, "no_attr.h5");
        s = raw_default(), s.omit_attr = attrs[i], write_raw(path, &s);
        expect_open_error(path, attrs[i], "missing", NULL);
    }

    tpath(path, sizeof path, "vocab0.h5");
    s = raw_default(), s.vocab_size = 0, s.no_splits = 1, write_raw(path, &s);
    expect_open_error(path, "vocab_size", "value 0", NULL);

    tpath(path, sizeof path, "dual2.h5");
    s = raw_default(), s.dual = 2, write_raw(path, &s);
    expect_open_error(path, "'dual'", "value 2", NULL);

    tpath(path, sizeof path, "nosplit.h5");
    s = raw_default(), s.no_splits = 1, write_raw(path, &s);
    expect_open_error(path, "no split", NULL);

    // Values out of range surface on read, naming the dataset and the row.
    tpath(path, sizeof path, "bad_token.h5");
    s = raw_default(), s.bad_token_row = 13, write_raw(path, &s);
    expect_read_error(path, "/train/input_ids", "row 13", "position 3", "token id 16",
                      "vocab_size = 16", NULL);

    tpath(path, sizeof path, "neg_token.h5");
    s = raw_default(), s.neg_token_row = 4, write_raw(path, &s);
    expect_read_error(path, "/train/input_ids", "row 4", "token id -1", NULL);

    tpath(path, sizeof path, "bad_label.h5");
    s = raw_default(), s.bad_label_row = 17, write_raw(path, &s);
    expect_read_error(path, "/train/labels", "row 17", "label 10", "num_classes = 10", NULL);

    // Not HDF5 at all, and no file.
    tpath(path, sizeof path, "text.h5");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 100; i++) fputs("this is not an HDF5 file\n", f);
    fclose(f);
    expect_open_error(path, "not an HDF5 file", NULL);

    tpath(path, sizeof path, "does_not_exist.h5");
    expect_open_error(path, "cannot open", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_names),
        cmocka_unit_test(test_roundtrip_u8),
        cmocka_unit_test(test_roundtrip_dual_u16),
        cmocka_unit_test(test_many_random_rows),
        cmocka_unit_test(test_streaming_writer),
        cmocka_unit_test(test_raw_valid),
        cmocka_unit_test(test_reject_malformed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
