// inspect.c: summaries of sbmt HDF5 files through the plain HDF5 API (object visits).
#define _POSIX_C_SOURCE 200809L
#include "io/inspect.h"

#include <hdf5.h>
#include <stdlib.h>
#include <string.h>

#include "io/dataset.h"
#include "kernels/common.h"

// A string attribute into buf; 0 on success (absence is not an error here).
static int attr_str(hid_t loc, const char *name, char *buf, size_t len) {
    buf[0] = '\0';
    return ds_read_str_attr("", loc, name, buf, len, NULL);
}

static int attr_i64(hid_t loc, const char *name, long long *v) {
    if (H5Aexists(loc, name) <= 0) return -1;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    int rc = H5Aread(a, H5T_NATIVE_LLONG, v) < 0 ? -1 : 0;
    H5Aclose(a);
    return rc;
}

static const char *type_name(hid_t t) {
    H5T_class_t c = H5Tget_class(t);
    size_t sz = H5Tget_size(t);
    if (c == H5T_FLOAT) return sz == 8 ? "float64" : sz == 2 ? "float16" : "float32";
    if (c == H5T_INTEGER) {
        int sign = H5Tget_sign(t) == H5T_SGN_2;
        switch (sz) {
        case 1: return sign ? "int8" : "uint8";
        case 2: return sign ? "int16" : "uint16";
        case 4: return sign ? "int32" : "uint32";
        default: return sign ? "int64" : "uint64";
        }
    }
    if (c == H5T_STRING) return "string";
    return "other";
}

typedef struct {
    FILE *out;
    int count;
    size_t elems;
} visit_ctx;

static herr_t visit_ds(hid_t obj, const char *name, const H5O_info_t *info, void *data) {
    visit_ctx *v = data;
    if (info->type != H5O_TYPE_DATASET) return 0;
    hid_t d = H5Dopen2(obj, name, H5P_DEFAULT);
    if (d < 0) return 0;
    hid_t sp = H5Dget_space(d), t = H5Dget_type(d);
    int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[H5S_MAX_RANK];
    H5Sget_simple_extent_dims(sp, dims, NULL);
    size_t n = 1;
    fprintf(v->out, "  %-44s %-8s [", name, type_name(t));
    for (int i = 0; i < nd; i++) {
        fprintf(v->out, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
        n *= dims[i];
    }
    fprintf(v->out, "]\n");
    v->count++;
    v->elems += n;
    H5Tclose(t);
    H5Sclose(sp);
    H5Dclose(d);
    return 0;
}

static void list_group(hid_t f, const char *group, FILE *out) {
    if (H5Lexists(f, group, H5P_DEFAULT) <= 0) return;
    hid_t g = H5Gopen2(f, group, H5P_DEFAULT);
    if (g < 0) return;
    visit_ctx v = {out, 0, 0};
    fprintf(out, "%s:\n", group);
    H5Ovisit(g, H5_INDEX_NAME, H5_ITER_INC, visit_ds, &v);
    fprintf(out, "  (%d datasets, %zu values)\n", v.count, v.elems);
    H5Gclose(g);
}

int inspect_file(const char *path, FILE *out, char *err) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (H5Fis_hdf5(path) <= 0)
        return sbmt_errf(err, "%s: not an HDF5 file (or cannot be read)", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return sbmt_errf(err, "%s: cannot open as HDF5 (truncated or corrupted?)", path);
    char fmt[64], buf[256];
    long long ver = -1, v;
    if (attr_str(f, "sbmt_format", fmt, sizeof(fmt))) {
        H5Fclose(f);
        return sbmt_errf(err, "%s: no sbmt_format attribute on /: not an sbmt file", path);
    }
    attr_i64(f, "sbmt_version", &ver);
    fprintf(out, "%s: sbmt %s, version %lld\n", path, fmt, ver);
    if (strcmp(fmt, "checkpoint") == 0) {
        if (attr_i64(f, "step", &v) == 0) fprintf(out, "step: %lld\n", v);
        unsigned long long seed = 0;
        hid_t a = H5Aexists(f, "seed") > 0 ? H5Aopen(f, "seed", H5P_DEFAULT) : -1;
        if (a >= 0) {
            if (H5Aread(a, H5T_NATIVE_ULLONG, &seed) >= 0) fprintf(out, "seed: %llu\n", seed);
            H5Aclose(a);
        }
        list_group(f, "/model", out);
        int optim = H5Lexists(f, "/optim", H5P_DEFAULT) > 0;
        fprintf(out, "optimizer state: %s\n", optim ? "/optim/adam_m, /optim/adam_v" : "none");
        char *cfg = xmalloc(1 << 16);
        if (attr_str(f, "config", cfg, 1 << 16) == 0) fprintf(out, "config:\n%s\n", cfg);
        free(cfg);
    } else if (strcmp(fmt, "dataset") == 0) {
        if (attr_str(f, "task", buf, sizeof(buf)) == 0) fprintf(out, "task: %s\n", buf);
        const char *keys[] = {"vocab_size", "num_classes", "seq_len", "dual"};
        for (int i = 0; i < 4; i++)
            if (attr_i64(f, keys[i], &v) == 0) fprintf(out, "%s: %lld\n", keys[i], v);
        if (attr_str(f, "generator", buf, sizeof(buf)) == 0) fprintf(out, "generator: %s\n", buf);
        const char *splits[] = {"/train", "/dev", "/test"};
        for (int i = 0; i < 3; i++) {
            if (H5Lexists(f, splits[i], H5P_DEFAULT) > 0)
                list_group(f, splits[i], out);
            else
                fprintf(out, "%s: absent\n", splits[i]);
        }
        if (H5Lexists(f, "/vocab", H5P_DEFAULT) > 0) fprintf(out, "/vocab: present\n");
    } else {
        list_group(f, "/", out);
    }
    H5Fclose(f);
    return 0;
}
