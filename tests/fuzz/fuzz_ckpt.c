// fuzz_ckpt.c: libFuzzer target of the checkpoint reader (ckpt_read_meta, ckpt_load) on files of
// fuzzer-chosen structure: root attributes right, wrong or missing; the model's tensors and the
// Adam moments present or missing, of the right or a wrong shape or type, with any values (NaN
// and Inf included); unknown extra tensors. A load either succeeds with every value finite or
// fails with a message; it never crashes.
#include "tests/fuzz/h5build.h"

#include <math.h>

#include "io/ckpt.h"
#include "kernels/common.h"
#include "model/params.h"

static void table(param_table *t) {
    param_table_init(t);
    int64_t a[2] = {3, 4}, b[1] = {5}, c[3] = {2, 2, 3};
    param_table_add(t, "embed/tokens", 2, a, 0);
    param_table_add(t, "head/fc2/bias", 1, b, 0);
    param_table_add(t, "layers/0/attn/clusters", 3, c, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    fz_reader r = {d, n, 0};
    fz_dir();
    char path[512], err[SBMT_ERR_LEN];
    fz_path(path, sizeof path, "c.h5");
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) abort();
    uint32_t flags = fz_u32(&r);
    char s[64];
    if (flags & 1) fz_attr_str(f, "sbmt_format", "checkpoint");
    else if (flags & 2) { fz_str(&r, s, sizeof s); fz_attr_str(f, "sbmt_format", s); }
    if (flags & 4) fz_attr_int(f, "sbmt_version", fz_type(fz_u8(&r)), flags & 8 ? 1 : (int8_t)fz_u8(&r));
    if (flags & 16) fz_attr_int(f, "step", fz_type(fz_u8(&r)), (int32_t)fz_u32(&r));
    if (flags & 32) fz_attr_int(f, "seed", fz_type(fz_u8(&r)), (int32_t)fz_u32(&r));
    if (flags & 64) { fz_str(&r, s, sizeof s); fz_attr_str(f, "config", s); }
    param_table t;
    table(&t);
    const char *roots[3] = {"model", "optim/adam_m", "optim/adam_v"};
    if (flags & 128) H5Gclose(H5Gcreate2(f, "optim", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    for (int k = 0; k < 3; k++) {
        if (!(flags & (256u << k))) continue;
        hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
        H5Pset_create_intermediate_group(lcpl, 1);
        hid_t g = H5Gcreate2(f, roots[k], lcpl, H5P_DEFAULT, H5P_DEFAULT);
        H5Pclose(lcpl);
        if (g < 0) continue;
        for (int i = 0; i < t.n; i++) {
            uint32_t how = fz_u8(&r);
            if (how % 11 == 0) continue;  // missing
            const param_entry *e = &t.e[i];
            hsize_t d0 = (hsize_t)e->shape[0], d1 = e->ndim > 1 ? (hsize_t)e->shape[1] : 1;
            if (how % 13 == 1) d0 += 1;  // wrong shape
            int rank = how % 17 == 2 ? 1 : (e->ndim < 3 ? e->ndim : 2);
            // Intermediate groups ("embed/", "layers/0/attn/") first.
            char name[PARAM_NAME_LEN];
            snprintf(name, sizeof name, "%s", e->name);
            for (char *p = strchr(name, '/'); p; p = strchr(p + 1, '/')) {
                *p = '\0';
                if (H5Lexists(g, name, H5P_DEFAULT) <= 0)
                    H5Gclose(H5Gcreate2(g, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
                *p = '/';
            }
            if (e->ndim == 3 && rank == 2) {  // clusters keep their 3 dims unless made rank 1
                hsize_t dims[3] = {(hsize_t)e->shape[0] + (how % 13 == 1), (hsize_t)e->shape[1],
                                   (hsize_t)e->shape[2]};
                hid_t sp = H5Screate_simple(3, dims, NULL);
                hid_t ds = H5Dcreate2(g, e->name, how % 19 == 3 ? H5T_NATIVE_INT : H5T_NATIVE_FLOAT,
                                      sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
                if (ds >= 0) {
                    size_t cnt = dims[0] * dims[1] * dims[2];
                    float *v = malloc(sizeof(float) * cnt);
                    for (size_t j = 0; j < cnt; j++) v[j] = fz_u8(&r) < 250 ? 0.5f : fz_f32(&r);
                    H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
                    free(v);
                    H5Dclose(ds);
                }
                H5Sclose(sp);
            } else {
                fz_dataset(g, e->name, &r, rank, d0, d1,
                           how % 19 == 3 ? H5T_NATIVE_INT : H5T_NATIVE_FLOAT);
            }
        }
        if (flags & (2048u << k)) fz_dataset(g, "extra", &r, 1, 2, 1, H5T_NATIVE_FLOAT);
        H5Gclose(g);
    }
    H5Fclose(f);
    int64_t step;
    uint64_t seed;
    char *text = NULL;
    if (ckpt_read_meta(path, &step, &seed, &text, err) == 0) free(text);
    float *buf = malloc(sizeof(float) * t.total * 3);
    if (ckpt_load(path, &t, buf, flags & (1u << 14) ? buf + t.total : NULL,
                  flags & (1u << 14) ? buf + 2 * t.total : NULL, err) == 0) {
        size_t m = flags & (1u << 14) ? 3 * t.total : t.total;
        for (size_t i = 0; i < m; i++)
            if (!isfinite(buf[i])) abort();  // a non-finite value was accepted
    }
    free(buf);
    param_table_free(&t);
    return 0;
}
