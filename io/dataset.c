// dataset.c: sbmt HDF5 datasets (SPEC.md section 6). Writing (chunked, deflate, smallest
// unsigned on-disk type), validated opening, and row reads through hyperslab selections.
//
// Error policy: anything a user can cause (missing/odd files, wrong shapes or types, values out of
// range, unwritable paths) returns -1 with "<file>: <object>: <problem>" in err. Failures of
// HDF5 calls that cannot fail on valid arguments (property lists, dataspaces) abort via H5_CHECK.
#define _POSIX_C_SOURCE 200809L
#include "io/dataset.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"

// Aborts with file, line and the expression when an HDF5 call returns a negative id/status.
static int64_t h5_check(int64_t v, const char *file, int line, const char *expr) {
    if (v < 0) sbmt_fatal(file, line, "HDF5 call failed: %s", expr);
    return v;
}
#define H5_CHECK(expr) h5_check((int64_t)(expr), __FILE__, __LINE__, #expr)

const char *const split_names[SPLIT_COUNT] = {"train", "dev", "test"};

int split_from_name(const char *name) {
    if (!name) return -1;
    if (strcmp(name, "train") == 0) return SPLIT_TRAIN;
    if (strcmp(name, "dev") == 0 || strcmp(name, "val") == 0 || strcmp(name, "validation") == 0)
        return SPLIT_DEV;
    if (strcmp(name, "test") == 0) return SPLIT_TEST;
    return -1;
}

static void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static void close_dset(hid_t *h) {
    if (*h >= 0) H5Dclose(*h);
    *h = -1;
}

static const char *type_class_name(H5T_class_t c) {
    switch (c) {
    case H5T_INTEGER: return "integer";
    case H5T_FLOAT: return "floating point";
    case H5T_STRING: return "string";
    case H5T_BITFIELD: return "bitfield";
    case H5T_OPAQUE: return "opaque";
    case H5T_COMPOUND: return "compound";
    case H5T_REFERENCE: return "reference";
    case H5T_ENUM: return "enum";
    case H5T_VLEN: return "variable-length";
    case H5T_ARRAY: return "array";
    default: return "unknown";
    }
}

// ---------------------------------------------------------------------------------------------
// Root attributes

// Opens attribute `name` of obj and checks that it holds one value of class `want` (`a_noun` and
// `noun` name it in messages: "an integer", "integer"). Returns the attribute with its file type in *ft, or -1 (message in
// err, nothing left open).
static hid_t open_scalar_attr(const char *path, hid_t obj, const char *name, H5T_class_t want,
                              const char *a_noun, const char *noun, hid_t *ft, char *err) {
    if (H5Aexists(obj, name) <= 0) {
        sbmt_errf(err, "%s: / attribute '%s': missing", path, name);
        return -1;
    }
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) {
        sbmt_errf(err, "%s: / attribute '%s': cannot be opened", path, name);
        return -1;
    }
    *ft = H5_CHECK(H5Aget_type(a));
    hid_t sp = H5_CHECK(H5Aget_space(a));
    H5T_class_t cls = H5Tget_class(*ft);
    hssize_t npts = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    if (cls == want && npts == 1) return a;
    if (cls != want)
        sbmt_errf(err, "%s: / attribute '%s': is of %s type, expected %s", path, name,
                  type_class_name(cls), a_noun);
    else
        sbmt_errf(err, "%s: / attribute '%s': holds %lld values, expected one %s", path, name,
                  (long long)npts, noun);
    H5Tclose(*ft);
    H5Aclose(a);
    return -1;
}

int ds_read_str_attr(const char *path, hid_t obj, const char *name, char *out, size_t outlen,
                     char *err) {
    hid_t ft;
    hid_t a = open_scalar_attr(path, obj, name, H5T_STRING, "a string", "string", &ft, err);
    if (a < 0) return -1;
    int rc = -1;
    if (H5Tis_variable_str(ft) > 0) {
        hid_t mt = H5_CHECK(H5Tcopy(H5T_C_S1));
        H5_CHECK(H5Tset_size(mt, H5T_VARIABLE));
        H5_CHECK(H5Tset_cset(mt, H5Tget_cset(ft)));
        char *s = NULL;
        if (H5Aread(a, mt, &s) < 0) {
            sbmt_errf(err, "%s: / attribute '%s': cannot be read", path, name);
        } else {
            snprintf(out, outlen, "%s", s ? s : "");
            rc = 0;
        }
        if (s) H5free_memory(s);
        H5Tclose(mt);
    } else {
        size_t n = H5Tget_size(ft);
        char *buf = xcalloc(n + 1, 1);
        hid_t mt = H5_CHECK(H5Tcopy(ft));
        if (H5Aread(a, mt, buf) < 0) {
            sbmt_errf(err, "%s: / attribute '%s': cannot be read", path, name);
        } else {
            buf[n] = 0;
            size_t len = strlen(buf);
            while (len > 0 && buf[len - 1] == ' ') buf[--len] = 0;  // space-padded strings
            snprintf(out, outlen, "%s", buf);
            rc = 0;
        }
        H5Tclose(mt);
        free(buf);
    }
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

// Reads a scalar integer attribute (any HDF5 integer type) of the root group.
static int read_int_attr(const char *path, hid_t obj, const char *name, int64_t *out, char *err) {
    hid_t ft;
    hid_t a = open_scalar_attr(path, obj, name, H5T_INTEGER, "an integer", "integer", &ft, err);
    if (a < 0) return -1;
    int rc = 0;
    if (H5Aread(a, H5T_NATIVE_INT64, out) < 0)
        rc = sbmt_errf(err, "%s: / attribute '%s': cannot be read", path, name);
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

// Reads an integer attribute that must lie in [lo, hi].
static int read_int_attr_range(const char *path, hid_t obj, const char *name, int64_t lo,
                               int64_t hi, int *out, char *err) {
    int64_t v;
    if (read_int_attr(path, obj, name, &v, err)) return -1;
    if (v < lo || v > hi)
        return sbmt_errf(err, "%s: / attribute '%s': value %lld outside [%lld, %lld]", path, name,
                         (long long)v, (long long)lo, (long long)hi);
    *out = (int)v;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Opening and validation

// Opens /<split>/<name> and checks it is an integer dataset of rank want_rank whose filters are
// all available; fills dims.
static int open_int_dataset(const ds_file *ds, hid_t grp, const char *split, const char *name,
                            int want_rank, hsize_t dims[2], hid_t *out, char *err) {
    *out = -1;
    if (H5Lexists(grp, name, H5P_DEFAULT) <= 0)
        return sbmt_errf(err, "%s: /%s/%s: missing (every split needs input_ids%s and labels)",
                         ds->path, split, name, ds->dual ? ", input_ids_1" : "");
    // A chunk cache (4 MiB) large enough that sequential reads never decompress a chunk twice.
    hid_t dapl = H5_CHECK(H5Pcreate(H5P_DATASET_ACCESS));
    H5_CHECK(H5Pset_chunk_cache(dapl, 4099, 4u << 20, 0.75));
    hid_t d = H5Dopen2(grp, name, dapl);
    H5Pclose(dapl);
    if (d < 0) return sbmt_errf(err, "%s: /%s/%s: is not a readable dataset", ds->path, split, name);
    hid_t ft = H5_CHECK(H5Dget_type(d));
    H5T_class_t cls = H5Tget_class(ft);
    H5Tclose(ft);
    if (cls != H5T_INTEGER) {
        H5Dclose(d);
        return sbmt_errf(err, "%s: /%s/%s: element type is %s, expected an integer type",
                         ds->path, split, name, type_class_name(cls));
    }
    hid_t sp = H5_CHECK(H5Dget_space(d));
    int rank = H5Sget_simple_extent_ndims(sp);
    if (rank != want_rank) {
        H5Sclose(sp);
        H5Dclose(d);
        return sbmt_errf(err, "%s: /%s/%s: rank %d, expected %d (%s)", ds->path, split, name, rank,
                         want_rank, want_rank == 2 ? "[rows, seq_len]" : "[rows]");
    }
    H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    hid_t dcpl = H5_CHECK(H5Dget_create_plist(d));
    int nf = H5Pget_nfilters(dcpl);
    for (int i = 0; i < nf; i++) {
        unsigned flags, cfg;
        size_t nelm = 0;
        char fname[64] = "";
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &nelm, NULL, sizeof fname,
                                         fname, &cfg);
        if (id >= 0 && H5Zfilter_avail(id) <= 0) {
            H5Pclose(dcpl);
            H5Dclose(d);
            return sbmt_errf(err,
                             "%s: /%s/%s: compressed with HDF5 filter %d (%s) that this HDF5 "
                             "library does not provide",
                             ds->path, split, name, (int)id, fname[0] ? fname : "unnamed");
        }
    }
    H5Pclose(dcpl);
    *out = d;
    return 0;
}

static int open_split(ds_file *ds, int s, char *err) {
    const char *sn = split_names[s];
    hid_t g = H5Gopen2(ds->file, sn, H5P_DEFAULT);
    if (g < 0) return sbmt_errf(err, "%s: /%s: exists but is not a group", ds->path, sn);
    hsize_t di[2] = {0, 0}, dl[2] = {0, 0}, d1[2] = {0, 0};
    int rc = -1;
    if (open_int_dataset(ds, g, sn, "input_ids", 2, di, &ds->ids[s], err)) goto out;
    if (di[1] != (hsize_t)ds->seq_len) {
        sbmt_errf(err, "%s: /%s/input_ids: shape [%llu, %llu], expected [rows, seq_len = %d]",
                  ds->path, sn, (unsigned long long)di[0], (unsigned long long)di[1], ds->seq_len);
        goto out;
    }
    if (open_int_dataset(ds, g, sn, "labels", 1, dl, &ds->labels[s], err)) goto out;
    if (dl[0] != di[0]) {
        sbmt_errf(err, "%s: /%s/labels: %llu rows, but /%s/input_ids has %llu", ds->path, sn,
                  (unsigned long long)dl[0], sn, (unsigned long long)di[0]);
        goto out;
    }
    if (ds->dual) {
        if (open_int_dataset(ds, g, sn, "input_ids_1", 2, d1, &ds->ids1[s], err)) goto out;
        if (d1[0] != di[0] || d1[1] != di[1]) {
            sbmt_errf(err, "%s: /%s/input_ids_1: shape [%llu, %llu], expected [%llu, %llu] like "
                      "/%s/input_ids",
                      ds->path, sn, (unsigned long long)d1[0], (unsigned long long)d1[1],
                      (unsigned long long)di[0], (unsigned long long)di[1], sn);
            goto out;
        }
    }
    if (di[0] > (hsize_t)INT64_MAX) {
        sbmt_errf(err, "%s: /%s/input_ids: too many rows", ds->path, sn);
        goto out;
    }
    ds->rows[s] = (int64_t)di[0];
    rc = 0;
out:
    H5Gclose(g);
    return rc;
}

static void ds_init(ds_file *ds) {
    memset(ds, 0, sizeof *ds);
    ds->file = -1;
    for (int s = 0; s < SPLIT_COUNT; s++) {
        ds->rows[s] = -1;
        ds->ids[s] = ds->ids1[s] = ds->labels[s] = -1;
    }
}

int ds_open(ds_file *ds, const char *path, char *err) {
    ds_init(ds);
    if (!path || !path[0]) return sbmt_errf(err, "dataset path is empty");
    if (strlen(path) >= sizeof ds->path)
        return sbmt_errf(err, "dataset path is too long (%zu characters)", strlen(path));
    snprintf(ds->path, sizeof ds->path, "%s", path);
    h5_quiet();

    FILE *f = fopen(path, "rb");
    if (!f) return sbmt_errf(err, "%s: cannot open: %s", path, strerror(errno));
    fclose(f);
    if (H5Fis_hdf5(path) <= 0) return sbmt_errf(err, "%s: not an HDF5 file", path);
    ds->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (ds->file < 0)
        return sbmt_errf(err, "%s: cannot be opened by HDF5 (damaged or locked file?)", path);

    char fmt[64];
    int64_t version;
    if (H5Aexists(ds->file, "sbmt_format") <= 0) {
        sbmt_errf(err, "%s: not an sbmt dataset: / attribute 'sbmt_format' is missing", path);
        goto fail;
    }
    if (ds_read_str_attr(path, ds->file, "sbmt_format", fmt, sizeof fmt, err)) goto fail;
    if (strcmp(fmt, "dataset") != 0) {
        sbmt_errf(err, "%s: / attribute 'sbmt_format' is '%s', expected 'dataset'", path, fmt);
        goto fail;
    }
    if (read_int_attr(path, ds->file, "sbmt_version", &version, err)) goto fail;
    if (version != 1) {
        sbmt_errf(err, "%s: / attribute 'sbmt_version' is %lld; this build reads version 1", path,
                  (long long)version);
        goto fail;
    }
    if (ds_read_str_attr(path, ds->file, "task", ds->task, sizeof ds->task, err)) goto fail;
    if (read_int_attr_range(path, ds->file, "vocab_size", 1, INT_MAX, &ds->vocab_size, err) ||
        read_int_attr_range(path, ds->file, "num_classes", 1, INT_MAX, &ds->num_classes, err) ||
        read_int_attr_range(path, ds->file, "seq_len", 1, INT_MAX, &ds->seq_len, err) ||
        read_int_attr_range(path, ds->file, "dual", 0, 1, &ds->dual, err))
        goto fail;

    int present = 0;
    for (int s = 0; s < SPLIT_COUNT; s++) {
        if (H5Lexists(ds->file, split_names[s], H5P_DEFAULT) <= 0) continue;
        if (open_split(ds, s, err)) goto fail;
        present++;
    }
    if (!present) {
        sbmt_errf(err, "%s: no split found (expected at least one of /train, /dev, /test)", path);
        goto fail;
    }
    return 0;
fail:
    ds_close(ds);
    return -1;
}

void ds_close(ds_file *ds) {
    for (int s = 0; s < SPLIT_COUNT; s++) {
        close_dset(&ds->ids[s]);
        close_dset(&ds->ids1[s]);
        close_dset(&ds->labels[s]);
    }
    if (ds->file >= 0) H5Fclose(ds->file);
    ds->file = -1;
}

// ---------------------------------------------------------------------------------------------
// Row reads

// Reads the rows uniq[0..m) (strictly increasing) of a rank-1 (width 0) or rank-2 dataset into
// out as int32: one hyperslab read per run of consecutive rows. (A single read of the union of
// runs is much slower in HDF5 1.10: irregular selections are mapped to chunks element by
// element.)
static int read_rows_raw(hid_t dset, const int64_t *uniq, int m, int width, int32_t *out) {
    int rank = width > 0 ? 2 : 1;
    size_t w = width > 0 ? (size_t)width : 1;
    hid_t fs = H5_CHECK(H5Dget_space(dset));
    // A type-conversion buffer of about one row: HDF5's default (1 MiB) is cleared on every
    // read, which costs more than the read itself for small batches.
    hid_t dxpl = H5_CHECK(H5Pcreate(H5P_DATASET_XFER));
    H5_CHECK(H5Pset_buffer(dxpl, w * sizeof(int64_t) < 4096 ? 4096 : w * sizeof(int64_t), NULL,
                           NULL));
    int rc = 0;
    for (int i = 0; i < m && rc == 0;) {
        int j = i + 1;
        while (j < m && uniq[j] == uniq[j - 1] + 1) j++;
        hsize_t start[2] = {(hsize_t)uniq[i], 0}, cnt[2] = {(hsize_t)(j - i), (hsize_t)width};
        H5_CHECK(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL));
        hid_t ms = H5_CHECK(H5Screate_simple(rank, cnt, NULL));
        if (H5Dread(dset, H5T_NATIVE_INT32, ms, fs, dxpl, out + (size_t)i * w) < 0) rc = -1;
        H5Sclose(ms);
        i = j;
    }
    H5Pclose(dxpl);
    H5Sclose(fs);
    return rc;
}

typedef struct {
    int64_t row;
    int pos;
} row_pos;

static int cmp_row_pos(const void *a, const void *b) {
    const row_pos *x = a, *y = b;
    if (x->row != y->row) return x->row < y->row ? -1 : 1;
    return x->pos - y->pos;
}

// Reads one dataset for the unique rows and checks every value lies in [0, limit).
static int read_checked(const ds_file *ds, int split, hid_t dset, const char *name,
                        const char *what, const char *limit_name, int limit, const int64_t *uniq,
                        int m, int width, int32_t *out, char *err) {
    const char *sn = split_names[split];
    if (read_rows_raw(dset, uniq, m, width, out))
        return sbmt_errf(err, "%s: /%s/%s: reading %d rows failed (damaged file?)", ds->path, sn,
                         name, m);
    int w = width > 0 ? width : 1;
    for (int j = 0; j < m; j++) {
        const int32_t *r = out + (size_t)j * (size_t)w;
        for (int c = 0; c < w; c++) {
            if (r[c] < 0 || r[c] >= limit) {
                if (width > 0)
                    return sbmt_errf(err,
                                     "%s: /%s/%s: row %lld, position %d: %s %d outside [0, %s = %d)",
                                     ds->path, sn, name, (long long)uniq[j], c, what, r[c],
                                     limit_name, limit);
                return sbmt_errf(err, "%s: /%s/%s: row %lld: %s %d outside [0, %s = %d)", ds->path,
                                 sn, name, (long long)uniq[j], what, r[c], limit_name, limit);
            }
        }
    }
    return 0;
}

int ds_read_rows(ds_file *ds, int split, const int64_t *rows, int count, int32_t *ids,
                 int32_t *ids1, int32_t *labels, char *err) {
    if (split < 0 || split >= SPLIT_COUNT) return sbmt_errf(err, "invalid split id %d", split);
    const char *sn = split_names[split];
    if (ds->file < 0 || ds->rows[split] < 0)
        return sbmt_errf(err, "%s: /%s: split is not in the file", ds->path, sn);
    if (count < 0) return sbmt_errf(err, "%s: /%s: negative row count %d", ds->path, sn, count);
    if (count == 0) return 0;
    CHECK(rows && ids && labels);
    if (ds->dual && !ids1)
        return sbmt_errf(err, "%s: dual dataset read without a buffer for input_ids_1", ds->path);
    int64_t n = ds->rows[split];
    int sorted = 1;
    for (int i = 0; i < count; i++) {
        if (rows[i] < 0 || rows[i] >= n)
            return sbmt_errf(err, "%s: /%s: row %lld requested, but the split has %lld rows",
                             ds->path, sn, (long long)rows[i], (long long)n);
        if (i > 0 && rows[i] <= rows[i - 1]) sorted = 0;
    }
    const size_t L = (size_t)ds->seq_len;
    if (sorted) {  // strictly increasing: read straight into the caller's buffers
        if (read_checked(ds, split, ds->ids[split], "input_ids", "token id", "vocab_size",
                         ds->vocab_size, rows, count, ds->seq_len, ids, err) ||
            (ds->dual && read_checked(ds, split, ds->ids1[split], "input_ids_1", "token id",
                                      "vocab_size", ds->vocab_size, rows, count, ds->seq_len,
                                      ids1, err)) ||
            read_checked(ds, split, ds->labels[split], "labels", "label", "num_classes",
                         ds->num_classes, rows, count, 0, labels, err))
            return -1;
        return 0;
    }
    // Unsorted or repeated rows: sort, read each distinct row once, scatter back.
    row_pos *rp = xmalloc(sizeof(row_pos) * (size_t)count);
    for (int i = 0; i < count; i++) rp[i] = (row_pos){rows[i], i};
    qsort(rp, (size_t)count, sizeof *rp, cmp_row_pos);
    int64_t *uniq = xmalloc(sizeof(int64_t) * (size_t)count);
    int *slot = xmalloc(sizeof(int) * (size_t)count);  // slot[caller position] = unique index
    int m = 0;
    for (int i = 0; i < count; i++) {
        if (m == 0 || uniq[m - 1] != rp[i].row) uniq[m++] = rp[i].row;
        slot[rp[i].pos] = m - 1;
    }
    int32_t *tid = xmalloc(sizeof(int32_t) * (size_t)m * L);
    int32_t *tid1 = ds->dual ? xmalloc(sizeof(int32_t) * (size_t)m * L) : NULL;
    int32_t *tlab = xmalloc(sizeof(int32_t) * (size_t)m);
    int rc = -1;
    if (read_checked(ds, split, ds->ids[split], "input_ids", "token id", "vocab_size",
                     ds->vocab_size, uniq, m, ds->seq_len, tid, err) ||
        (ds->dual && read_checked(ds, split, ds->ids1[split], "input_ids_1", "token id",
                                  "vocab_size", ds->vocab_size, uniq, m, ds->seq_len, tid1, err)) ||
        read_checked(ds, split, ds->labels[split], "labels", "label", "num_classes",
                     ds->num_classes, uniq, m, 0, tlab, err))
        goto out;
    for (int i = 0; i < count; i++) {
        size_t u = (size_t)slot[i];
        memcpy(ids + (size_t)i * L, tid + u * L, L * sizeof(int32_t));
        if (ds->dual) memcpy(ids1 + (size_t)i * L, tid1 + u * L, L * sizeof(int32_t));
        labels[i] = tlab[u];
    }
    rc = 0;
out:
    free(rp);
    free(uniq);
    free(slot);
    free(tid);
    free(tid1);
    free(tlab);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Writer

static int wfail(ds_writer *w) {
    w->failed = 1;
    return -1;
}

static void tmp_path(const ds_writer *w, char *out, size_t n) { snprintf(out, n, "%s.tmp", w->path); }

static int write_str_attr(hid_t obj, const char *name, const char *value) {
    hid_t t = H5_CHECK(H5Tcopy(H5T_C_S1));
    H5_CHECK(H5Tset_size(t, H5T_VARIABLE));
    H5_CHECK(H5Tset_cset(t, H5T_CSET_UTF8));
    hid_t sp = H5_CHECK(H5Screate(H5S_SCALAR));
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, t, &value) < 0 ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return rc;
}

static int write_int_attr(hid_t obj, const char *name, int64_t value) {
    hid_t sp = H5_CHECK(H5Screate(H5S_SCALAR));
    hid_t ft = value >= INT32_MIN && value <= INT32_MAX ? H5T_STD_I32LE : H5T_STD_I64LE;
    hid_t a = H5Acreate2(obj, name, ft, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, H5T_NATIVE_INT64, &value) < 0 ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

// Smallest unsigned little-endian type holding values 0..limit-1.
static hid_t small_uint_type(int limit) {
    if (limit <= 256) return H5T_STD_U8LE;
    if (limit <= 65536) return H5T_STD_U16LE;
    return H5T_STD_U32LE;
}

int ds_writer_create(ds_writer *w, const char *path, const char *task, int vocab_size,
                     int num_classes, int seq_len, int dual, const char *const *vocab, char *err) {
    memset(w, 0, sizeof *w);
    w->file = w->cur_ids = w->cur_ids1 = w->cur_labels = -1;
    w->cur_split = -1;
    w->failed = 1;  // until the file exists
    if (!path || !path[0]) return sbmt_errf(err, "dataset output path is empty");
    if (strlen(path) + 5 > sizeof w->path)
        return sbmt_errf(err, "dataset output path is too long (%zu characters)", strlen(path));
    snprintf(w->path, sizeof w->path, "%s", path);
    if (!task || strlen(task) >= 64)
        return sbmt_errf(err, "%s: task name missing or longer than 63 characters", path);
    if (vocab_size < 1 || num_classes < 1 || seq_len < 1 || (dual != 0 && dual != 1))
        return sbmt_errf(err,
                         "%s: invalid dataset parameters vocab_size=%d num_classes=%d seq_len=%d "
                         "dual=%d",
                         path, vocab_size, num_classes, seq_len, dual);
    w->vocab_size = vocab_size;
    w->num_classes = num_classes;
    w->seq_len = seq_len;
    w->dual = dual;
    h5_quiet();
    char tmp[4096 + 8];
    tmp_path(w, tmp, sizeof tmp);
    errno = 0;
    w->file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->file < 0)
        return sbmt_errf(err, "%s: cannot create file%s%s", tmp, errno ? ": " : "",
                         errno ? strerror(errno) : "");
    w->failed = 0;
    if (write_str_attr(w->file, "sbmt_format", "dataset") ||
        write_int_attr(w->file, "sbmt_version", 1) || write_str_attr(w->file, "task", task) ||
        write_int_attr(w->file, "vocab_size", vocab_size) ||
        write_int_attr(w->file, "num_classes", num_classes) ||
        write_int_attr(w->file, "seq_len", seq_len) || write_int_attr(w->file, "dual", dual)) {
        sbmt_errf(err, "%s: writing the root attributes failed", tmp);
        goto fail;
    }
    if (vocab) {
        for (int i = 0; i < vocab_size; i++)
            if (!vocab[i]) {
                sbmt_errf(err, "%s: /vocab: symbol %d is NULL", path, i);
                goto fail;
            }
        hid_t t = H5_CHECK(H5Tcopy(H5T_C_S1));
        H5_CHECK(H5Tset_size(t, H5T_VARIABLE));
        H5_CHECK(H5Tset_cset(t, H5T_CSET_UTF8));
        hsize_t n = (hsize_t)vocab_size;
        hid_t sp = H5_CHECK(H5Screate_simple(1, &n, NULL));
        hid_t dcpl = H5_CHECK(H5Pcreate(H5P_DATASET_CREATE));
        H5_CHECK(H5Pset_obj_track_times(dcpl, 0));
        hid_t d = H5Dcreate2(w->file, "vocab", t, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        int bad = d < 0 || H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, vocab) < 0;
        if (d >= 0) H5Dclose(d);
        H5Pclose(dcpl);
        H5Sclose(sp);
        H5Tclose(t);
        if (bad) {
            sbmt_errf(err, "%s: /vocab: writing failed", tmp);
            goto fail;
        }
    }
    return 0;
fail:
    H5Fclose(w->file);
    w->file = -1;
    remove(tmp);
    w->failed = 1;
    return -1;
}

int ds_writer_attr_str(ds_writer *w, const char *name, const char *value, char *err) {
    if (w->file < 0) return sbmt_errf(err, "%s: writer is not open", w->path);
    if (write_str_attr(w->file, name, value))
        return wfail(w), sbmt_errf(err, "%s: / attribute '%s': writing failed", w->path, name);
    return 0;
}

// Creates one chunked, compressed integer dataset under grp.
static hid_t create_int_dataset(hid_t grp, const char *name, hid_t ftype, int64_t rows, int width) {
    int rank = width > 0 ? 2 : 1;
    size_t esize = H5Tget_size(ftype);
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)width};
    hsize_t maxd[2] = {H5S_UNLIMITED, (hsize_t)width};
    hsize_t chunk[2];
    if (width > 0) {
        // About 8 KiB per chunk (1 to 64 rows): training reads rows at random, and each row
        // read decompresses its whole chunk; smaller chunks cost only ~1% in file size.
        size_t r = (8u << 10) / ((size_t)width * esize);
        chunk[0] = r < 1 ? 1 : r > 64 ? 64 : r;
        chunk[1] = (hsize_t)width;
    } else {
        chunk[0] = 4096;
    }
    hid_t sp = H5_CHECK(H5Screate_simple(rank, dims, maxd));
    hid_t dcpl = H5_CHECK(H5Pcreate(H5P_DATASET_CREATE));
    H5_CHECK(H5Pset_chunk(dcpl, rank, chunk));
    H5_CHECK(H5Pset_obj_track_times(dcpl, 0));
    if (H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0) {
        if (esize > 1) H5_CHECK(H5Pset_shuffle(dcpl));
        H5_CHECK(H5Pset_deflate(dcpl, 4));
    }
    hid_t d = H5Dcreate2(grp, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return d;
}

int ds_writer_split_begin(ds_writer *w, int split, int64_t rows, char *err) {
    if (w->file < 0) return sbmt_errf(err, "%s: writer is not open", w->path);
    if (split < 0 || split >= SPLIT_COUNT)
        return wfail(w), sbmt_errf(err, "%s: invalid split id %d", w->path, split);
    const char *sn = split_names[split];
    if (w->cur_split >= 0)
        return wfail(w), sbmt_errf(err, "%s: /%s: begun while /%s is still being written",
                                   w->path, sn, split_names[w->cur_split]);
    if (rows < 0) return wfail(w), sbmt_errf(err, "%s: /%s: negative row count", w->path, sn);
    if (H5Lexists(w->file, sn, H5P_DEFAULT) > 0)
        return wfail(w), sbmt_errf(err, "%s: /%s: split written twice", w->path, sn);
    hid_t gcpl = H5_CHECK(H5Pcreate(H5P_GROUP_CREATE));
    H5_CHECK(H5Pset_obj_track_times(gcpl, 0));
    hid_t g = H5Gcreate2(w->file, sn, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    if (g < 0) return wfail(w), sbmt_errf(err, "%s: /%s: cannot create group", w->path, sn);
    hid_t it = small_uint_type(w->vocab_size), lt = small_uint_type(w->num_classes);
    w->cur_ids = create_int_dataset(g, "input_ids", it, rows, w->seq_len);
    w->cur_ids1 = w->dual ? create_int_dataset(g, "input_ids_1", it, rows, w->seq_len) : -1;
    w->cur_labels = create_int_dataset(g, "labels", lt, rows, 0);
    H5Gclose(g);
    w->cur_split = split;
    w->cur_rows = rows;
    w->cur_written = 0;
    if (w->cur_ids < 0 || (w->dual && w->cur_ids1 < 0) || w->cur_labels < 0)
        return wfail(w), sbmt_errf(err, "%s: /%s: cannot create datasets", w->path, sn);
    return 0;
}

static int write_block(hid_t d, int64_t row0, int64_t count, int width, const int32_t *src) {
    int rank = width > 0 ? 2 : 1;
    hid_t fs = H5_CHECK(H5Dget_space(d));
    hsize_t start[2] = {(hsize_t)row0, 0}, cnt[2] = {(hsize_t)count, (hsize_t)width};
    H5_CHECK(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL));
    hid_t ms = H5_CHECK(H5Screate_simple(rank, cnt, NULL));
    herr_t rc = H5Dwrite(d, H5T_NATIVE_INT32, ms, fs, H5P_DEFAULT, src);
    H5Sclose(ms);
    H5Sclose(fs);
    return rc < 0 ? -1 : 0;
}

static int check_values(const ds_writer *w, const char *name, const char *what, const int32_t *v,
                        int64_t count, int width, int limit, const char *limit_name, char *err) {
    int ww = width > 0 ? width : 1;
    for (int64_t i = 0; i < count; i++)
        for (int c = 0; c < ww; c++) {
            int32_t x = v[(size_t)i * (size_t)ww + (size_t)c];
            if (x < 0 || x >= limit)
                return sbmt_errf(err, "%s: /%s/%s: row %lld: %s %d outside [0, %s = %d)", w->path,
                                 split_names[w->cur_split], name,
                                 (long long)(w->cur_written + i), what, x, limit_name, limit);
        }
    return 0;
}

int ds_writer_split_rows(ds_writer *w, int64_t count, const int32_t *ids, const int32_t *ids1,
                         const int32_t *labels, char *err) {
    if (w->file < 0 || w->cur_split < 0)
        return wfail(w), sbmt_errf(err, "%s: rows written with no split begun", w->path);
    const char *sn = split_names[w->cur_split];
    if (count < 0 || w->cur_written + count > w->cur_rows)
        return wfail(w), sbmt_errf(err, "%s: /%s: writing %lld rows after %lld exceeds the %lld "
                                   "rows declared",
                                   w->path, sn, (long long)count, (long long)w->cur_written,
                                   (long long)w->cur_rows);
    if (count == 0) return 0;
    CHECK(ids && labels);
    if (w->dual && !ids1)
        return wfail(w), sbmt_errf(err, "%s: /%s: dual dataset needs input_ids_1", w->path, sn);
    if (check_values(w, "input_ids", "token id", ids, count, w->seq_len, w->vocab_size,
                     "vocab_size", err) ||
        (w->dual && check_values(w, "input_ids_1", "token id", ids1, count, w->seq_len,
                                 w->vocab_size, "vocab_size", err)) ||
        check_values(w, "labels", "label", labels, count, 0, w->num_classes, "num_classes", err))
        return wfail(w);
    if (write_block(w->cur_ids, w->cur_written, count, w->seq_len, ids) ||
        (w->dual && write_block(w->cur_ids1, w->cur_written, count, w->seq_len, ids1)) ||
        write_block(w->cur_labels, w->cur_written, count, 0, labels))
        return wfail(w), sbmt_errf(err, "%s: /%s: writing rows %lld..%lld failed (disk full?)",
                                   w->path, sn, (long long)w->cur_written,
                                   (long long)(w->cur_written + count - 1));
    w->cur_written += count;
    return 0;
}

static void close_current(ds_writer *w) {
    close_dset(&w->cur_ids);
    close_dset(&w->cur_ids1);
    close_dset(&w->cur_labels);
    w->cur_split = -1;
}

int ds_writer_split_end(ds_writer *w, char *err) {
    if (w->cur_split < 0) return wfail(w), sbmt_errf(err, "%s: no split to end", w->path);
    int rc = 0;
    if (w->cur_written != w->cur_rows)
        rc = wfail(w), sbmt_errf(err, "%s: /%s: %lld of %lld declared rows written", w->path,
                                 split_names[w->cur_split], (long long)w->cur_written,
                                 (long long)w->cur_rows);
    close_current(w);
    return rc;
}

int ds_writer_split(ds_writer *w, int split, int64_t rows, const int32_t *ids, const int32_t *ids1,
                    const int32_t *labels, char *err) {
    if (ds_writer_split_begin(w, split, rows, err) ||
        ds_writer_split_rows(w, rows, ids, ids1, labels, err)) {
        if (w->cur_split >= 0) close_current(w);
        return -1;
    }
    return ds_writer_split_end(w, err);
}

int ds_writer_close(ds_writer *w, char *err) {
    char tmp[4096 + 8];
    tmp_path(w, tmp, sizeof tmp);
    int rc = 0;
    const char *why = "not written because of an earlier error";
    if (w->cur_split >= 0) {
        if (!w->failed) why = "not written: closed before a split was ended";
        close_current(w);
        w->failed = 1;
    }
    if (w->file >= 0) {
        if (H5Fclose(w->file) < 0 && !w->failed) {
            w->failed = 1;
            why = "not written: closing the file failed (disk full?)";
        }
        w->file = -1;
        if (w->failed) {
            remove(tmp);
            rc = -1;
        } else if (rename(tmp, w->path) != 0) {
            rc = sbmt_errf(err, "%s: cannot rename to %s: %s", tmp, w->path, strerror(errno));
            remove(tmp);
        }
    } else if (w->failed) {
        rc = -1;
    }
    if (rc && w->failed) sbmt_errf(err, "%s: %s", w->path, why);
    return rc;
}
